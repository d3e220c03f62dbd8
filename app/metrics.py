"""Prometheus metrics (prometheus_client): every series msgsync exports is defined here.

With `msgsync serve --workers N` the workers share one listening socket, so a scrape reaches
whichever worker the kernel picks: Prometheus cannot address one worker, and series that
each worker answered for itself (even with a worker label) would come and go between
scrapes, counters seeming to reset. So several workers run prometheus_client's multiprocess
mode: each writes its values to files in PROMETHEUS_MULTIPROC_DIR (set up by `msgsync
serve`, see app.multiproc), and any worker's /metrics (app.api.metrics) sums them up. One
process keeps the plain in-memory registry. Series defined anywhere with prometheus_client's
module-level Counter, Gauge, Histogram or Summary are exported either way; they are kept
here so that each has one home, and so that the edge and the domains that write them need
not import a router.
"""

from __future__ import annotations

import asyncio
import bisect
import os
from contextlib import suppress

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics, multiprocess

from app.db.engine import Database
from app.multiproc import MULTIPROC_DIR
from app.notifier import Notifier

__all__ = [
    "LATENCIES",
    "LATENCY",
    "OLDEST_PENDING",
    "PUSHES_FAILED",
    "PUSHES_REJECTED",
    "PUSHES_RETRIED",
    "PUSHES_SENT",
    "WAITING",
    "Latencies",
    "Sampler",
]


# The *_created series double every counter and histogram for a value nobody graphs.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LABELS = ("method", "route", "status")

LATENCY = Histogram(
    "msgsync_http_request_duration_seconds",
    "Answers (the _count series: requests answered) and the time from a request's arrival "
    "at the front door to the end of its answer, by method, route template and status "
    "(499: the client went away first). A long-poll's time includes its wait.",
    _LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
WAITING = Gauge(
    "msgsync_waiting_long_polls",
    "Long-polls waiting for news (summed over the server's workers).",
    multiprocess_mode="livesum",
)
_LISTENER_UP = Gauge(
    "msgsync_listener_up",
    "1 when cross-process wake-ups are being received (with several workers: the lowest).",
    multiprocess_mode="livemin",
)
_POOL_CHECKED_OUT = Gauge(
    "msgsync_db_pool_checked_out",
    "Database connections in use (summed over the server's workers).",
    multiprocess_mode="livesum",
)


class Latencies:
    """LATENCY's observations, gathered during one turn of the event loop and written at its
    end, each series's buckets and sum once.

    One observation written at once costs two locked writes to the multiprocess file (the
    bucket, the sum), each checking the process id with a system call: about 7% of a
    worker's CPU in W5 (plain acks). The acks of one batch are answered in the same turn,
    so the write now serves all of them. A scrape is a later turn of the loop than any
    answer it could see, so this process's counts are whole in it; another worker's are
    written the moment its own turn ends.
    """

    def __init__(self, histogram: Histogram = LATENCY) -> None:
        self._histogram = histogram
        # The finite upper bounds; an observation above them all goes to +Inf, the last.
        self._bounds = histogram._upper_bounds[:-1]
        # label values -> per-bucket counts and the sum, since the last write
        self._pending: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}
        self._children: dict[tuple[str, ...], Histogram] = {}
        self._scheduled = False

    def observe(self, labels: tuple[str, ...], seconds: float) -> None:
        pending = self._pending.get(labels)
        if pending is None:
            pending = self._pending[labels] = ([0] * (len(self._bounds) + 1), [0.0])
        # le: the first bucket whose bound is at least the value.
        pending[0][bisect.bisect_left(self._bounds, seconds)] += 1
        pending[1][0] += seconds
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.write)

    def write(self) -> None:
        """Writes what was observed since the last write (also at a scrape and at shutdown)."""
        self._scheduled = False
        pending, self._pending = self._pending, {}
        for labels, (counts, total) in pending.items():
            child = self._children.get(labels)
            if child is None:
                child = self._children[labels] = self._histogram.labels(*labels)
            # prometheus_client's Histogram observes one value at a time; its children's
            # bucket and sum values take any increment.
            child._sum.inc(total[0])
            for bucket, count in zip(child._buckets, counts, strict=True):
                if count:
                    bucket.inc(count)


# The front door's (app.edge.frontdoor), written at the end of each turn of the loop, at each
# scrape and at shutdown.
LATENCIES = Latencies()

_NOTIFIER_HELP = {
    "wakeups_published": "Wake-ups published after a commit (one per send or logout).",
    "wakeups_received": "Wake-up notifications received from other processes.",
    "notify_statements": "NOTIFY statements run (each carries many users' wake-ups).",
    "listener_reconnects": "Times the LISTEN connection was lost and opened again.",
    "publish_failures": "NOTIFY rounds that failed (every process's waiters re-read).",
}
_notifier_counters: dict[str, Counter] = {}


def _notifier_counter(name: str) -> Counter:
    counter = _notifier_counters.get(name)
    if counter is None:
        help_text = _NOTIFIER_HELP.get(name, f"Notifier events: {name.replace('_', ' ')}.")
        counter = _notifier_counters[name] = Counter(f"msgsync_{name}", help_text)
    return counter


for _name in _NOTIFIER_HELP:
    _notifier_counter(_name)


class Sampler:
    """Copies the process's state (listener, pool, notifier counts) into the series above.

    Run at each scrape for the scraping process. Under multiprocess mode the other workers'
    state reaches the scrape only through their files, so each worker also samples itself
    every `interval` seconds: their gauges in a scrape are at most that old.
    """

    def __init__(self, notifier: Notifier, db: Database) -> None:
        self._notifier = notifier
        self._db = db
        self._reported: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        _LISTENER_UP.set(int(self._notifier.healthy))
        _POOL_CHECKED_OUT.set(self._db.connections_in_use())
        # The notifier keeps plain running totals; a counter only goes up by differences.
        for name, total in list(self._notifier.stats.items()):
            step = total - self._reported.get(name, 0)
            if step > 0:
                _notifier_counter(name).inc(step)
                self._reported[name] = total

    def start(self, interval: float = 1.0) -> None:
        if os.environ.get(MULTIPROC_DIR):
            self._task = asyncio.create_task(self._every(interval))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if os.environ.get(MULTIPROC_DIR):
            # This worker's gauges leave the sums; its counters stay in them.
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    async def _every(self, interval: float) -> None:
        while True:
            self.sample()
            await asyncio.sleep(interval)


# The push worker's (app.push.worker).
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
