"""Accounts and devices: password hashing, bearer tokens, the current-device dependency."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from anyio import to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
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
    "bearer_scheme",
    "create_user",
    "list_devices",
    "login",
    "logout",
    "token_digest",
]

# last_seen_at is a hint for the device list, not an audit log: refresh it at most this
# often so that authenticating a request is a read, not a write.
LAST_SEEN_RESOLUTION = timedelta(minutes=1)


class Passwords:
    """Argon2id (memory-hard) hashing, run in a worker thread so the event loop keeps serving."""

    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        # Verified against when the user does not exist, so both failures take the same time.
        self._dummy = self._hasher.hash(secrets.token_hex(16))

    async def hash(self, password: str) -> str:
        return await to_thread.run_sync(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        def check() -> bool:
            try:
                return self._hasher.verify(stored or self._dummy, password) and stored is not None
            except (VerificationError, InvalidHashError):
                return False

        return await to_thread.run_sync(check)


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


# Declares the bearer scheme in the OpenAPI document, so every operation that needs a
# device carries `security` and Swagger UI offers "Authorize". auto_error=False: a missing
# or non-bearer header is answered by our own 401 problem below, as before. It parses the
# header exactly as token_digest does (split at the first space, strip, "bearer" in any
# case), so the framework and the hot paths (app.hotpaths) agree on what a token is.
bearer_scheme = HTTPBearer(
    scheme_name="bearer",
    description="The `access_token` that `POST /login` returns: "
    "`Authorization: Bearer <access_token>`.",
    auto_error=False,
)


async def current_device(
    request: Request,
    db: DbDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> DeviceContext:
    if credentials is None:
        raise AppError(401, "unauthorized", "missing bearer token")
    digest = _token_hash(credentials.credentials)
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
