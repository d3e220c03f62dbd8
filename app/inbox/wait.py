"""GET /sync: one read path and one wait, whoever serves the request.

Shaped like Synapse's wait_for_events: register interest first, then read in one short
statement (its connection goes back to the pool), then wait on an in-memory future with a
deadline, holding no connection and no thread; on a wake-up read again, and loop if that
read comes back empty. The edge (app.edge.hotpaths) calls wait_for_page for a plain
request, outside the framework, so a waiting device costs its connection, one future and
one task, not the framework's per-request state (a third of the memory it would cost
waiting inside the endpoint); the route (app.api.sync) calls it for the requests the edge
hands over (no bearer token, a query that does not validate).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from app.accounts.auth import TokenCache, authenticate
from app.errors import AppError
from app.groups.views import with_group_news
from app.inbox.sync import Page, device_cursor, fetch_since, render_page
from app.metrics import WAITING
from app.store import open_store

if TYPE_CHECKING:
    from starlette.types import Receive

    from app.config import Settings
    from app.db.engine import Database
    from app.notifier import Notifier, Waiter
    from app.push.pushers import SyncedCursors
    from app.schemas import SyncQuery

__all__ = ["LongPolls"]


class LongPolls:
    """A process's syncs: the bound on concurrent reads and on each device's waiting polls."""

    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        tokens: TokenCache,
        seen: SyncedCursors,
        settings: Settings,
    ) -> None:
        self._db = db
        self._groups = open_store(db).groups
        self._notifier = notifier
        self._tokens = tokens
        self._seen = seen
        self._settings = settings
        # Thousands of devices reconnect at once after a deploy or a network blip. Their
        # reads queue here, each holding only a few objects, rather than each holding a
        # whole request's state while it waits for one of the pool's connections; memory
        # that a burst took is seldom given back.
        self._reads = asyncio.Semaphore(settings.db_pool_size + settings.db_max_overflow)
        # At most `per_device` long-polls wait at once per device in this process (0: no
        # bound; MSGSYNC_LONGPOLLS_PER_DEVICE). One token held 1,000 at once: each is a
        # socket, a task and a future. One more ends the device's oldest, answered as its
        # timeout would be: a client whose connections died without a close (a phone
        # changing networks) must not be locked out by its own stale polls, so the newest
        # wins. Each device's waiting polls, oldest first (a dict keeps insertion order),
        # by the future that ends each one's wait.
        self._per_device = settings.longpolls_per_device
        self._parked: dict[str, dict[asyncio.Future[None], None]] = {}

    async def wait_for_page(
        self, digest: bytes, query: SyncQuery, receive: Receive
    ) -> bytes | None:
        """The page to answer `query` with (JSON), waiting up to its timeout for a change
        when nothing is newer than its `since`; None when the client hung up while waiting.

        `digest` is the token's (token_digest): its device is authenticated here, from the
        cache or the database, and again when its token leaves the cache while it waits (a
        logout: answered 401). `receive` is the request's, watched for the client hanging
        up. Raises AppError for what the contract answers as a problem.
        """
        settings = self._settings
        notifier = self._notifier
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(query.timeout, settings.max_timeout)
        waiter: Waiter | None = None
        watcher: asyncio.Future[None] | None = None
        ended: asyncio.Future[None] | None = None
        try:
            async with self._reads:
                # A token not cached yet is read here, in turn with the reads: after a
                # deploy every device's is. Authenticated first, as the route does.
                device = await authenticate(self._db, self._tokens, settings, digest)
                limit = settings.sync_default_limit if query.limit is None else query.limit
                if limit > settings.sync_max_limit:
                    raise AppError(
                        422,
                        "limit_out_of_range",
                        f"limit must be between 1 and {settings.sync_max_limit}",
                    )
                if query.timeout > 0:
                    # Subscribed *before* the read, so that a commit landing during the read
                    # still wakes the wait that follows.
                    waiter = notifier.subscribe(device.user_id)
                position = query.since
                if position is None:
                    position = await device_cursor(self._db, device.device_id)
                page = await self._read(device.user_id, position, limit, query.since_id)
            while (
                waiter is not None
                and not page.entries
                and page.next_since == position
                and loop.time() < deadline
                and not notifier.closing
            ):
                if watcher is None:
                    WAITING.inc()
                    watcher = asyncio.ensure_future(_disconnected(receive))
                    if self._per_device:
                        # Ended early when a newer long-poll of the device takes its place.
                        ended = self._park(device.device_id, loop)
                waits = (
                    (waiter.future, watcher) if ended is None else (waiter.future, watcher, ended)
                )
                done, _ = await asyncio.wait(
                    waits, timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED
                )
                if watcher in done:
                    return None  # the client hung up: nobody to answer, and the waiter goes
                if ended is not None and ended in done:
                    # Ended by a newer long-poll of the device: answered as at its timeout.
                    deadline = loop.time()
                if not self._tokens.holds(device.device_id):
                    # Logged out (401 here), or its cached token expired (cached again).
                    device = await authenticate(self._db, self._tokens, settings, digest)
                # A wake-up is only a hint: read again, the database is the truth. It reads
                # the primary, where the commit that woke it is: a replica may not have
                # replayed it yet, and its lag would add to the wake-up's latency.
                waiter.rearm()
                async with self._reads:
                    # The woken read checks `since_id` too: a failover during the wait can
                    # have rewritten the history the device stands on.
                    page = await self._read(
                        device.user_id, position, limit, query.since_id, primary=True
                    )
        finally:
            if watcher is not None:
                WAITING.dec()
                watcher.cancel()
            if ended is not None:
                self._unpark(device.device_id, ended)
            if waiter is not None:
                notifier.unsubscribe(waiter)
        # The device has these entries now: it is not to be pushed for them (app.push.pushers).
        self._seen.saw(device.device_id, page.next_since)
        return render_page(page)

    async def _read(
        self,
        user_id: str,
        position: int,
        limit: int,
        since_id: str | None,
        *,
        primary: bool = False,
    ) -> Page:
        page = await fetch_since(
            self._db, user_id, position, limit, since_id=since_id, primary=primary
        )
        # At the end of a pruned range: the groups' news for it (app.groups.views).
        return await with_group_news(self._groups, user_id, page)

    def _park(self, device_id: str, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """Counts a long-poll among its device's waiting ones; ends the oldest when there
        are more than the bound. Returns the future that ends this one's wait."""
        polls = self._parked.setdefault(device_id, {})
        ended: asyncio.Future[None] = loop.create_future()
        polls[ended] = None
        if len(polls) > self._per_device:
            oldest = next(iter(polls))
            del polls[oldest]
            oldest.set_result(None)
        return ended

    def _unpark(self, device_id: str, ended: asyncio.Future[None]) -> None:
        polls = self._parked.get(device_id)
        if polls is not None:
            polls.pop(ended, None)
            if not polls:
                del self._parked[device_id]


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
