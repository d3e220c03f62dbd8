"""Dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.accounts import auth
from app.accounts.auth import DeviceContext, Passwords
from app.config import Settings
from app.db.engine import Database
from app.errors import AppError
from app.inbox.acks import AckBatcher
from app.inbox.wait import LongPolls
from app.notifier import Notifier
from app.store import Store

__all__ = [
    "AcksDep",
    "CurrentDevice",
    "DbDep",
    "DeviceContext",
    "LongPollsDep",
    "NotifierDep",
    "PasswordsDep",
    "SettingsDep",
    "StoreDep",
    "bearer_scheme",
    "current_device",
    "get_db",
]


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


DbDep = Annotated[Database, Depends(get_db)]


# Declares the bearer scheme in the OpenAPI document, so every operation that needs a
# device carries `security` and Swagger UI offers "Authorize". auto_error=False: a missing
# or non-bearer header is answered by our own 401 problem below, as before. It parses the
# header exactly as auth.token_digest does (split at the first space, strip, "bearer" in any
# case), so the framework and the hot paths (app.edge.hotpaths) agree on what a token is.
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
    state = request.app.state
    return await auth.authenticate(
        db, state.tokens, state.settings, auth.token_hash(credentials.credentials)
    )


CurrentDevice = Annotated[DeviceContext, Depends(current_device)]


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


async def _longpolls(request: Request) -> LongPolls:
    longpolls: LongPolls = request.app.state.longpolls
    return longpolls


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
LongPollsDep = Annotated[LongPolls, Depends(_longpolls)]
PasswordsDep = Annotated[Passwords, Depends(_passwords)]
