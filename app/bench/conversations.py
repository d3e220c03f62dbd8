"""W9 conversation list: one user with many conversations, its first page and a later one.

One user gets `w9_conversations` conversations, direct ones and groups (`w9_group_share` of
them), each with `w9_messages` messages interleaved in time across conversations, every
third with its last two messages unread. They are loaded in SQL (as W7 loads its pushers:
ten thousand conversations through HTTP would measure the sends, not the list). The
members' offline stores are not loaded: the list never reads them.

Then `GET /conversations?limit=` is called `w9_calls` times in-process (the app in the
bench's own process through httpx's ASGI transport, on the bench's database: the list's own
cost, no socket, no other process in between), for the first page and for a later one (its
`before` the cursor of the conversation in the middle of the list). Both pages are checked
against the database: the right conversations in order, each with its exact unread count.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import httpx
import psycopg

from app.bench.context import Context
from app.bench.stats import VerificationError, summarize

__all__ = ["w9"]

# Users (the user and one peer per conversation), the user's device, then every message of
# every conversation with ids drawn in a shuffled order (so direct and group activity
# interleave), ranked within its conversation by id.
_LOAD = """
INSERT INTO users (user_id, password_hash, latest_version, floor_version, created_at)
SELECT %(prefix)s || 'u', 'not-a-login', %(messages)s, 0, %(at)s
UNION ALL
SELECT %(prefix)s || 'p' || c, 'not-a-login', %(messages)s, 0, %(at)s
FROM generate_series(1, %(n)s) c;

INSERT INTO devices (device_id, user_id, token_hash, name, acked_version, created_at,
                     last_seen_at)
VALUES (%(prefix)s || 'd', %(prefix)s || 'u', sha256(convert_to(%(token)s, 'UTF8')), 'bench',
        0, %(at)s, %(at)s);

CREATE TEMP TABLE w9_drawn ON COMMIT DROP AS
SELECT c, nextval(pg_get_serial_sequence('messages', 'id')) AS id
FROM (SELECT c FROM generate_series(1, %(n)s) c, generate_series(1, %(m)s) ORDER BY random()) s;

CREATE TEMP TABLE w9_ranked ON COMMIT DROP AS
SELECT c, id, row_number() OVER (PARTITION BY c ORDER BY id) AS k,
       row_number() OVER (ORDER BY id) AS nth,
       c > %(direct)s AS in_group,
       %(prefix)s || 'p' || c AS peer,
       -- The third member of a group: another conversation's peer.
       %(prefix)s || 'p' || (c %% %(n)s + 1) AS other
FROM w9_drawn;

-- Groups of three: the user, the peer (their owner) and another peer; each member's row
-- holds the group's newest message, as a send leaves it.
INSERT INTO groups (group_id, title, owner, creator, client_group_id, latest_seq,
                    member_count, large, last_message_id, created_at)
SELECT %(prefix)s || 'g' || c, 'group ' || c, peer, peer, NULL, max(k) + 1, 3, false,
       max(id), %(at)s
FROM w9_ranked WHERE in_group
GROUP BY c, peer;

INSERT INTO group_members (group_id, user_id, role, joined_seq, read_seq, last_message_id)
SELECT %(prefix)s || 'g' || c, %(prefix)s || 'u', 'member', 1,
       CASE WHEN c %% 3 = 0 THEN greatest(max(k) - 1, 1) ELSE max(k) + 1 END, max(id)
FROM w9_ranked WHERE in_group GROUP BY c
UNION ALL
SELECT %(prefix)s || 'g' || c, peer, 'owner', 1, max(k) + 1, max(id)
FROM w9_ranked WHERE in_group GROUP BY c, peer
UNION ALL
SELECT %(prefix)s || 'g' || c, other, 'member', 1, max(k) + 1, max(id)
FROM w9_ranked WHERE in_group AND other <> peer GROUP BY c, other;

-- The k-th message of a conversation: from the peer when k is odd, else from the user (in a
-- group, every third from the third member). A group's message k is its event k + 1.
INSERT INTO messages (id, sender, recipient, pair_lo, pair_hi, body, client_msg_id,
                      sender_version, recipient_version, created_at, group_id, seq)
SELECT r.id, s.sender,
       CASE WHEN r.in_group THEN NULL
            WHEN s.sender = r.peer THEN %(prefix)s || 'u' ELSE r.peer END,
       CASE WHEN r.in_group THEN NULL ELSE least(%(prefix)s || 'u', r.peer) END,
       CASE WHEN r.in_group THEN NULL ELSE greatest(%(prefix)s || 'u', r.peer) END,
       'message ' || r.k || ' of ' || r.c, 'w9-' || r.c || '-' || r.k, r.nth,
       CASE WHEN r.in_group THEN NULL ELSE r.nth END,
       %(at)s - (%(messages)s - r.nth) * interval '1 second',
       CASE WHEN r.in_group THEN %(prefix)s || 'g' || r.c END,
       CASE WHEN r.in_group THEN r.k + 1 END
FROM w9_ranked AS r,
     LATERAL (SELECT CASE WHEN r.k %% 2 = 1 THEN r.peer
                          WHEN r.in_group AND r.k %% 3 = 0 AND r.other <> r.peer THEN r.other
                          ELSE %(prefix)s || 'u' END AS sender) AS s
ORDER BY r.id;

INSERT INTO group_events (group_id, seq, kind, actor, created_at, message_id, data)
SELECT %(prefix)s || 'g' || c, 1, 'created', peer, %(at)s, NULL, '{}'
FROM w9_ranked WHERE in_group AND k = 1
UNION ALL
SELECT m.group_id, m.seq, 'message', m.sender, m.created_at, m.id, '{"id":' || m.id || '}'
FROM messages AS m JOIN w9_ranked AS r ON r.id = m.id WHERE r.in_group;

-- Each direct conversation's one row, the peer's id below the user's ('p' < 'u'): the
-- user (read_hi) has read all but the last two of every third, the peer (read_lo)
-- everything.
INSERT INTO conversations (pair_lo, pair_hi, last_message_id, read_lo, read_hi)
SELECT peer, %(prefix)s || 'u', max(id), max(id),
       CASE WHEN c %% 3 = 0 THEN coalesce(max(id) FILTER (WHERE k <= max_k - 2), 0)
            ELSE max(id) END
FROM (SELECT *, max(k) OVER (PARTITION BY c) AS max_k FROM w9_ranked WHERE NOT in_group) d
GROUP BY c, peer;
"""

# What the list must show, computed the plain way: every conversation of the user with its
# last message and its unread count (messages from others after the read cursor, recalled
# ones not counted), newest first.
_EXPECTED = """
SELECT 'direct', c.peer, c.last_message_id,
       (SELECT count(*) FROM messages AS m
        WHERE m.pair_lo = c.pair_lo AND m.pair_hi = c.pair_hi
          AND m.id > c.read_up_to_id AND m.sender = c.peer AND m.recalled_at IS NULL)
FROM (SELECT pair_lo, pair_hi, pair_hi AS peer, read_lo AS read_up_to_id, last_message_id
      FROM conversations WHERE pair_lo = %(user)s
      UNION ALL
      SELECT pair_lo, pair_hi, pair_lo, read_hi, last_message_id
      FROM conversations WHERE pair_hi = %(user)s AND pair_lo <> %(user)s) AS c
UNION ALL
SELECT 'group', g.group_id, g.last_message_id,
       (SELECT count(*) FROM messages AS m
        WHERE m.group_id = g.group_id AND m.seq > gm.read_seq AND m.sender <> %(user)s
          AND m.recalled_at IS NULL)
FROM group_members AS gm JOIN groups AS g ON g.group_id = gm.group_id
WHERE gm.user_id = %(user)s AND g.last_message_id IS NOT NULL
ORDER BY 3 DESC
"""


def _load(database_url: str, prefix: str, token: str, o: Any) -> list[tuple[str, str, int, int]]:
    """Load the conversations; returns the list as it must be shown, newest first."""
    n = o.w9_conversations
    direct = n - round(n * o.w9_group_share)
    with psycopg.connect(database_url) as conn:
        at = conn.execute("SELECT clock_timestamp()").fetchone()
        assert at is not None
        params = {
            "prefix": prefix,
            "token": token,
            "n": n,
            "m": o.w9_messages,
            "direct": direct,
            "messages": n * o.w9_messages,
            "at": at[0],
        }
        for statement in _LOAD.split(";\n"):
            if statement.strip():
                conn.execute(statement, params)
        conn.commit()
        conn.execute("ANALYZE")
        rows = conn.execute(_EXPECTED, {"user": prefix + "u"}).fetchall()
    return [(kind, key, int(last), int(unread)) for kind, key, last, unread in rows]


def _check(
    label: str, page: list[dict[str, Any]], expected: list[tuple[str, str, int, int]]
) -> None:
    got = [
        (
            c["kind"],
            c["peer"] if c["kind"] == "direct" else c["group_id"],
            c["last_message"]["id"],
            c["unread_count"],
        )
        for c in page
    ]
    if got != expected:
        first = next(
            (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
            min(len(got), len(expected)),
        )
        raise VerificationError(
            f"W9 {label}: {len(got)} conversations, expected {len(expected)}; first difference "
            f"at {first}: got {got[first : first + 1]}, expected {expected[first : first + 1]}"
        )


async def _measure(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    params: dict[str, str],
    calls: int,
    expected: list[tuple[str, str, int, int]],
    label: str,
) -> dict[str, Any]:
    latencies = []
    for _ in range(calls):
        began = time.perf_counter()
        response = await client.get("/conversations", params=params, headers=headers)
        latencies.append(time.perf_counter() - began)
        if response.status_code != 200:
            raise VerificationError(f"W9 {label}: HTTP {response.status_code}: {response.text}")
    _check(label, response.json()["conversations"], expected)
    return summarize(latencies)


async def w9(ctx: Context) -> dict[str, Any]:
    from app.config import Settings
    from app.main import create_app

    o = ctx.options
    if ctx.database_url is None:
        return {"skipped": "W9 loads its conversations in SQL and calls the app in-process: --pg"}
    prefix = f"b{ctx.run_id}-w9-{secrets.token_hex(2)}-"
    token = secrets.token_urlsafe(32)
    began = time.perf_counter()
    everything = await asyncio.to_thread(_load, ctx.database_url, prefix, token, o)
    load_s = time.perf_counter() - began
    if len(everything) != o.w9_conversations:
        raise VerificationError(
            f"W9: {len(everything)} conversations loaded, expected {o.w9_conversations}"
        )
    limit = o.w9_limit
    middle = len(everything) // 2
    # The later page: the one after the conversation in the middle of the list.
    before = everything[middle - 1][2] if middle else None
    app = create_app(Settings(database_url=ctx.database_url))
    headers = {"Authorization": f"Bearer {token}"}
    result: dict[str, Any] = {
        "conversations": len(everything),
        "groups": sum(1 for c in everything if c[0] == "group"),
        "messages": o.w9_conversations * o.w9_messages,
        "unread_conversations": sum(1 for c in everything if c[3]),
        "limit": limit,
        "calls": o.w9_calls,
        "load_s": round(load_s, 2),
    }
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://msgsync.bench") as c:
            # Warm: the token cached, the connections open, the statements prepared.
            for _ in range(5):
                await c.get("/conversations", params={"limit": str(limit)}, headers=headers)
            result["first_page"] = await _measure(
                c, headers, {"limit": str(limit)}, o.w9_calls, everything[:limit], "first page"
            )
            if before is not None:
                result["later_page"] = await _measure(
                    c,
                    headers,
                    {"limit": str(limit), "before": str(before)},
                    o.w9_calls,
                    everything[middle : middle + limit],
                    f"page after {middle}",
                )
                result["later_page_after"] = middle
    return result
