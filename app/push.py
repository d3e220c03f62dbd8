"""Pushers (a device's registration with a Matrix push gateway) and the synced cursors.

The push worker itself is app.push_worker. Here: registering, listing and deleting pushers
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
from urllib.parse import urlsplit

import orjson
from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from app.auth import DeviceContext
from app.config import Settings
from app.db import Database
from app.errors import AppError
from app.models import Pusher, User, utcnow
from app.schemas import PusherIn
from app.sync import format_time

__all__ = [
    "SyncedCursors",
    "delete_pusher",
    "gateway_allowed",
    "list_pushers",
    "push_interval",
    "push_wait",
    "register_pusher",
]

log = logging.getLogger(__name__)

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
    anywhere (request forgery), hence a list of prefixes and no redirects followed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return False
    return any(url.startswith(prefix) for prefix in settings.push_gateway_prefixes)


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
    if not gateway_allowed(settings, body.gateway_url):
        raise AppError(
            422,
            "gateway_not_allowed",
            "gateway_url is not one of the push gateways this server allows"
            if settings.push_gateway_prefixes
            else "push is disabled on this server",
        )
    now = utcnow()
    # The standard library writes any JSON the request could carry (integers of any size).
    data = json.dumps(body.data, separators=(",", ":"))
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
    created = True
    try:
        async with db.session() as session, session.begin():
            await session.execute(insert(Pusher).values(**key, **values))
    except IntegrityError:
        # Registered before (an app registers at every start): replace it. A concurrent
        # delete in between leaves nothing to update; the client then sees a 200 for a
        # pusher that its other request removed, which is the order they raced in.
        created = False
        async with db.session() as session, session.begin():
            await session.execute(
                update(Pusher)
                .where(Pusher.app_id == body.app_id, Pusher.pushkey == body.pushkey)
                .values(**values)
            )
    pusher = {
        **key,
        "gateway_url": body.gateway_url,
        "format": body.format,
        "data": orjson.Fragment(data),
        "device_id": device.device_id,
        "created_at": format_time(now),
    }
    return pusher, created


async def list_pushers(db: Database, user_id: str) -> list[dict[str, Any]]:
    async with db.statement() as conn:
        rows = await conn.execute(
            select(*_PUSHER_COLUMNS)
            .where(Pusher.user_id == user_id)
            .order_by(Pusher.created_at, Pusher.app_id, Pusher.pushkey)
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


# PostgreSQL: a flush is one statement. Rows are locked in key order, so that two processes
# flushing overlapping devices queue instead of deadlocking.
_PG_FLUSH = """
WITH seen AS (
    SELECT v.device_id, max(v.version) AS version
    FROM unnest(CAST(%(device_ids)s AS text[]), CAST(%(versions)s AS bigint[]))
        AS v(device_id, version)
    GROUP BY v.device_id
), locked AS (
    SELECT p.app_id, p.pushkey, s.version
    FROM pushers AS p JOIN seen AS s ON s.device_id = p.device_id
    WHERE p.synced_version < s.version
    ORDER BY p.app_id, p.pushkey
    FOR UPDATE OF p
)
UPDATE pushers AS p SET synced_version = l.version
FROM locked AS l
WHERE p.app_id = l.app_id AND p.pushkey = l.pushkey AND p.synced_version < l.version
"""

_SQLITE_FLUSH = (
    update(Pusher)
    .where(Pusher.device_id == bindparam("d"), Pusher.synced_version < bindparam("v"))
    .values(synced_version=func.max(Pusher.synced_version, bindparam("v")))
)


class SyncedCursors:
    """How far each device has synced, kept in memory and written every `interval` seconds.

    A sync is the hottest read there is; writing a cursor at each one would make it a write.
    Instead each process remembers the highest position it served per device and writes
    them all in one statement per interval, and the push worker waits one interval past the
    push delay before it decides (app.push_worker). The cost on the sync path is one dict
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
        if self._db.is_sqlite:
            async with self._db.session() as session, session.begin():
                conn = await session.connection()
                await conn.execute(_SQLITE_FLUSH, [{"d": d, "v": v} for d, v in seen])
            return
        params = {"device_ids": [d for d, _ in seen], "versions": [v for _, v in seen]}
        async with self._db.driver() as driver:
            await driver.execute(_PG_FLUSH, params)
