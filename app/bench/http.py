"""The bench's HTTP/1.1 client: keep-alive connections, one request at a time on each.

The bench shares the machine with the server it measures, so every microsecond the client
spends is taken from the server. aiohttp spent about 100 us of CPU per request here
(request and response objects, header multidicts, timers, a task per request); at W5's
rate that was most of a core, and the client, not the server, set the figure. This client
writes a prepared request and parses the answer with httptools (the parser uvicorn itself
uses; the connection is app.push.gateway_client's, which the push worker uses too): about 13 us per
request. It does what the workloads need and no more: plain
requests with small bodies, Content-Length or chunked answers, no redirects, no cookies.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from urllib.parse import urlencode, urlsplit

from app.bench.stats import BenchError
from app.push.gateway_client import Connection, Reply, connect

__all__ = ["ConnectionPool", "Reply"]

# uvicorn closes a keep-alive connection after 5 s without a request; the pool drops its
# own first, so that a request does not race the server's close.
IDLE_LIMIT = 3.0


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
        self._idle: deque[Connection] = deque()

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

    async def _acquire(self) -> tuple[Connection, bool]:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.used_at < IDLE_LIMIT:
                return connection, True
            connection.close()
        return await connect(self._host, self._port, self._ssl), False

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
