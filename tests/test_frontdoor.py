"""The front door: request id, gzip, CORS, metrics and the size limit hold on every path.

Each concern is shown on a plain send and a plain ack from a device whose token is cached
(answered by app.edge.hotpaths: the framework is made unreachable for them), on a framework
route, and on a woken long-poll over real HTTP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from starlette.types import Message

from app.api.deps import current_device
from app.config import Settings
from app.edge.frontdoor import MAX_REQUEST_ID
from app.main import create_app
from tests.conftest import make_settings
from tests.factories import (
    Device,
    make_the_framework_unreachable,
    register,
    send,
    set_token_cache,
)
from tests.server import Server, running_server

# HTTP-layer behaviour: PostgreSQL alone (tests/store/ holds the storage contract on both).
pytestmark = pytest.mark.one_backend

ORIGIN = "https://app.example"
# Small enough that even an ack's answer (about 60 bytes) is compressed.
GZIP_MIN = 32
LIMIT = 64 * 1024

Call = Callable[[dict[str, str]], Awaitable[httpx.Response]]


@pytest.fixture
async def door(database_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An application with CORS on for two origins and a low gzip threshold."""
    app = create_app(
        make_settings(
            database_url, cors_origins=f"{ORIGIN}, https://admin.example", gzip_min_bytes=GZIP_MIN
        )
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://msgsync.test") as c:
            yield app, c


PATHS = ["cached-token send", "cached-token group send", "cached-token ack", "framework route"]


async def prepare(app: FastAPI, client: httpx.AsyncClient, path: str) -> tuple[Call, str, str]:
    """A request on `path`, repeatable with extra headers; and its route template and status.
    For the hot paths the framework is made unreachable: only the lean path answers."""
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    await send(client, alice, bob.user_id, "first")

    def with_auth(headers: dict[str, str]) -> dict[str, str]:
        return {**alice.headers, **headers}

    if path == "framework route":
        return (lambda h: client.get("/devices", headers=with_auth(h))), "/devices", "200"
    group_id = ""
    if path == "cached-token group send":
        created = await client.post(
            "/groups", json={"title": "t", "members": [bob.user_id]}, headers=alice.headers
        )
        group_id = created.json()["group"]["group_id"]
    await set_token_cache(app, client, alice, cached=True)
    make_the_framework_unreachable(app)
    if path == "cached-token send":
        body = {"to": bob.user_id, "body": "x" * 100}
        return (
            (lambda h: client.post("/messages", json=body, headers=with_auth(h))),
            "/messages",
            "201",
        )
    if path == "cached-token group send":
        said = {"body": "x" * 100}
        return (
            (
                lambda h: client.post(
                    f"/groups/{group_id}/messages", json=said, headers=with_auth(h)
                )
            ),
            "/groups/{group_id}/messages",
            "201",
        )
    return (
        (lambda h: client.post("/ack", json={"version": 1}, headers=with_auth(h))),
        "/ack",
        "200",
    )


@pytest.mark.parametrize("path", PATHS)
async def test_every_answer_carries_a_request_id(
    door: tuple[FastAPI, httpx.AsyncClient], path: str
) -> None:
    call, _, status = await prepare(*door, path)
    first, second = await call({}), await call({})
    assert str(first.status_code) == status, first.text
    generated = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(generated) == 2
    assert "" not in generated
    echoed = await call({"X-Request-Id": "client-trace-42"})
    assert echoed.headers["x-request-id"] == "client-trace-42"
    hostile = await call({"X-Request-Id": 'a b"<c>;' + "z" * 300})
    assert hostile.headers["x-request-id"] == "abc" + "z" * (MAX_REQUEST_ID - 3)


@pytest.mark.parametrize("path", PATHS)
async def test_answers_are_gzipped_for_clients_that_accept_it(
    door: tuple[FastAPI, httpx.AsyncClient], path: str
) -> None:
    call, _, status = await prepare(*door, path)
    gzipped = await call({"Accept-Encoding": "gzip"})
    assert str(gzipped.status_code) == status, gzipped.text
    assert gzipped.headers["content-encoding"] == "gzip"
    assert gzipped.json()  # httpx undid the gzip: a whole JSON document came out
    plain = await call({"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.json().keys() == gzipped.json().keys()


async def test_small_answers_are_not_gzipped(door: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = door
    response = await client.get("/healthz", headers={"Accept-Encoding": "gzip"})
    assert len(response.content) < GZIP_MIN
    assert "content-encoding" not in response.headers


@pytest.mark.parametrize("path", PATHS)
async def test_cors_answers_allowed_origins_only(
    door: tuple[FastAPI, httpx.AsyncClient], path: str
) -> None:
    call, _, status = await prepare(*door, path)
    allowed = await call({"Origin": ORIGIN})
    assert str(allowed.status_code) == status, allowed.text
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in allowed.headers["access-control-expose-headers"].lower()
    other = await call({"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("route", ["/messages", "/ack", "/sync"])
async def test_cors_preflight(door: tuple[FastAPI, httpx.AsyncClient], route: str) -> None:
    _, client = door
    method = "GET" if route == "/sync" else "POST"
    response = await client.options(
        route,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert method in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    assert response.headers["x-request-id"]


async def test_cors_is_off_by_default(client: httpx.AsyncClient) -> None:
    device = await register(client)
    response = await client.get("/devices", headers={**device.headers, "Origin": ORIGIN})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = await client.options(
        "/messages", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


@pytest.mark.parametrize(
    "origins", ["https://app.example/", "app.example", "https://app.example/path", "ftp://x"]
)
def test_an_origin_that_could_never_match_is_refused_at_start(origins: str) -> None:
    with pytest.raises(ValidationError, match="is not an origin"):
        Settings(_env_file=None, cors_origins=f"https://ok.example,{origins}")


def test_origins_are_a_comma_separated_list() -> None:
    settings = Settings(_env_file=None, cors_origins=" https://a.example , http://b.example:8080,")
    assert settings.cors_origin_list == ["https://a.example", "http://b.example:8080"]
    assert Settings(_env_file=None).cors_origin_list == []


async def _answered(
    client: httpx.AsyncClient, method: str, route: str, status: str
) -> tuple[float, float]:
    """The answers a scrape counts for these labels, and the sum of their times."""
    text = (await client.get("/metrics")).text
    labels = {"method": method, "route": route, "status": status}
    name = "msgsync_http_request_duration_seconds"
    return _scraped(text, f"{name}_count", labels), _scraped(text, f"{name}_sum", labels)


@pytest.mark.parametrize("path", PATHS)
async def test_every_answer_is_counted_and_timed(
    door: tuple[FastAPI, httpx.AsyncClient], path: str
) -> None:
    call, route, status = await prepare(*door, path)
    method = "GET" if route == "/devices" else "POST"
    counted, timed = await _answered(door[1], method, route, status)
    response = await call({})
    assert str(response.status_code) == status, response.text
    count, time_sum = await _answered(door[1], method, route, status)
    assert count == counted + 1
    assert time_sum > timed


# The size rule, driven at the ASGI level so that what the application read is visible.


async def _asgi(
    app: FastAPI, path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
) -> tuple[int, dict[bytes, bytes], bytes, int]:
    """One POST through the whole application: (status, headers, body, chunks read)."""
    pending = list(chunks)
    read = 0
    answer: list[Message] = []

    async def receive() -> Message:
        nonlocal read
        if not pending:
            await asyncio.sleep(3600)  # a client that sent everything waits for the answer
        read += 1
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: Message) -> None:
        answer.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("msgsync.test", 80),
        "state": {},
    }
    await app(scope, receive, send)
    start = next(m for m in answer if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in answer if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body, read


SIZE_CASES = [
    (route, cached) for route in ("/messages", "/ack") for cached in ("cached", "not cached")
]


async def _sender(app: FastAPI, client: httpx.AsyncClient, cached: str) -> tuple[Device, Device]:
    alice, bob = await register(client, "alice"), await register(client, "bob")
    await set_token_cache(app, client, alice, cached == "cached")
    return alice, bob


def _headers(device: Device, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [
        (b"authorization", f"Bearer {device.token}".encode()),
        (b"content-type", b"application/json"),
        *extra,
    ]


def _oversized(route: str, peer: str) -> bytes:
    if route == "/messages":
        return b'{"to": "%s", "body": "%s"}' % (peer.encode(), b"x" * (2 * LIMIT))
    return b'{"version": 1' + b" " * (2 * LIMIT) + b"}"


@pytest.mark.parametrize(("route", "cached"), SIZE_CASES)
async def test_a_content_length_over_the_limit_is_413_before_the_body_is_read(
    app: FastAPI, client: httpx.AsyncClient, route: str, cached: str
) -> None:
    alice, bob = await _sender(app, client, cached)
    body = _oversized(route, bob.user_id)
    headers = _headers(alice, (b"content-length", str(len(body)).encode()))
    status, answer_headers, answer, read = await _asgi(app, route, headers, [body])
    assert (status, read) == (413, 0)
    assert answer_headers[b"content-type"] == b"application/problem+json"
    assert b'"code":"request_too_large"' in answer
    assert answer_headers[b"x-request-id"]
    assert (await client.get("/sync", params={"since": 0}, headers=bob.headers)).json()[
        "entries"
    ] == []


@pytest.mark.parametrize(("route", "cached"), SIZE_CASES)
async def test_a_chunked_body_over_the_limit_is_413(
    app: FastAPI, client: httpx.AsyncClient, route: str, cached: str
) -> None:
    alice, bob = await _sender(app, client, cached)
    body = _oversized(route, bob.user_id)
    chunks = [body[i : i + 8192] for i in range(0, len(body), 8192)]
    headers = _headers(alice, (b"transfer-encoding", b"chunked"))
    status, answer_headers, answer, read = await _asgi(app, route, headers, chunks)
    assert status == 413
    assert answer_headers[b"x-request-id"]
    assert b'"code":"request_too_large"' in answer
    assert read < len(chunks)  # refused as soon as the limit was passed
    assert (await client.get("/sync", params={"since": 0}, headers=bob.headers)).json()[
        "entries"
    ] == []


@pytest.mark.parametrize("cached", ["cached", "not cached"])
async def test_a_chunked_body_within_the_limit_is_served(
    app: FastAPI, client: httpx.AsyncClient, cached: str
) -> None:
    alice, bob = await _sender(app, client, cached)
    body = b'{"to": "%s", "body": "%s"}' % (bob.user_id.encode(), b"y" * 10_000)
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    headers = _headers(alice, (b"transfer-encoding", b"chunked"))
    status, _, answer, _ = await _asgi(app, "/messages", headers, chunks)
    assert status == 201, answer
    page = (await client.get("/sync", params={"since": 0}, headers=bob.headers)).json()
    assert [e["data"]["body"] for e in page["entries"]] == ["y" * 10_000]


# Over real HTTP: a woken long-poll, and chunked bodies as a client really sends them.


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[Server]:
    env = {"MSGSYNC_CORS_ORIGINS": ORIGIN, "MSGSYNC_GZIP_MIN_BYTES": str(GZIP_MIN)}
    with running_server(database_url, env=env) as running:
        yield running


def _scraped(text: str, name: str, labels: dict[str, str]) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


async def _waiting(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    return _scraped(text, "msgsync_waiting_long_polls", {})


@pytest.mark.server
async def test_a_woken_long_poll_crosses_the_front_door(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        alice, bob = await register(client, "alice"), await register(client, "bob")
        labels = {"method": "GET", "route": "/sync", "status": "200"}
        before = _scraped(
            (await client.get("/metrics")).text,
            "msgsync_http_request_duration_seconds_count",
            labels,
        )
        started = time.monotonic()
        polling = asyncio.create_task(
            client.get(
                "/sync",
                params={"since": 0, "timeout": 20},
                headers={
                    **bob.headers,
                    "X-Request-Id": "poll-1",
                    "Origin": ORIGIN,
                    "Accept-Encoding": "gzip",
                },
                timeout=30,
            )
        )
        for _ in range(200):
            if await _waiting(client) == 1:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the long-poll never waited")
        await send(client, alice, bob.user_id, "wake up " * 20)
        response = await polling
        assert time.monotonic() - started < 10  # woken, not timed out
        assert response.status_code == 200
        assert [e["data"]["body"] for e in response.json()["entries"]] == ["wake up " * 20]
        assert response.headers["x-request-id"] == "poll-1"
        assert response.headers["content-encoding"] == "gzip"
        assert response.headers["access-control-allow-origin"] == ORIGIN
        after = _scraped(
            (await client.get("/metrics")).text,
            "msgsync_http_request_duration_seconds_count",
            labels,
        )
        assert after == before + 1


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(body), 8192):
        yield body[i : i + 8192]


@pytest.mark.server
@pytest.mark.parametrize(("route", "cached"), SIZE_CASES)
async def test_a_chunked_body_over_the_limit_is_413_over_http(
    server: Server, route: str, cached: str
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        alice, bob = await register(client, "alice"), await register(client, "bob")
        if cached == "cached":  # one request through the framework caches the token
            assert (await client.get("/devices", headers=alice.headers)).status_code == 200
        response = await client.post(
            route,
            content=_chunks(_oversized(route, bob.user_id)),
            headers={**alice.headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 413
        assert response.json()["code"] == "request_too_large"
        assert response.headers["x-request-id"]
    async with httpx.AsyncClient(base_url=server.url) as client:
        page = await client.get("/sync", params={"since": 0}, headers=bob.headers)
        assert page.json()["entries"] == []


async def test_an_unexpected_failure_is_answered_with_its_request_id_and_counted(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    device = await register(client)

    async def broken() -> None:
        raise RuntimeError("a bug")

    # A bug in the framework's path: the application answers 500 internal_error and
    # re-raises for the server's log; the front door still labels and counts the answer.
    app.dependency_overrides[current_device] = broken
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://msgsync.test") as raw:
        counted, _ = await _answered(client, "GET", "/devices", "500")
        response = await raw.get("/devices", headers={**device.headers, "X-Request-Id": "bug-1"})
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert response.headers["x-request-id"] == "bug-1"
    assert (await _answered(client, "GET", "/devices", "500"))[0] == counted + 1
