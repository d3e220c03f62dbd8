"""`msgsync bench` keeps working: a tiny run of every workload, and a verifier that fails loudly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.bench.stats import VerificationError, summarize, verify_gap_free, verify_sequence
from app.cli import main
from tests.server import running_server

pytestmark = pytest.mark.slow

TINY = [
    *("--w1-pairs", "4", "--w1-clients", "3", "--w1-messages", "20", "--w1-ceiling-seconds", "1"),
    *("--w2-messages", "30", "--w2-senders", "3", "--w2-limit", "1000"),
    *("--w3-rounds", "3", "--idle", "5", "--w4-senders", "2"),
    *("--w5-devices", "6", "--w5-users", "2", "--w5-acks", "4"),
    *("--w6-users", "3", "--w6-per-user", "8", "--w6-max-entries", "4", "--w6-w1-messages", "6"),
    *("--w8-sizes", "2,4", "--w8-users", "8", "--w8-messages", "10", "--w8-clients", "3"),
    *("--w8-large-sizes", "6", "--w8-large-small", "3", "--w8-pollers", "2"),
    *("--w8-large-senders", "2", "--w8-large-messages", "8", "--w8-stats-wait", "0"),
    *("--w9-conversations", "30", "--w9-messages", "3", "--w9-calls", "3", "--w9-limit", "4"),
    *("--setup-concurrency", "4"),
]


def _bench(tmp_path: Path, *target: str) -> dict[str, Any]:
    path = tmp_path / "bench.json"
    assert main(["bench", *target, *TINY, "--json", str(path)]) == 0
    report: dict[str, Any] = json.loads(path.read_text())
    assert report["ok"] is True
    return report


def _check_throughput(workloads: dict[str, Any]) -> None:
    w1, w2, w5 = workloads["W1"], workloads["W2"], workloads["W5"]
    assert w1["verified_messages"] == w1["messages"] == 20
    assert w1["send_latency"]["count"] == 20
    assert {"messages_per_s", "wall_s"} <= w1.keys()
    assert {"p50_ms", "p95_ms", "p99_ms", "max_ms"} <= w1["send_latency"].keys()
    assert w2["verified_messages"] == w2["messages"] == 30
    assert w2["requests"] == 1
    assert w2["bytes_received"] > 0
    assert w5["acks"] == 6 * 4
    assert w5["verified_devices"] == 6
    assert w5["ack_latency"]["count"] == 24


@pytest.mark.server
def test_bench_on_its_own_postgresql_server(pg_admin_url: str, tmp_path: Path) -> None:
    # A fan-out limit of 4: the group of 6 is large, the group of 3 fanned out.
    only = ("--only", "W1,W2,W3,W4,W5,W6,W8,W9", "--group-fanout-limit", "4")
    report = _bench(tmp_path, "--pg", pg_admin_url, *only)
    workloads = report["workloads"]
    assert list(workloads) == ["W1", "W2", "W3", "W4", "W5", "W6", "W8", "W9"]
    sizes = workloads["W8"]["sizes"]
    assert [s["members"] for s in sizes] == [2, 4]
    for size in sizes:
        assert size["sends"] == 10
        assert size["verified_deliveries"] == 10 * size["members"]
        assert size["send_latency"]["count"] == 10
    # The large sizes: every online member read every message once, in order (or the run
    # fails). (Rows per send need PostgreSQL's statistics flushed: seconds the test skips.)
    large = workloads["W8"]["large"]
    assert [(s["members"], s["large"], s["online"]) for s in large] == [(3, False, 1), (6, True, 2)]
    for size in large:
        assert (size["sends"], size["lost"], size["duplicated"]) == (8, 0, 0)
        assert size["everyone_read"]["count"] == 8
    _check_throughput(workloads)
    # pgbench ran both send statements against W1's users, each send checked as stored.
    ceiling = workloads["W1"]["ceiling"]
    # (Without pgbench, or past the database's connection limit, it says why instead.)
    assert ceiling.keys() in (
        {"seconds", "clients", "tx_per_s", "rows_per_send"},
        {"skipped"},
        {"failed"},
    )
    if "tx_per_s" in ceiling:
        assert ceiling["tx_per_s"]["old"] > 0
        assert ceiling["tx_per_s"]["new"] > 0
        assert workloads["W1"]["of_old_ceiling"] > 0
    assert workloads["W3"]["wake_latency"]["count"] == 3
    w4 = workloads["W4"]
    assert w4["verified_messages"] == 5
    assert w4["wake_latency"]["count"] + w4["returned_without_message"] == 5
    assert w4["server_rss_mib"] > 0
    w6 = workloads["W6"]
    assert w6["deleted"] == 3 * 4
    assert w6["verified_messages"] >= 6
    assert {"deletions_per_s", "w1_alone", "w1_beside_job", "w1_p99_ratio"} <= w6.keys()
    # W9 checked both pages against the database (the run fails otherwise).
    w9 = workloads["W9"]
    assert (w9["conversations"], w9["groups"], w9["later_page_after"]) == (30, 15, 15)
    assert w9["unread_conversations"] > 0
    assert w9["first_page"]["count"] == w9["later_page"]["count"] == 3


@pytest.mark.server
def test_bench_against_a_running_server(postgresql_url: str, tmp_path: Path) -> None:
    with running_server(postgresql_url) as server:
        report = _bench(tmp_path, "--url", server.url, "--only", "W1,W2,W5,W6,W9")
    _check_throughput(report["workloads"])
    assert report["workloads"]["W6"] == {
        "skipped": "W6 needs direct database access: run it with --pg"
    }
    assert "skipped" in report["workloads"]["W9"]
    assert report["workloads"]["W1"]["ceiling"] == {"skipped": "pgbench needs the database: --pg"}


def test_a_failed_run_exits_non_zero_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bench.json"
    # Nothing listens on port 9 (discard): the first request fails.
    code = main(["bench", "--url", "http://127.0.0.1:9", "--only", "W1", "--json", str(path)])
    assert code == 1
    assert "bench FAILED" in capsys.readouterr().err
    assert json.loads(path.read_text())["ok"] is False


@pytest.mark.parametrize(
    ("received", "complaint"),
    [
        ([1, 2, 2, 3, 4], "1 duplicated (first: 2)"),
        ([1, 2, 4], "1 lost (first: 3)"),
        ([1, 3, 2, 4], "out of order at position 1: expected 2, got 3"),
        ([1, 2, 3, 4, 99], "1 unexpected (first: 99)"),
        ([], "4 lost"),
    ],
)
def test_the_verifier_fails_loudly(received: list[int], complaint: str) -> None:
    with pytest.raises(VerificationError, match="W1 a->b") as failure:
        verify_sequence("W1 a->b", [1, 2, 3, 4], received)
    assert complaint in str(failure.value)


def test_the_verifier_accepts_exactly_what_was_sent() -> None:
    verify_sequence("ok", [(1, "a"), (2, "b")], [(1, "a"), (2, "b")])
    verify_gap_free("ok", [6, 7, 8], after=5)
    with pytest.raises(VerificationError, match="versions"):
        verify_gap_free("gap", [6, 8], after=5)


def test_percentiles() -> None:
    stats = summarize([i / 1000 for i in range(1, 101)])
    assert (stats["count"], stats["max_ms"]) == (100, 100.0)
    assert stats["p50_ms"] == pytest.approx(50.5)
    assert stats["p99_ms"] == pytest.approx(99.01)
    assert summarize([])["p99_ms"] is None
    assert summarize([0.002])["p50_ms"] == 2.0
