"""Delayed cumulative acks: one ack covers everything durably applied so far.

Like TCP's delayed ack: wait `ack_delay` after the first un-acked entry, or until
`ack_every` entries are waiting, whichever comes first; at most one ack in flight, so a fast
catch-up sends one ack per `ack_every` entries at most, never one per page."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from msgsync_client.api import Transient
from msgsync_client.backoff import Backoff
from msgsync_client.errors import ApiError, Unauthorized

__all__ = ["Acker"]

log = logging.getLogger("msgsync_client")


class Acker:
    def __init__(
        self,
        send_ack: Callable[[int], Awaitable[int]],
        on_acked: Callable[[int], None],
        acked: int,
        *,
        ack_delay: float,
        ack_every: int,
        backoff: Backoff,
    ) -> None:
        self._send_ack = send_ack
        self._on_acked = on_acked
        self._ack_delay = ack_delay
        self._ack_every = ack_every
        self._backoff = backoff
        self.acked = acked
        self.sent_count = 0  # acks the server accepted (the bench reports it)
        self._target = acked  # the cursor of the last applied page
        self._waiting = 0  # entries applied since the last ack was snapshotted
        self._first_waiting_at: float | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.error: Unauthorized | None = None
        self._refused = 0  # the highest version the server refused (ack_ahead): not retried

    def applied(self, cursor: int, count: int) -> None:
        """Called after a page and its cursor are committed locally, never before: the
        server may prune what it sees acked, so only what is durable here is acked."""
        if cursor <= self._target:
            return
        self._target = cursor
        self._waiting += count
        if self._first_waiting_at is None:
            self._first_waiting_at = asyncio.get_running_loop().time()
        self._changed.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="msgsync-acker")

    def _pending(self) -> bool:
        return self._target > max(self.acked, self._refused)

    def reset(self) -> None:
        """since_ahead recovery: the local stream restarts from 0."""
        self._target = self.acked = self._refused = 0
        self._waiting = 0
        self._first_waiting_at = None

    async def _due(self) -> None:
        """Return when an ack is due: enough entries waiting, or the delay has passed."""
        loop = asyncio.get_running_loop()
        while True:
            remaining: float | None = None
            if self._pending() and self._first_waiting_at is not None:
                if self._waiting >= self._ack_every:
                    return
                remaining = self._first_waiting_at + self._ack_delay - loop.time()
                if remaining <= 0:
                    return
            self._changed.clear()
            # asyncio.wait, not wait_for: on Python 3.11 wait_for can swallow a cancel that
            # races with the event being set, and close() would then wait forever.
            waiter = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({waiter}, timeout=remaining)
            finally:
                waiter.cancel()

    async def _run(self) -> None:
        while True:
            await self._due()
            await self._ack_now()

    async def _ack_now(self) -> None:
        # Snapshot first: entries applied while this ack is in flight start a new batch.
        version = self._target
        self._waiting = 0
        self._first_waiting_at = None
        while True:
            try:
                await self._send_ack(version)
                break
            except Transient as exc:
                await asyncio.sleep(self._backoff.next_delay(exc.retry_after))
            except Unauthorized as exc:
                self.error = exc  # the sync loop raises it: the session is over
                raise
            except ApiError as exc:
                # ack_ahead: the server's stream went back (since_ahead recovery follows on
                # the next sync); nothing to retry.
                log.warning("ack %s refused: %s", version, exc)
                self._refused = max(self._refused, version)
                return
        self._backoff.reset()
        self.sent_count += 1
        # The server's cursor may be higher (it never moves back); ours is what we acked.
        self.acked = max(self.acked, version)
        self._on_acked(self.acked)

    async def flush(self) -> int:
        """Wait until everything applied is acked, by the normal policy (the delay timer)."""
        while self._pending():
            if self.error is not None:
                raise self.error
            if self._task is None or self._task.done():
                await self._ack_now()
                continue
            self._changed.set()
            await asyncio.sleep(0.01)
        return self.acked

    async def close(self, final_ack: bool = True) -> None:
        """Stop; with final_ack, first ack what is still waiting (one attempt, best effort)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Unauthorized):
                await self._task
            self._task = None
        if final_ack and self._pending() and self.error is None:
            try:
                await self._send_ack(self._target)
            except (Transient, ApiError) as exc:
                log.info("final ack not sent: %s", exc)
            else:
                self.sent_count += 1
                self.acked = max(self.acked, self._target)
                self._on_acked(self.acked)
