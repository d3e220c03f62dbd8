"""The reference deployment on one machine, for tests/test_topology.py and
tools/measure_topology.py: hosts in network namespaces of their own, each running
`msgsync serve --workers 2`, behind nginx (deploy/nginx.conf as shipped), PgBouncer in
transaction mode, a primary and a streaming replica of its own. Needs root (network
namespaces), Debian's nginx, pgbouncer and postgresql-common."""

from __future__ import annotations

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

import httpx
import psycopg
from sqlalchemy.engine import make_url

from app.db.migrations import upgrade_to_head
from app.testing import free_port, wait_ready
from tests.conftest import FAST_HASHING, NO_SEND_RATE, NO_THROTTLE
from tests.pgbouncer import PGBOUNCER, running_pgbouncer
from tests.replication import Pair, streaming_pair

__all__ = [
    "NGINX",
    "PORT",
    "Host",
    "Topology",
    "free_subnet",
    "kill_host",
    "missing_tools",
    "network_host",
    "reference_topology",
    "running_nginx",
]

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
def network_host(number: int, subnet: int) -> Iterator[Host]:
    """A network namespace joined to the machine by a veth pair on 10.<subnet>.<n>.0/24."""
    tag = uuid.uuid4().hex[:5]
    net = f"10.{subnet}.{number}"
    host = Host(f"msgsync-{tag}-{number}", f"{net}.1", f"{net}.2")
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


def free_subnet() -> int:
    """A 10.<n>.0.0/16 no interface of the machine is on: two topologies built at once (a
    measurement beside a test run) must not answer for each other's hosts."""
    taken = subprocess.run(
        ["ip", "-brief", "address"], check=True, capture_output=True, text=True
    ).stdout
    while True:
        subnet = random.randrange(100, 200)
        if f" 10.{subnet}." not in taken:
            return subnet


def missing_tools() -> list[str]:
    """What this machine lacks to build the topology; empty when nothing."""
    missing = [t for t in ("ip", "pg_createcluster") if shutil.which(t) is None]
    missing += [] if Path(NGINX).exists() else ["nginx"]
    missing += [] if Path(PGBOUNCER).exists() else ["pgbouncer"]
    if os.geteuid() != 0:
        missing.append("root (network namespaces)")
    return missing


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
def running_nginx(upstreams: list[str], workdir: Path) -> Iterator[str]:
    """deploy/nginx.conf as shipped, with these upstreams (address:port) and a local port."""
    port = free_port()
    config = (DEPLOY / "nginx.conf").read_text()
    servers = "".join(f"        server {u} max_fails=1 fail_timeout=5s;\n" for u in upstreams)
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
    pair: Pair  # the primary and its replica
    workdir: Path  # the hosts' and nginx's logs


@contextmanager
def reference_topology(
    workdir: Path, pool_size: int = 10, env: dict[str, str] | None = None
) -> Iterator[Topology]:
    """Two hosts x 2 workers behind nginx, PgBouncer (`pool_size` server connections), a
    primary and a streaming replica; `env` is added to the hosts' environment. The caller
    checks missing_tools() first."""
    with ExitStack() as stack:
        pair: Pair = stack.enter_context(streaming_pair(listen_all=True))
        primary = pair.url(pair.primary_port, "msgsync")
        with psycopg.connect(pair.url(pair.primary_port), autocommit=True) as conn:
            conn.execute("CREATE DATABASE msgsync")
        upgrade_to_head(primary)
        bouncer = stack.enter_context(
            running_pgbouncer(primary, pool_size=pool_size, listen_addr="*")
        )
        subnet = free_subnet()
        hosts = [stack.enter_context(network_host(n, subnet)) for n in (1, 2)]
        processes = []
        for host in hosts:
            host_env = {
                **os.environ,
                # Every test client registers from one address, as in the other tests.
                **{
                    f"MSGSYNC_{k.upper()}": str(v)
                    for k, v in {**FAST_HASHING, **NO_THROTTLE, **NO_SEND_RATE}.items()
                },
                "MSGSYNC_DATABASE_URL": _on(bouncer, host.gateway),
                "MSGSYNC_DATABASE_SESSION_URL": _on(primary, host.gateway),
                "MSGSYNC_DATABASE_REPLICA_URLS": _on(
                    pair.url(pair.replica_port, "msgsync"), host.gateway
                ),
                "MSGSYNC_DB_POOL_SIZE": "5",
                **(env or {}),
            }
            log = workdir / f"{host.namespace}.log"
            processes.append(stack.enter_context(msgsync_host(host, host_env, log)))
        upstreams = [f"{h.address}:{PORT}" for h in hosts]
        url = stack.enter_context(running_nginx(upstreams, workdir))
        yield Topology(url, hosts, processes, bouncer, primary, pair, workdir)
