"""Request heads are bounded (MSGSYNC_MAX_HEAD_BYTES, MSGSYNC_MAX_HEADER_FIELDS), over raw
sockets against a real server: past a bound, 431 or the connection closed, never 200, and
memory bounded however many connections send oversized heads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.factories import register
from tests.server import Server, running_server

# HTTP-layer behaviour: PostgreSQL alone (tests/store/ holds the storage contract on both).
pytestmark = [pytest.mark.server, pytest.mark.one_backend]

MiB = 1024 * 1024
PATIENCE = 60.0


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[Server]:
    with running_server(database_url) as running:
        yield running


def address(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    """One answer (head and Content-Length body), or b"" when the server closed first."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return b""
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    try:
        return head + await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        return head + exc.partial


async def exchange(server: Server, *requests: bytes) -> list[bytes]:
    """Sends each request on one connection, reading each one's answer before the next."""
    reader, writer = await asyncio.open_connection(*address(server))
    answers = []
    try:
        for request in requests:
            with contextlib.suppress(ConnectionError):
                writer.write(request)
                await writer.drain()
            answers.append(await asyncio.wait_for(read_answer(reader), PATIENCE))
    finally:
        writer.close()
    return answers


def get(*fields: bytes) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: msgsync\r\n" + b"".join(f + b"\r\n" for f in fields)


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer else 0


def problem_code(answer: bytes) -> str:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), head
    code: str = json.loads(body)["code"]
    return code


async def test_a_head_within_the_bounds_is_served(server: Server) -> None:
    # 99 fields besides Host, and most of the 64 KiB in one value.
    fields = [b"X-F%d: v" % i for i in range(98)] + [b"X-Big: " + b"a" * 60_000]
    assert len(fields) + 1 == 100
    (answer,) = await exchange(server, get(*fields) + b"\r\n")
    assert status(answer) == 200, answer[:200]


async def test_one_field_more_is_431_and_the_next_connection_is_served(server: Server) -> None:
    fields = [b"X-F%d: v" % i for i in range(100)]  # 101 with Host
    (answer,) = await exchange(server, get(*fields) + b"\r\n")
    assert status(answer) == 431, answer[:200]
    assert problem_code(answer) == "request_head_too_large"
    assert b"connection: close" in answer.lower()
    (answer,) = await exchange(server, get() + b"\r\n")
    assert status(answer) == 200, answer[:200]


async def test_a_head_over_64_kib_is_refused_never_served(server: Server) -> None:
    for head in (
        get(b"X-Big: " + b"a" * (65 * 1024)) + b"\r\n",  # one long field
        get(*[b"X-F%d: " % i + b"b" * 1000 for i in range(80)]) + b"\r\n",  # 80 fields of 1 KB
        b"GET /healthz?" + b"q" * (70 * 1024) + b" HTTP/1.1\r\nHost: msgsync\r\n\r\n",  # URL
    ):
        (answer,) = await exchange(server, head)
        assert status(answer) in (431, 0), answer[:200]
        if answer:
            assert problem_code(answer) == "request_head_too_large"
    (answer,) = await exchange(server, get() + b"\r\n")
    assert status(answer) == 200, answer[:200]


async def test_the_bound_is_per_request_on_a_kept_alive_connection(server: Server) -> None:
    """Each request's head has its own bound: several heads of 40 KiB on one connection are
    served, and an oversized one after them is refused."""
    near = get(b"X-Big: " + b"a" * (40 * 1024)) + b"\r\n"
    over = get(b"X-Big: " + b"a" * (65 * 1024)) + b"\r\n"
    answers = await exchange(server, near, near, near, over)
    assert [status(a) for a in answers[:3]] == [200, 200, 200]
    assert status(answers[3]) in (431, 0), answers[3][:200]


async def test_a_large_head_its_body_and_a_pipelined_request_in_one_write(
    server: Server,
) -> None:
    """A head within the bound whose body (and a next request) arrive in the same read is
    served whole: only the head is counted."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        alice = await register(client)
    body = json.dumps({"to": alice.user_id, "body": "b" * 16000}).encode()
    send = (
        b"POST /messages HTTP/1.1\r\nHost: msgsync\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + alice.token.encode() + b"\r\n"
        b"X-Pad: " + b"p" * 60_000 + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body
    reader, writer = await asyncio.open_connection(*address(server))
    try:
        writer.write(send + get(b"X-Pad: " + b"q" * 60_000) + b"\r\n")
        await writer.drain()
        first = await asyncio.wait_for(read_answer(reader), PATIENCE)
        second = await asyncio.wait_for(read_answer(reader), PATIENCE)
    finally:
        writer.close()
    assert status(first) == 201, first[:300]
    assert json.loads(first.partition(b"\r\n\r\n")[2])["message"]["body"] == "b" * 16000
    assert status(second) == 200, second[:300]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def send_huge_head(server: Server, size: int) -> bytes:
    """Sends a head of `size` bytes (one header, in 64 KiB writes) unless the server stops
    it first; returns the answer, if any."""
    reader, writer = await asyncio.open_connection(*address(server))
    try:
        chunk = b"a" * 65536
        with contextlib.suppress(ConnectionError):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: msgsync\r\nX-Huge: ")
            for _ in range(size // len(chunk)):
                writer.write(chunk)
                await writer.drain()
            writer.write(b"\r\n\r\n")
            await writer.drain()
        return await asyncio.wait_for(read_answer(reader), PATIENCE)
    finally:
        writer.close()


async def test_a_dozen_24_mib_heads_leave_memory_bounded(server: Server) -> None:
    pid = server.process.pid
    (answer,) = await exchange(server, get() + b"\r\n")  # warmed up
    assert status(answer) == 200
    before = rss_kib(pid)
    peak = before
    flood = asyncio.gather(*(send_huge_head(server, 24 * MiB) for _ in range(12)))
    started = time.monotonic()
    while not flood.done():
        peak = max(peak, rss_kib(pid))
        await asyncio.sleep(0.02)
    answers = await flood
    peak = max(peak, rss_kib(pid))
    growth_mib = (peak - before) / 1024
    print(
        f"\n12 x 24 MiB heads: server RSS {before / 1024:.0f} MiB before, peak "
        f"{peak / 1024:.0f} MiB (+{growth_mib:.1f} MiB), in {time.monotonic() - started:.1f} s; "
        f"answers: {sorted(status(a) for a in answers)}"
    )
    assert all(status(a) in (431, 0) for a in answers), [a[:100] for a in answers]
    assert growth_mib < 150
    (answer,) = await exchange(server, get() + b"\r\n")
    assert status(answer) == 200
