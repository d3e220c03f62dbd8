-- The reference of W1's ceiling (app/bench/ceiling.py): the direct send as it was before
-- a conversation became one row per pair (issue 24), which wrote seven rows: both users'
-- rows, the message, two inbox entries and two per-user conversation rows by upsert. Kept
-- word for word but for the conversations table: the schema has pair rows now, so the
-- per-user rows go to a scratch table of the old shape (old_conversations) that the bench
-- creates and drops.

-- name: old_conversations
CREATE TABLE old_conversations (
    user_id VARCHAR(64) NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    peer VARCHAR(64) NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    last_message_id BIGINT NOT NULL,
    read_up_to_id BIGINT DEFAULT 0 NOT NULL,
    PRIMARY KEY (user_id, peer)
);
CREATE INDEX ON old_conversations (user_id, last_message_id)

-- name: drop_old_conversations
DROP TABLE IF EXISTS old_conversations

-- name: old_send_message
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
    INSERT INTO old_conversations (user_id, peer, last_message_id)
    SELECT pairs.user_id, pairs.peer, message.id
    FROM message,
         -- UNION, not UNION ALL: a note to oneself is one conversation row.
         (SELECT CAST(%(sender)s AS VARCHAR) AS user_id, CAST(%(recipient)s AS VARCHAR) AS peer
          UNION SELECT %(recipient)s, %(sender)s) AS pairs
    ON CONFLICT (user_id, peer) DO UPDATE SET last_message_id = excluded.last_message_id
)
SELECT id, sender_version, stamp.text FROM message, stamp

