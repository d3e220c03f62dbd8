"""Wake-ups for long-polls: in-process, and across processes through PostgreSQL LISTEN/NOTIFY.

A wake-up is only a hint to re-read: the database is the truth. So a lost wake-up (a
process dying between commit and NOTIFY, a dropped listener connection) costs a waiting
client latency, up to its timeout, never a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from types import FrameType
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from app.config import driver_arguments

__all__ = ["Notifier", "PgNotifier", "Waiter", "close_on_signals"]

logger = logging.getLogger("msgsync.notifier")

# NOTIFY payloads must stay under 8000 bytes; user ids are at most 64 bytes.
PAYLOAD_BUDGET = 7900
# How long the listener may sit on an idle connection before it proves it is alive.
LISTEN_KEEPALIVE_SECONDS = 30.0
# Between two attempts to reconnect the listener: short enough that wake-ups (and /readyz)
# are back within a second of the database answering again, as a failover or a restart
# ends; long enough that a process retries a few times a second at most.
RECONNECT_MIN_DELAY, RECONNECT_MAX_DELAY = 0.1, 0.5
# How long the listener waits for its own probe NOTIFY before it calls the connection deaf.
PROBE_TIMEOUT_SECONDS = 5.0
# What a NOTIFY carries: users with news, devices that logged out, or the listener's probe.
WAKE, REVOKE, PROBE = "w", "r", "p"


class DeafListener(psycopg.OperationalError):
    """LISTEN succeeded but notifications do not arrive: a transaction pooler in between."""


class Revocable(Protocol):
    def revoke(self, device_ids: Iterable[str]) -> set[str]: ...

    def clear(self) -> None: ...


class Waiter:
    """One long-poll's interest in one user: a future, re-armed before each read."""

    __slots__ = ("future", "user_id")

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

    def rearm(self) -> None:
        """Forget past wake-ups. Call it *before* the read that decides whether to wait, so
        that a commit landing during that read still wakes the wait that follows."""
        if self.future.done():
            self.future = asyncio.get_running_loop().create_future()


class Notifier:
    """Waiters by user, woken after commit. This class alone serves one process (SQLite)."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[Waiter]] = {}
        self.closing = False
        self.stats: dict[str, int] = {"wakeups_published": 0, "wakeups_received": 0}
        # The process's token cache, told of logouts here and in other processes.
        self.tokens: Revocable | None = None

    async def start(self) -> None:
        """Nothing to connect in-process."""

    async def stop(self) -> None:
        self.close()

    def subscribe(self, user_id: str) -> Waiter:
        waiter = Waiter(user_id)
        self._waiters.setdefault(user_id, set()).add(waiter)
        if self.closing:
            waiter.wake()
        return waiter

    def unsubscribe(self, waiter: Waiter) -> None:
        group = self._waiters.get(waiter.user_id)
        if group is not None:
            group.discard(waiter)
            if not group:
                del self._waiters[waiter.user_id]

    def wake_local(self, user_ids: Iterable[str]) -> None:
        for user_id in user_ids:
            for waiter in self._waiters.get(user_id, ()):
                waiter.wake()

    def wake_all(self) -> None:
        for group in self._waiters.values():
            for waiter in group:
                waiter.wake()

    def notify(self, user_ids: Iterable[str]) -> None:
        """These users have news. Call only after the change committed."""
        self.stats["wakeups_published"] += 1
        self.wake_local(user_ids)

    def revoke(self, device_ids: Iterable[str]) -> None:
        """These devices logged out: forget their tokens. Call only after the commit.

        Their users' waiting long-polls are woken too: a wake-up finds the token gone and
        authenticates again, so a logged-out device stops receiving at once."""
        if self.tokens is not None:
            self.wake_local(self.tokens.revoke(device_ids))

    def close(self) -> None:
        """Shutting down: answer every waiting long-poll now, and new ones at once."""
        self.closing = True
        self.wake_all()

    @property
    def waiting(self) -> int:
        return sum(len(group) for group in self._waiters.values())

    @property
    def healthy(self) -> bool:
        return True


def libpq_url(database_url: str) -> str:
    """The SQLAlchemy URL (postgresql+psycopg://) as a libpq connection string, read as the
    pools read it: several hosts become libpq's lists (host=h1,h2 port=p1,p2), which a
    rendered URL would spell as one host named "h1:p1" instead."""
    return make_conninfo("", **driver_arguments(database_url))


class PgNotifier(Notifier):
    """Cross-process wake-ups: one LISTEN connection per process, coalesced NOTIFYs.

    notify() wakes local waiters at once and queues the user ids; one NOTIFY (per 8 kB of
    ids) carries them to the other processes, in rounds at most `interval` seconds apart.
    Sending transactions never NOTIFY themselves: PostgreSQL serialises the commits of
    notifying transactions on a global lock, which more than halves small-commit throughput.
    """

    def __init__(
        self, database_url: str, channel: str, interval: float, connect_timeout: int = 2
    ) -> None:
        super().__init__()
        self._conninfo = libpq_url(database_url)
        # Per host tried: an attempt that hangs (a host that swallows packets) must not hold
        # the listener past the moment the database answers again.
        self._connect_timeout = connect_timeout
        self._channel = channel
        self._interval = interval
        self._next_round = 0.0  # loop time before which no new NOTIFY round starts
        # Our own NOTIFYs come back to us; the origin tag lets us skip them.
        self._origin = secrets.token_hex(4)
        self._pending: dict[str, set[str]] = {WAKE: set(), REVOKE: set()}
        self._flusher: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._publisher: psycopg.AsyncConnection[Any] | None = None
        self.listening = asyncio.Event()
        # Called when the listener's connection drops: the database restarted or failed
        # over, so the process's pooled connections are most likely dead too.
        self.on_connection_lost: Callable[[], Awaitable[None]] | None = None
        self.stats.update(notify_statements=0, listener_reconnects=0, publish_failures=0)

    async def _connect(self, role: str) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self._conninfo,
            autocommit=True,
            application_name=f"msgsync-{role}",
            connect_timeout=self._connect_timeout,
            # Half-open connections (a peer that vanished) are found by TCP keepalives.
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen_forever(), name="msgsync-listener")
        # Report ready only once cross-process wake-ups flow (or after a bounded wait: a
        # database that is down now is retried in the background).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self.listening.wait()

    async def stop(self) -> None:
        self.close()
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._publisher is not None:
            await self._publisher.close()

    @property
    def healthy(self) -> bool:
        return self.listening.is_set()

    def notify(self, user_ids: Iterable[str]) -> None:
        ids = set(user_ids)
        self.wake_local(ids)
        self.stats["wakeups_published"] += 1
        self._queue(WAKE, ids)

    def revoke(self, device_ids: Iterable[str]) -> None:
        ids = set(device_ids)
        super().revoke(ids)
        self._queue(REVOKE, ids)

    def _queue(self, kind: str, ids: set[str]) -> None:
        self._pending[kind] |= ids
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        """Publish rounds at most `interval` apart, each carrying everything queued.

        After a quiet spell the first wake-up goes out on the next turn of the event loop
        (with whatever else that turn queued); under load, ids gather for the interval.
        Latency stays low when idle and NOTIFYs stay few when busy.
        """
        loop = asyncio.get_running_loop()
        try:
            while any(self._pending.values()):
                await asyncio.sleep(max(0.0, self._next_round - loop.time()))
                self._next_round = loop.time() + self._interval
                pending, self._pending = self._pending, {WAKE: set(), REVOKE: set()}
                await self._publish(
                    [p for kind, ids in pending.items() for p in self._payloads(kind, ids)]
                )
        finally:
            self._flusher = None

    def _payloads(self, kind: str, ids: set[str]) -> Iterator[str]:
        """`origin:kind:id,id,...`, split to stay under PostgreSQL's payload limit."""
        chunk: list[str] = []
        size = 0
        for one in sorted(ids):
            if chunk and size + len(one) + 1 > PAYLOAD_BUDGET:
                yield f"{self._origin}:{kind}:{','.join(chunk)}"
                chunk, size = [], 0
            chunk.append(one)
            size += len(one) + 1
        if chunk:
            yield f"{self._origin}:{kind}:{','.join(chunk)}"

    async def _prove_listening(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Send ourselves a NOTIFY and wait for it on the listener connection.

        A LISTEN through PgBouncer in transaction mode is accepted, but the notifications
        reach a server connection no longer linked to us and are dropped: waiters would then
        sleep to their timeout and logouts would not cross processes, while all looked well.
        Only a round trip proves the connection hears."""
        probe = f"{self._origin}:{PROBE}:{secrets.token_hex(4)}"
        await self._publish([probe])
        async for notify in conn.notifies(timeout=PROBE_TIMEOUT_SECONDS):
            if notify.payload == probe:
                return
            self._on_payload(notify.payload)
        raise DeafListener(
            "LISTEN was accepted but our own NOTIFY did not arrive: "
            "MSGSYNC_DATABASE_SESSION_URL must be a direct session, not a transaction pooler"
        )

    async def _publish(self, payloads: list[str]) -> None:
        for attempt in (1, 2):
            try:
                if self._publisher is None or self._publisher.closed:
                    self._publisher = await self._connect("publisher")
                for payload in payloads:
                    await self._publisher.execute(
                        "SELECT pg_notify(%s, %s)", (self._channel, payload)
                    )
                    self.stats["notify_statements"] += 1
                return
            except psycopg.Error as exc:
                self.stats["publish_failures"] += 1
                logger.warning("NOTIFY failed (attempt %d): %s", attempt, exc)
                if self._publisher is not None:
                    await self._publisher.close()
                self._publisher = None
        # Given up: other processes' waiters re-read at their timeout, and a revoked token
        # lives on in their caches until its time to live runs out.

    def _on_payload(self, payload: str) -> None:
        origin, kind, ids = payload.split(":", 2) if payload.count(":") >= 2 else ("", "", "")
        if origin == self._origin or not ids:
            return
        if kind == WAKE:
            self.stats["wakeups_received"] += 1
            self.wake_local(ids.split(","))
        elif kind == REVOKE:
            super().revoke(ids.split(","))

    def _missed_messages(self) -> None:
        """NOTIFYs sent while we were not listening are lost: every waiter re-reads rather
        than sleeps through a message, and every cached token is checked again."""
        if self.tokens is not None:
            self.tokens.clear()
        self.wake_all()

    async def _listen_forever(self) -> None:
        delay = RECONNECT_MIN_DELAY
        while True:
            try:
                async with await self._connect("listener") as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    await self._prove_listening(conn)
                    self.listening.set()
                    self._missed_messages()
                    delay = RECONNECT_MIN_DELAY
                    while True:
                        async for notify in conn.notifies(timeout=LISTEN_KEEPALIVE_SECONDS):
                            self._on_payload(notify.payload)
                        await conn.execute("SELECT 1")  # proves the idle connection is alive
            except psycopg.Error as exc:
                lost = self.listening.is_set() and not isinstance(exc, DeafListener)
                self.listening.clear()
                self.stats["listener_reconnects"] += 1
                logger.warning("listener connection lost (%s); reconnecting in %.1fs", exc, delay)
                self._missed_messages()
                if lost and self.on_connection_lost is not None:
                    await self.on_connection_lost()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY)


@contextlib.contextmanager
def close_on_signals(notifier: Notifier) -> Iterator[None]:
    """On SIGTERM/SIGINT, answer the waiting long-polls before the server drains connections.

    uvicorn's own handler stops accepting and then waits for open requests to finish; a
    long-poll would hold that wait for its whole timeout. Chaining in front of it lets every
    waiter return its (empty) page at once. Only the main thread may set signal handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handler(sig: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(notifier.close)
        chained = previous.get(sig)
        if callable(chained):
            chained(sig, frame)
        else:  # SIG_DFL or SIG_IGN: give the signal its usual effect
            signal.signal(sig, chained if chained is not None else signal.SIG_DFL)
            signal.raise_signal(sig)

    for caught in (signal.SIGTERM, signal.SIGINT):
        previous[caught] = signal.signal(caught, handler)
    try:
        yield
    finally:
        for number, chained in previous.items():
            if signal.getsignal(number) is handler:
                signal.signal(number, chained)
