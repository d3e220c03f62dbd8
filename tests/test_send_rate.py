"""The per-user send rate (MSGSYNC_SEND_RATE, MSGSYNC_SEND_BURST) over real HTTP: beyond the
burst, 429 too_many_requests with Retry-After; every 201 arrives, nothing refused does."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from app.inbox.rates import RateLimit, retry_after
from tests.factories import Device, login, register, sync_all
from tests.server import Server, running_server
from tests.test_accounts import assert_problem

pytestmark = pytest.mark.server

# Slow enough that no token comes back while a test makes its few requests (4 s each).
RATE, BURST = 0.25, 5


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    url: str = request.getfixturevalue(f"{request.param}_url")
    env = {"MSGSYNC_SEND_RATE": str(RATE), "MSGSYNC_SEND_BURST": str(BURST)}
    with running_server(url, env=env) as running:
        yield running


async def post(client: httpx.AsyncClient, sender: Device, to: str, body: str) -> httpx.Response:
    return await client.post(
        "/messages",
        json={"to": to, "body": body, "client_msg_id": uuid.uuid4().hex},
        headers=sender.headers,
    )


def retry_seconds(response: httpx.Response) -> int:
    value = response.headers["retry-after"]
    assert value.isdigit(), value  # whole seconds
    assert int(value) >= 1
    return int(value)


async def received(client: httpx.AsyncClient, device: Device) -> list[str]:
    return [e["data"]["body"] for e in await sync_all(client, device) if e["kind"] == "message"]


async def test_beyond_the_burst_is_429_and_a_wait_lets_sends_through(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        alice, bob = await register(client), await register(client)
        # The first send of a device goes through the framework's route (its token is not
        # cached yet), the others through the hot path: both are limited.
        sent = []
        for i in range(BURST):
            response = await post(client, alice, bob.user_id, f"m{i}")
            assert response.status_code == 201, response.text
            sent.append(f"m{i}")
        refused = await post(client, alice, bob.user_id, "over")
        assert_problem(refused, 429, "too_many_requests")
        wait = retry_seconds(refused)
        # The bucket is the user's, not the device's: another device of hers is refused too,
        # on its first send (the route, not the hot path).
        tablet = await login(client, alice.user_id, "tablet")
        refused_too = await post(client, tablet, bob.user_id, "over, from the tablet")
        assert_problem(refused_too, 429, "too_many_requests")
        # Another user is not limited by her.
        carol = await register(client)
        response = await post(client, carol, bob.user_id, "from carol")
        assert response.status_code == 201, response.text
        # After the wait, she sends again.
        await asyncio.sleep(wait)
        response = await post(client, alice, bob.user_id, "after the wait")
        assert response.status_code == 201, response.text
        sent.append("after the wait")
        assert await received(client, bob) == [*sent[:BURST], "from carol", sent[-1]]
        assert await received(client, alice) == sent


async def test_a_retry_of_a_stored_message_is_answered_even_over_the_rate(
    server: Server,
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        alice, bob = await register(client), await register(client)
        first = {"to": bob.user_id, "body": "lost answer", "client_msg_id": "retry-me"}
        stored = await client.post("/messages", json=first, headers=alice.headers)
        assert stored.status_code == 201, stored.text
        for i in range(BURST - 1):
            assert (await post(client, alice, bob.user_id, f"m{i}")).status_code == 201
        assert (await post(client, alice, bob.user_id, "over")).status_code == 429
        # Over the rate: a retry of the stored message is its first result, not a 429 ...
        retried = await client.post("/messages", json=first, headers=alice.headers)
        assert retried.status_code == 200, retried.text
        assert retried.json() == stored.json()
        # ... and a new message with another client_msg_id (or none) is refused.
        other = {"to": bob.user_id, "body": "new", "client_msg_id": "not-stored"}
        assert (
            await client.post("/messages", json=other, headers=alice.headers)
        ).status_code == 429
        bare = {"to": bob.user_id, "body": "no id"}
        assert (await client.post("/messages", json=bare, headers=alice.headers)).status_code == 429
        bodies = await received(client, bob)
        assert bodies == ["lost answer", *(f"m{i}" for i in range(BURST - 1))]


async def test_concurrent_sends_every_201_arrives_and_nothing_refused_does(
    server: Server,
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        alice, bob = await register(client), await register(client)
        started = time.monotonic()
        answers = await asyncio.gather(
            *(post(client, alice, bob.user_id, f"c{i}") for i in range(4 * BURST))
        )
        elapsed = time.monotonic() - started
        created = [f"c{i}" for i, r in enumerate(answers) if r.status_code == 201]
        refused = [r for r in answers if r.status_code != 201]
        for response in refused:
            assert_problem(response, 429, "too_many_requests")
            retry_seconds(response)
        # The burst, and at most what the rate refilled while they were sent.
        assert BURST <= len(created) <= BURST + int(elapsed * RATE) + 1, (len(created), elapsed)
        assert refused
        assert sorted(await received(client, bob)) == sorted(created)
        assert sorted(await received(client, alice)) == sorted(created)


def test_the_bucket_refills_at_the_rate_and_holds_at_most_the_burst() -> None:
    now = [0.0]
    limit = RateLimit(rate=2, burst=3, clock=lambda: now[0])
    assert [limit.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.take("a") == pytest.approx(0.5)
    assert limit.take("a") == pytest.approx(0.5)  # a refusal takes nothing
    assert limit.take("b") == 0.0  # per key
    now[0] = 0.5
    assert limit.take("a") == 0.0
    assert limit.take("a") > 0
    now[0] = 100.0  # a long pause fills the bucket up to the burst, no more
    assert [limit.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.take("a") > 0
    # Full buckets are forgotten: memory follows the users sending now.
    now[0] = 1000.0
    limit.take("c")
    assert len(limit) == 1
    assert [retry_after(s) for s in (0.01, 1.0, 1.2)] == ["1", "1", "2"]
