"""Large groups against real servers: members send concurrently (PostgreSQL on two worker
processes; SQLite) while another member reads exactly as a client must, long-polling /sync
and reading the log on every group_news entry, and sees every event exactly once, in seq
order (issue 25: "no event is ever left unsignalled"); many members woken by the same sends
read the log at once and each sees every event once; and a long-poll wakes on group_news."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.factories import Device, register
from tests.group_follower import Follower
from tests.server import running_server

pytestmark = pytest.mark.server

ENV = {"MSGSYNC_GROUP_FANOUT_LIMIT": "3"}
SENDERS = 5
PER_SENDER = 12
# Long enough that a long-poll ending before it can only have been woken.
LONG = 20.0


async def _group(client: httpx.AsyncClient, owner: Device, members: list[Device]) -> str:
    response = await client.post(
        "/groups",
        json={"title": "Large", "members": [m.user_id for m in members]},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    assert response.json()["group"]["large"]
    group_id: str = response.json()["group"]["group_id"]
    return group_id


async def _send_many(
    client: httpx.AsyncClient, who: Device, group_id: str, statuses: list[int]
) -> None:
    for i in range(PER_SENDER):
        response = await client.post(
            f"/groups/{group_id}/messages",
            json={"body": f"{who.user_id}:{i}"},
            headers=who.headers,
        )
        statuses.append(response.status_code)


async def _read_while_sending(url: str) -> None:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        users = [await register(client, "lgc") for _ in range(SENDERS + 2)]
        owner, reader, *senders = users
        group_id = await _group(client, owner, [reader, *senders])
        follower = Follower(client, reader)
        done = asyncio.Event()

        async def follow() -> None:
            # Long-poll while the senders run; once they are done, every event has committed
            # and been signalled: pages without waiting until one brings nothing.
            while True:
                finished = done.is_set()
                page = await follower.sync(timeout=0 if finished else 2)
                if finished and not page["entries"] and not page["has_more"]:
                    return

        newcomers = [await register(client, "lgn") for _ in range(6)]

        async def change_members() -> None:
            # Membership events and direct messages cross the sends on the same users' rows.
            for pair in (newcomers[:3], newcomers[3:]):
                response = await client.post(
                    f"/groups/{group_id}/members",
                    json={"user_ids": [u.user_id for u in pair]},
                    headers=owner.headers,
                )
                statuses.append(response.status_code)
                for sender in senders[:2]:
                    response = await client.post(
                        "/messages",
                        json={"to": pair[0].user_id, "body": "direct"},
                        headers=sender.headers,
                    )
                    statuses.append(response.status_code)
            response = await client.delete(
                f"/groups/{group_id}/members/{newcomers[0].user_id}", headers=owner.headers
            )
            statuses.append(response.status_code)

        statuses: list[int] = []
        reading = asyncio.create_task(follow())
        await asyncio.gather(
            change_members(), *(_send_many(client, s, group_id, statuses) for s in senders)
        )
        done.set()
        await reading
        assert set(statuses) <= {200, 201, 204}, sorted(set(statuses))
        latest = (await client.get(f"/groups/{group_id}", headers=owner.headers)).json()["group"]
        assert latest["latest_seq"] == 1 + SENDERS * PER_SENDER + len(newcomers) + 1
        # Every event exactly once, in seq order: none unsignalled, none read twice.
        assert follower.seen[group_id] == list(range(1, latest["latest_seq"] + 1))
        assert follower.read[group_id] == list(range(2, latest["latest_seq"] + 1))
        # Members added during the sends, following only now, see every event from theirs.
        for newcomer in (newcomers[1], newcomers[5]):
            view = await client.get(f"/groups/{group_id}", headers=newcomer.headers)
            joined = view.json()["group"]["joined_seq"]
            late = Follower(client, newcomer)
            await late.catch_up()
            assert late.seen[group_id] == list(range(joined, latest["latest_seq"] + 1))
        # Coalesced: fewer news entries than events (each covered read allows one more).
        assert 1 <= follower.news <= SENDERS * PER_SENDER


async def test_concurrent_senders_and_a_reader_on_postgresql_two_workers(
    postgresql_url: str,
) -> None:
    with running_server(postgresql_url, workers=2, env=ENV) as server:
        await _read_while_sending(server.url)


async def test_concurrent_senders_and_a_reader_on_sqlite(sqlite_url: str) -> None:
    with running_server(sqlite_url, env=ENV) as server:
        await _read_while_sending(server.url)


READERS = 20


async def _many_read_at_once(url: str) -> None:
    """Every send wakes all the online members together; each reads the log (the same page
    as the others, covering its news alongside theirs) and ends with every event once."""
    limits = httpx.Limits(max_connections=READERS + 16)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        owner, *senders = [await register(client, "lgm") for _ in range(3)]
        readers = [await register(client, "lgr") for _ in range(READERS)]
        group_id = await _group(client, owner, [*senders, *readers])
        followers = [Follower(client, r) for r in readers]
        await asyncio.gather(*(f.catch_up() for f in followers))
        done = asyncio.Event()

        async def follow(follower: Follower) -> None:
            while True:
                finished = done.is_set()
                page = await follower.sync(timeout=0 if finished else 2)
                if finished and not page["entries"] and not page["has_more"]:
                    return

        statuses: list[int] = []
        reading = [asyncio.create_task(follow(f)) for f in followers]
        await asyncio.gather(*(_send_many(client, s, group_id, statuses) for s in senders))
        done.set()
        await asyncio.gather(*reading)
        assert set(statuses) == {201}
        latest = (await client.get(f"/groups/{group_id}", headers=owner.headers)).json()["group"]
        assert latest["latest_seq"] == 1 + len(senders) * PER_SENDER
        for follower in followers:
            assert follower.seen[group_id] == list(range(1, latest["latest_seq"] + 1))
            assert follower.read[group_id] == list(range(2, latest["latest_seq"] + 1))


async def test_many_members_reading_at_once_on_postgresql_two_workers(
    postgresql_url: str,
) -> None:
    with running_server(postgresql_url, workers=2, env=ENV) as server:
        await _many_read_at_once(server.url)


async def test_many_members_reading_at_once_on_sqlite(sqlite_url: str) -> None:
    with running_server(sqlite_url, env=ENV) as server:
        await _many_read_at_once(server.url)


@pytest.fixture(params=["postgresql", "sqlite"])
def database(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


async def test_a_long_poll_wakes_on_group_news(database: str) -> None:
    with running_server(database, env=ENV) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=LONG + 30) as client:
            owner, reader, *rest = [await register(client, "lgw") for _ in range(4)]
            group_id = await _group(client, owner, [reader, *rest])
            await client.post(
                f"/groups/{group_id}/messages", json={"body": "one"}, headers=owner.headers
            )
            follower = Follower(client, reader)
            await follower.catch_up()  # read the log to its end: the news is covered
            assert follower.seen[group_id] == [1, 2]

            async def send_later() -> None:
                # Sent once the reader's long-poll is waiting (there is nothing to read).
                await asyncio.sleep(0.3)
                response = await client.post(
                    f"/groups/{group_id}/messages", json={"body": "two"}, headers=rest[0].headers
                )
                assert response.status_code == 201

            sender = asyncio.create_task(send_later())
            page = await follower.sync(timeout=LONG)
            await sender
            # Woken by the entry (a long-poll that timed out would bring none).
            assert [e["kind"] for e in page["entries"]] == ["group_news"]
            assert page["entries"][0]["data"] == {"group_id": group_id, "seq": 3}
            assert follower.seen[group_id] == [1, 2, 3]
