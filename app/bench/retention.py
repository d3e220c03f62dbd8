"""W6 retention: a bulk-loaded offline store pruned to the caps, with W1 running beside it."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from typing import Any

import orjson
import psycopg

from app.bench.client import Progress, open_api
from app.bench.context import Context
from app.bench.stats import BenchError, VerificationError, summarize
from app.bench.throughput import make_pairs, send_pairs, verify_pairs

__all__ = ["retention_unavailable", "w6"]

# Inbox-only 'read' entries keep the data valid without matching message rows.
_LOAD_USERS = """
INSERT INTO users (user_id, password_hash, latest_version, floor_version, created_at)
SELECT %(prefix)s || g, 'not-a-login', %(per_user)s, 0, now()
FROM generate_series(1, %(users)s) AS g
"""
# The oldest quarter of each user's entries is older than max-age; the rest is recent.
_LOAD_INBOX = """
INSERT INTO inbox (user_id, version, kind, created_at, message_id, data)
SELECT %(prefix)s || u, v, 'read',
       CASE WHEN v <= %(old)s
            THEN now() - make_interval(secs => %(max_age)s + 86400) + v * interval '1 ms'
            ELSE now() - (%(per_user)s - v) * interval '10 ms' END,
       NULL,
       '{"reader":"' || %(prefix)s || u || '","peer":"' || %(prefix)s || u
           || '","up_to_message_id":0}'
FROM generate_series(1, %(users)s) AS u, generate_series(1, %(per_user)s) AS v
"""


def retention_unavailable() -> str | None:
    """Why W6 cannot run with this code, or None. The job lands from another branch."""
    if importlib.util.find_spec("app.inbox.retention") is None:
        return "app.inbox.retention is not in this build yet (issue 4)"
    module = importlib.import_module("app.inbox.retention")
    if not hasattr(module, "prune"):
        return "app.inbox.retention has no prune()"
    return None


def _load(database_url: str, prefix: str, users: int, per_user: int, max_age: float) -> None:
    params = {
        "prefix": prefix,
        "users": users,
        "per_user": per_user,
        "old": per_user // 4,
        "max_age": max_age,
    }
    with psycopg.connect(database_url) as conn:
        conn.execute(_LOAD_USERS, params)
        conn.execute(_LOAD_INBOX, params)
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE users")
        conn.execute("ANALYZE inbox")


def _check(database_url: str, prefix: str, users: int, per_user: int, kept: int) -> int:
    """Every user keeps exactly its newest `kept` entries, floor just below; returns deletions."""
    floor = per_user - kept
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT u.user_id, u.floor_version, count(i.version), min(i.version), max(i.version)"
            " FROM users u LEFT JOIN inbox i ON i.user_id = u.user_id"
            " WHERE u.user_id LIKE %s GROUP BY u.user_id, u.floor_version",
            (prefix + "%",),
        ).fetchall()
    wrong = [r for r in rows if tuple(r[1:]) != (floor, kept, floor + 1, per_user)]
    if len(rows) != users or wrong:
        raise VerificationError(
            f"W6: after pruning, {len(wrong)} of {len(rows)} users do not keep exactly versions "
            f"{floor + 1}..{per_user} with floor {floor} (first: {wrong[:2]})"
        )
    return users * (per_user - kept)


async def _prune(database_url: str, max_age: float, max_entries: int) -> dict[str, Any]:
    args = [database_url, str(max_age), str(max_entries)]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.bench.prune_job", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise BenchError(f"W6: the retention job exited with {process.returncode}")
    report: dict[str, Any] = orjson.loads(out.splitlines()[-1])
    return report


async def w6(ctx: Context) -> dict[str, Any]:
    o = ctx.options
    if ctx.database_url is None:
        return {"skipped": "W6 needs direct database access: run it with --pg"}
    reason = retention_unavailable()
    if reason is not None:
        return {"skipped": reason}
    # Distinct from the W1 pairs (b<run>-w6-s0...), which the LIKE below must not match.
    prefix = f"b{ctx.run_id}-w6load-"
    max_age = o.w6_max_age_days * 86400
    total = o.w6_users * o.w6_per_user
    print(f"  W6: loading {total} inbox entries", file=sys.stderr)
    began = time.perf_counter()
    await asyncio.to_thread(_load, ctx.database_url, prefix, o.w6_users, o.w6_per_user, max_age)
    load_s = time.perf_counter() - began
    async with open_api(ctx.url, o.w1_clients + 8) as api:
        pairs = await make_pairs(api, ctx, "w6", o.w1_pairs)
        progress = Progress("W6 W1 alone", o.w6_w1_messages)
        alone, _ = await send_pairs(api, pairs, o.w1_clients, o.w6_w1_messages, progress)
        print("  W6: pruning, with W1 beside it", file=sys.stderr)
        stop = asyncio.Event()
        job = asyncio.create_task(_prune(ctx.database_url, max_age, o.w6_max_entries))
        job.add_done_callback(lambda _: stop.set())
        progress = Progress("W6 W1 beside the job", 0)
        beside, _ = await send_pairs(api, pairs, o.w1_clients, None, progress, stop)
        report = await job
        verified = await verify_pairs(api, pairs, "W6 W1")
    kept = min(o.w6_per_user - o.w6_per_user // 4, o.w6_max_entries)
    deleted = await asyncio.to_thread(
        _check, ctx.database_url, prefix, o.w6_users, o.w6_per_user, kept
    )
    alone_stats, beside_stats = summarize(alone), summarize(beside)
    p99_alone, p99_beside = alone_stats["p99_ms"], beside_stats["p99_ms"]
    return {
        "entries_loaded": total,
        "load_s": round(load_s, 3),
        "deleted": deleted,
        "prune_s": round(report["elapsed_s"], 3),
        "deletions_per_s": round(deleted / report["elapsed_s"], 1),
        "prune_result": report["result"],
        "w1_alone": alone_stats,
        "w1_beside_job": beside_stats,
        "w1_p99_ratio": round(p99_beside / p99_alone, 2) if p99_alone and p99_beside else None,
        "verified_messages": verified,
    }
