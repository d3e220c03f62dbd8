"""Accounts and devices: password hashing, bearer tokens, who a token belongs to.

Free of the HTTP framework (its dependencies are in app.api.deps): `msgsync retention`
uses the idle-device rule here without loading it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import CursorResult, Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from app.config import Settings
from app.db.engine import Database
from app.db.models import Device, User
from app.errors import AppError
from app.store import open_store

__all__ = [
    "DeviceContext",
    "Passwords",
    "TokenCache",
    "authenticate",
    "change_password",
    "create_user",
    "delete_device",
    "idle_cutoff",
    "list_devices",
    "login",
    "logout",
    "token_digest",
    "token_hash",
    "user_exists",
    "verify_password",
]

# last_seen_at is a hint for the device list, not an audit log: refresh it at most this
# often so that authenticating a request is a read, not a write.
LAST_SEEN_RESOLUTION = timedelta(minutes=1)

_T = TypeVar("_T")


class Passwords:
    """Argon2id (memory-hard) hashing, run in worker threads so the event loop keeps serving.

    Each hash takes MSGSYNC_ARGON2_MEMORY_KIB (64 MiB by default) while it runs, so the
    number running at once is what bounds a process's memory under a flood of logins: at
    most `password_hash_concurrency` run, at most `password_hash_queue` more wait for a
    turn, and the rest are refused at once (503 server_busy) rather than queued without
    bound (80 concurrent wrong-password logins once took a worker from 98 MiB to 1.9 GiB).
    """

    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        # Threads of its own, not anyio's pool (40 threads, shared with everything else that
        # runs in a thread): their number is the number of hashes that run at once.
        self._threads = ThreadPoolExecutor(
            settings.password_hash_concurrency,
            thread_name_prefix="password-hash",
            initializer=_yield_the_cpu,
        )
        self._admitted = 0  # hashing or waiting for a turn, in this process
        self._max_admitted = settings.password_hash_concurrency + settings.password_hash_queue
        # Verified against when the user does not exist, so both failures take the same time.
        self._dummy = self._hasher.hash(secrets.token_hex(16))

    async def hash(self, password: str) -> str:
        return await self._run(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        def check() -> bool:
            try:
                return self._hasher.verify(stored or self._dummy, password) and stored is not None
            except (VerificationError, InvalidHashError):
                return False

        return await self._run(check)

    async def _run(self, work: Callable[..., _T], *args: object) -> _T:
        if self._admitted >= self._max_admitted:
            raise AppError(
                503,
                "server_busy",
                "too many password checks at once; retry shortly",
                headers={"Retry-After": "1"},
            )
        self._admitted += 1
        try:
            # A caller that goes away (the client hung up) leaves a hash already running to
            # finish in its thread: the pool's size still bounds how many run.
            return await asyncio.get_running_loop().run_in_executor(self._threads, work, *args)
        finally:
            self._admitted -= 1


def _yield_the_cpu() -> None:
    """Run this hashing thread at the lowest CPU priority (Linux: nice is per thread, and the
    threads Argon2 starts for its lanes inherit it). A hash is seconds of CPU on a few
    cores; at equal priority a login flood took the CPU from the event loop, and honest
    users' sends waited behind hashes whose memory, not time, was bounded."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def token_digest(authorization: str) -> bytes | None:
    """What a token is looked up by, from an Authorization header; None without a bearer."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token_hash(token)


async def create_user(db: Database, passwords: Passwords, user_id: str, password: str) -> None:
    password_hash = await passwords.hash(password)
    try:
        async with db.session() as session, session.begin():
            await session.execute(insert(User).values(user_id=user_id, password_hash=password_hash))
    except IntegrityError:
        raise AppError(409, "user_exists", f"user {user_id!r} already exists") from None


async def user_exists(db: Database, user_id: str) -> bool:
    """Whether an account has this id. Read on the primary, where a send is checked: an
    account created a moment ago on another process is found, as the send to it would be."""
    async with db.statement() as conn:
        found = await conn.scalar(select(User.user_id).where(User.user_id == user_id))
    return found is not None


async def login(
    db: Database, passwords: Passwords, user_id: str, password: str, device_name: str
) -> tuple[str, str]:
    """Check the password and create a device; returns (device_id, access_token)."""
    async with db.read_sessions() as session:
        stored = await session.scalar(select(User.password_hash).where(User.user_id == user_id))
    if not await passwords.verify(stored, password):
        raise AppError(401, "bad_credentials", "unknown user or wrong password")
    device_id = secrets.token_hex(8)
    token = secrets.token_urlsafe(32)
    async with db.session() as session, session.begin():
        # The device is created only if the password just verified is still the user's. A
        # password change logs the user's other devices out; one committing meanwhile must
        # not miss this device. FOR SHARE orders the two: a change in flight makes this wait
        # and then read its new hash; once this holds the lock, the change waits for this
        # commit and its delete then sees the new device. (It may also wait for a send of
        # this user in flight, whose version bump holds the row: one statement's wait, on
        # the rare path.)
        current = await session.scalar(
            select(User.password_hash).where(User.user_id == user_id).with_for_update(read=True)
        )
        if current != stored:
            raise AppError(401, "bad_credentials", "unknown user or wrong password")
        # A new device's cursor starts at 0: its first sync without `since` delivers the
        # whole offline store, and the history fallback below the floor. Its times are the
        # database's clock, as every later last_seen_at is.
        now = open_store(db).accounts.clock()
        await session.execute(
            insert(Device).values(
                device_id=device_id,
                user_id=user_id,
                token_hash=token_hash(token),
                name=device_name,
                created_at=now,
                last_seen_at=now,
            )
        )
    return device_id, token


async def logout(db: Database, device_id: str) -> None:
    """Delete the device; the caller then revokes its token in every process's cache."""
    async with db.session() as session, session.begin():
        await session.execute(delete(Device).where(Device.device_id == device_id))


async def verify_password(
    db: Database, passwords: Passwords, user_id: str, password: str
) -> str | None:
    """The user's stored hash when `password` is theirs, else None.

    Read on the primary: what is verified here is then changed or acted on there."""
    async with db.statement() as conn:
        stored = await conn.scalar(select(User.password_hash).where(User.user_id == user_id))
    return stored if await passwords.verify(stored, password) else None


async def delete_device(db: Database, user_id: str, device_id: str) -> bool:
    """Log one of the user's devices out, as logout() does; False when the user has none such
    (another user's device is no different from a missing one). Its pushers go with the
    row (ON DELETE CASCADE). The caller then revokes its token in every process's cache."""
    async with db.session() as session, session.begin():
        result = await session.execute(
            delete(Device).where(Device.device_id == device_id, Device.user_id == user_id)
        )
    return _rowcount(result) > 0


async def change_password(
    db: Database,
    passwords: Passwords,
    user_id: str,
    verified_hash: str,
    new_password: str,
    keep_device: str | None,
) -> list[str]:
    """Replace the hash the old password was verified against; unless `keep_device` is None,
    log out every other device of the user in the same transaction. Returns the devices
    logged out, whose tokens the caller then revokes in every process's cache."""
    new_hash = await passwords.hash(new_password)
    async with db.session() as session, session.begin():
        # Only over the hash that was verified: of two changes racing with the same old
        # password, the second fails rather than silently undoing the first. The row lock
        # this takes orders the change with logins in flight (see login()).
        changed = await session.execute(
            update(User)
            .where(User.user_id == user_id, User.password_hash == verified_hash)
            .values(password_hash=new_hash)
        )
        if _rowcount(changed) == 0:
            raise AppError(401, "bad_credentials", "the password was changed meanwhile")
        if keep_device is None:
            return []
        ended = await session.scalars(
            delete(Device)
            .where(Device.user_id == user_id, Device.device_id != keep_device)
            .returning(Device.device_id)
        )
        return list(ended)


def idle_cutoff(idle_days: int, now: datetime) -> datetime | None:
    """Devices last seen before this moment are idle; None when idle expiry is off."""
    return now - timedelta(days=idle_days) if idle_days > 0 else None


def _rowcount(result: object) -> int:
    return cast(CursorResult[Any], result).rowcount


async def list_devices(
    db: Database, user_id: str
) -> Sequence[Row[str, str, int, datetime, datetime]]:
    async with db.statement() as conn:
        rows = await conn.execute(
            select(
                Device.device_id,
                Device.name,
                Device.acked_version,
                Device.created_at,
                Device.last_seen_at,
            )
            .where(Device.user_id == user_id)
            .order_by(Device.created_at)
        )
        return rows.all()


@dataclass(frozen=True, slots=True)
class DeviceContext:
    device_id: str
    user_id: str


class TokenCache:
    """Recently seen tokens of this process: most requests then authenticate with no query.

    Correctness rests on revocation, not on expiry: a logout drops the token here at once
    and, through the notifier, in every other process within milliseconds; a process whose
    listener reconnects drops everything (it may have missed a revocation). The time to
    live bounds the one remaining gap, a process that dies between a logout's commit and
    its NOTIFY, and paces the device's last_seen_at refresh.

    A lookup that read the device before its logout committed must not cache it after the
    revocation went by: put() takes the moment the lookup started (stamp()) and refuses a
    device revoked since, or any device when the whole cache was dropped since.
    """

    def __init__(self, ttl: float = LAST_SEEN_RESOLUTION.total_seconds(), size: int = 100_000):
        self._ttl = ttl
        self._size = size
        self._entries: dict[bytes, tuple[DeviceContext, float]] = {}
        self._by_device: dict[str, bytes] = {}
        # device_id -> when it was revoked, oldest first; kept for a time to live, far
        # longer than a lookup takes.
        self._revoked: dict[str, float] = {}
        self._cleared_at = float("-inf")

    @staticmethod
    def stamp() -> float:
        """Take before reading a device from the database; give to put()."""
        return time.monotonic()

    def get(self, digest: bytes) -> DeviceContext | None:
        found = self._entries.get(digest)
        if found is None:
            return None
        if time.monotonic() > found[1]:
            self._drop(digest)
            return None
        return found[0]

    def put(self, digest: bytes, device: DeviceContext, read_at: float | None = None) -> None:
        if read_at is not None and (
            read_at <= self._cleared_at
            or self._revoked.get(device.device_id, float("-inf")) >= read_at
        ):
            return  # possibly revoked after it was read
        if len(self._entries) >= self._size:
            self._drop(next(iter(self._entries)))  # the oldest insertion
        self._entries[digest] = (device, time.monotonic() + self._ttl)
        self._by_device[device.device_id] = digest

    def holds(self, device_id: str) -> bool:
        """Whether the device's token is cached and current (not revoked, not expired)."""
        digest = self._by_device.get(device_id)
        return digest is not None and self.get(digest) is not None

    def revoke(self, device_ids: Iterable[str]) -> set[str]:
        """Forget these devices' tokens; returns the users they belonged to."""
        users: set[str] = set()
        now = time.monotonic()
        while self._revoked and next(iter(self._revoked.values())) < now - self._ttl:
            del self._revoked[next(iter(self._revoked))]
        for device_id in device_ids:
            self._revoked.pop(device_id, None)  # re-inserted last, keeping the order by time
            self._revoked[device_id] = now
            digest = self._by_device.get(device_id)
            if digest is not None:
                users.add(self._entries[digest][0].user_id)
                self._drop(digest)
        return users

    def clear(self) -> None:
        self._cleared_at = time.monotonic()
        self._entries.clear()
        self._by_device.clear()

    def _drop(self, digest: bytes) -> None:
        found = self._entries.pop(digest, None)
        if found is not None:
            self._by_device.pop(found[0].device_id, None)


async def authenticate(
    db: Database, tokens: TokenCache, settings: Settings, digest: bytes
) -> DeviceContext:
    """The device whose token has this digest (token_digest): from the cache, or read and
    cached; 401 for a token that is unknown, revoked or idle too long."""
    device = tokens.get(digest)
    if device is not None:
        # A cached token was read from the database less than the cache's time to live
        # (a minute) ago, when its device was not idle and its last_seen_at was refreshed:
        # it cannot have gone idle since, as idle expiry counts in whole days.
        return device
    read_at = tokens.stamp()
    async with db.statement() as conn:
        # The time comes with the device, from the database's clock: every host judges
        # idleness and stamps last_seen_at by the one clock that stamped the row.
        row = (
            await conn.execute(
                select(
                    Device.device_id,
                    Device.user_id,
                    Device.last_seen_at,
                    open_store(db).accounts.clock().label("now"),
                ).where(Device.token_hash == digest)
            )
        ).first()
    if row is None:
        raise AppError(401, "unauthorized", "invalid or revoked token")
    now = row.now
    cutoff = idle_cutoff(settings.device_idle_days, now)
    if cutoff is not None and row.last_seen_at < cutoff:
        raise AppError(
            401,
            "unauthorized",
            f"device unused for more than {settings.device_idle_days} days; log in again",
        )
    if now - row.last_seen_at > LAST_SEEN_RESOLUTION:
        async with db.session() as session, session.begin():
            seen = await session.execute(
                update(Device).where(Device.device_id == row.device_id).values(last_seen_at=now)
            )
        if _rowcount(seen) == 0:
            # Deleted since it was read (a logout, or the retention job taking it as idle):
            # it must neither answer nor enter the cache.
            raise AppError(401, "unauthorized", "invalid or revoked token")
    device = DeviceContext(row.device_id, row.user_id)
    tokens.put(digest, device, read_at)
    return device
