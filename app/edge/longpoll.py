"""The long-poll: a GET /sync that has to wait does so here, outside the request stack.

Shaped like Synapse's wait_for_events: register interest first, then read in one short
statement (its connection goes back to the pool), then wait on an in-memory future with a
deadline, holding no connection and no thread; on a wake-up read again, and loop if that
read comes back empty. The read is the ordinary immediate sync, run through the whole
application; only the wait happens in this thin ASGI layer. So a waiting device costs its
connection, one future and one task, not the framework's per-request state (a third of
the memory it would cost waiting inside the endpoint).

This layer sits inside the front door (app.edge.frontdoor): a woken long-poll's answer gets the
request id, gzip, CORS and metrics as any other answer does.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.accounts.auth import TokenCache
from app.inbox.sync import fetch_since, render_page
from app.metrics import WAITING
from app.notifier import Notifier, Waiter

__all__ = ["PATH", "TICKET", "LongPoll", "Ticket"]

# The path whose waits this layer takes.
PATH = "/sync"
# The scope key under which the sync endpoint finds the ticket of a long-poll.
TICKET = "msgsync.longpoll"


class Ticket:
    """What the endpoint tells the waiting layer about its (validated, authorised) read."""

    __slots__ = ("device_id", "empty", "limit", "position", "since_id", "user_id", "waiter")

    def __init__(self) -> None:
        self.waiter: Waiter | None = None  # subscribed by the endpoint, before its read
        self.empty = False  # the read found nothing newer than `since`
        self.user_id = ""
        self.device_id = ""
        self.position = 0
        self.limit = 0
        self.since_id: str | None = None


def requested_timeout(query_string: bytes) -> float:
    """The `timeout` query parameter, or 0 when absent or malformed (the endpoint then
    answers at once, or rejects the request)."""
    for key, value in parse_qsl(query_string.decode("latin-1")):
        if key == "timeout":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 0.0


class LongPoll:
    def __init__(self, app: ASGIApp, concurrent_reads: int, per_device: int = 0) -> None:
        self.app = app
        # Thousands of devices reconnect at once after a deploy or a network blip. Their
        # reads queue here, each holding only this layer's few objects, rather than inside
        # the application, each holding a whole request's state while it waits for one of
        # the pool's connections; memory that a burst took is seldom given back.
        self._reads = asyncio.Semaphore(concurrent_reads)
        # At most `per_device` long-polls wait at once per device in this process (0: no
        # bound; MSGSYNC_LONGPOLLS_PER_DEVICE). One token held 1,000 at once: each is a
        # socket, a task and a future. One more ends the device's oldest, answered as its
        # timeout would be: a client whose connections died without a close (a phone
        # changing networks) must not be locked out by its own stale polls, so the newest
        # wins. Each device's waiting polls, oldest first (a dict keeps insertion order),
        # with the future that ends each one's wait.
        self._per_device = per_device
        self._parked: dict[str, dict[Ticket, asyncio.Future[None]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        timeout = 0.0
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == PATH:
            timeout = requested_timeout(scope["query_string"])
        if not timeout > 0:
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        notifier: Notifier = state.notifier
        tokens: TokenCache = state.tokens
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(timeout, state.settings.max_timeout)
        ticket = Ticket()
        watcher: asyncio.Future[None] | None = None
        parked = False
        try:
            if not await self._read(scope, ticket, send, deadline, notifier):
                return
            assert ticket.waiter is not None
            parked = True
            WAITING.inc()
            watcher = asyncio.ensure_future(_disconnected(receive))
            # Ended early when a newer long-poll of the device takes its place.
            ended = self._park(ticket, loop) if self._per_device else None
            waits = (ticket.waiter.future, watcher) + (() if ended is None else (ended,))
            while True:
                done, _ = await asyncio.wait(
                    waits, timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED
                )
                if watcher in done:
                    return  # the client hung up: nobody to answer, and the waiter goes
                if ended is not None and ended in done:
                    # Ended by a newer long-poll of the device: answered as at its timeout.
                    deadline = loop.time()
                if not tokens.holds(ticket.device_id):
                    # Logged out, or its cached token expired: read through the application
                    # again, which authenticates (401 for a logged-out device).
                    if not await self._read(scope, ticket, send, deadline, notifier):
                        return
                    continue
                # A wake-up is only a hint: read again, the database is the truth. The
                # request was validated and authorised by the first read; this one is the
                # bare query, so that waking thousands of devices stays cheap. It reads the
                # primary, where the commit that woke it is: a replica may not have
                # replayed it yet, and its lag would add to the wake-up's latency.
                ticket.waiter.rearm()
                try:
                    # The woken read checks `since_id` too: a failover during the wait can
                    # have rewritten the history the device stands on.
                    page = await fetch_since(
                        state.db,
                        ticket.user_id,
                        ticket.position,
                        ticket.limit,
                        since_id=ticket.since_id,
                        primary=True,
                    )
                except Exception:
                    # Let the application answer the failure as it answers any other (a
                    # 409 too: the application's read finds it again).
                    await self._read(scope, ticket, send, loop.time(), notifier)
                    return
                if (
                    page.entries
                    or page.next_since != ticket.position
                    or loop.time() >= deadline
                    or notifier.closing
                ):
                    # A woken device is not to be pushed for what it got (app.push.pushers).
                    state.seen.saw(ticket.device_id, page.next_since)
                    await _answer(send, render_page(page))
                    return
        finally:
            if parked:
                WAITING.dec()
                if self._per_device:
                    self._unpark(ticket)
            if ticket.waiter is not None:
                notifier.unsubscribe(ticket.waiter)
            if watcher is not None:
                watcher.cancel()

    def _park(self, ticket: Ticket, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """Counts the long-poll among its device's waiting ones; ends the oldest when there
        are more than the bound. Returns the future that ends this one's wait."""
        polls = self._parked.setdefault(ticket.device_id, {})
        ended: asyncio.Future[None] = loop.create_future()
        polls[ticket] = ended
        if len(polls) > self._per_device:
            oldest = next(iter(polls))
            polls.pop(oldest).set_result(None)
        return ended

    def _unpark(self, ticket: Ticket) -> None:
        polls = self._parked.get(ticket.device_id)
        if polls is not None:
            polls.pop(ticket, None)
            if not polls:
                del self._parked[ticket.device_id]

    async def _read(
        self, scope: Scope, ticket: Ticket, send: Send, deadline: float, notifier: Notifier
    ) -> bool:
        """One immediate sync through the application. Answers the client and returns False
        when that is the answer; True when the long-poll should wait.

        The scope copy and the captured answer are dropped when this returns: the layers
        inside hang their per-request state on the scope, and a waiting device should not
        keep it (nor the empty page it will not be sent).
        """
        ticket.empty = False
        answer: list[Message] = []

        async def keep(message: Message) -> None:
            answer.append(message)

        try:
            async with self._reads:
                await self.app({**scope, TICKET: ticket}, _no_body, keep)
        except Exception:
            # The application answered a failure (500 problem details) and re-raised it for
            # the server's log: the client still gets that answer.
            for message in answer:
                await send(message)
            raise
        remaining = deadline - asyncio.get_running_loop().time()
        if ticket.empty and ticket.waiter is not None and remaining > 0 and not notifier.closing:
            return True
        for message in answer:
            await send(message)
        return False


async def _answer(send: Send, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _no_body() -> Message:
    """The inner reads' request body: a GET has none."""
    return {"type": "http.request", "body": b"", "more_body": False}


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
