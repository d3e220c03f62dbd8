"""The push worker's HTTP client (app.push.gateway_client) against real local servers:
keep-alive reuse, answers it must not act on (3xx, 500), servers that close or hang, bounded
connections, https with a self-signed certificate."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.push.gateway_client import HttpClient
from tests.tls import self_signed

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n"
OK_BODY = b'{"rejected":[]}'


@dataclass
class Scripted:
    """A server that answers each request by the next step of `steps` (then 200):
    "200", "307", "500", "mid" (half an answer, then close), "hang", "eof" (a body ending
    at the close), "close-after" (answer, then close as if idle too long), "slow"."""

    steps: list[str] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[bytes] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append(head + await reader.readexactly(length))
                step = self.steps.pop(0) if self.steps else "200"
                if step == "hang":
                    await asyncio.sleep(30)
                if step == "slow":
                    await asyncio.sleep(0.2)
                if step in ("200", "slow", "close-after"):
                    writer.write(OK + OK_BODY)
                elif step == "307":
                    writer.write(
                        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:"
                        b"%d/elsewhere\r\nContent-Length: 0\r\n\r\n" % self.port
                    )
                elif step == "500":
                    body = b'{"error":"down"}'
                    writer.write(
                        b"HTTP/1.1 500 X\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                elif step == "mid":
                    writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{"rej')
                    await writer.drain()
                    return
                elif step == "eof":
                    writer.write(b"HTTP/1.1 200 OK\r\n\r\n" + OK_BODY)
                    await writer.drain()
                    return
                await writer.drain()
                if step == "close-after":
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open_now -= 1
            writer.close()


@asynccontextmanager
async def serving(
    steps: list[str] | None = None, tls: ssl.SSLContext | None = None
) -> AsyncIterator[Scripted]:
    scripted = Scripted(steps or [])
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        await scripted.handle(reader, writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    scripted.port = server.sockets[0].getsockname()[1]
    async with server:
        yield scripted
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def url(server: Scripted, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.port}/_matrix/push/v1/notify"


@asynccontextmanager
async def client(
    limit: int = 4, total: float = 5, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[HttpClient]:
    http = HttpClient(limit, connect=2, total=total, ssl_context=ssl_context)
    try:
        yield http
    finally:
        await http.close()


async def test_requests_share_one_keep_alive_connection() -> None:
    async with serving() as server, client() as http:
        for n in range(3):
            reply = await http.post(url(server), b'{"n":%d}' % n)
            assert (reply.status, reply.content) == (200, OK_BODY)
        assert server.connections == 1
        assert http.open_connections == 1
    head, _, body = server.requests[2].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /_matrix/push/v1/notify HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert b"Content-Type: application/json" in lines
    assert body == b'{"n":2}'


async def test_a_redirect_is_answered_not_followed() -> None:
    async with serving(["307"]) as server, client() as http:
        reply = await http.post(url(server), b"{}")
        assert reply.status == 307
        await asyncio.sleep(0.05)
        assert len(server.requests) == 1  # nothing was sent to /elsewhere


async def test_a_500_is_an_answer_with_its_text_and_the_connection_is_kept() -> None:
    async with serving(["500"]) as server, client() as http:
        reply = await http.post(url(server), b"{}")
        assert (reply.status, reply.text) == (500, '{"error":"down"}')
        assert (await http.post(url(server), b"{}")).status == 200
        assert server.connections == 1


async def test_a_server_closing_mid_answer_is_an_error_and_the_next_request_goes_on() -> None:
    async with serving(["mid"]) as server, client() as http:
        with pytest.raises(ConnectionResetError, match="mid-answer"):
            await http.post(url(server), b"{}")
        assert http.open_connections == 0
        assert (await http.post(url(server), b"{}")).status == 200
        assert server.connections == 2
        # Not sent again by the client: the server had the request (the worker decides).
        assert len(server.requests) == 2


async def test_a_keep_alive_closed_while_idle_is_not_an_error() -> None:
    async with serving(["close-after", "close-after"]) as server, client() as http:
        for _ in range(3):
            assert (await http.post(url(server), b"{}")).status == 200
        assert server.connections == 3
        assert len(server.requests) == 3  # each request reached the server once


async def test_an_answer_ending_at_the_close() -> None:
    async with serving(["eof"]) as server, client() as http:
        reply = await http.post(url(server), b"{}")
        assert (reply.status, reply.content) == (200, OK_BODY)
        assert http.open_connections == 0


async def test_a_server_that_does_not_answer_times_out() -> None:
    async with serving(["hang"]) as server, client(total=0.3) as http:
        with pytest.raises(TimeoutError, match=r"no answer within 0\.3 s"):
            await http.post(url(server), b"{}")
        assert http.open_connections == 0
        assert (await http.post(url(server), b"{}")).status == 200


async def test_connections_are_bounded() -> None:
    async with serving(["slow"] * 8) as server, client(limit=2) as http:
        replies = await asyncio.gather(*(http.post(url(server), b"{}") for _ in range(8)))
        assert [r.status for r in replies] == [200] * 8
        assert server.most_open <= 2
        assert http.open_connections <= 2


async def test_a_refused_connection_is_an_os_error() -> None:
    async with serving() as server:
        port = server.port
    async with client() as http:
        with pytest.raises(ConnectionRefusedError):
            await http.post(f"http://127.0.0.1:{port}/", b"{}")
        assert http.open_connections == 0


async def test_a_url_it_cannot_call_is_a_value_error() -> None:
    async with client() as http:
        for bad in ("ftp://127.0.0.1/", "http://user@127.0.0.1/", "http:///path"):
            with pytest.raises(ValueError, match="not an http"):
                await http.post(bad, b"{}")


async def test_https_with_a_trusted_and_an_untrusted_certificate(tmp_path: Path) -> None:
    certificate = self_signed(tmp_path)
    async with serving(tls=certificate.server()) as server:
        async with client(ssl_context=certificate.client()) as http:
            for _ in range(2):
                assert (await http.post(url(server, "https"), b"{}")).status == 200
            assert server.connections == 1
        async with client() as http:  # the system's certificates: this one is not among them
            with pytest.raises(ssl.SSLCertVerificationError, match=r"self-signed|self signed"):
                await http.post(url(server, "https"), b"{}")
            assert http.open_connections == 0
