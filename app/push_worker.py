"""The push worker: finds devices with unsynced messages past the delay and pushes them.

Every process runs one. Each round it leases a batch of due pushers in one short
transaction (PostgreSQL `FOR UPDATE SKIP LOCKED`, so two processes never lease the same
pusher and never wait for each other), reads what each device has not seen, sends the
Matrix Push Gateway API `notify` requests outside any transaction, and settles the batch in
one statement: the push cursor (`pushed_version`) moves only after the gateway accepted.
A process that dies mid-request leaves its lease to expire, and another process repeats
that one push: at most one is repeated, none is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
from prometheus_client import Counter, Gauge
from sqlalchemy import and_, bindparam, delete, func, or_, select, tuple_, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import Database
from app.models import Device, InboxEntry, Message, Pusher, User, utcnow

__all__ = ["PUSHES_FAILED", "PUSHES_REJECTED", "PUSHES_RETRIED", "PUSHES_SENT", "PushWorker"]

log = logging.getLogger(__name__)

PUSHES_SENT = Counter("msgsync_pushes_sent", "Pushes the gateway accepted")
PUSHES_RETRIED = Counter("msgsync_pushes_retried", "Push attempts that failed and will be retried")
PUSHES_FAILED = Counter(
    "msgsync_pushes_failed", "Pushes dropped: failing past the maximum age, or refused"
)
PUSHES_REJECTED = Counter(
    "msgsync_pushers_rejected", "Pushkeys the gateway rejected (their pushers are deleted)"
)
OLDEST_PENDING = Gauge(
    "msgsync_push_oldest_pending_seconds",
    "How long past its due time the oldest push of the last round was still unsent",
)

# A lease outlives any request (GATEWAY_TIMEOUT): only a dead process lets one expire.
LEASE = timedelta(seconds=60)
GATEWAY_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# Retries: exponential backoff with full jitter (a random wait in [0, base * 2^attempt],
# capped), so that pushes failing together do not hit a recovering gateway together.
BACKOFF_BASE, BACKOFF_CAP = 0.25, 300.0


@dataclass(slots=True)
class _Lease:
    app_id: str
    pushkey: str
    user_id: str
    gateway_url: str
    format: str
    data: str
    created_at: datetime
    seen: int  # max(synced, acked): what the device has already
    floor: int  # max(pushed, seen): everything at or below needs no push
    attempts: int
    failing_since: datetime | None


@dataclass(slots=True)
class _Pending:
    latest: int = 0
    unread: int = 0
    oldest_at: datetime | None = None  # the oldest message above the floor
    newest: tuple[int, str] | None = None  # (message id, sender), the newest above the floor


@dataclass(slots=True)
class _Settle:
    """The new state of one leased pusher; None fields are left as they are."""

    app_id: str
    pushkey: str
    pushed_version: int | None = None
    due_at: datetime | None = None
    attempts: int = 0
    failing_since: datetime | None = None
    delete: bool = False


def _release(lease: _Lease, now: datetime) -> _Settle:
    """Unleased, due at once, its retry state kept."""
    return _Settle(lease.app_id, lease.pushkey, None, now, lease.attempts, lease.failing_since)


def _greatest(db: Database, *columns: Any) -> Any:
    # SQLite's many-argument max() is PostgreSQL's greatest().
    return func.max(*columns) if db.is_sqlite else func.greatest(*columns)


class PushWorker:
    def __init__(self, db: Database, settings: Settings, grace: float) -> None:
        self._db = db
        self._settings = settings
        self._delay = timedelta(seconds=settings.push_delay_seconds)
        # Syncs reach the database one SyncedCursors interval late: waiting that much past
        # the delay means a sync made within the delay is never answered with a push.
        self._grace = timedelta(seconds=grace)
        self._interval = grace
        self._max_age = timedelta(seconds=settings.push_max_age_seconds)
        self._slots = asyncio.Semaphore(settings.push_concurrency)
        self._settled: list[_Settle] = []
        self._wakeup = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._client = httpx.AsyncClient(
            # Never follow a redirect: the allowlist vetted this URL, not where it points.
            follow_redirects=False,
            timeout=GATEWAY_TIMEOUT,
            limits=httpx.Limits(max_connections=settings.push_concurrency),
        )

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="push-worker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in self._in_flight:
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._write_settled()
        await self._client.aclose()

    async def _run(self) -> None:
        while True:
            try:
                leased = await self.round()
            except (DBAPIError, OSError) as exc:
                log.warning("push round failed: %s", exc)
                leased = 0
            except Exception:
                # A bug must not stop every later push of this process: log, go on.
                log.exception("push round failed")
                leased = 0
            if leased == 0:
                # Nothing due: poll again soon, or at once when a request settles.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await self._wakeup.wait()
                self._wakeup.clear()

    async def round(self) -> int:
        """Settle what finished, lease what is due, start its requests; returns the count
        leased (a full batch means more may be due: the caller goes again at once)."""
        await self._write_settled()
        free = self._settings.push_concurrency - len(self._in_flight)
        if free <= 0:
            # Every slot busy: go on when a request finishes.
            await self._wakeup.wait()
            self._wakeup.clear()
            return 1
        now = utcnow()
        leases = await self._lease(now, free)
        if not leases:
            OLDEST_PENDING.set(0)
            return 0
        try:
            pending = await self._pending(leases)
        except BaseException:
            # Shutting down, or the read failed: give the leases back now rather than make
            # the next round (or process) wait for them to expire.
            self._settled.extend(_release(lease, now) for lease in leases)
            raise
        oldest_lag = 0.0
        for lease in leases:
            found = pending.get((lease.app_id, lease.pushkey), _Pending())
            if found.newest is None or found.oldest_at is None:
                # Nothing for this device to be told: settle up to what was read.
                self._settled.append(_Settle(lease.app_id, lease.pushkey, found.latest))
                continue
            due = found.oldest_at + self._delay + self._grace
            if lease.attempts == 0 and due > now:
                self._settled.append(_Settle(lease.app_id, lease.pushkey, None, due_at=due))
                continue
            oldest_lag = max(oldest_lag, (now - due).total_seconds())
            task = asyncio.create_task(self._push(lease, found, now))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        OLDEST_PENDING.set(oldest_lag)
        return len(leases)

    async def _lease(self, now: datetime, limit: int) -> list[_Lease]:
        db = self._db
        seen = _greatest(db, Pusher.synced_version, Device.acked_version)
        floor = _greatest(db, Pusher.pushed_version, Pusher.synced_version, Device.acked_version)
        query = (
            select(
                Pusher.app_id,
                Pusher.pushkey,
                Pusher.user_id,
                Pusher.gateway_url,
                Pusher.format,
                Pusher.data,
                Pusher.created_at,
                seen.label("seen"),
                floor.label("floor"),
                Pusher.attempts,
                Pusher.failing_since,
            )
            .join(User, User.user_id == Pusher.user_id)
            .join(Device, Device.device_id == Pusher.device_id)
            .where(
                # Something committed for the user that the device has not been settled for.
                User.latest_version > floor,
                or_(Pusher.due_at.is_(None), Pusher.due_at <= now),
                or_(Pusher.leased_until.is_(None), Pusher.leased_until < now),
            )
            # The longest overdue first; never examined (no due_at yet) counts as due now.
            .order_by(func.coalesce(Pusher.due_at, now))
            .limit(limit)
        )
        if not db.is_sqlite:
            # Another process's leases are skipped, not waited for: each push has one sender.
            query = query.with_for_update(of=Pusher, skip_locked=True)
        async with db.session() as session, session.begin():
            rows = (await session.execute(query)).all()
            if rows:
                await session.execute(
                    update(Pusher)
                    .where(tuple_(Pusher.app_id, Pusher.pushkey).in_([(r[0], r[1]) for r in rows]))
                    .values(leased_until=now + LEASE)
                )
        return [_Lease(*row) for row in rows]

    async def _pending(self, leases: list[_Lease]) -> dict[tuple[str, str], _Pending]:
        """Per pusher: the user's latest version, the unread count, and the oldest and newest
        messages from others above its floor. One read in one snapshot, so every entry up
        to `latest` is visible (a user's versions commit in order)."""
        found = {(lease.app_id, lease.pushkey): _Pending() for lease in leases}
        users = {lease.user_id for lease in leases}
        lowest: dict[str, int] = {}
        for lease in leases:
            lowest[lease.user_id] = min(lease.seen, lowest.get(lease.user_id, lease.seen))
        entries = (
            select(
                InboxEntry.user_id,
                InboxEntry.version,
                InboxEntry.created_at,
                Message.id,
                Message.sender,
            )
            .join(Message, Message.id == InboxEntry.message_id)
            .where(
                or_(
                    *(
                        and_(InboxEntry.user_id == user, InboxEntry.version > version)
                        for user, version in lowest.items()
                    )
                ),
                InboxEntry.kind == "message",
                # The sender's own devices are never pushed for the sender's own message.
                Message.sender != InboxEntry.user_id,
            )
            .order_by(InboxEntry.user_id, InboxEntry.version)
        )
        async with self._db.read_sessions() as session, session.begin():
            counters = await session.execute(
                select(User.user_id, User.latest_version).where(User.user_id.in_(users))
            )
            latest = {row.user_id: row.latest_version for row in counters}
            rows = (await session.execute(entries)).all()
        by_user: dict[str, list[Any]] = {}
        for row in rows:
            by_user.setdefault(row.user_id, []).append(row)
        for lease in leases:
            pending = found[(lease.app_id, lease.pushkey)]
            pending.latest = latest.get(lease.user_id, 0)
            for row in by_user.get(lease.user_id, ()):
                if row.version <= lease.seen:
                    continue
                pending.unread += 1
                if row.version > lease.floor:
                    if pending.oldest_at is None:
                        pending.oldest_at = row.created_at
                    pending.newest = (row.id, row.sender)
        return found

    async def _push(self, lease: _Lease, pending: _Pending, now: datetime) -> None:
        settle = _Settle(lease.app_id, lease.pushkey)
        try:
            async with self._slots:
                settle = await self._send(lease, pending, now)
        except asyncio.CancelledError:
            # Shutting down mid-request: give the lease back so another process retries.
            settle = _release(lease, now)
            raise
        finally:
            self._settled.append(settle)
            self._wakeup.set()

    async def _send(self, lease: _Lease, pending: _Pending, now: datetime) -> _Settle:
        assert pending.newest is not None
        message_id, sender = pending.newest
        body = await self._notification(lease, pending, message_id, sender)
        answer = ""
        try:
            response = await self._client.post(lease.gateway_url, content=body, headers=_JSON)
            answer = f"HTTP {response.status_code} {response.text[:300]!r}"
            status = response.status_code
        except httpx.HTTPError as exc:
            answer = f"{type(exc).__name__}: {exc}"
            status = 0
        if status == 200:
            PUSHES_SENT.inc()
            rejected = _rejected(response)
            if lease.pushkey in rejected:
                PUSHES_REJECTED.inc()
                log.info("gateway rejected pushkey of app %s; pusher deleted", lease.app_id)
                return _Settle(lease.app_id, lease.pushkey, pending.latest, delete=True)
            return _Settle(lease.app_id, lease.pushkey, pending.latest)
        # Retry what may pass later (5xx, 429, no answer); a redirect or other 4xx is the
        # gateway's settled refusal and would fail again.
        retryable = status == 0 or status == 429 or status >= 500
        failing_since = lease.failing_since or now
        attempts = lease.attempts + 1
        if retryable and now - failing_since < self._max_age:
            PUSHES_RETRIED.inc()
            wait = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**lease.attempts))
            log.warning(
                "push to %s (user %s, attempt %d) failed, retrying in %.2f s: %s",
                lease.gateway_url,
                lease.user_id,
                attempts,
                wait,
                answer,
            )
            due = now + timedelta(seconds=wait)
            return _Settle(
                lease.app_id, lease.pushkey, None, due, attempts, failing_since=failing_since
            )
        PUSHES_FAILED.inc()
        log.warning(
            "push to %s (user %s, attempt %d) dropped: %s",
            lease.gateway_url,
            lease.user_id,
            attempts,
            answer,
        )
        return _Settle(lease.app_id, lease.pushkey, pending.latest)

    async def _notification(
        self, lease: _Lease, pending: _Pending, message_id: int, sender: str
    ) -> bytes:
        notification: dict[str, Any] = {
            "event_id": str(message_id),
            "room_id": sender,  # the conversation, as the recipient names it: its peer
            "type": "msgsync.message",
            "counts": {"unread": pending.unread},
            "prio": "high",
            "devices": [
                {
                    "app_id": lease.app_id,
                    "pushkey": lease.pushkey,
                    "pushkey_ts": int(lease.created_at.timestamp()),
                    "data": orjson.Fragment(lease.data),
                }
            ],
        }
        if lease.format == "full":
            # Only when the client asked for it: the text then passes through the gateway
            # and the platform's push service (Apple, Google).
            async with self._db.statement() as conn:
                row = (
                    await conn.execute(
                        select(Message.body, Message.recalled_at).where(Message.id == message_id)
                    )
                ).first()
            notification["sender"] = sender
            # A recalled message shows an empty body, as everywhere else.
            shown = row.body if row is not None and row.recalled_at is None else ""
            notification["content"] = {"body": shown}
        return orjson.dumps({"notification": notification})

    async def _write_settled(self) -> None:
        if not self._settled:
            return
        settled, self._settled = self._settled, []
        try:
            async with self._db.session() as session, session.begin():
                await _apply(session, settled)
        except BaseException:
            self._settled = settled + self._settled
            raise


async def _apply(session: AsyncSession, settled: list[_Settle]) -> None:
    """One transaction for a round's outcomes, rows taken in key order (no deadlock with
    another process's round)."""
    settled.sort(key=lambda s: (s.app_id, s.pushkey))
    gone = [(s.app_id, s.pushkey) for s in settled if s.delete]
    if gone:
        await session.execute(delete(Pusher).where(tuple_(Pusher.app_id, Pusher.pushkey).in_(gone)))
    rows = [
        {
            "a": s.app_id,
            "k": s.pushkey,
            "p": s.pushed_version if s.pushed_version is not None else -1,
            "due": s.due_at,
            "n": s.attempts,
            "since": s.failing_since,
        }
        for s in settled
        if not s.delete
    ]
    if rows:
        conn = await session.connection()
        # pushed_version never moves back: a replaced pusher keeps the higher one.
        await conn.execute(
            update(Pusher)
            .where(Pusher.app_id == bindparam("a"), Pusher.pushkey == bindparam("k"))
            .values(
                pushed_version=_max_of(session, Pusher.pushed_version, bindparam("p")),
                due_at=bindparam("due", type_=Pusher.due_at.type),
                attempts=bindparam("n"),
                failing_since=bindparam("since", type_=Pusher.failing_since.type),
                leased_until=None,
            ),
            rows,
        )


def _max_of(session: AsyncSession, *columns: Any) -> Any:
    sqlite = session.get_bind().dialect.name == "sqlite"
    return func.max(*columns) if sqlite else func.greatest(*columns)


def _rejected(response: httpx.Response) -> list[str]:
    try:
        rejected = orjson.loads(response.content).get("rejected", [])
    except (orjson.JSONDecodeError, AttributeError):
        return []
    return [key for key in rejected if isinstance(key, str)] if isinstance(rejected, list) else []


_JSON = {"content-type": "application/json"}
