"""Running the service under uvicorn, one process or several."""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import logging.config
import multiprocessing
import os
import resource
import signal
import sys
from typing import TYPE_CHECKING, Any

import httptools
import uvicorn
import uvicorn._subprocess as uvicorn_subprocess
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.supervisors.multiprocess import SIGNALS as SUPERVISOR_SIGNALS

from app import heap
from app.config import Settings
from app.logs import log_config
from app.multiproc import prepare_multiprocess
from app.store import backend_for

if TYPE_CHECKING:
    from starlette.types import ASGIApp

__all__ = ["DeadlineProtocol", "EdgeProtocol", "serve", "serving_app"]


def serve(settings: Settings, host: str, port: int, workers: int, access_log: bool = False) -> int:
    database = backend_for(settings)
    if workers > 1 and database.serves_one_process:
        print(
            "msgsync: SQLite serves one process only; run with --workers 1, or set "
            "MSGSYNC_DATABASE_URL to a postgresql:// URL for several workers",
            file=sys.stderr,
        )
        return 2
    _raise_open_file_limit()
    prepare_multiprocess(workers)
    if workers > 1:
        _fork_workers()
    config = log_config(settings.log_format)
    if not database.serves_one_process:
        from app.db.budget import budget_report

        # Through the same log configuration as the server's lines (JSON lines stay JSON).
        logging.config.dictConfig(config)
        log = logging.getLogger("app.db.budget")
        for line in budget_report(settings, workers):
            if line.startswith("WARNING: "):
                log.warning(line.removeprefix("WARNING: "))
            else:
                log.info(line)
    uvicorn.run(
        "app.edge.server:serving_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        # One format (MSGSYNC_LOG_FORMAT) for uvicorn's lines and the service's, each with
        # the request id.
        log_config=config,
        # A line per request costs a measurable share of a small request's CPU; off unless
        # asked for (a proxy in front usually logs requests already).
        access_log=access_log,
        # Long-polls are answered at SIGTERM (see notifier.close_on_signals); this bounds the
        # wait for any other request still in flight.
        timeout_graceful_shutdown=5,
        # The supervisor restarts a worker that does not answer its ping in time (5 s by
        # default). On a busy host a starting worker, still importing, took longer: every
        # worker was killed and restarted in a loop and the server never became ready.
        timeout_worker_healthcheck=30,
        # Thousands of idle devices reconnect at once after a deploy.
        backlog=4096,
        # A class with its settings bound, not a name: uvicorn calls it like a class, and
        # pickles it to each worker process, so it must be importable there (it is). It is
        # httptools-based whatever uvicorn's `--http` default would be: the bounds on request
        # heads below are this class's, and h11 would not have them.
        http=functools.partial(  # type: ignore[arg-type]
            EdgeProtocol,
            header_timeout=settings.header_timeout_seconds,
            body_timeout=settings.body_timeout_seconds,
            max_head_bytes=settings.max_head_bytes,
            max_header_fields=settings.max_header_fields,
        ),
        # Who may tell us the client's address in X-Forwarded-For (app.accounts.throttle keys
        # on it).
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    return 0


# What every worker imports and the supervisor can import without side effects: the
# libraries, not the service (whose metrics register with prometheus_client at import, as
# the process that imports them; the supervisor must not count as a worker).
_LIBRARIES = (
    "fastapi",
    "starlette.routing",
    "pydantic",
    "sqlalchemy.ext.asyncio",
    "sqlalchemy.orm",
    "psycopg",
    "argon2",
    "orjson",
    "anyio",
)


def _fork_workers() -> None:
    """Workers forked from this supervisor once it has imported the libraries they all
    import, instead of spawned: a spawned worker starts a new interpreter and imports
    everything again, which cost most of a worker's start-up CPU; a forked one imports only
    the service's own modules. uvicorn spawns; its process factory reads the context from
    its module at each start (a restarted worker is forked too).

    A forked worker would also inherit the supervisor's signal handlers, which only queue a
    signal for the supervisor's loop: a worker stopped while still starting would ignore
    its SIGTERM. Each worker starts with the handlers a spawned one would have, until its
    server installs its own."""
    for name in _LIBRARIES:
        importlib.import_module(name)
    before = {sig: signal.getsignal(sig) for sig in SUPERVISOR_SIGNALS}

    def as_before() -> None:
        for sig, handler in before.items():
            signal.signal(sig, handler)

    os.register_at_fork(after_in_child=as_before)
    uvicorn_subprocess.spawn = multiprocessing.get_context("fork")  # type: ignore[assignment]


def serving_app() -> ASGIApp:
    """uvicorn's application factory in each process that serves (the one process, or each
    worker): the garbage collector's settings first, so that they hold while the
    application is imported and built (app.heap), then the application."""
    heap.collect_young_less_often()
    from app.main import create_app

    return create_app()


def _raise_open_file_limit() -> None:
    """Every waiting device holds a socket: allow as many as the hard limit permits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with read deadlines, so a slow client cannot hold a
    connection (a socket, a file descriptor, the parser's buffers) for ever.

    uvicorn bounds only the idle time between requests (timeout_keep_alive), and that timer
    is reset by every byte received: a client trickling a request head a byte at a time kept
    its connection open indefinitely (200 such connections were all still open after 42 s).
    Here a request head must be complete within `header_timeout` seconds of its first byte
    (or of the connection, for the first request), and a body must not stall for more than
    `body_timeout` seconds between two reads. Both deadlines end when the request has been
    read, so a long-poll, which waits only after reading its request, is not affected.
    Past a deadline the connection is closed without an answer: there is no complete
    request to answer, and a client that slow is most likely not waiting for one.
    """

    def __init__(self, *args: Any, header_timeout: float, body_timeout: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._body_timeout = body_timeout
        # When the request being read must be complete (or its body move on); None while
        # no request is being read. One timer per connection checks it: moving a deadline
        # is a store, not a timer armed and cancelled per request, which cost a sizeable
        # share of a small request's CPU (W5's acks).
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a byte: uvicorn arms its keep-alive timer only
        # after a first response.
        self._set(self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # Counted from the connection for its first request (re-arming here would let a
        # client double its time by waiting before the first byte), else from this byte.
        if self._deadline is None:
            self._set(self._header_timeout)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._set(self._body_timeout)  # the body, if any, must start coming

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._set(self._body_timeout)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._deadline = None  # the request is read: what follows is the application's time

    def _set(self, seconds: float) -> None:
        self._deadline = self.loop.time() + seconds
        # The pending check comes too late for this deadline only when it is shorter than
        # the one the timer was armed for: then, and when none is pending, arm anew.
        if self._timer is None or self._deadline < self._timer_at:
            self._arm(self._deadline)

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self.loop.call_at(at, self._check)

    def _check(self) -> None:
        self._timer = None
        if self._deadline is None:
            return  # no request being read: the next one arms a check when it begins
        if self.loop.time() < self._deadline:
            self._arm(self._deadline)  # moved on since: check again then
            return
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head past its bounds."""


class EdgeProtocol(DeadlineProtocol):
    """The read deadlines, and bounds on a request head: at most `max_head_bytes` (the
    request line and every header field, as received) and `max_header_fields` fields.

    httptools keeps a header field being received in a growing string until the field ends,
    and uvicorn keeps every field of a head in a list until the head ends; neither has a
    bound (uvicorn's h11_max_incomplete_event_size is for h11 only). A 20 MB header, or
    100,000 of them, were read whole and answered 200, before any token was checked, and 25
    connections sending 40 MB heads grew a worker by more than a gigabyte. Here bytes are
    handed to the parser only while the head is within its bound: past it, or past the
    field count, the connection is answered 431 `request_head_too_large` and closed, and
    nothing more of it is read. So a connection holds at most about `max_head_bytes` of
    head, however many of them there are.

    Bytes are counted as they arrive from the first byte of a request (or of the
    connection) until its head is complete; a body is not counted here (app.edge.limits bounds
    it). The part of a pipelined request's head that arrives in the same read as the end of
    the previous request is not counted (that read is within the previous bound), so such a
    head may reach up to twice the bound, never more.
    """

    def __init__(
        self, *args: Any, max_head_bytes: int, max_header_fields: int, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._max_head_bytes = max_head_bytes
        self._max_header_fields = max_header_fields
        self._in_head = True  # a request head is being read (or awaited)
        self._head_bytes = 0
        self._fields = 0
        self._refused = False

    # Parser callbacks (called by httptools during feed_data).
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._fields = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:
            self._fields += 1
            if self._fields > self._max_header_fields:
                self._refused = True
                raise _HeadTooLarge  # stops the parser: feed_data raises HttpParserError
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    # Transport callbacks.
    def data_received(self, data: bytes) -> None:
        if self._in_head:
            room = self._max_head_bytes - self._head_bytes
            if len(data) > room:
                self._within_bound(data)
                return
            self._head_bytes += len(data)
        self._feed(data)

    def _within_bound(self, data: bytes) -> None:
        """Hands the parser no more of `data` than the head's bound leaves: the rest only
        if the head ended within it (the rest is then a body, or further requests)."""
        while data:
            if not self._in_head:
                self._feed(data)
                return
            room = self._max_head_bytes - self._head_bytes
            if room <= 0:
                self._refuse_head()
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            self._feed(piece)
            if self.transport.is_closing():
                return

    def _feed(self, data: bytes) -> None:
        # uvicorn's HttpToolsProtocol.data_received, with the 431 for a refused head.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refused:
                self._refuse_head()
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def _refuse_head(self) -> None:
        """431 and close. Not answered while an earlier request's answer is being written on
        this connection (pipelined): the two would interleave; it is only closed then."""
        self._in_head = False
        self._refused = True
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            content = [STATUS_LINE[431]]
            for name, value in self.server_state.default_headers:
                content.extend([name, b": ", value, b"\r\n"])
            content.append(_head_too_large(self._max_head_bytes, self._max_header_fields))
            self.transport.write(b"".join(content))
        self.transport.close()


@functools.cache
def _head_too_large(max_bytes: int, max_fields: int) -> bytes:
    """The 431 problem's headers and body, once per process."""
    # Imported here: the rendering of problems loads the HTTP framework, which the server's
    # supervisor (uvicorn's parent with several workers) never needs; a worker has it already.
    from app.problems import PROBLEM_JSON, problem

    response = problem(
        431,
        "request_head_too_large",
        f"the request head is over {max_bytes} bytes or {max_fields} header fields",
    )
    body = bytes(response.body)
    return b"".join(
        [
            b"content-type: " + PROBLEM_JSON.encode() + b"\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )
