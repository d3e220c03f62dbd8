"""`msgsync bench` W7 (offline push) and W1 with push, in tiny runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.cli import main

pytestmark = pytest.mark.slow

TINY = [
    *("--w1-pairs", "3", "--w1-clients", "2", "--w1-messages", "12", "--w1-push"),
    *("--w7-devices", "40", "--w7-rate", "200", "--push-delay", "0.3"),
    *("--setup-concurrency", "4"),
]


@pytest.mark.server
def test_w7_and_w1_with_push(pg_admin_url: str, tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    assert main(["bench", "--pg", pg_admin_url, "--only", "W1,W7", *TINY, "--json", str(path)]) == 0
    report: dict[str, Any] = json.loads(path.read_text())
    w1, w7 = report["workloads"]["W1"], report["workloads"]["W7"]
    assert w1["push"] is True
    assert w1["verified_messages"] == 12
    for figure in ("burst", "open_loop"):
        assert w7[figure]["delivered"] == 40
        assert w7[figure]["lost"] == 0
        assert w7[figure]["wrong_event"] == 0
        assert w7[figure]["duplicates"] == 0
        assert w7[figure]["lag_after_due"]["count"] == 40
        assert w7[figure]["cpu_ms_per_push"]["server"] > 0
    # 20% of requests fail by default: the retried ones still arrived, once each.
    assert w7["gateway_requests"] == 80 + w7["gateway_failures_injected"]
