"""A lean HTTP/1.1 client: keep-alive connections, one request at a time on each, answers
parsed with httptools (the parser uvicorn itself uses).

The push worker sends thousands of small requests per second to a few gateways. httpx spent
1 to 2 ms of CPU on each here (its connection pool, anyio's stream layer, an import attempt
per request to detect the async library); writing prepared bytes on an asyncio Protocol and
parsing the answer with httptools costs a few tens of microseconds. It does what a gateway
request needs and no more: one method, small bodies, answers with Content-Length, chunked or
ending at the connection's close, no redirects (a 3xx is returned like any answer), no
cookies, no proxies.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote, urlsplit

import httptools

__all__ = ["Connection", "HttpClient", "HttpProtocolError", "Reply", "connect"]

# Characters left as they are in a request target (RFC 3986 pchar, "/" and "%").
_SAFE = "/%:@!$&'()*+,;=-._~"

# An answer larger than this is not a gateway's: the connection is dropped.
MAX_ANSWER = 1 << 20


class HttpProtocolError(ConnectionError):
    """The server's answer is not HTTP/1.1 this client can read (or is far too large)."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")


class Connection(asyncio.Protocol):
    """One keep-alive connection; `request` writes a prepared request and awaits its answer."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[Reply] | None = None
        self._body: list[bytes] = []
        self._size = 0
        self._length_known = False  # Content-Length or chunked: the parser sees the end
        self._headers_done = False
        self.received = False  # any byte of the current answer has arrived
        self.closed = False
        self.keep_alive = True
        self.used_at = time.monotonic()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports do not derive from asyncio's.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpProtocolError(f"malformed HTTP answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._headers_done and not self._length_known:
            # An answer without a length ends where the connection does.
            self._complete(keep_alive=False)
            return
        if self.received:
            self._fail(ConnectionResetError("the server closed the connection mid-answer"))
        else:
            self._fail(ConnectionResetError("the server closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length" or (
            lowered == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self._length_known = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        status = self._parser.get_status_code()
        if status in (204, 304) or 100 <= status < 200:
            self._length_known = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_ANSWER:
            self._fail(HttpProtocolError(f"answer larger than {MAX_ANSWER} bytes"))
            self.close()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._complete(self._parser.should_keep_alive())

    def _complete(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        reply = Reply(self._parser.get_status_code(), b"".join(self._body))
        self._body = []
        self._size = 0
        self._headers_done = self._length_known = False
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(reply)

    async def request(self, raw: bytes) -> Reply:
        assert self._transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self.received = False
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


async def connect(host: str, port: int, ssl_context: ssl.SSLContext | None) -> Connection:
    transport, connection = await asyncio.get_running_loop().create_connection(
        Connection, host, port, ssl=ssl_context
    )
    # uvloop may call connection_made only after create_connection has returned.
    connection.connection_made(transport)
    return connection


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int


class HttpClient:
    """POSTs to any number of origins over at most `limit` connections in all, kept alive
    per origin. A request waits for a free connection when `limit` requests are in flight.

    Timeouts: `connect` for the connection (TLS handshake included), `total` for the whole
    request. Failures raise OSError (ConnectionError, TimeoutError, ssl.SSLError, ...) with a
    message fit for a log line. A request written on a reused connection that the server had
    already closed (no byte of answer came back) is written once more on a new connection:
    the server never saw it.
    """

    def __init__(
        self,
        limit: int,
        *,
        connect: float,
        total: float,
        idle_limit: float = 3.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._limit = limit
        self._slots = asyncio.Semaphore(limit)
        self._connect_timeout = connect
        self._total = total
        # Servers close idle keep-alive connections (uvicorn after 5 s): drop them first, so
        # that a request rarely races the server's close.
        self._idle_limit = idle_limit
        self._ssl = ssl_context
        self._idle: dict[_Origin, deque[Connection]] = {}
        self._open = 0
        self._origins: dict[str, tuple[_Origin, bytes]] = {}

    @property
    def open_connections(self) -> int:
        return self._open

    async def post(self, url: str, body: bytes, content_type: str = "application/json") -> Reply:
        """POST `body` to `url`; the answer, whatever its status (3xx included). ValueError for
        a URL this client cannot call."""
        origin, head = self._parse(url)
        raw = b"%sContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
            head,
            content_type.encode("latin-1"),
            len(body),
            body,
        )
        async with self._slots:
            try:
                async with asyncio.timeout(self._total):
                    return await self._exchange(origin, raw)
            except TimeoutError as exc:
                if exc.args:
                    raise
                raise TimeoutError(f"no answer within {self._total} s") from None

    async def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                self._drop(idle.pop())
        self._idle.clear()

    def _parse(self, url: str) -> tuple[_Origin, bytes]:
        """The URL's origin and the request's first lines up to its own headers."""
        known = self._origins.get(url)
        if known is not None:
            return known
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
            raise ValueError(f"not an http(s) URL without user information: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        origin = _Origin(parts.scheme, parts.hostname, port)
        target = quote(parts.path or "/", safe=_SAFE) + (
            f"?{quote(parts.query, safe=_SAFE + '?')}" if parts.query else ""
        )
        # A host name that is not ASCII (IDNA) is refused here, as a ValueError.
        head = f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n".encode("ascii")
        found = (origin, head)
        if len(self._origins) < 1024:  # a cache of the few gateway URLs, bounded
            self._origins[url] = found
        return found

    async def _exchange(self, origin: _Origin, raw: bytes) -> Reply:
        for _ in range(2):
            connection, reused = await self._acquire(origin)
            try:
                reply = await connection.request(raw)
            except ConnectionResetError:
                self._drop(connection)
                if reused and not connection.received:
                    continue  # closed by the server while idle: it never saw the request
                raise
            except BaseException:
                self._drop(connection)
                raise
            if connection.keep_alive and not connection.closed:
                self._idle.setdefault(origin, deque()).append(connection)
            else:
                self._drop(connection)
            return reply
        raise ConnectionResetError("the server closed the connection")

    async def _acquire(self, origin: _Origin) -> tuple[Connection, bool]:
        now = time.monotonic()
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.used_at < self._idle_limit:
                return connection, True
            self._drop(connection)
        if self._open >= self._limit:
            # Every connection not in use is idle for another origin: close the oldest.
            self._evict()
        context = None
        if origin.scheme == "https":
            if self._ssl is None:
                # The system's trusted certificates (or SSL_CERT_FILE's), loaded once.
                self._ssl = ssl.create_default_context()
            context = self._ssl
        self._open += 1
        try:
            async with asyncio.timeout(self._connect_timeout):
                connection = await connect(origin.host, origin.port, context)
        except TimeoutError:
            self._open -= 1
            raise TimeoutError(
                f"no connection to {origin.host}:{origin.port} within {self._connect_timeout} s"
            ) from None
        except BaseException:
            self._open -= 1
            raise
        return connection, False

    def _evict(self) -> None:
        oldest: tuple[float, _Origin] | None = None
        for origin, idle in self._idle.items():
            if idle and (oldest is None or idle[0].used_at < oldest[0]):
                oldest = (idle[0].used_at, origin)
        if oldest is not None:
            self._drop(self._idle[oldest[1]].popleft())

    def _drop(self, connection: Connection) -> None:
        connection.close()
        self._open -= 1
