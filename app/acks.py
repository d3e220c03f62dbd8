"""Ack group commit: acks that arrive together are written in one transaction."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import bindparam, select, text, update

from app.db import Database
from app.errors import AppError
from app.models import Device, User

__all__ = ["AckBatcher", "PendingAck", "write_acks"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PendingAck:
    user_id: str
    device_id: str
    version: int
    future: asyncio.Future[int] = field(repr=False)


# One statement text for every batch size (arrays, not a VALUES list of varying length), so
# PostgreSQL plans it once per connection instead of once per batch size.
_PG_UPDATE = text(
    "UPDATE devices AS d SET acked_version = v.version"
    " FROM unnest(CAST(:device_ids AS text[]), CAST(:versions AS bigint[]))"
    " AS v(device_id, version)"
    " WHERE d.device_id = v.device_id AND d.acked_version < v.version"
)

_SQLITE_UPDATE = (
    update(Device)
    .where(Device.device_id == bindparam("d"), Device.acked_version < bindparam("v"))
    .values(acked_version=bindparam("v"))
)


async def write_acks(db: Database, batch: Sequence[PendingAck]) -> list[int | AppError]:
    """One transaction for the whole batch; for each ack, the device's cursor or its error.

    Each cursor becomes max(cursor, highest valid version queued for the device): a lower
    and a higher ack in one batch leave the higher one, and no cursor ever moves back.
    """
    device_ids = sorted({a.device_id for a in batch})
    async with db.session() as session, session.begin():
        # Lock the device rows in a fixed order, so two processes' batches cannot deadlock,
        # and so the cursors read here are the ones the UPDATE below starts from.
        rows = await session.execute(
            select(Device.device_id, Device.acked_version, User.latest_version)
            .join(User, User.user_id == Device.user_id)
            .where(Device.device_id.in_(device_ids))
            .order_by(Device.device_id)
            .with_for_update(of=Device)
        )
        # ack_ahead is decided here, per ack, without locking the user: latest_version only
        # grows, and the client learnt V from a committed sync before it sent the ack, so a
        # V <= latest seen now stays valid, and a V > latest was never a version it saw.
        found = {row.device_id: (row.acked_version, row.latest_version) for row in rows}
        cursors = {device_id: acked for device_id, (acked, _) in found.items()}
        outcome: list[int | AppError] = []
        for a in batch:
            if a.device_id not in found:
                outcome.append(AppError(401, "unauthorized", "invalid or revoked token"))
                continue
            latest = found[a.device_id][1]
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
            cursors[a.device_id] = max(cursors[a.device_id], a.version)
            outcome.append(0)  # filled in with the final cursor below
        moved = [(d, v) for d, v in cursors.items() if v > found[d][0]]
        if moved:
            if db.is_sqlite:
                # Core executemany on the connection: the ORM's bulk UPDATE would try to
                # synchronise session objects, and there are none.
                connection = await session.connection()
                await connection.execute(_SQLITE_UPDATE, [{"d": d, "v": v} for d, v in moved])
            else:
                await session.execute(
                    _PG_UPDATE,
                    {"device_ids": [d for d, _ in moved], "versions": [v for _, v in moved]},
                )
    return [
        r if isinstance(r, AppError) else cursors[a.device_id]
        for a, r in zip(batch, outcome, strict=True)
    ]


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
            # Never a false 200: nothing of this batch is known to be stored.
            log.exception("ack batch of %d failed", len(batch))
            for a in batch:
                error = AppError(503, "ack_not_stored", f"the ack was not stored: {exc!r}")
                _settle(a.future, error)
            return
        for a, result in zip(batch, results, strict=True):
            _settle(a.future, result)


def _settle(future: asyncio.Future[int], result: int | AppError) -> None:
    # A caller that went away (client disconnected) cancelled its future: nothing to tell.
    if future.done():
        return
    if isinstance(result, AppError):
        future.set_exception(result)
    else:
        future.set_result(result)
