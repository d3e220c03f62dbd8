"""W1's ceiling: pgbench running a send statement alone against W1's own users.

What the database alone can do with a statement, with no HTTP, no application and no client
in the way: W1's messages/s over that rate says how much of the database's capacity the
whole path turns into sends. Two statements are measured, in the same run and on the same
database as W1, after W1 verified (pgbench's messages go to W1's users too):

- `old`: the send as it was when a conversation was two per-user rows (ceiling.sql), the
  reference that issue 24 measures against;
- `new`: today's send_message (app/store/postgresql/inbox.sql).

Each runs for --w1-ceiling-seconds, in two halves (old, new, new, old), with W1's client
count (--w1-clients), every client sending for one pair of W1's (at most one send in flight
per pair, as in W1), each statement its own transaction (autocommit), prepared as the
server's driver prepares it.
"""

from __future__ import annotations

import asyncio
import glob
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import orjson
import psycopg

from app.bench.context import Context
from app.bench.stats import BenchError, VerificationError
from app.inbox.messages import message_data
from app.store.queries import load

__all__ = ["ceilings", "find_pgbench", "pgbench_script"]

_REFERENCE = load("ceiling.sql", "app.bench")
_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
_PROCESSED = re.compile(r"^number of transactions actually processed: ([0-9]+)", re.MULTILINE)
# What the sends stored, to check that every transaction pgbench counted was a send.
_STORED = """
SELECT (SELECT count(*) FROM messages
        WHERE sender LIKE %(senders)s AND client_msg_id LIKE 'ceiling-%%'),
       (SELECT count(*) FROM old_conversations WHERE user_id LIKE %(users)s)
"""
# Rows written so far, all tables (what the backends have reported: a backend reports its
# counts at exit at the latest, and pgbench's have exited when it returns).
_WRITTEN = """
SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables
"""
# pgbench reads `:name` anywhere in a command as a variable, string literals included: the
# one literal with colons, the created_at format, is split after each colon (constants,
# folded by the planner).
_TIME_FORMAT = '\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\''
_TIME_FORMAT_SPLIT = "'YYYY-MM-DD\"T\"HH24:' || 'MI:' || 'SS.US\"Z\"'"
# W1's users are b<run>-w1-s<i> (senders) and b<run>-w1-r<i> (recipients): pair i of
# pgbench client c is i = c mod pairs, and its recipient sorts first.
_PER_CLIENT = {
    "sender": "(:prefix || 's' || :pair)",
    "recipient": "(:prefix || 'r' || :pair)",
    "pair_lo": "(:prefix || 'r' || :pair)",
    "pair_hi": "(:prefix || 's' || :pair)",
    "client_msg_id": "('ceiling-' || :client_id || '-' || :n)",
    # Push off, as in W1: the statement's pushers part has nothing to do.
    "push_wait": "NULL",
    "pushed": "NULL",
}
_ATTEMPTS = 6
_PARAMETER = re.compile(r"%\((\w+)\)s")
_ID_HEAD = '{"id":'
_TIME_KEY = '"created_at":"'
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def find_pgbench() -> str | None:
    found = shutil.which("pgbench")
    if found is not None:
        return found
    installed = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))
    return installed[-1] if installed else None


def pgbench_script(statement: str, pairs: int) -> str:
    """The send statement as a pgbench script: psycopg's %(name)s become pgbench variables,
    each client's pair from its client id, a fresh client_msg_id per send."""
    lines = [line for line in statement.splitlines() if not line.lstrip().startswith("--")]
    text = "\n".join(line.split(" -- ")[0] for line in lines).strip().rstrip(";")
    if _TIME_FORMAT not in text:
        raise BenchError("W1 ceiling: the send statement's created_at format has changed")
    text = text.replace(_TIME_FORMAT, _TIME_FORMAT_SPLIT)
    text = _PARAMETER.sub(lambda m: _PER_CLIENT.get(m[1], f":{m[1]}"), text)
    return f"\\set pair :client_id % {pairs}\n\\set n random(1, 1000000000000000)\n{text};\n"


def _constants(prefix: str) -> dict[str, str]:
    """The parameters every send of the script shares: the payload cut around the message id
    and created_at as the server cuts it (app/store/postgresql/inbox.py), for a body as long
    as W1's."""
    sender, recipient = f"{prefix}s0", f"{prefix}r0"
    body = f"{sender}>{recipient}#1000"
    data = message_data(0, sender, recipient, body, "ceiling-0-0", _EPOCH, None)
    tail = orjson.dumps(data).decode()[len(_ID_HEAD) + 1 :]
    cut = tail.rindex(_TIME_KEY) + len(_TIME_KEY)
    return {
        "parties": "2",
        "body": body,
        "head": _ID_HEAD,
        "tail_a": tail[:cut],
        "tail_b": tail[tail.index('"', cut) :],
    }


async def _pgbench(
    pgbench: str, database_url: str, script: str, constants: dict[str, str], o: Any, seconds: int
) -> tuple[float, int]:
    """(tx/s, transactions processed) of one timed pgbench run of the script."""
    with TemporaryDirectory(prefix="msgsync-ceiling-") as tmp:
        path = Path(tmp) / "send.sql"
        path.write_text(script, encoding="utf-8")
        defines = [f"--define={name}={value}" for name, value in constants.items()]
        for attempt in range(_ATTEMPTS):
            process = await asyncio.create_subprocess_exec(
                pgbench,
                "--no-vacuum",
                "--protocol=prepared",
                f"--client={o.w1_clients}",
                "--jobs=1",
                f"--time={seconds}",
                f"--file={path}",
                *defines,
                database_url,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await process.communicate()
            # pgbench opens every connection before its first send: one refused for the
            # connection limit (other jobs' connections come and go) has sent nothing.
            if process.returncode == 0 or b"too many clients" not in err:
                break
            await asyncio.sleep(1 + attempt)
    tps, processed = _TPS.search(out.decode()), _PROCESSED.search(out.decode())
    if process.returncode != 0 or tps is None or processed is None:
        raise _PgbenchFailed(err.decode().strip()[-300:])
    return float(tps[1]), int(processed[1])


class _PgbenchFailed(Exception):
    """pgbench could not run (the database's connection limit, most often, on a machine
    shared with other jobs): W1's figures stand, the ceiling says why it has none."""


async def _written(conn: psycopg.Connection[Any]) -> int:
    """The rows written, once the count stops moving (the last backends' reports)."""
    last = -1
    for _ in range(20):
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(_WRITTEN).fetchone()
        assert row is not None
        if int(row[0]) == last:
            break
        last = int(row[0])
        await asyncio.sleep(0.5)
    return last


def _stored(conn: psycopg.Connection[Any], prefix: str) -> tuple[int, int]:
    row = conn.execute(_STORED, {"senders": f"{prefix}s%", "users": f"{prefix}%"}).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def ceilings(ctx: Context, prefix: str) -> dict[str, Any]:
    """tx/s of the old and the new send statement; {"skipped": why} without pgbench or
    without the database (--url)."""
    o = ctx.options
    if ctx.database_url is None:
        return {"skipped": "pgbench needs the database: --pg"}
    if o.w1_ceiling_seconds <= 0:
        return {"skipped": "--w1-ceiling-seconds 0"}
    pgbench = find_pgbench()
    if pgbench is None:
        return {"skipped": "pgbench not found (on PATH or /usr/lib/postgresql/*/bin)"}
    scripts = {
        "old": pgbench_script(_REFERENCE["old_send_message"], o.w1_pairs),
        "new": pgbench_script(load("inbox.sql")["send_message"], o.w1_pairs),
    }
    constants = {"prefix": prefix, **_constants(prefix)}
    result: dict[str, float] = {}
    rows: dict[str, float] = {}  # rows written per send, all tables
    with psycopg.connect(ctx.database_url, autocommit=True) as conn:
        conn.execute(_REFERENCE["drop_old_conversations"])
        for statement in _REFERENCE["old_conversations"].split(";\n"):
            conn.execute(statement)
        try:
            # Each statement twice, half the time each, in the order old, new, new, old: the
            # tables grow during the runs, and neither statement should always run on the
            # larger ones.
            half = max(1, o.w1_ceiling_seconds // 2)
            rates: dict[str, list[float]] = {name: [] for name in scripts}
            sends: dict[str, list[float]] = {name: [] for name in scripts}
            for name in ("old", "new", "new", "old"):
                before, written = _stored(conn, prefix), await _written(conn)
                tps, processed = await _pgbench(
                    pgbench, ctx.database_url, scripts[name], constants, o, half
                )
                sent = _stored(conn, prefix)[0] - before[0]
                # pgbench counts a statement that wrote nothing as a transaction too.
                if sent < processed or sent == 0:
                    raise VerificationError(
                        f"W1 ceiling ({name}): {processed} transactions, {sent} messages"
                    )
                rates[name].append(tps)
                sends[name].append((await _written(conn) - written) / sent)
            for name in scripts:
                result[name] = round(sum(rates[name]) / len(rates[name]), 1)
                rows[name] = round(sum(sends[name]) / len(sends[name]), 2)
            pairs = min(o.w1_clients, o.w1_pairs)
            if _stored(conn, prefix)[1] != 2 * pairs:
                raise VerificationError(
                    f"W1 ceiling (old): not 2 conversation rows for each of {pairs} pairs"
                )
        except _PgbenchFailed as exc:
            return {"failed": f"pgbench: {exc}"}
        finally:
            conn.execute(_REFERENCE["drop_old_conversations"])
    return {
        "seconds": 2 * max(1, o.w1_ceiling_seconds // 2),
        "clients": o.w1_clients,
        "tx_per_s": result,
        "rows_per_send": rows,
    }
