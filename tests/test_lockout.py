"""Nobody locks the owner out: failed logins by others never refuse the owner's signed-in
devices their own password, a stolen token guessing the password is slowed down on its own
device alone, and logins from new devices meet growing delays. Over a real server, on
PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.factories import PASSWORD, Device, login, register
from tests.server import Server, running_server
from tests.test_accounts import assert_problem
from tests.test_devices import NEW_PASSWORD, change_password, end

LIMITS = {
    "login_attempts_per_account": 3,
    "password_attempts_per_device": 3,
    "throttle_window_seconds": 600,
}


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[Server]:
    with running_server(
        database_url, env={f"MSGSYNC_{k.upper()}": str(v) for k, v in LIMITS.items()}
    ) as running:
        yield running


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        yield c


def elsewhere() -> dict[str, str]:
    """A documentation-range address of its own, told by the trusted local proxy."""
    n = int.from_bytes(os.urandom(3))
    return {"x-forwarded-for": f"198.{n >> 16}.{(n >> 8) & 255}.{n & 255}"}


async def guess(client: httpx.AsyncClient, user_id: str, password: str) -> httpx.Response:
    return await client.post(
        "/login", json={"user_id": user_id, "password": password}, headers=elsewhere()
    )


async def test_failed_logins_by_others_never_refuse_the_owners_devices(
    client: httpx.AsyncClient,
) -> None:
    phone = await register(client)
    laptop = await login(client, phone.user_id, "laptop")
    spare = await login(client, phone.user_id, "spare")
    statuses = [(await guess(client, phone.user_id, f"guess {i}")).status_code for i in range(12)]
    assert statuses[:3] == [401] * 3
    assert 429 in statuses[3:]
    # The account's logins are throttled, the owner's signed-in devices are not.
    assert (await change_password(client, phone, logout_other_devices=False)).status_code == 204
    assert (await end(client, phone, spare.device_id, password=NEW_PASSWORD)).status_code == 204
    assert (await end(client, laptop, phone.device_id, password=NEW_PASSWORD)).status_code == 204


async def test_a_stolen_token_guessing_locks_only_its_own_device(
    client: httpx.AsyncClient,
) -> None:
    phone = await register(client)
    stolen = await login(client, phone.user_id, "stolen tablet")
    for i in range(3):
        answer = await end(client, stolen, phone.device_id, password=f"guess {i}")
        assert_problem(answer, 401, "bad_credentials")
    refused = await end(client, stolen, phone.device_id, password=f"guess {3}")
    assert_problem(refused, 429, "too_many_attempts")
    assert int(refused.headers["retry-after"]) >= 1
    # Even the right password: the guesser must not learn that it was right.
    assert_problem(await change_password(client, stolen), 429, "too_many_attempts")
    # The thief's guesses count neither against the account's logins nor its other devices.
    laptop = await login(client, phone.user_id, "laptop")
    assert (await end(client, phone, stolen.device_id)).status_code == 204
    assert (await client.get("/devices", headers=stolen.headers)).status_code == 401
    assert (await change_password(client, laptop)).status_code == 204


async def test_a_right_password_resets_the_devices_count(client: httpx.AsyncClient) -> None:
    phone = await register(client)
    others = [await login(client, phone.user_id, f"old {i}") for i in range(3)]
    for other in others:
        for i in range(2):
            assert (
                await end(client, phone, other.device_id, password=f"typo {i}")
            ).status_code == 401
        assert (await end(client, phone, other.device_id)).status_code == 204


async def test_logins_from_new_devices_meet_growing_delays(client: httpx.AsyncClient) -> None:
    owner: Device = await register(client)
    for i in range(3):
        assert_problem(await guess(client, owner.user_id, f"guess {i}"), 401, "bad_credentials")
    waits = []
    for i in range(3):
        refused = await guess(client, owner.user_id, PASSWORD)
        assert_problem(refused, 429, "too_many_attempts")
        wait = int(refused.headers["retry-after"])
        waits.append(wait)
        assert wait <= 4, waits  # not a fixed window of minutes
        await asyncio.sleep(wait + 0.2)
        # Once the delay has run out, the next guess is heard (and counted).
        assert_problem(await guess(client, owner.user_id, f"late {i}"), 401, "bad_credentials")
    assert waits == [1, 2, 4]
    refused = await guess(client, owner.user_id, PASSWORD)
    assert int(refused.headers["retry-after"]) == 8
    # The owner's device still changes the password meanwhile.
    assert (await change_password(client, owner)).status_code == 204


async def test_concurrent_guesses_cannot_all_pass_the_limit(client: httpx.AsyncClient) -> None:
    """Each attempt is counted by one atomic statement before the password is checked: of
    ten guesses at once, exactly the limit's three are heard, at login and on a device."""
    owner = await register(client)
    stolen = await login(client, owner.user_id, "stolen")
    logins = await asyncio.gather(*(guess(client, owner.user_id, f"g{i}") for i in range(10)))
    assert sorted(a.status_code for a in logins) == [401] * 3 + [429] * 7
    ends = await asyncio.gather(
        *(end(client, stolen, owner.device_id, password=f"g{i}") for i in range(10))
    )
    assert sorted(a.status_code for a in ends) == [401] * 3 + [429] * 7
