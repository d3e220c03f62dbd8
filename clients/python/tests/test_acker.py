"""The ack policy on its own: count-triggered, coalesced, and a refused ack not retried."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from msgsync_client.acker import Acker
from msgsync_client.backoff import Backoff
from msgsync_client.errors import ApiError


async def until(condition: Callable[[], bool]) -> None:
    """Let the acker's task run until the condition holds (no wall-clock assumption)."""
    while not condition():  # noqa: ASYNC110 (the condition is the test's, not an event)
        await asyncio.sleep(0)


class Server:
    def __init__(self, refuse: bool = False) -> None:
        self.acks: list[int] = []
        self.refuse = refuse
        self.release = asyncio.Event()

    async def ack(self, version: int) -> int:
        self.acks.append(version)
        await self.release.wait()
        if self.refuse:
            raise ApiError(409, "ack_ahead", "ahead", {})
        return version


async def test_entries_applied_during_an_ack_in_flight_wait_for_the_next_one() -> None:
    server = Server()
    stored: list[int] = []
    acker = Acker(server.ack, stored.append, 0, ack_delay=60, ack_every=10, backoff=Backoff())
    acker.applied(10, 10)  # enough: an ack goes out at once
    await until(lambda: len(server.acks) == 1)
    acker.applied(20, 10)
    acker.applied(30, 10)
    for _ in range(100):
        await asyncio.sleep(0)
    assert server.acks == [10]  # one in flight; the next two pages wait for it
    server.release.set()
    await until(lambda: len(stored) == 2)
    assert server.acks == [10, 30]  # and then one ack covers both
    await acker.close()
    assert stored == [10, 30]


async def test_a_refused_ack_is_not_retried_and_flush_returns() -> None:
    server = Server(refuse=True)
    server.release.set()
    acker = Acker(server.ack, lambda _: None, 0, ack_delay=60, ack_every=1, backoff=Backoff())
    acker.applied(5, 5)
    assert await acker.flush() == 0
    await acker.close()
    assert server.acks == [5]
