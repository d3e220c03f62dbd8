"""What every workload gets: the server's address, a unique user prefix, the options."""

from __future__ import annotations

from dataclasses import dataclass

from app.bench.options import Options

__all__ = ["Context"]


@dataclass(frozen=True)
class Context:
    url: str
    run_id: str  # unique per run, so runs against one server never share users
    options: Options
    server_pid: int | None = None
    database_url: str | None = None  # --pg only: direct database access (W6, W7)
    gateway_port: int | None = None  # the bench's push gateway (W7, W1 with --w1-push)

    def user_prefix(self, workload: str) -> str:
        return f"b{self.run_id}-{workload.lower()}-"

    def user_ids(self, workload: str, role: str, count: int) -> list[str]:
        return [f"{self.user_prefix(workload)}{role}{i}" for i in range(count)]
