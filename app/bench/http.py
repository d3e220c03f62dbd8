"""The bench's HTTP/1.1 client: keep-alive connections, one request at a time on each.

The bench shares the machine with the server it measures, so every microsecond the client
spends is taken from the server. aiohttp spent about 100 us of CPU per request here
(request and response objects, header multidicts, timers, a task per request); at W5's
rate that was most of a core, and the client, not the server, set the figure. This client
writes a prepared request and parses the answer with httptools (the parser uvicorn itself
uses): about 13 us per request. It does what the workloads need and no more: plain
requests with small bodies, Content-Length or chunked answers, no redirects, no cookies.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlencode, urlsplit

import httptools

from app.bench.stats import BenchError

__all__ = ["ConnectionPool", "Reply"]

# uvicorn closes a keep-alive connection after 5 s without a request; the pool drops its
# own first, so that a request does not race the server's close.
IDLE_LIMIT = 3.0


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[Reply] | None = None
        self._body: list[bytes] = []
        self.closed = False
        self.keep_alive = True
        self.used_at = time.monotonic()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports do not derive from asyncio's.
        self._transport = cast(
            asyncio.Transport, transport
        )  # called twice on uvloop (see ConnectionPool._acquire)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BenchError(f"malformed HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionResetError("the server closed the connection"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self._parser.should_keep_alive()
        reply = Reply(self._parser.get_status_code(), b"".join(self._body))
        self._body = []
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(reply)

    async def request(self, raw: bytes) -> Reply:
        assert self._transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(raw)
        try:
            return await self._answer
        finally:
            self._answer = None
            self.used_at = time.monotonic()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def _fail(self, exc: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)


class ConnectionPool:
    """Up to `limit` keep-alive connections to one server; a request waits for a free one."""

    def __init__(self, base_url: str, limit: int, read_timeout: float) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or url.hostname is None:
            raise BenchError(f"not an http(s) URL: {base_url!r}")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if url.scheme == "https" else None
        self._prefix = url.path.rstrip("/")
        self._host_header = url.netloc
        self._read_timeout = read_timeout
        self._slots = asyncio.Semaphore(limit)
        self._idle: deque[_Connection] = deque()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        """One request. A request sent on a reused connection that the server had closed is
        sent once more on a new one: every request the bench makes is safe to repeat (sends
        carry a client_msg_id, acks are cumulative, the rest are reads)."""
        raw = self._prepare(method, path, body, headers, params)
        async with self._slots:
            for attempt in (1, 2):
                connection, reused = await self._acquire()
                try:
                    async with asyncio.timeout(self._read_timeout):
                        reply = await connection.request(raw)
                except ConnectionResetError:
                    connection.close()
                    if attempt == 2 or not reused:
                        raise
                    continue
                except BaseException:
                    connection.close()
                    raise
                if connection.keep_alive and not connection.closed:
                    self._idle.append(connection)
                else:
                    connection.close()
                return reply
        raise AssertionError("unreachable")

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def _acquire(self) -> tuple[_Connection, bool]:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.used_at < IDLE_LIMIT:
                return connection, True
            connection.close()
        transport, connection = await asyncio.get_running_loop().create_connection(
            _Connection, self._host, self._port, ssl=self._ssl
        )
        # uvloop may call connection_made only after create_connection has returned.
        connection.connection_made(transport)
        return connection, False

    def _prepare(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str] | None,
        params: dict[str, str] | None,
    ) -> bytes:
        target = self._prefix + path + (f"?{urlencode(params)}" if params else "")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._host_header}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        elif method in ("POST", "PUT", "PATCH"):
            lines.append("Content-Length: 0")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + body if body is not None else head
