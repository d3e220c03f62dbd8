"""Slow clients cannot hold connections for ever: read deadlines on request heads and bodies,
over real sockets against a real server."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from tests.factories import register, send
from tests.server import running_server

# The read deadlines are the edge's, before any storage: one backend.
pytestmark = [pytest.mark.slow, pytest.mark.one_backend]

DEADLINES = {"MSGSYNC_HEADER_TIMEOUT_SECONDS": "1", "MSGSYNC_BODY_TIMEOUT_SECONDS": "1"}
# Far longer than the deadlines: a connection still open by then was not cut off.
PATIENCE = 30.0


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Reads until the server closes the connection; returns what it sent first."""
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := await reader.read(4096):
            received += chunk
    return received


async def slowloris(host: str, port: int, stop: asyncio.Event) -> bytes:
    """Trickles header lines, one every 0.2 s, until the server closes the connection."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"POST /messages HTTP/1.1\r\nHost: msgsync\r\n")

        async def trickle() -> None:
            for i in range(10_000):
                if stop.is_set():
                    return
                with contextlib.suppress(ConnectionError):
                    writer.write(b"X-Slow-%d: y\r\n" % i)
                    await writer.drain()
                await asyncio.sleep(0.2)

        trickling = asyncio.create_task(trickle())
        try:
            return await closed_by_server(reader)
        finally:
            trickling.cancel()
    finally:
        writer.close()


async def test_slow_heads_and_stalled_bodies_are_cut_off_and_others_served(
    database_url: str,
) -> None:
    with running_server(database_url, env=DEADLINES) as server:
        host, port = server.url.removeprefix("http://").split(":")
        async with httpx.AsyncClient(base_url=server.url, timeout=PATIENCE) as client:
            alice = await register(client)
            await send(client, alice, alice.user_id, "one")
            stop = asyncio.Event()
            lorises = [asyncio.create_task(slowloris(host, int(port), stop)) for _ in range(50)]
            try:
                # While they trickle: a long-poll waits longer than the deadlines (it waits
                # after its request was read) and is answered at its timeout.
                response = await client.get(
                    "/sync", params={"since": 1, "timeout": 3}, headers=alice.headers
                )
                assert response.status_code == 200, response.text
                assert response.json()["entries"] == []
                # Every slowloris connection was closed by the server, without an answer.
                done = await asyncio.wait_for(asyncio.gather(*lorises), PATIENCE)
                assert done == [b""] * 50
            finally:
                stop.set()
                for task in lorises:
                    task.cancel()
            # A body that stalls is cut off too.
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                b"POST /ack HTTP/1.1\r\nHost: msgsync\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + alice.token.encode() + b"\r\n"
                b'Content-Length: 14\r\n\r\n{"vers'
            )
            assert await asyncio.wait_for(closed_by_server(reader), PATIENCE) == b""
            writer.close()
            # A body that comes slowly but steadily is not: the deadline is on stalls.
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                b"POST /ack HTTP/1.1\r\nHost: msgsync\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + alice.token.encode() + b"\r\n"
                b"Content-Length: 14\r\nConnection: close\r\n\r\n"
            )
            for byte in b'{"version": 1}':
                await asyncio.sleep(0.25)
                writer.write(bytes([byte]))
            answer = await asyncio.wait_for(closed_by_server(reader), PATIENCE)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            # And the server still serves plain requests.
            response = await client.get("/devices", headers=alice.headers)
            assert response.status_code == 200
