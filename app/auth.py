"""Accounts and devices: password hashing, bearer tokens, the current-device dependency."""

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
from typing import Annotated, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, Request
from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from app.config import Settings
from app.db import Database
from app.errors import AppError
from app.models import Device, User, utcnow

__all__ = [
    "CurrentDevice",
    "DbDep",
    "DeviceContext",
    "Passwords",
    "TokenCache",
    "create_user",
    "list_devices",
    "login",
    "logout",
    "token_digest",
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


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def token_digest(authorization: str) -> bytes | None:
    """What a token is looked up by, from an Authorization header; None without a bearer."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return _token_hash(token)


async def create_user(db: Database, passwords: Passwords, user_id: str, password: str) -> None:
    password_hash = await passwords.hash(password)
    try:
        async with db.session() as session, session.begin():
            await session.execute(insert(User).values(user_id=user_id, password_hash=password_hash))
    except IntegrityError:
        raise AppError(409, "user_exists", f"user {user_id!r} already exists") from None


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
        # A new device's cursor starts at 0: its first sync without `since` delivers the
        # whole offline store, and the history fallback below the floor.
        await session.execute(
            insert(Device).values(
                device_id=device_id,
                user_id=user_id,
                token_hash=_token_hash(token),
                name=device_name,
            )
        )
    return device_id, token


async def logout(db: Database, device_id: str) -> None:
    """Delete the device; the caller then revokes its token in every process's cache."""
    async with db.session() as session, session.begin():
        await session.execute(delete(Device).where(Device.device_id == device_id))


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
    """

    def __init__(self, ttl: float = LAST_SEEN_RESOLUTION.total_seconds(), size: int = 100_000):
        self._ttl = ttl
        self._size = size
        self._entries: dict[bytes, tuple[DeviceContext, float]] = {}
        self._by_device: dict[str, bytes] = {}

    def get(self, digest: bytes) -> DeviceContext | None:
        found = self._entries.get(digest)
        if found is None:
            return None
        if time.monotonic() > found[1]:
            self._drop(digest)
            return None
        return found[0]

    def put(self, digest: bytes, device: DeviceContext) -> None:
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
        for device_id in device_ids:
            digest = self._by_device.get(device_id)
            if digest is not None:
                users.add(self._entries[digest][0].user_id)
                self._drop(digest)
        return users

    def clear(self) -> None:
        self._entries.clear()
        self._by_device.clear()

    def _drop(self, digest: bytes) -> None:
        found = self._entries.pop(digest, None)
        if found is not None:
            self._by_device.pop(found[0].device_id, None)


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


DbDep = Annotated[Database, Depends(get_db)]


async def current_device(request: Request, db: DbDep) -> DeviceContext:
    digest = token_digest(request.headers.get("authorization", ""))
    if digest is None:
        raise AppError(401, "unauthorized", "missing bearer token")
    tokens: TokenCache = request.app.state.tokens
    device = tokens.get(digest)
    if device is not None:
        return device
    async with db.statement() as conn:
        row = (
            await conn.execute(
                select(Device.device_id, Device.user_id, Device.last_seen_at).where(
                    Device.token_hash == digest
                )
            )
        ).first()
    if row is None:
        raise AppError(401, "unauthorized", "invalid or revoked token")
    now = utcnow()
    if now - row.last_seen_at > LAST_SEEN_RESOLUTION:
        async with db.session() as session, session.begin():
            await session.execute(
                update(Device).where(Device.device_id == row.device_id).values(last_seen_at=now)
            )
    device = DeviceContext(row.device_id, row.user_id)
    tokens.put(digest, device)
    return device


CurrentDevice = Annotated[DeviceContext, Depends(current_device)]
