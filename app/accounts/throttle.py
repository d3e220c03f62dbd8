"""Password attempt throttling: logins per account and per client address, registrations per
address, and re-entered passwords per device; counted in the database, across processes.

The model (docs/abuse.md explains it to operators):

- A login from a new device is counted against its client address and against the account
  it names. Each counter allows `limit` attempts freely; after that, every further attempt
  must wait a delay that doubles at each one (1 s, 2 s, 4 s, ...) up to the cap,
  MSGSYNC_THROTTLE_WINDOW_SECONDS. An attempt made before its delay has run out is refused
  (429 with Retry-After) and not counted. A counter is forgotten once it has been left alone
  for a whole window after its last delay. A successful login resets its account's counter.
- A password re-entered by a signed-in device (DELETE /devices/{id}, POST /password) is
  counted against that device only. The device already proved who it is with its token:
  failed logins elsewhere, however many, never refuse the owner's own devices, and a thief
  guessing through a stolen token locks only the stolen device, neither the account's other
  devices nor its logins.

An attempt counts when it starts, before the password is hashed, not when it has failed:
otherwise a burst of concurrent guesses would all pass the check before the first of them
failed. The counter lives in table throttle_counters, one row per key, updated by one atomic
upsert (app.store.accounts), so that a guesser spreading attempts over the workers of every
host still meets one limit and concurrent attempts never lose a count.
"""

from __future__ import annotations

import hashlib
import math
import time

from starlette.types import Scope

from app.db.engine import Database
from app.errors import AppError
from app.store import open_store

__all__ = [
    "attempt_login",
    "attempt_password",
    "attempt_registration",
    "client_address",
    "login_succeeded",
    "password_succeeded",
]

# Expired counters are deleted at most this often per process: a key reused later is
# restarted by the upsert anyway, this only bounds the rows left by one-off keys.
_PURGE_INTERVAL = 60.0
_last_purge = 0.0

# The delay doubles at each attempt past the limit; 2**30 s is far beyond any cap, and keeps
# the shift within a 32-bit integer on every backend.
_MAX_DOUBLINGS = 30


def client_address(scope: Scope) -> str:
    """The peer address of the connection: behind a proxy, the proxy's, unless the proxy is
    trusted through MSGSYNC_FORWARDED_ALLOW_IPS (uvicorn then puts the forwarded client's
    address here)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def attempt_login(db: Database, account: str, address: str) -> None:
    """Count a login attempt against the address, then the account; 429 when either refuses.

    An attempt the address refuses does not count against the account: otherwise one
    address could keep every account it names locked out, whatever its own limit.
    """
    s = db.settings
    await _purge_now_and_then(db)
    await _attempt(db, "login-address", address, s.login_attempts_per_address)
    await _attempt(db, "login-account", account, s.login_attempts_per_account)


async def login_succeeded(db: Database, account: str) -> None:
    await _clear(db, "login-account", account)


async def attempt_registration(db: Database, address: str) -> None:
    await _purge_now_and_then(db)
    await _attempt(db, "register", address, db.settings.registrations_per_address)


async def attempt_password(db: Database, device_id: str) -> None:
    """Count a password re-entered by a signed-in device, against that device alone; 429
    when it has to wait. Call before verifying, and password_succeeded after a match."""
    await _purge_now_and_then(db)
    await _attempt(db, "password-device", device_id, db.settings.password_attempts_per_device)


async def password_succeeded(db: Database, device_id: str) -> None:
    await _clear(db, "password-device", device_id)


_WHAT = {
    "login-account": "this account",
    "login-address": "this address",
    "register": "this address",
    "password-device": "this device",
}


async def _attempt(db: Database, kind: str, who: str, limit: int) -> None:
    """Count one attempt against (kind, who), or raise 429 if its delay has not run out."""
    if limit <= 0:
        return
    key = _key(kind, who)
    cap = db.settings.throttle_window_seconds
    # The cap on a delay is also how long a counter left alone is remembered after it.
    left = await open_store(db).accounts.count_attempt(key, limit, cap, _MAX_DOUBLINGS)
    if left is None:
        return
    wait = min(cap, max(1, math.ceil(float(left or 0.0))))
    raise AppError(
        429,
        "too_many_attempts",
        f"too many attempts from {_WHAT[kind]}; retry in {wait} s",
        headers={"Retry-After": str(wait)},
    )


async def _clear(db: Database, kind: str, who: str) -> None:
    await open_store(db).accounts.clear_attempts(_key(kind, who))


def _key(kind: str, who: str) -> str:
    # Keys must fit the column whatever a client sends as a user id.
    bounded = who if len(who) <= 100 else hashlib.sha256(who.encode()).hexdigest()
    return f"{kind}/{bounded}"


async def _purge_now_and_then(db: Database) -> None:
    global _last_purge
    now = time.monotonic()
    if now - _last_purge < _PURGE_INTERVAL:
        return
    _last_purge = now
    await open_store(db).accounts.purge_attempts()
