"""Pushers (a device's registration with a Matrix push gateway) and the synced cursors.

The push worker itself is app.push.worker. Here: registering, listing and deleting pushers
(the gateway allowlist is checked here), and `SyncedCursors`, which records how far each
device has synced so that a device that is online, or holds a long-poll, is not pushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import and_, delete, func, insert, not_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from app.accounts.auth import DeviceContext
from app.config import Settings
from app.db.engine import Database
from app.db.models import Pusher, User, utcnow
from app.errors import AppError
from app.inbox.messages import format_time
from app.push.gateway_urls import BadGatewayUrl, GatewayUrl, parse_allowlist, parse_gateway_url
from app.schemas import PusherIn
from app.store import open_store

__all__ = [
    "MAX_PUSHER_DATA_BYTES",
    "SyncedCursors",
    "delete_pusher",
    "gateway_allowed",
    "list_pushers",
    "push_interval",
    "push_wait",
    "register_pusher",
]

log = logging.getLogger(__name__)

# A pusher's `data` goes with every notify the gateway gets for the device: a few fields
# (Matrix: a URL and a format), so 4 KiB of compact JSON is ample.
MAX_PUSHER_DATA_BYTES = 4096

_PUSHER_COLUMNS = (
    Pusher.app_id,
    Pusher.pushkey,
    Pusher.gateway_url,
    Pusher.format,
    Pusher.data,
    Pusher.device_id,
    Pusher.created_at,
)


def push_interval(delay: float) -> float:
    """How often synced positions are written (SyncedCursors), hence how long past the delay
    the worker waits before it decides."""
    return min(0.1, delay / 10)


def push_wait(settings: Settings) -> float | None:
    """Seconds from a message to its recipient's push falling due; None with push off."""
    return _push_wait(settings.push_gateways, settings.push_delay_seconds)


@functools.cache
def _push_wait(gateways: str, delay: float) -> float | None:
    # Asked at every send: the prefixes are parsed once.
    if not any(prefix.strip() for prefix in gateways.split(",")):
        return None
    return delay + push_interval(delay)


def gateway_allowed(settings: Settings, url: str) -> bool:
    """Whether the operator's allowlist admits this gateway URL. msgsync calls the URL from
    inside the operator's network: a free choice would let any user make it send requests
    anywhere (request forgery), hence an allowlist compared as URLs (app.push.gateway_urls) and
    no redirects followed."""
    return _gateway_refusal(settings.push_gateways, url) is None


@functools.cache
def _allowlist(entries: str) -> tuple[GatewayUrl, ...]:
    # Checked at start-up already (app.config); parsed once per process.
    return parse_allowlist(entries)


def _gateway_refusal(entries: str, url: str) -> str | None:
    """Why the allowlist refuses the URL, or None."""
    allowlist = _allowlist(entries)
    if not allowlist:
        return "push is disabled on this server"
    try:
        parsed = parse_gateway_url(url)
    except BadGatewayUrl as exc:
        return f"gateway_url is refused: {exc}"
    if not any(parsed.within(prefix) for prefix in allowlist):
        return "gateway_url is not one of the push gateways this server allows"
    return None


def _pusher_out(row: Any) -> dict[str, Any]:
    return {
        "app_id": row.app_id,
        "pushkey": row.pushkey,
        "gateway_url": row.gateway_url,
        "format": row.format,
        # Passed through as stored: the client's JSON, whatever its numbers (orjson itself
        # holds integers to 64 bits only).
        "data": orjson.Fragment(row.data),
        "device_id": row.device_id,
        "created_at": format_time(row.created_at),
    }


async def register_pusher(
    db: Database, settings: Settings, device: DeviceContext, body: PusherIn
) -> tuple[dict[str, Any], bool]:
    """Create the pusher, or replace the one with the same (app_id, pushkey): the pushkey
    names one app install, which now belongs to this device. Returns (pusher, created)."""
    refusal = _gateway_refusal(settings.push_gateways, body.gateway_url)
    if refusal is not None:
        raise AppError(422, "gateway_not_allowed", refusal)
    # The standard library writes any JSON the request could carry (integers of any size).
    data = json.dumps(body.data, separators=(",", ":"))
    if len(data.encode()) > MAX_PUSHER_DATA_BYTES:
        raise AppError(
            422,
            "pusher_data_too_large",
            f"data is over {MAX_PUSHER_DATA_BYTES} bytes of JSON: it is sent with every push",
        )
    now = utcnow()
    values: dict[str, Any] = {
        "device_id": device.device_id,
        "user_id": device.user_id,
        "gateway_url": body.gateway_url,
        "format": body.format,
        "data": data,
        "created_at": now,
        # Nothing from before the registration is pushed: the app is running right now.
        "pushed_version": select(User.latest_version)
        .where(User.user_id == device.user_id)
        .scalar_subquery(),
        "synced_version": 0,
        "due_at": None,
        "news": False,
        "attempts": 0,
        "failing_since": None,
        "leased_until": None,
    }
    key = {"app_id": body.app_id, "pushkey": body.pushkey}
    for last_try in (False, True):
        try:
            created = await _store_pusher(db, settings, device, key, values)
            break
        except IntegrityError:
            # Another user's request inserted the same (app_id, pushkey) meanwhile: once
            # more, this time as a replace. Failing again means the calling device itself
            # is gone (logged out meanwhile): its token no longer holds.
            if last_try:
                raise AppError(401, "unauthorized", "this device was logged out") from None
    pusher = {
        **key,
        "gateway_url": body.gateway_url,
        "format": body.format,
        "data": orjson.Fragment(data),
        "device_id": device.device_id,
        "created_at": format_time(now),
    }
    return pusher, created


async def _store_pusher(
    db: Database,
    settings: Settings,
    device: DeviceContext,
    key: dict[str, str],
    values: dict[str, Any],
) -> bool:
    """Insert or replace the pusher within the caps; True if it was inserted.

    The count and the write are one transaction holding the user's row lock (PostgreSQL;
    SQLite's BEGIN IMMEDIATE already admits one writer at a time): two registrations at
    once, by one device or by several devices of the user, cannot both pass a cap. The
    pusher being replaced is not counted, so re-registering (as an app does at every start)
    never meets the cap."""
    same = and_(Pusher.app_id == key["app_id"], Pusher.pushkey == key["pushkey"])
    async with db.session() as session, session.begin():
        await session.execute(
            select(User.user_id).where(User.user_id == device.user_id).with_for_update()
        )
        row = (
            await session.execute(
                select(
                    select(func.count())
                    .where(Pusher.device_id == device.device_id, not_(same))
                    .scalar_subquery(),
                    select(func.count())
                    .where(Pusher.user_id == device.user_id, not_(same))
                    .scalar_subquery(),
                    select(func.count()).where(same).scalar_subquery(),
                )
            )
        ).one()
        on_device, on_account, existing = row
        if on_device >= settings.max_pushers_per_device:
            raise AppError(
                409,
                "too_many_pushers",
                f"this device has {settings.max_pushers_per_device} pushers already "
                "(MSGSYNC_MAX_PUSHERS_PER_DEVICE): remove one first",
            )
        if on_account >= settings.max_pushers_per_user:
            raise AppError(
                409,
                "too_many_pushers",
                f"this account's devices have {settings.max_pushers_per_user} pushers already "
                "(MSGSYNC_MAX_PUSHERS_PER_USER): remove one first",
            )
        if existing:
            # Registered before (an app registers at every start), maybe by another device
            # of the same install: replace it, moving it to this device.
            await session.execute(update(Pusher).where(same).values(**values))
            return False
        await session.execute(insert(Pusher).values(**key, **values))
        return True


async def list_pushers(db: Database, settings: Settings, user_id: str) -> list[dict[str, Any]]:
    """The user's pushers, oldest first: at most MSGSYNC_MAX_PUSHERS_PER_USER (more may be
    left from before the cap was lowered; they are still pushed, and listed once fewer)."""
    async with db.statement() as conn:
        rows = await conn.execute(
            select(*_PUSHER_COLUMNS)
            .where(Pusher.user_id == user_id)
            .order_by(Pusher.created_at, Pusher.app_id, Pusher.pushkey)
            .limit(settings.max_pushers_per_user)
        )
        return [_pusher_out(row) for row in rows]


async def delete_pusher(db: Database, user_id: str, app_id: str, pushkey: str) -> None:
    async with db.session() as session, session.begin():
        result = await session.execute(
            delete(Pusher).where(
                Pusher.app_id == app_id, Pusher.pushkey == pushkey, Pusher.user_id == user_id
            )
        )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise AppError(404, "pusher_not_found", "you have no pusher with this app_id and pushkey")


class SyncedCursors:
    """How far each device has synced, kept in memory and written every `interval` seconds.

    A sync is the hottest read there is; writing a cursor at each one would make it a write.
    Instead each process remembers the highest position it served per device and writes
    them all in one statement per interval, and the push worker waits one interval past the
    push delay before it decides (app.push.worker). The cost on the sync path is one dict
    update; a crash loses at most one interval of positions, which can only cause a push
    that was not needed, never a missed one.
    """

    def __init__(self, db: Database, interval: float) -> None:
        self._db = db
        self.interval = interval
        self._seen: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def saw(self, device_id: str, version: int) -> None:
        if self._task is not None and version > self._seen.get(device_id, -1):
            self._seen[device_id] = version

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="push-synced-cursors")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except (DBAPIError, OSError) as exc:
                log.warning("could not record synced positions: %s", exc)

    async def flush(self) -> None:
        if not self._seen:
            return
        seen, self._seen = self._seen, {}
        try:
            await self._write(list(seen.items()))
        except BaseException:
            # Keep what was not written for the next round (merged with newer positions).
            for device_id, version in seen.items():
                if version > self._seen.get(device_id, -1):
                    self._seen[device_id] = version
            raise

    async def _write(self, seen: Sequence[tuple[str, int]]) -> None:
        await open_store(self._db).push.record_synced(seen)
