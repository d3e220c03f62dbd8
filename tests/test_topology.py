"""The reference deployment on one machine: two hosts (network namespaces) x 2 workers
behind nginx (deploy/nginx.conf), PgBouncer in transaction mode, a primary and a streaming
replica of the test's own. Over it: crossing sends with syncing devices and a retention
run (0 lost, 0 duplicated, 0 gaps), wake-ups and logout across hosts, and one host killed."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from app.bench.server import free_port, wait_ready
from app.migrations import upgrade_to_head
from tests.conftest import FAST_HASHING, IN_CI
from tests.factories import Device, register, send
from tests.pgbouncer import running_pgbouncer
from tests.replication import Pair, streaming_pair

pytestmark = pytest.mark.topology

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PORT = 8000  # every host serves on the same port, as real hosts do


@dataclass(frozen=True)
class Host:
    namespace: str
    gateway: str  # the machine's side of the link: where the databases are reached
    address: str  # the host's own address

    @property
    def url(self) -> str:
        return f"http://{self.address}:{PORT}"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def network_host(number: int) -> Iterator[Host]:
    """A network namespace joined to the machine by a veth pair on 10.213.<n>.0/24."""
    tag = uuid.uuid4().hex[:5]
    host = Host(f"msgsync-{tag}-{number}", f"10.213.{number}.1", f"10.213.{number}.2")
    outside, inside = f"ms{tag}{number}a", f"ms{tag}{number}b"
    _ip("netns", "add", host.namespace)
    try:
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", host.namespace)
        _ip("addr", "add", f"{host.gateway}/24", "dev", outside)
        _ip("link", "set", outside, "up")
        inner = ("netns", "exec", host.namespace, "ip")
        _ip(*inner, "addr", "add", f"{host.address}/24", "dev", inside)
        _ip(*inner, "link", "set", inside, "up")
        _ip(*inner, "link", "set", "lo", "up")
        yield host
    finally:
        subprocess.run(["ip", "netns", "delete", host.namespace], check=False)
        subprocess.run(["ip", "link", "delete", outside], check=False, capture_output=True)


def _require_tools() -> None:
    missing = [t for t in ("ip", "pg_createcluster") if shutil.which(t) is None]
    missing += [] if Path(NGINX).exists() else ["nginx"]
    if os.geteuid() != 0:
        missing.append("root (network namespaces)")
    if missing:
        if IN_CI:
            pytest.fail(f"the topology test needs {', '.join(missing)}")
        pytest.skip(f"the topology test needs {', '.join(missing)}")


def _on(url: str, host: str) -> str:
    return make_url(url).set(host=host).render_as_string(False)


@contextmanager
def msgsync_host(host: Host, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    command = [
        *("ip", "netns", "exec", host.namespace, sys.executable, "-m", "app.cli", "serve"),
        *("--host", "0.0.0.0", "--port", str(PORT), "--workers", "2"),
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        for _ in range(3):  # two workers on a loaded machine may take more than a minute
            try:
                wait_ready(host.url, process, log)
                break
            except Exception:
                if process.poll() is not None:
                    raise
        yield process
    finally:
        kill_host(process)


def kill_host(process: subprocess.Popen[bytes]) -> None:
    """Every process of the host (the server and its workers), at once."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def running_nginx(hosts: list[Host], workdir: Path) -> Iterator[str]:
    """deploy/nginx.conf as shipped, with these hosts as upstreams and a local port."""
    port = free_port()
    config = (DEPLOY / "nginx.conf").read_text()
    servers = "".join(
        f"        server {h.address}:{PORT} max_fails=1 fail_timeout=5s;\n" for h in hosts
    )
    lines = [line for line in config.splitlines(keepends=True) if "server 10.0.0." not in line]
    config = "".join(lines).replace("keepalive 64;", "keepalive 64;\n" + servers, 1)
    config = config.replace("listen 80;", f"listen 127.0.0.1:{port};")
    (workdir / "nginx.conf").write_text(config)
    process = subprocess.Popen(
        [
            *(NGINX, "-p", str(workdir), "-c", str(workdir / "nginx.conf")),
            *("-g", f"daemon off; pid {workdir}/nginx.pid; error_log {workdir}/error.log;"),
        ]
    )
    try:
        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@dataclass
class Topology:
    url: str  # nginx
    hosts: list[Host]
    processes: list[subprocess.Popen[bytes]]
    statements: str  # PgBouncer, as seen from this machine
    session: str  # the primary, direct


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    _require_tools()
    workdir = tmp_path_factory.mktemp("topology")
    workdir.chmod(0o755)
    with ExitStack() as stack:
        pair: Pair = stack.enter_context(streaming_pair(listen_all=True))
        primary = pair.url(pair.primary_port, "msgsync")
        with psycopg.connect(pair.url(pair.primary_port), autocommit=True) as conn:
            conn.execute("CREATE DATABASE msgsync")
        upgrade_to_head(primary)
        bouncer = stack.enter_context(running_pgbouncer(primary, pool_size=10, listen_addr="*"))
        hosts = [stack.enter_context(network_host(n)) for n in (1, 2)]
        processes = []
        for host in hosts:
            env = {
                **os.environ,
                **{f"MSGSYNC_{k.upper()}": str(v) for k, v in FAST_HASHING.items()},
                "MSGSYNC_DATABASE_URL": _on(bouncer, host.gateway),
                "MSGSYNC_DATABASE_SESSION_URL": _on(primary, host.gateway),
                "MSGSYNC_DATABASE_REPLICA_URLS": _on(
                    pair.url(pair.replica_port, "msgsync"), host.gateway
                ),
                "MSGSYNC_DB_POOL_SIZE": "5",
            }
            log = workdir / f"{host.namespace}.log"
            processes.append(stack.enter_context(msgsync_host(host, env, log)))
        url = stack.enter_context(running_nginx(hosts, workdir))
        yield Topology(url, hosts, processes, bouncer, primary)


async def _device_loop(
    client: httpx.AsyncClient, device: Device, seen: list[dict[str, Any]], stop: asyncio.Event
) -> None:
    """A device syncing as clients do: long-poll from its cursor, apply, go on."""
    since = 0
    while not stop.is_set():
        response = await client.get(
            "/sync", params={"since": since, "timeout": 1}, headers=device.headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        seen.extend(page["entries"])
        since = page["next_since"]
    while True:  # caught up only when a page is empty: the primary answers those
        response = await client.get("/sync", params={"since": since}, headers=device.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        if not page["entries"]:
            return
        seen.extend(page["entries"])
        since = page["next_since"]


async def _retention(topology: Topology) -> None:
    env = {
        **os.environ,
        "MSGSYNC_DATABASE_URL": topology.statements,
        "MSGSYNC_DATABASE_SESSION_URL": topology.session,
    }
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "app.cli", "retention", "--json", "--max-entries", "5"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert b'"already_running": false' in out


async def test_a_storm_with_retention_loses_nothing(topology: Topology) -> None:
    async with httpx.AsyncClient(base_url=topology.url, timeout=90) as client:
        users = [await register(client) for _ in range(6)]
        devices = {u.user_id: [u, await _second_device(client, u)] for u in users}
        seen: dict[str, list[dict[str, Any]]] = {
            d.device_id: [] for ds in devices.values() for d in ds
        }
        stop = asyncio.Event()
        syncing = [
            asyncio.create_task(_device_loop(client, d, seen[d.device_id], stop))
            for ds in devices.values()
            for d in ds
        ]
        expected: dict[str, set[int]] = {u.user_id: set() for u in users}

        async def sender(user: Device, rng: random.Random) -> None:
            for i in range(15):
                peer = rng.choice([u for u in users if u is not user])
                sent = await send(client, user, peer.user_id, f"{i}", client_msg_id=f"c{i}")
                expected[user.user_id].add(sent["message"]["id"])
                expected[peer.user_id].add(sent["message"]["id"])

        senders = [sender(u, random.Random(n)) for n, u in enumerate(users)]
        await asyncio.gather(*senders[:3])
        await asyncio.gather(*senders[3:], _retention(topology))
        stop.set()
        await asyncio.gather(*syncing)
        for user_id, user_devices in devices.items():
            for device in user_devices:
                entries = seen[device.device_id]
                versions = [e["version"] for e in entries]
                ids = [e["data"]["id"] for e in entries]
                assert versions == list(range(1, len(versions) + 1))  # no gap, no duplicate
                assert sorted(ids) == sorted(expected[user_id])  # nothing lost or doubled


async def _second_device(client: httpx.AsyncClient, user: Device) -> Device:
    from tests.factories import login

    return await login(client, user.user_id, "laptop")


async def test_wakeups_and_logout_cross_hosts(topology: Topology) -> None:
    a, b = topology.hosts
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=90) as on_a,
        httpx.AsyncClient(base_url=b.url, timeout=90) as on_b,
    ):
        alice, bob = await register(on_a), await register(on_b)
        poll = asyncio.create_task(
            on_a.get("/sync", params={"since": 0, "timeout": 60}, headers=alice.headers)
        )
        await asyncio.sleep(0.5)  # the long-poll waits (a wake-up only makes it re-read)
        await send(on_b, bob, alice.user_id, "across")
        async with asyncio.timeout(30):  # well inside its 60 s: woken, not timed out
            page = (await poll).json()
        assert [e["data"]["body"] for e in page["entries"]] == ["across"]

        for _ in range(10):  # alice's token in host B's workers' caches
            assert (await on_b.get("/devices", headers=alice.headers)).status_code == 200
        assert (await on_a.post("/logout", headers=alice.headers)).status_code == 204
        for _ in itertools.count():  # one NOTIFY round, far less than the cache's 60 s
            if (await on_b.get("/devices", headers=alice.headers)).status_code == 401:
                break
            assert _ < 400
            await asyncio.sleep(0.05)


async def test_clients_carry_on_when_one_host_dies(topology: Topology) -> None:
    """A request nginx had already passed to the dying host (on a kept-alive upstream
    connection) may come back 502: nginx does not resend a POST it may have delivered. A
    client retries it as any 5xx, with the same client_msg_id, so nothing is lost or
    doubled; every other request is served by the other host."""
    async with httpx.AsyncClient(base_url=topology.url, timeout=90) as client:
        alice, bob = await register(client), await register(client)
        kill_host(topology.processes[0])
        failed = 0

        async def retried(method: str, url: str, **kwargs: Any) -> httpx.Response:
            nonlocal failed
            for _ in range(3):
                response = await client.request(method, url, **kwargs)
                if response.status_code != 502:
                    return response
                failed += 1
            return response

        for i in range(20):
            response = await retried(
                "POST",
                "/messages",
                json={"to": bob.user_id, "body": f"{i}", "client_msg_id": f"k{i}"},
                headers=alice.headers,
            )
            assert response.status_code in (200, 201), response.text
            response = await retried("GET", "/sync", params={"since": 0}, headers=bob.headers)
            assert response.status_code == 200, response.text
        bodies = [e["data"]["body"] for e in response.json()["entries"]]
        assert bodies == [str(i) for i in range(20)]  # each once, in order
        # Only what was in flight on the dying host failed, never a request after it.
        assert failed <= 2
