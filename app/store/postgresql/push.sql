-- The push worker's statements (app/store/postgresql/push.py): each one round trip.

-- name: lease_and_read
-- The lease and the read in one statement (one round trip a round, not two), in one
-- snapshot. Due pushers are leased from the due-time index (a send sets due_at). SKIP
-- LOCKED: another process's round is skipped, not waited for, so each push has one sender
-- and rounds never queue behind each other. Rows come grouped per leased pusher, its
-- messages in version order; each also carries the next due time after this round (the
-- first entry of the due-time index past now), and with nothing leased a single row
-- carries only that.
WITH due AS (
    SELECT p.ctid AS row, greatest(p.synced_version, d.acked_version) AS seen,
           greatest(p.pushed_version, p.synced_version, d.acked_version) AS floor
    FROM pushers AS p
    JOIN devices AS d ON d.device_id = p.device_id
    WHERE p.due_at <= %(now)s
      AND (p.leased_until IS NULL OR p.leased_until < %(now)s)
    -- The longest overdue first.
    ORDER BY p.due_at
    LIMIT %(limit)s
    FOR UPDATE OF p SKIP LOCKED
), leased AS (
    -- By row address (a TID scan): a join on the key made the planner scan every pusher.
    -- A row that another transaction changed after this statement began is not updated,
    -- hence not returned: it is simply not leased this round.
    UPDATE pushers AS p SET leased_until = %(until)s
    FROM due
    WHERE p.ctid = due.row
    RETURNING p.app_id, p.pushkey, p.user_id, p.gateway_url, p.format, p.data, p.created_at,
              due.seen, due.floor, p.attempts, p.failing_since
)
SELECT l.*, (SELECT u.latest_version FROM users AS u WHERE u.user_id = l.user_id),
       e.version, e.created_at, e.id, e.sender, e.room, n.at
FROM (SELECT min(due_at) AS at FROM pushers WHERE due_at > %(now)s) AS n
LEFT JOIN leased AS l ON true
LEFT JOIN LATERAL (
    SELECT i.version, i.created_at, m.id, m.sender, coalesce(m.group_id, m.sender) AS room
    FROM inbox AS i JOIN messages AS m ON m.id = i.message_id
    WHERE i.user_id = l.user_id AND i.version > l.seen AND i.kind = 'message'
      AND m.sender <> l.user_id
    ORDER BY i.version
) AS e ON true
ORDER BY l.app_id, l.pushkey, e.version

-- name: settle
-- A round's outcomes in one statement, rows locked in key order (no deadlock with another
-- process's round). pushed_version never moves back: a replaced pusher keeps the higher.
-- A message that arrived during the push (`news`, set by the send under the row's lock, so
-- never lost to this statement) makes the pusher due at once rather than settled: the
-- worker's read may have missed it.
WITH s AS (
    SELECT * FROM unnest(
        CAST(%(app_ids)s AS text[]), CAST(%(pushkeys)s AS text[]),
        CAST(%(pushed)s AS bigint[]), CAST(%(due)s AS timestamptz[]),
        CAST(%(attempts)s AS integer[]), CAST(%(since)s AS timestamptz[]),
        CAST(%(gone)s AS boolean[])
    ) AS s(app_id, pushkey, pushed, due, attempts, since, gone)
), locked AS (
    -- One index look-up and lock per row, in the arrays' order (sorted by key): a join
    -- made the planner scan every pusher.
    SELECT s.app_id, s.pushkey, s.pushed, s.due, s.attempts, s.since, s.gone
    FROM s CROSS JOIN LATERAL (
        SELECT 1 FROM pushers AS p
        WHERE p.app_id = s.app_id AND p.pushkey = s.pushkey
        FOR UPDATE
    ) AS p
), removed AS (
    DELETE FROM pushers AS p USING locked AS l
    WHERE l.gone AND p.app_id = l.app_id AND p.pushkey = l.pushkey
)
UPDATE pushers AS p
SET pushed_version = greatest(p.pushed_version, l.pushed),
    due_at = CASE WHEN l.due IS NULL AND p.news THEN %(now)s ELSE l.due END,
    news = false, attempts = l.attempts, failing_since = l.since, leased_until = NULL
FROM locked AS l
WHERE NOT l.gone AND p.app_id = l.app_id AND p.pushkey = l.pushkey

-- name: record_synced
-- Rows are locked in key order, so that two processes flushing overlapping devices queue
-- instead of deadlocking.
WITH seen AS (
    SELECT v.device_id, max(v.version) AS version
    FROM unnest(CAST(%(device_ids)s AS text[]), CAST(%(versions)s AS bigint[]))
        AS v(device_id, version)
    GROUP BY v.device_id
), locked AS (
    SELECT p.app_id, p.pushkey, s.version
    FROM pushers AS p JOIN seen AS s ON s.device_id = p.device_id
    WHERE p.synced_version < s.version
    ORDER BY p.app_id, p.pushkey
    FOR UPDATE OF p
)
UPDATE pushers AS p SET synced_version = l.version
FROM locked AS l
WHERE p.app_id = l.app_id AND p.pushkey = l.pushkey AND p.synced_version < l.version
