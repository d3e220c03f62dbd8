"""The bench's HTTP client: users and devices it creates, sends, syncs, acks, with progress."""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import orjson

from app.bench.stats import BenchError

__all__ = ["Api", "BenchDevice", "Progress", "bounded", "open_api"]

PASSWORD = "bench-password-not-secret"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BenchDevice:
    user_id: str
    device_id: str
    token: str
    shard: int = 0  # which of the Api's clients carries this device's requests

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


# httpcore scans its whole pool on every request and response (is_idle, has_expired: a
# getpeername per connection): with 200 connections in one client the bench spent half its
# CPU there and measured itself, not the server. So connections are spread over clients of
# at most this many, and each device sticks to one client.
CONNECTIONS_PER_CLIENT = 16


@asynccontextmanager
async def open_api(base_url: str, connections: int, read_timeout: float = 30) -> AsyncIterator[Api]:
    """An Api with `connections` connections in all, so no request queues inside httpx."""
    count = max(1, -(-connections // CONNECTIONS_PER_CLIENT))
    per_client = -(-connections // count) + 2  # slack for the uneven round-robin
    limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
    timeout = httpx.Timeout(read_timeout, connect=30, pool=read_timeout + 30)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout)
            )
            for _ in range(count)
        ]
        yield Api(clients)


class Progress:
    """One line on stderr at most every `every` seconds, so a long run shows it is alive."""

    def __init__(self, label: str, total: int, every: float = 1.0) -> None:
        self.label, self.total, self.every = label, total, every
        self.done = 0
        self._last = time.monotonic()

    def step(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            print(f"  {self.label}: {self.done}/{self.total}", file=sys.stderr, flush=True)


async def bounded(limit: int, jobs: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run the jobs with at most `limit` in flight; results in job order."""
    semaphore = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await job()

    return list(await asyncio.gather(*(one(job) for job in jobs)))


def _check(response: httpx.Response, status: int, what: str) -> Any:
    if response.status_code != status:
        raise BenchError(
            f"{what}: HTTP {response.status_code} (expected {status}): {response.text[:300]}"
        )
    return orjson.loads(response.content)


class Api:
    """The few calls the workloads make; every unexpected status fails the run."""

    def __init__(self, clients: list[httpx.AsyncClient]) -> None:
        self.clients = clients
        self._turn = itertools.count()

    async def _request(self, client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> Any:
        try:
            return await client.request(method, url, **kw)
        except httpx.RemoteProtocolError:
            # uvicorn closes a keep-alive connection idle for 5 s; a request that raced the
            # close is sent once more on a new one. Every call here is safe to repeat: sends
            # carry a client_msg_id, acks are cumulative, the rest are reads.
            return await client.request(method, url, **kw)

    def _any(self) -> httpx.AsyncClient:
        return self.clients[next(self._turn) % len(self.clients)]

    def _of(self, device: BenchDevice) -> httpx.AsyncClient:
        return self.clients[device.shard]

    async def create_user(self, user_id: str) -> None:
        response = await self._request(
            self._any(), "POST", "/users", json={"user_id": user_id, "password": PASSWORD}
        )
        _check(response, 201, f"create user {user_id}")

    async def login(self, user_id: str, name: str = "bench") -> BenchDevice:
        response = await self._request(
            self._any(),
            "POST",
            "/login",
            json={"user_id": user_id, "password": PASSWORD, "device_name": name},
        )
        body = _check(response, 201, f"login {user_id}")
        shard = next(self._turn) % len(self.clients)
        return BenchDevice(user_id, body["device_id"], body["access_token"], shard)

    async def create_devices(
        self, user_ids: list[str], concurrency: int, label: str
    ) -> list[BenchDevice]:
        """One user and one logged-in device per id."""
        progress = Progress(f"{label} setup: users", len(user_ids))

        async def one(user_id: str) -> BenchDevice:
            await self.create_user(user_id)
            device = await self.login(user_id)
            progress.step()
            return device

        return await bounded(concurrency, [lambda u=u: one(u) for u in user_ids])  # type: ignore[misc]

    async def send(self, sender: BenchDevice, to: str, body: str, client_msg_id: str) -> Any:
        response = await self._request(
            self._of(sender),
            "POST",
            "/messages",
            json={"to": to, "body": body, "client_msg_id": client_msg_id},
            headers=sender.headers,
        )
        return _check(response, 201, f"send {sender.user_id}->{to}")

    async def sync(self, device: BenchDevice, **params: Any) -> tuple[Any, int]:
        """One page, and the size of the response body in bytes."""
        response = await self._request(
            self._of(device), "GET", "/sync", params=params, headers=device.headers
        )
        return _check(response, 200, f"sync {device.user_id}"), len(response.content)

    async def drain(
        self, device: BenchDevice, since: int, limit: int = 1000
    ) -> tuple[list[Any], int, int]:
        """Every entry after `since` following has_more; (entries, requests, bytes)."""
        entries: list[Any] = []
        requests = received = 0
        while True:
            page, size = await self.sync(device, since=since, limit=limit)
            requests += 1
            received += size
            entries.extend(page["entries"])
            since = page["next_since"]
            if not page["has_more"]:
                return entries, requests, received

    async def ack(self, device: BenchDevice, version: int) -> int:
        response = await self._request(
            self._of(device), "POST", "/ack", json={"version": version}, headers=device.headers
        )
        body = _check(response, 200, f"ack {device.user_id} v{version}")
        cursor: int = body["acked_version"]
        return cursor

    async def devices(self, device: BenchDevice) -> dict[str, int]:
        response = await self._request(self._of(device), "GET", "/devices", headers=device.headers)
        body = _check(response, 200, f"devices of {device.user_id}")
        return {d["device_id"]: d["acked_version"] for d in body["devices"]}
