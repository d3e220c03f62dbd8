"""Percentiles, and the verifier: a lost, duplicated or reordered message fails the run."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Hashable, Sequence

__all__ = [
    "PERCENTILE_METHOD",
    "BenchError",
    "VerificationError",
    "summarize",
    "verify_gap_free",
    "verify_sequence",
]

PERCENTILE_METHOD = "statistics.quantiles(n=100, method='inclusive'), in milliseconds"


class BenchError(Exception):
    """The run cannot go on (an HTTP error, a server that will not start)."""


class VerificationError(BenchError):
    """What the server returned is not what was sent: the figures would be meaningless."""


def summarize(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50/p95/p99/max and mean of latencies given in seconds, reported in ms."""
    if not seconds:
        return {"count": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    ms = [s * 1000 for s in seconds]
    if len(ms) == 1:
        p50 = p95 = p99 = ms[0]
    else:
        cuts = statistics.quantiles(ms, n=100, method="inclusive")
        p50, p95, p99 = cuts[49], cuts[94], cuts[98]
    return {
        "count": len(ms),
        "p50_ms": round(p50, 3),
        "p95_ms": round(p95, 3),
        "p99_ms": round(p99, 3),
        "max_ms": round(max(ms), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def _first(items: Sequence[Hashable] | list[Hashable], count: int = 3) -> str:
    return ", ".join(repr(i) for i in list(items)[:count])


def verify_sequence(label: str, expected: Sequence[Hashable], received: Sequence[Hashable]) -> None:
    """`received` must be `expected` exactly: each item once, nothing else, in the same order."""
    counts = Counter(received)
    wanted = set(expected)
    problems = []
    duplicated = [item for item, n in counts.items() if n > 1]
    missing = [item for item in expected if item not in counts]
    unexpected = [item for item in counts if item not in wanted]
    if missing:
        problems.append(f"{len(missing)} lost (first: {_first(missing)})")
    if duplicated:
        problems.append(f"{len(duplicated)} duplicated (first: {_first(duplicated)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (first: {_first(unexpected)})")
    if not problems and list(received) != list(expected):
        at = next(i for i, (a, b) in enumerate(zip(expected, received, strict=True)) if a != b)
        problems.append(
            f"out of order at position {at}: expected {expected[at]!r}, got {received[at]!r}"
        )
    if problems:
        raise VerificationError(
            f"{label}: {'; '.join(problems)} ({len(expected)} sent, {len(received)} received)"
        )


def verify_gap_free(label: str, versions: Sequence[int], after: int) -> None:
    """Versions must run after+1, after+2, ... with no gap, repeat or reordering."""
    verify_sequence(
        f"{label} (versions)", list(range(after + 1, after + 1 + len(versions))), versions
    )
