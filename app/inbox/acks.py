"""Ack group commit: acks that arrive together are written in one transaction."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from app.accounts.auth import DeviceContext
from app.db.engine import Database
from app.errors import AppError, is_database_outage
from app.schemas import AckIn
from app.store import open_store

__all__ = ["AckBatcher", "PendingAck", "acknowledge", "write_acks"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PendingAck:
    user_id: str
    device_id: str
    version: int
    future: asyncio.Future[int] = field(repr=False)


async def write_acks(db: Database, batch: Sequence[PendingAck]) -> list[int | AppError]:
    """One transaction for the whole batch; for each ack, the device's cursor or its error.

    Each cursor becomes max(cursor, highest valid version queued for the device): a lower
    and a higher ack in one batch leave the higher one, and no cursor ever moves back.
    ack_ahead is decided per ack without locking the user: latest_version only grows, and
    the client learnt V from a committed sync before it sent the ack, so a V <= latest seen
    now stays valid, and a V > latest was never a version it saw.
    """
    found = await open_store(db).inbox.advance_cursors([(a.device_id, a.version) for a in batch])
    outcome: list[int | AppError] = []
    for a in batch:
        if a.device_id not in found:
            outcome.append(AppError(401, "unauthorized", "invalid or revoked token"))
            continue
        cursor, latest = found[a.device_id]
        if a.version > latest:
            outcome.append(
                AppError(
                    409,
                    "ack_ahead",
                    f"version {a.version} is ahead of the latest version {latest}",
                    latest_version=latest,
                )
            )
            continue
        outcome.append(cursor)
    return outcome


class AckBatcher:
    """Queues acks and writes them in batches, one transaction at a time per process.

    While one batch commits, the next one gathers: under load a batch holds every ack that
    arrived during the previous commit (at most `max_batch`), at no extra delay when idle.
    Each caller awaits its batch's commit, so a returned cursor is stored.
    """

    def __init__(self, db: Database, max_batch: int) -> None:
        self._db = db
        self._max_batch = max_batch
        self._pending: deque[PendingAck] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ack-batcher")

    async def stop(self) -> None:
        """Write what is queued, then stop; acks arriving after this get 503."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def ack(self, user_id: str, device_id: str, version: int) -> int:
        """Queue the ack and wait for its batch to commit; returns the device's cursor."""
        if self._closing or self._task is None:
            raise AppError(503, "shutting_down", "the server is shutting down; retry the ack")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append(PendingAck(user_id, device_id, version, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                count = min(len(self._pending), self._max_batch)
                batch = [self._pending.popleft() for _ in range(count)]
                await self._write(batch)
            if self._closing:
                return

    async def _write(self, batch: list[PendingAck]) -> None:
        try:
            results = await write_acks(self._db, batch)
        except Exception as exc:
            # Never a false 200: nothing of this batch is known to be stored. Each waiter
            # gets an error of its own (one exception object raised in many tasks would
            # collect all their tracebacks), answered as every endpoint answers the same
            # condition: the database failing is 503 database_unavailable with Retry-After,
            # anything else a 500 whose cause stays in this log.
            if is_database_outage(exc):
                log.warning("ack batch of %d not stored: database unavailable: %s", len(batch), exc)
            else:
                log.exception("ack batch of %d failed", len(batch))
            for a in batch:
                _settle(a.future, _batch_failure(exc))
            return
        for a, result in zip(batch, results, strict=True):
            _settle(a.future, result)


def _batch_failure(exc: Exception) -> AppError:
    if is_database_outage(exc):
        return AppError(
            503,
            "database_unavailable",
            "the database did not answer; the ack was not stored, retry shortly",
            headers={"Retry-After": "1"},
        )
    return AppError(500, "internal_error", "the server failed unexpectedly; it has been logged")


def _settle(future: asyncio.Future[int], result: int | AppError) -> None:
    # A caller that went away (client disconnected) cancelled its future: nothing to tell.
    if future.done():
        return
    if isinstance(result, AppError):
        future.set_exception(result)
    else:
        future.set_result(result)


async def acknowledge(acks: AckBatcher, device: DeviceContext, body: AckIn) -> tuple[int, bytes]:
    """The ack, for the route (app.api.sync) and for the edge's hot path (app.edge.hotpaths):
    (status, JSON body)."""
    # Group commit: this waits for the batch holding the ack to commit.
    cursor = await acks.ack(device.user_id, device.device_id, body.version)
    return 200, orjson.dumps({"device_id": device.device_id, "acked_version": cursor})
