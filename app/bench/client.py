"""The bench's HTTP client: users and devices it creates, sends, syncs, acks, with progress."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from app.bench.http import ConnectionPool, Reply
from app.bench.stats import BenchError

__all__ = ["Api", "BenchDevice", "Progress", "bounded", "open_api"]

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


@asynccontextmanager
async def open_api(base_url: str, connections: int, read_timeout: float = 30) -> AsyncIterator[Api]:
    """An Api with up to `connections` keep-alive connections, so no request queues here."""
    pool = ConnectionPool(base_url, connections, read_timeout)
    try:
        yield Api(pool)
    finally:
        await pool.close()


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


def _check(response: Reply, status: int, what: str) -> Any:
    if response.status != status:
        raise BenchError(
            f"{what}: HTTP {response.status} (expected {status}): {response.text[:300]}"
        )
    return orjson.loads(response.content)


class Api:
    """The few calls the workloads make; every unexpected status fails the run."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        # With retry_unavailable, a 503 is retried after a short pause, as a client does with
        # `database_unavailable` ("retry shortly"), and so is a request unanswered within the
        # read timeout; both are counted. Else either fails the run.
        self.retry_unavailable = False
        self.unavailable = 0
        self.timed_out = 0

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        body = None if json is None else orjson.dumps(json)
        pause = 0.05
        while True:
            try:
                reply = await self.pool.request(
                    method, path, body=body, headers=headers, params=params
                )
            except TimeoutError:
                if not self.retry_unavailable:
                    raise
                self.timed_out += 1
                continue
            if reply.status != 503 or not self.retry_unavailable:
                return reply
            self.unavailable += 1
            await asyncio.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 2.0)

    async def create_user(self, user_id: str) -> None:
        response = await self._request(
            "POST", "/users", json={"user_id": user_id, "password": PASSWORD}
        )
        _check(response, 201, f"create user {user_id}")

    async def login(self, user_id: str, name: str = "bench") -> BenchDevice:
        response = await self._request(
            "POST",
            "/login",
            json={"user_id": user_id, "password": PASSWORD, "device_name": name},
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
        response = await self._request(
            "POST",
            "/messages",
            json={"to": to, "body": body, "client_msg_id": client_msg_id},
            headers=sender.headers,
        )
        return _check(response, 201, f"send {sender.user_id}->{to}")

    async def create_group(self, owner: BenchDevice, title: str, members: list[str]) -> str:
        response = await self._request(
            "POST", "/groups", json={"title": title, "members": members}, headers=owner.headers
        )
        group_id: str = _check(response, 201, f"create group of {owner.user_id}")["group"][
            "group_id"
        ]
        return group_id

    async def group_send(
        self, sender: BenchDevice, group_id: str, body: str, client_msg_id: str
    ) -> Any:
        response = await self._request(
            "POST",
            f"/groups/{group_id}/messages",
            json={"body": body, "client_msg_id": client_msg_id},
            headers=sender.headers,
        )
        return _check(response, 201, f"send {sender.user_id}->{group_id}")

    async def group_events(
        self, device: BenchDevice, group_id: str, after_seq: int, limit: int
    ) -> Any:
        response = await self._request(
            "GET",
            f"/groups/{group_id}/events",
            params={"after_seq": str(after_seq), "limit": str(limit)},
            headers=device.headers,
        )
        return _check(response, 200, f"events of {group_id} for {device.user_id}")

    async def sync(self, device: BenchDevice, **params: Any) -> tuple[Any, int]:
        """One page, and the size of the response body in bytes."""
        query = {key: str(value) for key, value in params.items()}
        response = await self._request("GET", "/sync", params=query, headers=device.headers)
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
            "POST", "/ack", json={"version": version}, headers=device.headers
        )
        body = _check(response, 200, f"ack {device.user_id} v{version}")
        cursor: int = body["acked_version"]
        return cursor

    async def devices(self, device: BenchDevice) -> dict[str, int]:
        response = await self._request("GET", "/devices", headers=device.headers)
        body = _check(response, 200, f"devices of {device.user_id}")
        return {d["device_id"]: d["acked_version"] for d in body["devices"]}

    async def pusher(self, device: BenchDevice, pushkey: str, gateway_url: str) -> None:
        body = {"app_id": "bench", "pushkey": pushkey, "gateway_url": gateway_url}
        response = await self._request("POST", "/pushers", json=body, headers=device.headers)
        _check(response, 201, f"pusher of {device.user_id}")
