"""The table printed at the end of a run."""

from __future__ import annotations

from typing import Any

__all__ = ["table"]


def _ms(stats: dict[str, Any], keys: tuple[str, ...] = ("p50_ms", "p95_ms", "p99_ms")) -> str:
    if not stats.get("count"):
        return "-"
    return " / ".join(f"{stats[k]:.1f}" for k in keys) + " ms"


def _cpu(r: dict[str, Any]) -> str:
    per = r["cpu_ms_per_push"]
    return f"server {per.get('server')}, database {per.get('database')}"


def _ceiling(r: dict[str, Any]) -> list[tuple[str, str]]:
    ceiling = r.get("ceiling")
    if not ceiling:
        return []
    for why in ("skipped", "failed"):
        if why in ceiling:
            return [("pgbench ceiling", f"{why}: {ceiling[why]}")]
    tx = ceiling["tx_per_s"]
    return [
        (
            f"pgbench ceiling, {label} send (tx/s)",
            f"{tx[key]:.0f}; W1 at {r[f'of_{key}_ceiling']:.2f} of it; "
            f"{ceiling['rows_per_send'][key]} rows written per send",
        )
        for key, label in (("old", "old"), ("new", "today's"))
    ]


def _rows(name: str, r: dict[str, Any]) -> list[tuple[str, str]]:
    if "skipped" in r:
        return [("skipped", r["skipped"])]
    if name == "W1":
        return [
            ("messages/s", f"{r['messages_per_s']:.0f} ({r['messages']} messages)"),
            ("send latency p50/p95/p99", _ms(r["send_latency"])),
            *_per("CPU ms per message", r.get("cpu_ms_per_message")),
            *_ceiling(r),
        ]
    if name == "W2":
        return [
            ("catch-up wall time", f"{r['catch_up_ms']:.1f} ms ({r['messages']} messages)"),
            ("requests / bytes received", f"{r['requests']} / {r['bytes_received']}"),
        ]
    if name == "W3":
        keys = ("p50_ms", "p95_ms", "p99_ms", "max_ms")
        return [("wake latency p50/p95/p99/max", _ms(r["wake_latency"], keys))]
    if name == "W4":
        rss = r["server_rss_mib"]
        return [
            ("woken within window", f"{r['woken_within_window']}/{r['idle']} in {r['window_s']} s"),
            ("wake latency p50/p99", _ms(r["wake_latency"], ("p50_ms", "p99_ms"))),
            ("server RSS while waiting", f"{rss} MiB" if rss is not None else "unknown"),
        ]
    if name == "W5":
        return [
            ("acks/s", f"{r['acks_per_s']:.0f} ({r['acks']} acks, {r['devices']} devices)"),
            ("ack latency p50/p95/p99", _ms(r["ack_latency"])),
            *_per("CPU µs per ack", r.get("cpu_us_per_ack")),
        ]
    if name == "W6":
        ratio = r["w1_p99_ratio"]
        return [
            ("deletions/s", f"{r['deletions_per_s']:.0f} ({r['deleted']} in {r['prune_s']} s)"),
            (
                "W1 p99 alone / beside the job",
                f"{_ms(r['w1_alone'], ('p99_ms',))} / "
                f"{_ms(r['w1_beside_job'], ('p99_ms',))} (x{ratio})",
            ),
        ]
    if name == "W8" and "large" in r:
        return _rows("W8", {"sizes": r["sizes"]}) + _large_rows(r["large"])
    if name == "W8":
        return [
            row
            for size in r["sizes"]
            for row in (
                (
                    f"{size['members']} members: sends/s, deliveries/s",
                    f"{size['sends_per_s']:.0f}, {size['deliveries_per_s']:.0f} "
                    f"({size['sends']} sends, {size['groups']} groups)",
                ),
                (
                    f"{size['members']} members: send p50/p99",
                    _ms(size["send_latency"], ("p50_ms", "p99_ms")),
                ),
                (
                    f"{size['members']} members: wake p50/p99",
                    _ms(size["wake_latency"], ("p50_ms", "p99_ms")),
                ),
            )
        ]
    if name == "W9":
        page_keys = ("p50_ms", "p95_ms", "p99_ms")
        listed = [
            (
                "first page p50/p95/p99",
                f"{_ms(r['first_page'], page_keys)} (limit {r['limit']}, {r['conversations']} "
                f"conversations, {r['groups']} groups)",
            )
        ]
        if "later_page" in r:
            listed.append(
                (
                    f"page after {r['later_page_after']} p50/p95/p99",
                    _ms(r["later_page"], page_keys),
                )
            )
        return listed
    if name == "W7":
        burst = r["burst"]
        rows = [
            (
                "burst: pushes delivered/s",
                f"{burst['pushes_per_s']} ({burst['delivered']} devices due at once, "
                f"{r['fail_rate']:.0%} failing)",
            ),
            ("burst: after the delay p50/p95/p99", _ms(burst["lag_after_due"])),
            ("burst: lost / duplicates", f"{burst['lost']} / {burst['duplicates']}"),
            ("burst: CPU ms per push", _cpu(burst)),
        ]
        if "open_loop" in r:
            loop = r["open_loop"]
            rows += [
                (
                    "open loop: offered / delivered per s",
                    f"{loop['offered_per_s']:.0f} / {loop['pushes_per_s']} "
                    f"({loop['delivered']} devices)",
                ),
                ("open loop: after due p50/p95/p99", _ms(loop["lag_after_due"])),
                ("open loop: lost / duplicates", f"{loop['lost']} / {loop['duplicates']}"),
                ("open loop: CPU ms per push", _cpu(loop)),
            ]
        return rows
    return []


def _large_rows(large: dict[str, Any] | list[dict[str, Any]]) -> list[tuple[str, str]]:
    if isinstance(large, dict):
        return [("large sizes", large.get("skipped", ""))]
    rows = []
    for size in large:
        label = f"{size['members']} members ({'large' if size['large'] else 'fan-out'})"
        rows += [
            (
                f"{label}: sends/s, send p50/p99",
                f"{size['sends_per_s']:.0f}, {_ms(size['send_latency'], ('p50_ms', 'p99_ms'))} "
                f"({size['sends']} sends, {size['senders']} senders)",
            ),
            (
                f"{label}: all {size['online']} online read it p50/p99",
                _ms(size["everyone_read"], ("p50_ms", "p99_ms")),
            ),
            (
                f"{label}: rows written per send, lost / duplicated",
                f"{size['rows_per_send']}, {size['lost']} / {size['duplicated']}",
            ),
            (
                f"{label}: retried: answers 503, timed out",
                f"{size['unavailable_retried']}, {size['timed_out_retried']}",
            ),
        ]
    return rows


def _per(figure: str, by_role: dict[str, float] | None) -> list[tuple[str, str]]:
    """A CPU-per-operation row, when it was measured (--pg)."""
    if not by_role:
        return []
    return [(figure, ", ".join(f"{role} {value}" for role, value in by_role.items()))]


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = [(name, *row) for name, r in results.items() for row in _rows(name, r)]
    head = ("workload", "figure", "value")
    widths = [max(len(str(x[i])) for x in [head, *rows]) for i in range(3)]
    line = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line.format(*head), rule, *(line.format(*row) for row in rows)])
