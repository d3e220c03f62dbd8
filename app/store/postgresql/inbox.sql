-- The inbox's statements (app/store/postgresql/inbox.py).
--
-- The lock rule (app/store/inbox.py): users' rows are locked in user-id order, in the
-- database's collation, and held to commit. lock_users is the rule as a statement; the
-- statements that bump versions in the same round trip begin with it as their `locked`
-- CTE (the two sends name their two parties as parameters of their own: their first use
-- there fixes their type).

-- name: lock_users
SELECT user_id FROM users WHERE user_id = ANY(%(user_ids)s)
ORDER BY user_id FOR UPDATE

-- name: bump_versions
-- The next version of each user that exists, in the caller's transaction.
WITH locked AS (
    SELECT user_id FROM users WHERE user_id = ANY(%(user_ids)s)
    ORDER BY user_id FOR UPDATE
)
UPDATE users SET latest_version = users.latest_version + 1
FROM locked
WHERE users.user_id = locked.user_id
RETURNING users.user_id, users.latest_version

-- name: send_message
-- The whole send in one statement, hence one round trip and one implicit transaction
-- (autocommit). The CTEs run in one snapshot; the UPDATE re-reads each locked row at its
-- newest committed version (READ COMMITTED), so versions are bumped correctly even when
-- the lock was waited for. The payload is the caller's serialisation cut around the
-- message id and created_at, which the database splices in: the created_at of every
-- host's sends comes from the one clock they share.
WITH stamp AS (
    SELECT now() AS created_at,
           to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS text
), locked AS (
    -- The lock rule, for the two parties.
    SELECT user_id FROM users WHERE user_id IN (%(sender)s, %(recipient)s)
    ORDER BY user_id FOR UPDATE
), bumped AS (
    -- Only when every party exists: a send to nobody must not cost the sender a version.
    UPDATE users SET latest_version = users.latest_version + 1
    FROM locked
    WHERE users.user_id = locked.user_id AND (SELECT count(*) FROM locked) = %(parties)s
    RETURNING users.user_id, users.latest_version
), message AS (
    INSERT INTO messages (sender, recipient, pair_lo, pair_hi, body, client_msg_id,
                          sender_version, recipient_version, created_at)
    SELECT %(sender)s, %(recipient)s, %(pair_lo)s, %(pair_hi)s, %(body)s, %(client_msg_id)s,
           s.latest_version, r.latest_version, stamp.created_at
    FROM bumped AS s, bumped AS r, stamp
    WHERE s.user_id = %(sender)s AND r.user_id = %(recipient)s
    RETURNING id, sender_version
), entries AS (
    -- One entry per party; the sender's is how the sender's other devices learn of it.
    INSERT INTO inbox (user_id, version, kind, created_at, message_id, data)
    SELECT bumped.user_id, bumped.latest_version, 'message', stamp.created_at, message.id,
           %(head)s || message.id || %(tail_a)s || stamp.text || %(tail_b)s
    FROM bumped, message, stamp
), conversation AS (
    -- The pair's one row, shared by both parties: a plain update, as it is for every
    -- message but a pair's first.
    UPDATE conversations SET last_message_id = message.id
    FROM message
    WHERE conversations.pair_lo = %(pair_lo)s AND conversations.pair_hi = %(pair_hi)s
    RETURNING 1
), opened AS (
    -- The first message of the pair. The users' locks serialise the pair's sends, but this
    -- statement's snapshot was taken before it waited for them: a first message of the
    -- other party committed meanwhile is invisible to the UPDATE above, and the conflict
    -- arm takes its row instead.
    INSERT INTO conversations (pair_lo, pair_hi, last_message_id)
    SELECT %(pair_lo)s, %(pair_hi)s, message.id FROM message
    WHERE NOT EXISTS (SELECT FROM conversation)
    ON CONFLICT (pair_lo, pair_hi) DO UPDATE SET last_message_id = excluded.last_message_id
), marked AS (
    -- With push on (push_wait not NULL), the recipient's pushers (%(pushed)s: NULL for a
    -- note to oneself, the sender's own devices are never pushed) fall due push_wait after
    -- the first message of a delay window; one due already keeps its time. During a push
    -- in flight (leased) `news` tells the worker to look again when it settles. An index
    -- probe when there is no pusher; with push off both parameters are NULL and the
    -- planner drops the part.
    UPDATE pushers
    SET due_at = coalesce(pushers.due_at, stamp.created_at
                          + CAST(%(push_wait)s AS double precision) * interval '1 second'),
        news = pushers.news OR pushers.leased_until IS NOT NULL
    FROM message, stamp
    WHERE pushers.user_id = %(pushed)s
      AND (pushers.due_at IS NULL OR pushers.leased_until IS NOT NULL)
      AND CAST(%(push_wait)s AS double precision) IS NOT NULL
)
SELECT id, sender_version, stamp.text FROM message, stamp

-- name: read_page
-- The user's counters and a page of entries, in one statement and one snapshot. The outer
-- join gives one row with no entry columns when nothing is newer than `since`.
SELECT u.latest_version, u.floor_version, NULL AS since_entry,
       e.version, e.kind, e.created_at, e.data, e.entry_id
FROM users AS u
LEFT JOIN LATERAL (
    SELECT version, kind, created_at, data, entry_id FROM inbox
    WHERE inbox.user_id = u.user_id AND inbox.version > %(since)s
    ORDER BY version
    LIMIT %(limit)s
) AS e ON true
WHERE u.user_id = %(user_id)s

-- name: read_page_checked
-- read_page for a client that sends `since_id`: also the id of the entry at `since`, in the
-- same snapshot (one more primary-key probe), which check_since compares with `since_id`.
SELECT u.latest_version, u.floor_version,
       (SELECT entry_id FROM inbox AS s
        WHERE s.user_id = u.user_id AND s.version = %(since)s) AS since_entry,
       e.version, e.kind, e.created_at, e.data, e.entry_id
FROM users AS u
LEFT JOIN LATERAL (
    SELECT version, kind, created_at, data, entry_id FROM inbox
    WHERE inbox.user_id = u.user_id AND inbox.version > %(since)s
    ORDER BY version
    LIMIT %(limit)s
) AS e ON true
WHERE u.user_id = %(user_id)s

-- name: advance_cursors
-- A whole ack batch in one statement on an autocommit connection, so a batch is one round
-- trip. The text is the same for every batch size (arrays, not a VALUES list), so it is
-- planned once per connection.
WITH asked AS (
    SELECT v.device_id, v.version
    FROM unnest(CAST(%(device_ids)s AS text[]), CAST(%(versions)s AS bigint[]))
        AS v(device_id, version)
), current AS (
    -- Locked in device-id order, so that two processes' batches cannot deadlock. FOR UPDATE
    -- reads each row as last committed, so acked_version here is the cursor now.
    SELECT d.device_id, d.acked_version, u.latest_version
    FROM devices AS d JOIN users AS u ON u.user_id = d.user_id
    WHERE d.device_id IN (SELECT device_id FROM asked)
    ORDER BY d.device_id
    FOR UPDATE OF d
), target AS (
    -- Per device, the highest version that is not ahead of its user's latest.
    SELECT a.device_id, max(a.version) AS version
    FROM asked AS a JOIN current AS c ON c.device_id = a.device_id
    WHERE a.version <= c.latest_version
    GROUP BY a.device_id
), moved AS (
    UPDATE devices AS d SET acked_version = t.version
    FROM target AS t
    WHERE d.device_id = t.device_id AND d.acked_version < t.version
    RETURNING d.device_id, d.acked_version
)
SELECT c.device_id, COALESCE(m.acked_version, c.acked_version), c.latest_version
FROM current AS c LEFT JOIN moved AS m ON m.device_id = c.device_id

-- name: conversations
-- The user's direct conversations below `before` (a last message id), newest first, each
-- with its last message and its unread count (the peer's messages above the user's read
-- cursor, recalled ones not counted; none in notes to oneself): one statement, so one
-- snapshot and one round trip. A conversation is one row per pair: the user's are those
-- where the user is pair_lo and those where the user is pair_hi (a note to oneself is
-- taken by the first arm only), each arm a bounded backward scan of its index; the page
-- is taken first, messages are read for its rows only.
SELECT c.peer, m.id, m.sender, m.recipient, m.body, m.client_msg_id, m.created_at,
       m.recalled_at,
       (SELECT count(*) FROM messages AS u
        WHERE u.pair_lo = c.pair_lo AND u.pair_hi = c.pair_hi
          AND u.id > c.read_up_to_id AND u.sender = c.peer AND c.peer <> %(user_id)s
          AND u.recalled_at IS NULL) AS unread
FROM (
    (SELECT pair_lo, pair_hi, pair_hi AS peer, read_lo AS read_up_to_id, last_message_id
     FROM conversations
     WHERE pair_lo = %(user_id)s AND last_message_id < %(before)s
     ORDER BY last_message_id DESC
     LIMIT %(limit)s)
    UNION ALL
    (SELECT pair_lo, pair_hi, pair_lo, read_hi, last_message_id
     FROM conversations
     WHERE pair_hi = %(user_id)s AND pair_lo <> %(user_id)s AND last_message_id < %(before)s
     ORDER BY last_message_id DESC
     LIMIT %(limit)s)
    ORDER BY last_message_id DESC
    LIMIT %(limit)s
) AS c
JOIN messages AS m ON m.id = c.last_message_id
ORDER BY c.last_message_id DESC
