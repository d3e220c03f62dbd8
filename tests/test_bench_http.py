"""The bench's own HTTP client: keep-alive, a server that closes idle connections, chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from app.bench.http import ConnectionPool

Answer = Callable[[bytes], bytes]


def _plain(request: bytes) -> bytes:
    body = request.split(b"\r\n", 1)[0]  # echo the request line
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def _chunked(request: bytes) -> bytes:
    head = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def _serving(handler: Handler) -> AsyncIterator[int]:
    """A TCP server on a free port; on leaving, waits for its connections to finish (the
    test closes its client first), so that none is left open for a later test to find."""
    handlers: list[asyncio.Task[None]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        try:
            await handler(reader, writer)
        finally:
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]
        async with asyncio.timeout(5):
            await asyncio.gather(*handlers)


@asynccontextmanager
async def _server(
    answer: Answer, requests_per_connection: int
) -> AsyncIterator[tuple[int, list[int]]]:
    """A server answering each request with answer(request head and body). After
    `requests_per_connection` answers it reads the next request and closes the connection
    without answering it, as a server that dropped an idle keep-alive just as the request
    was sent. Yields its port and the requests answered on each connection."""
    served: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(0)
        try:
            while served[-1] < requests_per_connection:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                writer.write(answer(head + body))
                await writer.drain()
                served[-1] += 1
            await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            pass

    async with _serving(handle) as port:
        yield port, served


async def test_requests_reuse_one_keep_alive_connection() -> None:
    async with _server(_plain, 100) as (port, served):
        pool = ConnectionPool(f"http://127.0.0.1:{port}", limit=1, read_timeout=5)
        for n in range(5):
            reply = await pool.request("POST", "/ack", body=b'{"version": %d}' % n)
            assert (reply.status, reply.content) == (200, b"POST /ack HTTP/1.1")
        reply = await pool.request("GET", "/sync", params={"since": "3", "limit": "2"})
        assert reply.content == b"GET /sync?since=3&limit=2 HTTP/1.1"
        await pool.close()
    assert served == [6]


async def test_a_connection_the_server_closed_is_replaced_and_the_request_sent_again() -> None:
    async with _server(_plain, 1) as (port, served):
        pool = ConnectionPool(f"http://127.0.0.1:{port}", limit=1, read_timeout=5)
        for _ in range(3):
            # Sent at once on the kept connection, which the server then closes unanswered.
            assert (await pool.request("GET", "/healthz")).status == 200
        await pool.close()
    assert served == [1, 1, 1]


async def test_a_chunked_answer_is_read_whole() -> None:
    async with _server(_chunked, 100) as (port, served):
        pool = ConnectionPool(f"http://127.0.0.1:{port}", limit=2, read_timeout=5)
        replies = await asyncio.gather(*(pool.request("GET", "/x") for _ in range(4)))
        assert {(r.status, r.content) for r in replies} == {(201, b"abcde")}
        await pool.close()
    assert sum(served) == 4
    assert len(served) <= 2


async def test_a_server_that_never_answers_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with _serving(silent) as port:
        pool = ConnectionPool(f"http://127.0.0.1:{port}", limit=1, read_timeout=0.2)
        with pytest.raises(TimeoutError):
            await pool.request("GET", "/sync")
        await pool.close()
