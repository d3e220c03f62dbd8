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
import ssl
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from app.config import Settings
from app.db.engine import Database
from app.db.models import Message, utcnow
from app.metrics import (
    OLDEST_PENDING,
    PUSHES_FAILED,
    PUSHES_REJECTED,
    PUSHES_RETRIED,
    PUSHES_SENT,
)
from app.push.gateway_client import HttpClient, Reply
from app.push.leases import Lease, Pending, Settle, lease_and_read, release, settle

__all__ = ["PushWorker"]

log = logging.getLogger(__name__)

# Well within app.push.leases.LEASE: only a dead process lets a lease expire.
GATEWAY_TIMEOUT, CONNECT_TIMEOUT = 10.0, 5.0
# Retries: exponential backoff with full jitter (a random wait in [0, base * 2^attempt],
# capped), so that pushes failing together do not hit a recovering gateway together.
BACKOFF_BASE, BACKOFF_CAP = 0.25, 300.0
# The least time between two rounds that did not fill their lease: a push waits at most this
# long past its due time for a round, and pushes falling due one by one share a round.
ROUND_GAP = 0.05
# The longest an idle worker waits for a round: a lease left by a process that died is found
# at most this long after it expires, however long the push delay.
IDLE_WAIT_MAX = 10.0


class PushWorker:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        grace: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`ssl_context` for https gateways: the system's trusted certificates by default."""
        self._db = db
        self._settings = settings
        self._delay = timedelta(seconds=settings.push_delay_seconds)
        # Syncs reach the database one SyncedCursors interval late: waiting that much past
        # the delay means a sync made within the delay is never answered with a push.
        self._grace = timedelta(seconds=grace)
        self._interval = grace
        # Nothing falls due sooner than this after a round unless this process settles it
        # (a retry, a deferral, news during a push: each makes it look again): a send sets
        # its push due the delay and grace after it (app.inbox.sync). Only a lease left by a dead
        # process is found no sooner than this.
        self._idle = min(settings.push_delay_seconds + grace, IDLE_WAIT_MAX)
        self._max_age = timedelta(seconds=settings.push_max_age_seconds)
        self._slots = asyncio.Semaphore(settings.push_concurrency)
        self._settled: list[Settle] = []
        self._wakeup = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        # Keep-alive connections per gateway, at most one per request in flight. It never
        # follows a redirect: the allowlist vetted this URL, not where it points.
        self._client = HttpClient(
            settings.push_concurrency,
            connect=CONNECT_TIMEOUT,
            total=GATEWAY_TIMEOUT,
            ssl_context=ssl_context,
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
        await self._client.close()

    async def _run(self) -> None:
        """Rounds back to back while due pushers fill them; otherwise the next round when the
        next push falls due (the database says when, each round), at least ROUND_GAP later,
        and in between only the settling of requests that finish (one statement for all
        that finished meanwhile). When pushes fall due one at a time, as they mostly do, a
        push then costs its share of one lease and one settle, not a lease per finished
        request."""
        loop = asyncio.get_running_loop()
        next_round = 0.0
        while True:
            try:
                if loop.time() >= next_round:
                    next_round = loop.time() + await self.round()
                elif self._settled:
                    await self._write_settled()
                    # What was settled may fall due soon: a retry, or news that came during
                    # its push. The round after the gap learns when.
                    next_round = min(next_round, loop.time() + ROUND_GAP)
            except (DBAPIError, OSError) as exc:
                log.warning("push round failed: %s", exc)
                next_round = loop.time() + self._interval
            except Exception:
                # A bug must not stop every later push of this process: log, go on.
                log.exception("push round failed")
                next_round = loop.time() + self._interval
            wait = next_round - loop.time()
            if wait > 0:
                # Until the next round, or a request finishing (to be settled).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wakeup.wait()
                self._wakeup.clear()

    async def round(self) -> float:
        """Settle what finished, lease what is due, start its requests; returns the seconds
        until the next round: 0 when more may be due (the lease was filled, or it waited for
        a free slot), else until the next due time, within [ROUND_GAP, the idle wait].

        Requests that finish while a statement runs are settled together by the next round
        (group commit, as app.inbox.acks does). Up to four times the concurrency is leased ahead,
        and only a batch of at least the concurrency at a time: a round's three statements
        then serve many pushes, not the one or two that just finished. (A leased push waits
        at most three batches of requests, each bounded by GATEWAY_TIMEOUT: well within
        the lease.)
        """
        concurrency = self._settings.push_concurrency
        free = 4 * concurrency - len(self._in_flight)
        if free < concurrency:
            # Busy: go on when a request finishes; the finished ones are settled together
            # with the next lease (one statement for a batch, not one per request).
            await self._wakeup.wait()
            self._wakeup.clear()
            return 0.0
        await self._write_settled()
        now = utcnow()
        leased_now, next_due = await lease_and_read(self._db, now, free)
        if len(leased_now) == free:
            wait = 0.0
        elif next_due is None:
            wait = self._idle
        else:
            wait = min(max((next_due - now).total_seconds(), ROUND_GAP), self._idle)
        if not leased_now:
            OLDEST_PENDING.set(0)
            return wait
        oldest_lag = 0.0
        for leased, found in leased_now:
            key = (leased.app_id, leased.pushkey)
            if found.newest is None or found.oldest_at is None:
                # Nothing for this device to be told: settle up to what was read.
                self._settled.append(Settle(*key, found.latest))
                continue
            due = found.oldest_at + self._delay + self._grace
            if leased.attempts == 0 and due > now:
                self._settled.append(Settle(*key, None, due_at=due))
                continue
            oldest_lag = max(oldest_lag, (now - due).total_seconds())
            task = asyncio.create_task(self._push(leased, found, now))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        OLDEST_PENDING.set(oldest_lag)
        return wait

    async def _push(self, leased: Lease, found: Pending, now: datetime) -> None:
        outcome = Settle(leased.app_id, leased.pushkey)
        try:
            async with self._slots:
                outcome = await self._send(leased, found, now)
        except asyncio.CancelledError:
            # Shutting down mid-request: give the lease back so another process retries.
            outcome = release(leased, now)
            raise
        except Exception:
            # Not the gateway's failure but ours (the database, a bug): retry it soon.
            log.exception("push for user %s failed before reaching the gateway", leased.user_id)
            outcome = release(leased, utcnow() + timedelta(seconds=1))
        finally:
            self._settled.append(outcome)
            self._wakeup.set()

    async def _send(self, lease: Lease, pending: Pending, now: datetime) -> Settle:
        assert pending.newest is not None
        message_id, sender, room = pending.newest
        body = await self._notification(lease, pending, message_id, sender, room)
        reply: Reply | None = None
        try:
            reply = await self._client.post(lease.gateway_url, body)
            answer = f"HTTP {reply.status} {reply.text[:300]!r}"
            status = reply.status
        except OSError as exc:  # refused, reset, timed out, TLS failed
            answer = f"{type(exc).__name__}: {exc}"
            status = 0
        except ValueError as exc:  # a URL the client cannot call: it would never pass
            answer = f"{type(exc).__name__}: {exc}"
            status = -1
        # Backoff and age count from the failure, not from the lease: a request that timed
        # out took GATEWAY_TIMEOUT of its own.
        now = utcnow()
        if reply is not None and 200 <= status < 300:
            PUSHES_SENT.inc()
            rejected = _rejected(reply.content)
            if lease.pushkey in rejected:
                PUSHES_REJECTED.inc()
                log.info("gateway rejected pushkey of app %s; pusher deleted", lease.app_id)
                return Settle(lease.app_id, lease.pushkey, pending.latest, delete=True)
            return Settle(lease.app_id, lease.pushkey, pending.latest)
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
            return Settle(
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
        return Settle(lease.app_id, lease.pushkey, pending.latest)

    async def _notification(
        self, lease: Lease, pending: Pending, message_id: int, sender: str, room: str
    ) -> bytes:
        notification: dict[str, Any] = {
            "event_id": str(message_id),
            "room_id": room,  # the conversation as the recipient names it: peer or group
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
            await settle(self._db, settled, utcnow())
        except BaseException:
            self._settled = settled + self._settled
            raise


def _rejected(content: bytes) -> list[str]:
    try:
        rejected = orjson.loads(content).get("rejected", [])
    except (orjson.JSONDecodeError, AttributeError):
        return []
    return [key for key in rejected if isinstance(key, str)] if isinstance(rejected, list) else []
