"""The async client: session, outbox, and the sync loop (apply, persist, then ack)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field, replace

import httpx

from msgsync_client.acker import Acker
from msgsync_client.api import Api, Transient
from msgsync_client.backoff import Backoff
from msgsync_client.errors import (
    ApiError,
    HistoryChanged,
    MsgsyncError,
    NotLoggedIn,
    Unauthorized,
    Unavailable,
)
from msgsync_client.models import (
    Message,
    OutboxItem,
    OutboxState,
    Page,
    ReadReceipt,
    Recall,
    Session,
)
from msgsync_client.store import Store

__all__ = ["Client", "Event", "Gap", "Handlers", "Options", "SyncResult"]

log = logging.getLogger("msgsync_client")


@dataclass
class Options:
    page_limit: int = 1000  # the server's maximum: a catch-up takes the fewest round trips
    long_poll_timeout: float = 30.0  # below common proxies' 60 s idle timeouts
    ack_delay: float = 1.0
    ack_every: int = 100
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    send_attempts: int = 8
    sync_attempts: int | None = None  # None: a sync keeps retrying until the server is back


@dataclass
class Handlers:
    """Callbacks, called after the change is committed to the local store."""

    on_message: Callable[[Message], None] | None = None
    on_recall: Callable[[Recall], None] | None = None
    on_read: Callable[[ReadReceipt], None] | None = None
    on_gap: Callable[[Page], None] | None = None  # history_fallback: operations were pruned
    # The server's history went back or was rewritten (409 since_ahead, history_rewritten):
    # the stream was forgotten and syncs again from 0; called with the server's latest.
    on_reset: Callable[[int], None] | None = None
    on_outbox: Callable[[OutboxItem], None] | None = None


@dataclass
class SyncResult:
    pages: int = 0
    applied: int = 0
    cursor: int = 0
    history_fallback: bool = False
    recovered: bool = False
    latest_version: int = 0
    messages: list[Message] = field(default_factory=list)
    recalls: list[Recall] = field(default_factory=list)
    reads: list[ReadReceipt] = field(default_factory=list)


@dataclass(frozen=True)
class Gap:
    """A history_fallback page: operations (recalls, receipts) up to here were pruned."""

    next_since: int


Event = Message | Recall | ReadReceipt | Gap


class Client:
    def __init__(
        self,
        store: Store,
        server: str | None = None,
        options: Options | None = None,
        handlers: Handlers | None = None,
        *,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.store = store
        self.options = options or Options()
        self.handlers = handlers or Handlers()
        session = store.session()
        base = server or (session.server if session else None)
        if base is None:
            raise ValueError("no server URL given and no session in the store")
        self.api = Api(base, session.access_token if session else None, http=http)
        self._acker: Acker | None = None
        # Bumped by login and logout: a sync page fetched before either is not applied
        # after it (it belongs to a session that is over, maybe another user's).
        self._generation = 0
        # Held while a page is written, so logout's clear waits for it rather than being
        # followed by it.
        self._applying = asyncio.Lock()

    # -- session ---------------------------------------------------------------------------

    @property
    def session(self) -> Session:
        session = self.store.session()
        if session is None:
            raise NotLoggedIn()
        return session

    async def login(self, user_id: str, password: str, device_name: str = "") -> Session:
        """Log in on this store. The store keeps its data only for the same account (server
        and user) logging in again, e.g. after its session ended with a 401: it continues
        from its cursor. Anything else in the store (another user's stream and outbox, or
        data without a session, left by a crash or an older SDK) is forgotten first: it
        would show this user another's messages, send another's queued messages as this
        user, and make its first sync ask from another's cursor, skipping its own entries."""
        data = await self.api.login(user_id, password, device_name)
        self._generation += 1  # a page fetched for the previous session is not applied
        if self._acker is not None:
            # The old device's acker may hold its 401: the new session starts clean.
            await self._acker.close(final_ack=False)
            self._acker = None
        session = Session(
            self.api.base_url, data["user_id"], data["device_id"], data["access_token"]
        )
        current = self.store.session()
        same_account = (
            current is not None
            and current.server == session.server
            and current.user_id == session.user_id
        )
        async with self._applying:  # after a page being applied, never under it
            if not same_account:
                self.store.clear()
            self.store.set_session(session)
        self.api.token = session.access_token
        return session

    async def logout(self) -> bool:
        """Forget the user on this device, then end the session on the server.

        The store is cleared first (session and token, stream, cursor, read receipts,
        outbox: pending sends are dropped, never delivered as the next user), so a crash or
        an unreachable server cannot leave the user's data behind on a shared computer.
        Then one `POST /logout` with the old token. Returns True when the server confirmed
        (204, or 401: the session was already over there), False when it could not be told
        (no answer, 5xx, another error): the data here is gone all the same, but the device
        stays in the user's device list, and its token valid, until it is removed from
        another device (`DELETE /devices/{id}`). Without a session it only clears the store
        (and returns True: there is nothing to end on the server)."""
        session = self.store.session()
        self._generation += 1  # a page in flight for this session is dropped, not applied
        if self._acker is not None:
            # Nothing more is acked for a device that is going away.
            await self._acker.close(final_ack=False)
            self._acker = None
        async with self._applying:
            self.store.clear()
        self.api.token = None
        if session is None:
            return True
        try:
            await self.api.logout(session.access_token)
        except Unauthorized:
            return True  # already over on the server
        except (Transient, MsgsyncError) as exc:
            log.info("logout: the server was not told (%s); local data is cleared", exc)
            return False
        return True

    def _backoff(self) -> Backoff:
        return Backoff(self.options.backoff_base, self.options.backoff_cap)

    # -- outbox ----------------------------------------------------------------------------

    def enqueue(self, to: str, body: str) -> OutboxItem:
        """Store the send with its client_msg_id before any attempt: a retry after a crash or
        a lost answer reuses the id, and the server answers the first result."""
        self.session  # noqa: B018
        item = OutboxItem(uuid.uuid4().hex, to, body, OutboxState.PENDING)
        self.store.add_outbox(item)
        self._outbox_changed(item)
        return item

    async def deliver(self, item: OutboxItem) -> OutboxItem:
        generation = self._generation
        backoff = self._backoff()
        error = "unavailable"
        for _ in range(self.options.send_attempts):
            try:
                message, _version = await self.api.send(item.to, item.body, item.client_msg_id)
            except Transient as exc:
                log.info("send %s: %s; retrying", item.client_msg_id, exc)
                await asyncio.sleep(backoff.next_delay(exc.retry_after))
                continue
            except Unauthorized:
                raise  # stays pending: a new login of the same user delivers it
            except ApiError as exc:
                error = exc.code
                break
            sent = replace(item, state=OutboxState.SENT, message_id=message.id, error=None)
            return self._store_outcome(sent, generation)
        failed = replace(item, state=OutboxState.FAILED, error=error)
        return self._store_outcome(failed, generation)

    def _store_outcome(self, item: OutboxItem, generation: int) -> OutboxItem:
        # Only while the session that queued the send lasts: after a logout, writing it
        # would put the user's send back into a cleared store.
        if generation != self._generation:
            raise NotLoggedIn()
        self.store.update_outbox(item)
        self._outbox_changed(item)
        return item

    async def send(self, to: str, body: str) -> OutboxItem:
        return await self.deliver(self.enqueue(to, body))

    async def resume_outbox(self) -> list[OutboxItem]:
        """Deliver the sends a previous process left pending, oldest first."""
        for item in self.store.outbox():
            if item.state is OutboxState.PENDING:
                await self.deliver(item)
        return self.store.outbox()

    def _outbox_changed(self, item: OutboxItem) -> None:
        if self.handlers.on_outbox:
            self.handlers.on_outbox(item)

    # -- sync ------------------------------------------------------------------------------

    @property
    def acker(self) -> Acker:
        if self._acker is None:
            self._acker = Acker(
                self.api.ack,
                self.store.set_acked,
                self.store.acked(),
                ack_delay=self.options.ack_delay,
                ack_every=self.options.ack_every,
                backoff=self._backoff(),
            )
        return self._acker

    async def _fetch(self, since: int, since_id: str | None, timeout: float) -> Page:
        backoff = self._backoff()
        attempts = 0
        while True:
            if self.acker.error is not None:
                raise self.acker.error
            try:
                return await self.api.sync(since, self.options.page_limit, timeout, since_id)
            except Transient as exc:
                attempts += 1
                if (
                    self.options.sync_attempts is not None
                    and attempts >= self.options.sync_attempts
                ):
                    raise Unavailable(f"sync failed {attempts} times: {exc}") from exc
                delay = backoff.next_delay(exc.retry_after)
                log.info("sync: %s; retrying in %.2f s", exc, delay)
                await asyncio.sleep(delay)

    async def sync_page(self, timeout: float = 0, result: SyncResult | None = None) -> Page:
        """One step of the loop: fetch from the stored cursor, apply and persist, then let
        the acker know. since_ahead and history_rewritten run the recovery and fetch again
        from 0."""
        result = result or SyncResult()
        generation = self._generation
        page = await self._fetch_from_cursor(timeout, result, generation)
        await self._apply(page, result, generation)
        return page

    async def _fetch_from_cursor(self, timeout: float, result: SyncResult, generation: int) -> Page:
        self.session  # noqa: B018 (raises NotLoggedIn)
        try:
            # The id of the entry at the cursor goes with it: the server answers 409
            # history_rewritten when that entry is another one now.
            return await self._fetch(self.store.cursor(), self.store.cursor_id(), timeout)
        except HistoryChanged as exc:
            if generation != self._generation:
                raise NotLoggedIn() from exc  # the session it was asked for is over
            self._recover(exc)
            result.recovered = True
            return await self._fetch(0, None, timeout)

    async def _apply(self, page: Page, result: SyncResult, generation: int) -> None:
        async with self._applying:
            if generation != self._generation:
                # Fetched for a session that logout (or a new login) has ended: applying it
                # would put that user's entries back into a cleared store.
                raise NotLoggedIn()
            # Entries and cursor in one local transaction, off the event loop (a commit
            # waits for the disk), so a prefetched request and the acker keep going.
            applied = await asyncio.to_thread(self.store.apply_page, page)
        if generation != self._generation:
            # Logged out while the page was written: the clear that follows removes it; the
            # app and the acker must not hear of it.
            raise NotLoggedIn()
        cursor = self.store.cursor()
        # Only now, with the page durable, may the acker tell the server.
        self.acker.applied(cursor, applied.count)
        result.pages += 1
        result.applied += applied.count
        result.cursor = cursor
        result.latest_version = page.latest_version
        result.history_fallback |= page.history_fallback
        result.messages.extend(applied.messages)
        result.recalls.extend(applied.recalls)
        result.reads.extend(applied.reads)
        self._dispatch(page, applied.messages, applied.recalls, applied.reads)

    def _recover(self, exc: HistoryChanged) -> None:
        """The server no longer has the history we saw: it is behind our cursor
        (since_ahead), or the entry at our cursor is another one (history_rewritten): it was
        restored from an older backup, or a replica that missed commits was promoted.
        Versions and message ids we have seen may name other changes now, and we cannot
        tell which, so no local version can be trusted (restarting from `latest_version`
        would keep messages the server no longer has): forget the stream and re-sync from
        0, which returns every message the server still has (from its index table where its
        offline store was pruned). The outbox is kept and pending sends stay idempotent."""
        log.warning(
            "the server's history changed under the local cursor %s (%s, latest %s): "
            "re-syncing from 0",
            self.store.cursor(),
            exc.code,
            exc.latest_version,
        )
        self.store.reset_stream()
        self.acker.reset()
        if self.handlers.on_reset:
            self.handlers.on_reset(exc.latest_version)

    def _dispatch(
        self,
        page: Page,
        messages: list[Message],
        recalls: list[Recall],
        reads: list[ReadReceipt],
    ) -> None:
        h = self.handlers
        if page.history_fallback and h.on_gap:
            h.on_gap(page)
        for m in messages:
            if h.on_message:
                h.on_message(m)
        for r in recalls:
            if h.on_recall:
                h.on_recall(r)
        for receipt in reads:
            if h.on_read:
                h.on_read(receipt)

    async def catch_up(self, max_pages: int | None = None) -> SyncResult:
        """Sync without waiting until the server says there is no more (has_more false)."""
        result = SyncResult()
        generation = self._generation
        page = await self._fetch_from_cursor(0, result, generation)
        while True:
            more = page.has_more and (max_pages is None or result.pages + 1 < max_pages)
            # Ask for the next page before storing this one, so the server and the network
            # work while the disk does. Safe: the request depends only on next_since, and
            # the next page is applied only after this one committed (a failure here drops
            # the prefetched page; the stored cursor still says where to resume).
            ahead = (
                asyncio.create_task(self._fetch(page.next_since, page.cursor_id, 0))
                if more
                else None
            )
            try:
                await self._apply(page, result, generation)
            except BaseException:
                if ahead is not None:
                    ahead.cancel()
                raise
            if ahead is None:
                return result
            try:
                page = await ahead
            except HistoryChanged:
                page = await self._fetch_from_cursor(0, result, generation)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """The long-poll loop, until `stop` is set or the session ends (Unauthorized)."""
        has_more = True  # catch up first: long-poll only once the server has nothing more
        while stop is None or not stop.is_set():
            page = await self.sync_page(0 if has_more else self.options.long_poll_timeout)
            has_more = page.has_more

    async def events(self, stop: asyncio.Event | None = None) -> AsyncGenerator[Event, None]:
        """The long-poll loop as an async iterator of what each page changed, in version
        order within a kind (the callbacks see the same)."""
        has_more = True
        while stop is None or not stop.is_set():
            result = SyncResult()
            timeout = 0 if has_more else self.options.long_poll_timeout
            page = await self.sync_page(timeout, result)
            has_more = page.has_more
            if page.history_fallback:
                yield Gap(page.next_since)
            changes: list[Event] = [*result.messages, *result.recalls, *result.reads]
            for event in changes:
                yield event

    async def flush_acks(self) -> int:
        return await self.acker.flush()

    async def aclose(self) -> None:
        if self._acker is not None:
            await self._acker.close(final_ack=self.store.session() is not None)
        await self.api.aclose()
        self.store.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
