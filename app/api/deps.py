"""Dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.accounts.auth import CurrentDevice, DbDep, DeviceContext, Passwords
from app.config import Settings
from app.inbox.acks import AckBatcher
from app.notifier import Notifier
from app.store import Store

__all__ = [
    "AcksDep",
    "CurrentDevice",
    "DbDep",
    "DeviceContext",
    "NotifierDep",
    "PasswordsDep",
    "SettingsDep",
    "StoreDep",
]


# Dependencies are coroutines on purpose: FastAPI runs a plain `def` dependency in its thread
# pool, a thread hop per request for what is an attribute lookup.
async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _notifier(request: Request) -> Notifier:
    notifier: Notifier = request.app.state.notifier
    return notifier


async def _acks(request: Request) -> AckBatcher:
    acks: AckBatcher = request.app.state.acks
    return acks


async def _passwords(request: Request) -> Passwords:
    passwords: Passwords = request.app.state.passwords
    return passwords


async def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[Store, Depends(_store)]
NotifierDep = Annotated[Notifier, Depends(_notifier)]
AcksDep = Annotated[AckBatcher, Depends(_acks)]
PasswordsDep = Annotated[Passwords, Depends(_passwords)]
