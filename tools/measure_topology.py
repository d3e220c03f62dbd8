"""Measure the reference topology (tests/topology.py: two namespace hosts x 2 workers behind
nginx, PgBouncer, a primary and a streaming replica) against one of its hosts direct, in
one run: `msgsync bench --url` W1 (send throughput) and W3 (wake latency), the two targets
alternating (ABBA), while the primary's client connections and the replica's replay lag are
sampled every 100 ms. A measurement, not a test: run it on a quiet machine, as root.

    ./tools/uv run python tools/measure_topology.py [--rounds 2] [--w1-messages 5000]
        [--w3-rounds 200] [--json PATH]

Issue 15's goals: W3 p99 through nginx < 20 ms, and W1 through nginx >= 90% of direct."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import NO_THROTTLE
from tests.topology import Topology, missing_tools, reference_topology

# Client connections on the primary: msgsync's sessions (LISTEN/NOTIFY), PgBouncer's server
# connections, the replicas' checks do not reach it; the sampler's own is left out.
_CONNECTIONS_SQL = """
SELECT count(*) FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
"""
_LAG_SQL = "SELECT EXTRACT(EPOCH FROM replay_lag)::float8 FROM pg_stat_replication"


class Sampler:
    """The primary's client connections and the replica's replay lag, every 100 ms."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.connections: list[int] = []
        self.lag_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self._url, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(_CONNECTIONS_SQL).fetchone()
                self.connections.append(int(row[0]) if row else 0)
                # NULL once the replica has replayed everything and the primary is idle.
                for (lag,) in conn.execute(_LAG_SQL).fetchall():
                    self.lag_ms.append(0.0 if lag is None else lag * 1000)
                self._stop.wait(0.1)

    @classmethod
    @contextmanager
    def running(cls, url: str) -> Iterator[Sampler]:
        sampler = cls(url)
        sampler._thread.start()
        try:
            yield sampler
        finally:
            sampler._stop.set()
            sampler._thread.join(5)


def _bench(url: str, workload: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    command = [
        *(sys.executable, "-m", "app.cli", "bench", "--url", url, "--only", workload),
        *("--w1-messages", str(args.w1_messages), "--w3-rounds", str(args.w3_rounds)),
        *("--json", str(out)),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    report: dict[str, Any] = json.loads(out.read_text())["workloads"][workload]
    return report


def _pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _round_trip(topology: Topology, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    targets = [("host A direct", topology.hosts[0].url), ("nginx (both hosts)", topology.url)]
    primary = topology.pair.url(topology.pair.primary_port)
    runs: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        order = targets if round_ % 2 == 0 else targets[::-1]  # ABBA: drift hits both
        for name, url in order:
            load = os.getloadavg()[0]
            with Sampler.running(primary) as sampler:
                w1 = _bench(url, "W1", args, work / f"w1-{round_}-{len(runs)}.json")
            w3 = _bench(url, "W3", args, work / f"w3-{round_}-{len(runs)}.json")
            run = {
                "round": round_,
                "target": name,
                "load_1min": round(load, 2),
                "w1_messages_per_s": w1["messages_per_s"],
                "w1_p99_ms": w1["send_latency"]["p99_ms"],
                "w3_p50_ms": w3["wake_latency"]["p50_ms"],
                "w3_p99_ms": w3["wake_latency"]["p99_ms"],
                "primary_connections_max_under_w1": max(sampler.connections, default=None),
                "replay_lag_ms_under_w1": {
                    "p50": _pct(sampler.lag_ms, 50),
                    "p99": _pct(sampler.lag_ms, 99),
                    "max": max(sampler.lag_ms, default=None),
                },
            }
            print(
                f"  round {round_} {name}: W1 {run['w1_messages_per_s']} msg/s, "
                f"W3 p99 {run['w3_p99_ms']:.1f} ms (load {load:.2f})",
                file=sys.stderr,
            )
            runs.append(run)
    return runs


def _idle_connections(topology: Topology) -> int:
    with Sampler.running(topology.pair.url(topology.pair.primary_port)) as sampler:
        time.sleep(2)
    return max(sampler.connections, default=0)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(runs: list[dict[str, Any]], idle: int) -> str:
    lines = [
        "| target | round | load | W1 msg/s | W1 p99 ms | W3 p50 ms | W3 p99 ms "
        "| primary conns (W1 max) | replay lag p50 / p99 / max ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        lag = r["replay_lag_ms_under_w1"]
        lines.append(
            f"| {r['target']} | {r['round']} | {r['load_1min']:.2f} "
            f"| {_fmt(r['w1_messages_per_s'])} | {_fmt(r['w1_p99_ms'])} "
            f"| {_fmt(r['w3_p50_ms'])} | {_fmt(r['w3_p99_ms'])} "
            f"| {r['primary_connections_max_under_w1']} "
            f"| {_fmt(lag['p50'])} / {_fmt(lag['p99'])} / {_fmt(lag['max'])} |"
        )
    lines.append("")
    by: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by.setdefault(r["target"], []).append(r)
    medians = {
        target: {
            key: statistics.median(r[key] for r in rs)
            for key in ("w1_messages_per_s", "w3_p50_ms", "w3_p99_ms")
        }
        for target, rs in by.items()
    }
    for target, m in medians.items():
        lines.append(
            f"median {target}: W1 {m['w1_messages_per_s']:.1f} msg/s, "
            f"W3 p50 {m['w3_p50_ms']:.1f} ms, p99 {m['w3_p99_ms']:.1f} ms"
        )
    direct, nginx = medians.get("host A direct"), medians.get("nginx (both hosts)")
    if direct and nginx:
        ratio = nginx["w1_messages_per_s"] / direct["w1_messages_per_s"]
        lines.append(f"W1 through nginx / direct: {ratio:.2f} (goal >= 0.90)")
        lines.append(f"W3 p99 through nginx: {nginx['w3_p99_ms']:.1f} ms (goal < 20 ms)")
    lines.append(f"primary client connections when idle: {idle}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both targets (ABBA)")
    parser.add_argument("--w1-messages", type=int, default=5000)
    parser.add_argument("--w3-rounds", type=int, default=200)
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args()
    missing = missing_tools()
    if missing:
        print(f"measure_topology needs {', '.join(missing)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="msgsync-topology-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        started = os.getloadavg()
        print("building the topology", file=sys.stderr)
        # The bench creates hundreds of users from one address: no login throttle.
        env = {f"MSGSYNC_{k.upper()}": str(v) for k, v in NO_THROTTLE.items()}
        with reference_topology(work, env=env) as topology:
            idle = _idle_connections(topology)
            try:
                runs = _round_trip(topology, args, work)
            except RuntimeError:
                for log in sorted(work.glob("*.log")):  # the hosts' and nginx's
                    tail = log.read_text(errors="replace").splitlines()[-25:]
                    print(f"--- {log.name}\n" + "\n".join(tail), file=sys.stderr)
                raise
        ended = os.getloadavg()
    print(table(runs, idle))
    print(
        f"load average (1, 5, 15 min) at start {started[0]:.2f} {started[1]:.2f} "
        f"{started[2]:.2f}, at end {ended[0]:.2f} {ended[1]:.2f} {ended[2]:.2f}"
    )
    if args.json:
        args.json.write_text(json.dumps({"idle_connections": idle, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
