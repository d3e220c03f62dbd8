"""Login and registration throttling, per account and per client address, across processes.

The algorithm is the `limits` library's fixed window; its counters live in the database
(table throttle_counters), not in the process, so that a guesser spreading attempts over
the workers of every host still meets one limit. Each counter is one row updated by one
atomic upsert, so concurrent attempts never lose a count.

An attempt counts when it starts, before the password is hashed, not when it has failed:
otherwise a burst of concurrent guesses would all pass the check before the first of them
failed. A successful login then resets its account's counter, so the owner who mistyped a
few times is not locked out by their own success.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter
from sqlalchemy import TextClause, text
from starlette.types import Scope

from app.db import Database
from app.errors import AppError

__all__ = [
    "attempt_login",
    "attempt_registration",
    "check",
    "client_address",
    "login_succeeded",
    "record_failure",
]

# Expired counters are deleted at most this often per process: a key reused later is
# restarted by the upsert anyway, this only bounds the rows left by one-off keys.
_PURGE_INTERVAL = 60.0
_last_purge = 0.0


def client_address(scope: Scope) -> str:
    """The peer address of the connection: behind a proxy, the proxy's, unless the proxy is
    trusted through MSGSYNC_FORWARDED_ALLOW_IPS (uvicorn then puts the forwarded client's
    address here)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def attempt_login(db: Database, account: str, address: str) -> None:
    """Count a login attempt against the address, then the account; 429 when either is over.

    An attempt the address's limit refuses does not count against the account: otherwise
    one address could keep every account it names locked out, whatever its own limit.
    """
    s = db.settings
    await _attempt(
        db,
        (_item(s.login_attempts_per_address, s.throttle_window_seconds), "login-address", address),
        (_item(s.login_attempts_per_account, s.throttle_window_seconds), "login-account", account),
    )


async def login_succeeded(db: Database, account: str) -> None:
    item = _item(db.settings.login_attempts_per_account, db.settings.throttle_window_seconds)
    if item is not None:
        await _Counters(db).clear(item.key_for("login-account", _bounded(account)))


async def attempt_registration(db: Database, address: str) -> None:
    s = db.settings
    await _attempt(
        db, (_item(s.registrations_per_address, s.throttle_window_seconds), "register", address)
    )


async def check(db: Database, account: str, address: str) -> None:
    """429 if the account's or the address's login attempts are used up; counts nothing.
    For other password checks (deleting a device): call this before verifying, and
    record_failure after a wrong password, so that they share the login limits."""
    limiter = FixedWindowRateLimiter(_Counters(db))
    for item, kind, who in _login_limits(db, account, address):
        if not await limiter.test(item, kind, _bounded(who)):
            raise await _too_many(limiter, item, kind, who)


async def record_failure(db: Database, account: str, address: str) -> None:
    """Count a wrong password against the account's and the address's login limits."""
    limiter = FixedWindowRateLimiter(_Counters(db))
    for item, kind, who in _login_limits(db, account, address):
        await limiter.hit(item, kind, _bounded(who))


def _login_limits(
    db: Database, account: str, address: str
) -> Iterator[tuple[RateLimitItem, str, str]]:
    """The login limits that are on, with what each counts: per account, per address."""
    s = db.settings
    for amount, kind, who in (
        (s.login_attempts_per_account, "login-account", account),
        (s.login_attempts_per_address, "login-address", address),
    ):
        item = _item(amount, s.throttle_window_seconds)
        if item is not None:
            yield item, kind, who


def _item(amount: int, window: int) -> RateLimitItem | None:
    return RateLimitItemPerSecond(amount, window) if amount > 0 else None


def _bounded(who: str) -> str:
    # Keys must fit the column whatever a client sends as a user id.
    return who if len(who) <= 100 else hashlib.sha256(who.encode()).hexdigest()


async def _attempt(db: Database, *limits: tuple[RateLimitItem | None, str, str]) -> None:
    """Count the attempt against each limit in turn, stopping at the first that refuses."""
    await _purge_now_and_then(db)
    limiter = FixedWindowRateLimiter(_Counters(db))
    for item, kind, who in limits:
        if item is not None and not await limiter.hit(item, kind, _bounded(who)):
            raise await _too_many(limiter, item, kind, who)


async def _too_many(
    limiter: FixedWindowRateLimiter, item: RateLimitItem, kind: str, who: str
) -> AppError:
    stats = await limiter.get_window_stats(item, kind, _bounded(who))
    wait = min(item.get_expiry(), max(1, math.ceil(stats.reset_time - time.time())))
    what = "this account" if kind == "login-account" else "this address"
    return AppError(
        429,
        "too_many_attempts",
        f"too many attempts from {what}; retry in {wait} s",
        headers={"Retry-After": str(wait)},
    )


async def _purge_now_and_then(db: Database) -> None:
    global _last_purge
    now = time.monotonic()
    if now - _last_purge < _PURGE_INTERVAL:
        return
    _last_purge = now
    async with db.session() as session, session.begin():
        await session.execute(
            text(f"DELETE FROM throttle_counters WHERE expires_at <= {_now_sql(db)}")
        )


def _now_sql(db: Database) -> str:
    """Seconds since the epoch on the database's clock: every process, on every host,
    compares windows against the same clock."""
    if db.is_sqlite:
        return "((julianday('now') - 2440587.5) * 86400.0)"
    return "CAST(extract(epoch FROM clock_timestamp()) AS double precision)"


def _incr_sql(db: Database) -> TextClause:
    # One statement, so concurrent attempts serialise on the row (PostgreSQL's ON CONFLICT
    # locks it; SQLite has one writer): a window that has run out starts afresh. The SET
    # expressions all read the row as it was.
    now = _now_sql(db)
    return text(
        f"""
        INSERT INTO throttle_counters (key, hits, expires_at)
        VALUES (:key, :amount, {now} + :expiry)
        ON CONFLICT (key) DO UPDATE SET
            hits = CASE WHEN throttle_counters.expires_at <= {now}
                THEN excluded.hits ELSE throttle_counters.hits + excluded.hits END,
            expires_at = CASE WHEN throttle_counters.expires_at <= {now}
                THEN excluded.expires_at ELSE throttle_counters.expires_at END
        RETURNING hits
        """
    )


class _Counters(Storage):
    """A `limits` storage over the throttle_counters table (fixed windows only).

    Its statements use the transaction pool, as logins do, not the single-statement pool
    that sends, syncs and acks use: a login flood then queues behind other logins, and
    honest users' sends keep their connections.
    """

    STORAGE_SCHEME = None

    def __init__(self, db: Database) -> None:
        super().__init__()
        self._db = db

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return Exception

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        async with self._db.session() as session, session.begin():
            hits = await session.scalar(
                _incr_sql(self._db), {"key": key, "amount": amount, "expiry": expiry}
            )
        return int(hits or 0)

    async def get(self, key: str) -> int:
        async with self._db.session() as session, session.begin():
            hits = await session.scalar(
                text(
                    "SELECT hits FROM throttle_counters "
                    f"WHERE key = :key AND expires_at > {_now_sql(self._db)}"
                ),
                {"key": key},
            )
        return int(hits or 0)

    async def get_expiry(self, key: str) -> float:
        """When the key's window ends, on this process's clock (limits compares it with
        time.time()): the time left by the database's clock, from now."""
        async with self._db.session() as session, session.begin():
            left = await session.scalar(
                text(
                    f"SELECT expires_at - {_now_sql(self._db)} FROM throttle_counters "
                    "WHERE key = :key"
                ),
                {"key": key},
            )
        return time.time() + max(0.0, float(left or 0.0))

    async def check(self) -> bool:
        return True

    async def reset(self) -> int | None:
        async with self._db.session() as session, session.begin():
            await session.execute(text("DELETE FROM throttle_counters"))
        return None

    async def clear(self, key: str) -> None:
        async with self._db.session() as session, session.begin():
            await session.execute(
                text("DELETE FROM throttle_counters WHERE key = :key"), {"key": key}
            )
