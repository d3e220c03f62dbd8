"""The bench's HTTP client: users and devices it creates, sends, syncs, acks, with progress."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import orjson

from app.bench.stats import BenchError

__all__ = ["Api", "BenchDevice", "Progress", "bounded", "new_client"]

PASSWORD = "bench-password-not-secret"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BenchDevice:
    user_id: str
    device_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def new_client(base_url: str, connections: int, read_timeout: float = 30) -> httpx.AsyncClient:
    """A client whose pool matches the workload's concurrency, so no request queues in httpx."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    timeout = httpx.Timeout(read_timeout, connect=30, pool=read_timeout + 30)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout)


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

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def create_user(self, user_id: str) -> None:
        response = await self.client.post("/users", json={"user_id": user_id, "password": PASSWORD})
        _check(response, 201, f"create user {user_id}")

    async def login(self, user_id: str, name: str = "bench") -> BenchDevice:
        response = await self.client.post(
            "/login", json={"user_id": user_id, "password": PASSWORD, "device_name": name}
        )
        body = _check(response, 201, f"login {user_id}")
        return BenchDevice(user_id, body["device_id"], body["access_token"])

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
        response = await self.client.post(
            "/messages",
            json={"to": to, "body": body, "client_msg_id": client_msg_id},
            headers=sender.headers,
        )
        return _check(response, 201, f"send {sender.user_id}->{to}")

    async def sync(self, device: BenchDevice, **params: Any) -> tuple[Any, int]:
        """One page, and the size of the response body in bytes."""
        response = await self.client.get("/sync", params=params, headers=device.headers)
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
        response = await self.client.post("/ack", json={"version": version}, headers=device.headers)
        body = _check(response, 200, f"ack {device.user_id} v{version}")
        cursor: int = body["acked_version"]
        return cursor

    async def devices(self, device: BenchDevice) -> dict[str, int]:
        response = await self.client.get("/devices", headers=device.headers)
        body = _check(response, 200, f"devices of {device.user_id}")
        return {d["device_id"]: d["acked_version"] for d in body["devices"]}
