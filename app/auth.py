"""Accounts and devices: password hashing, bearer tokens, the current-device dependency."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from anyio import to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, Request
from sqlalchemy import delete, insert, select, update
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
    "create_user",
    "list_devices",
    "login",
    "logout",
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
    async with db.session() as session, session.begin():
        await session.execute(delete(Device).where(Device.device_id == device_id))


async def list_devices(db: Database, user_id: str) -> list[Device]:
    async with db.read_sessions() as session:
        rows = await session.scalars(
            select(Device).where(Device.user_id == user_id).order_by(Device.created_at)
        )
        return list(rows)


@dataclass(frozen=True, slots=True)
class DeviceContext:
    device_id: str
    user_id: str
    acked_version: int


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


DbDep = Annotated[Database, Depends(get_db)]


async def current_device(request: Request, db: DbDep) -> DeviceContext:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AppError(401, "unauthorized", "missing bearer token")
    digest = _token_hash(token.strip())
    async with db.statement() as conn:
        row = (
            await conn.execute(
                select(
                    Device.device_id, Device.user_id, Device.acked_version, Device.last_seen_at
                ).where(Device.token_hash == digest)
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
    return DeviceContext(row.device_id, row.user_id, row.acked_version)


CurrentDevice = Annotated[DeviceContext, Depends(current_device)]
