-- The groups store on PostgreSQL (app.store.postgresql.groups). Lock order, shared with
-- every writer: the group's row, then users' rows in user-id order, then member rows.
-- Times are the database's: now() (the transaction's start) stamps rows, and the same
-- moment is rendered as the contract's text by to_char(... 'US') (six digits, like
-- app.inbox.sync.format_time).

-- name: lock_group
-- The first lock of every change of a group: it serialises the group's seqs.
SELECT group_id, title, owner, creator, client_group_id, latest_seq, member_count, large,
       created_at
FROM groups WHERE group_id = %(group_id)s
FOR UPDATE

-- name: create_group
INSERT INTO groups (group_id, title, owner, creator, client_group_id, latest_seq,
                    member_count, large, created_at)
VALUES (%(group_id)s, %(title)s, %(creator)s, %(creator)s, %(client_group_id)s, 0, 0, false,
        now())
RETURNING group_id, title, owner, creator, client_group_id, latest_seq, member_count, large,
          created_at

-- name: find_created
SELECT group_id FROM groups
WHERE creator = %(creator)s AND client_group_id = %(client_group_id)s

-- name: existing_users
SELECT user_id FROM users WHERE user_id = ANY(CAST(%(user_ids)s AS text[]))

-- name: lock_users
-- In user-id order, like every other writer of users' rows: no cycle, no deadlock.
SELECT user_id FROM users WHERE user_id = ANY(CAST(%(user_ids)s AS text[]))
ORDER BY user_id
FOR UPDATE

-- name: lock_users_news
-- lock_users, and the users of the members holding no uncovered news (those the events of
-- a large group write group_news to), all in the one user-id order. The partial index on
-- news_seq IS NULL finds them without reading the other members.
SELECT count(*) FROM (
    SELECT u.user_id
    FROM users AS u
    JOIN (SELECT unnest(CAST(%(user_ids)s AS text[])) AS user_id
          UNION
          SELECT m.user_id FROM group_members AS m
          WHERE m.group_id = %(group_id)s AND m.news_seq IS NULL) AS t
      ON t.user_id = u.user_id
    ORDER BY u.user_id
    FOR UPDATE OF u
) AS locked

-- name: member
SELECT user_id, role, joined_seq, read_seq, news_seq FROM group_members
WHERE group_id = %(group_id)s AND user_id = %(user_id)s

-- name: members_among
SELECT user_id FROM group_members
WHERE group_id = %(group_id)s AND user_id = ANY(CAST(%(user_ids)s AS text[]))

-- name: heir
-- The longest-standing admin, else member (ties by user id), other than the one leaving.
SELECT user_id, role, joined_seq, read_seq, news_seq FROM group_members
WHERE group_id = %(group_id)s AND user_id <> %(leaving)s AND role IN ('admin', 'member')
ORDER BY role = 'member', joined_seq, user_id
LIMIT 1

-- name: members
SELECT user_id, role, joined_seq, read_seq FROM group_members
WHERE group_id = %(group_id)s
ORDER BY user_id

-- name: members_page
SELECT user_id, role, joined_seq, read_seq FROM group_members
WHERE group_id = %(group_id)s AND user_id > %(after)s
ORDER BY user_id
LIMIT %(limit)s

-- name: add_members
-- A new member's row takes the group's newest message, so the group is listed by it at
-- once; none in a large group (its sends write no member row: the conversation list reads
-- the group's).
INSERT INTO group_members (group_id, user_id, role, joined_seq, read_seq, last_message_id)
SELECT g.group_id, a.user_id, a.role, a.joined_seq, a.read_seq,
       CASE WHEN NOT g.large THEN coalesce(g.last_message_id, 0) END
FROM unnest(CAST(%(user_ids)s AS text[]), CAST(%(roles)s AS text[]),
            CAST(%(joined)s AS bigint[]), CAST(%(read)s AS bigint[]))
     AS a(user_id, role, joined_seq, read_seq)
JOIN groups AS g ON g.group_id = %(group_id)s

-- name: delete_member
DELETE FROM group_members WHERE group_id = %(group_id)s AND user_id = %(user_id)s

-- name: set_role
UPDATE group_members SET role = %(role)s
WHERE group_id = %(group_id)s AND user_id = %(user_id)s

-- name: update_group
-- When the mode changes, so does what orders the group in its members' conversation lists:
-- a small group's member rows hold its newest message, a large group's hold none (NULL:
-- its sends write no member row, the list reads the group's row). `prior` is the row as
-- this statement found it (every part of a statement sees the same snapshot).
WITH prior AS (
    SELECT large, last_message_id FROM groups WHERE group_id = %(group_id)s
), changed AS (
    UPDATE groups SET title = %(title)s, owner = %(owner)s, member_count = %(member_count)s,
                      large = %(large)s
    WHERE group_id = %(group_id)s
)
UPDATE group_members
SET last_message_id = CASE WHEN NOT %(large)s THEN coalesce(prior.last_message_id, 0) END
FROM prior
WHERE group_members.group_id = %(group_id)s AND prior.large <> %(large)s

-- name: add_large
-- Users added to a large group, one member_added event each (seqs first..last in the order
-- given), in one statement: the rows, the logged events, each added user's `group` entry for
-- its own event, and news: each added but the last holds news from the next event (a
-- group_news entry at seq + 1, right after its own entry), the members holding none get
-- one at `first`. The users' rows are already locked in order (lock_users_news); the
-- members read here are those before the statement (the added are not among them).
WITH a AS (
    SELECT t.user_id, %(first)s + t.o - 1 AS seq
    FROM unnest(CAST(%(user_ids)s AS text[])) WITH ORDINALITY AS t(user_id, o)
), ev AS (
    UPDATE groups SET latest_seq = %(last)s
    WHERE group_id = %(group_id)s
    RETURNING now() AS created_at,
              to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS stamp
), joined AS (
    -- No newest message on a large group's member rows (NULL): the conversation list reads
    -- the group's row.
    INSERT INTO group_members (group_id, user_id, role, joined_seq, read_seq, news_seq,
                               last_message_id)
    SELECT %(group_id)s, a.user_id, 'member', a.seq, a.seq,
           CASE WHEN a.seq < %(last)s THEN a.seq + 1 END, NULL
    FROM a
), logged AS (
    INSERT INTO group_events (group_id, seq, kind, actor, created_at, message_id, data)
    SELECT %(group_id)s, a.seq, 'member_added', %(actor)s, ev.created_at, CAST(NULL AS bigint),
           CAST(json_build_object('user_id', a.user_id) AS text)
    FROM a, ev
), targets AS (
    SELECT a.user_id, a.seq, false AS existing FROM a
    UNION ALL
    SELECT m.user_id, %(first)s, true FROM group_members AS m
    WHERE m.group_id = %(group_id)s AND m.news_seq IS NULL
), locked AS (
    SELECT u.user_id, t.seq, t.existing
    FROM users AS u JOIN targets AS t ON t.user_id = u.user_id
    ORDER BY u.user_id
    FOR UPDATE OF u
), bumped AS (
    UPDATE users SET latest_version = users.latest_version
        + CASE WHEN NOT locked.existing AND locked.seq < %(last)s THEN 2 ELSE 1 END
    FROM locked
    WHERE users.user_id = locked.user_id
    RETURNING users.user_id, users.latest_version, locked.seq, locked.existing
), noticed AS (
    UPDATE group_members SET news_seq = %(first)s
    FROM bumped
    WHERE bumped.existing AND group_members.group_id = %(group_id)s
      AND group_members.user_id = bumped.user_id
), entries AS (
    INSERT INTO inbox (user_id, version, kind, created_at, message_id, data)
    SELECT b.user_id, b.latest_version - CASE WHEN b.seq < %(last)s THEN 1 ELSE 0 END,
           'group', ev.created_at, CAST(NULL AS bigint),
           CAST(json_build_object(
               'group_id', CAST(%(group_id)s AS text),
               'event', json_build_object(
                   'seq', b.seq, 'kind', 'member_added', 'created_at', ev.stamp,
                   'actor', CAST(%(actor)s AS text),
                   'data', json_build_object('user_id', b.user_id))
           ) AS text)
    FROM bumped AS b, ev
    WHERE NOT b.existing
    UNION ALL
    SELECT b.user_id, b.latest_version, 'group_news', ev.created_at, CAST(NULL AS bigint),
           CAST(json_build_object(
               'group_id', CAST(%(group_id)s AS text),
               'seq', CASE WHEN b.existing THEN b.seq ELSE b.seq + 1 END
           ) AS text)
    FROM bumped AS b, ev
    WHERE b.existing OR b.seq < %(last)s
)
SELECT user_id FROM bumped WHERE existing

-- name: append_event
-- The group's next seq (its row is already locked by this transaction), the logged event,
-- and one entry per recipient at the recipient's next version. The users' rows are locked
-- here in user-id order (already held when the transaction called lock_users first).
-- Without `entry` the entries are `group` entries: {"group_id", "event": GroupEvent}.
-- With `news` (a large group), the other members holding no uncovered news are recipients
-- too, of a group_news entry {"group_id", "seq"}, and hold news from this seq on.
WITH ev AS (
    UPDATE groups SET latest_seq = latest_seq + 1
    WHERE group_id = %(group_id)s
    RETURNING group_id, latest_seq AS seq, now() AS created_at,
              to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS stamp
), logged AS (
    INSERT INTO group_events (group_id, seq, kind, actor, created_at, message_id, data)
    SELECT ev.group_id, ev.seq, %(kind)s, %(actor)s, ev.created_at,
           CAST(%(message_id)s AS bigint), %(data)s
    FROM ev
), locked AS (
    SELECT u.user_id, NOT (u.user_id = ANY(CAST(%(recipients)s AS text[]))) AS news
    FROM users AS u
    JOIN (SELECT unnest(CAST(%(recipients)s AS text[])) AS user_id
          UNION
          SELECT m.user_id FROM group_members AS m
          WHERE %(news)s AND m.group_id = %(group_id)s AND m.news_seq IS NULL) AS t
      ON t.user_id = u.user_id
    ORDER BY u.user_id
    FOR UPDATE OF u
), bumped AS (
    UPDATE users SET latest_version = users.latest_version + 1
    FROM locked
    WHERE users.user_id = locked.user_id
    RETURNING users.user_id, users.latest_version, locked.news
), noticed AS (
    UPDATE group_members SET news_seq = ev.seq
    FROM bumped, ev
    WHERE bumped.news AND group_members.group_id = ev.group_id
      AND group_members.user_id = bumped.user_id
), entries AS (
    INSERT INTO inbox (user_id, version, kind, created_at, message_id, data)
    SELECT bumped.user_id, bumped.latest_version,
           CASE WHEN bumped.news THEN 'group_news' ELSE CAST(%(entry_kind)s AS text) END,
           ev.created_at,
           CASE WHEN bumped.news THEN NULL ELSE CAST(%(message_id)s AS bigint) END,
           CASE WHEN bumped.news THEN
               CAST(json_build_object('group_id', ev.group_id, 'seq', ev.seq) AS text)
           ELSE coalesce(
               -- A recall entry names the event's seq: the member's log position moves past it.
               CAST(CAST(%(entry)s AS jsonb) || jsonb_build_object('seq', ev.seq) AS text),
               CAST(json_build_object(
                   'group_id', ev.group_id,
                   'event', json_build_object(
                       'seq', ev.seq, 'kind', CAST(%(kind)s AS text), 'created_at', ev.stamp,
                       'actor', CAST(%(actor)s AS text), 'data', CAST(%(data)s AS json))
               ) AS text))
           END
    FROM bumped, ev
)
SELECT ev.seq, ev.created_at, bumped.user_id, bumped.latest_version, bumped.news
FROM ev LEFT JOIN bumped ON true

-- name: recall_message
-- recalled_at is set once: a second recall changes nothing and returns no row.
UPDATE messages SET body = '', recalled_at = now()
WHERE id = %(message_id)s AND recalled_at IS NULL
RETURNING recalled_at

-- name: set_event_data
UPDATE group_events SET data = %(data)s
WHERE group_id = %(group_id)s AND seq = %(seq)s

-- name: now
SELECT clock_timestamp()

-- name: view
SELECT g.group_id, g.title, g.owner, g.creator, g.client_group_id, g.latest_seq,
       g.member_count, g.large, g.created_at,
       m.user_id, m.role, m.joined_seq, m.read_seq, m.news_seq
FROM groups AS g JOIN group_members AS m ON m.group_id = g.group_id
WHERE g.group_id = %(group_id)s AND m.user_id = %(user_id)s

-- name: events
SELECT seq, kind, actor, created_at, data FROM group_events
WHERE group_id = %(group_id)s AND seq > %(after_seq)s
ORDER BY seq
LIMIT %(limit)s

-- name: lock_group_for_send
SELECT latest_seq, large FROM groups WHERE group_id = %(group_id)s FOR UPDATE

-- name: cover_lock
-- A share lock: it waits for an event in flight (each holds the row FOR UPDATE) and keeps
-- the next one out until the cover commits; readers covering at once do not wait on each
-- other.
SELECT latest_seq FROM groups WHERE group_id = %(group_id)s FOR SHARE

-- name: cover
-- The news of the readers of a batch whose read reached the latest seq, their rows locked
-- in user-id order (two processes' batches may share a member: no cycle). A member holding
-- none is left unwritten.
UPDATE group_members AS m SET news_seq = NULL
FROM (
    SELECT user_id FROM group_members
    WHERE group_id = %(group_id)s AND user_id = ANY(%(user_ids)s) AND news_seq IS NOT NULL
    ORDER BY user_id
    FOR UPDATE
) AS covered
WHERE m.group_id = %(group_id)s AND m.user_id = covered.user_id

-- name: send_message
-- A group message, after lock_group_for_send took the group's lock in this transaction
-- (sent with it in one pipeline: PgGroupStore.send). A statement of its own, not a CTE of
-- the lock: a statement's snapshot is taken at its start, so the group row and members read
-- here include every change committed before we got the lock (each change of membership
-- holds it), and the seq is the next after the committed latest. The members' rows are
-- locked in user-id order, the order every writer keeps; nothing is written unless the
-- group is small (`grp`: a large group's sends are send_large's) and the sender a member.
-- With push on (push_wait not NULL) the other members' pushers (never the sender's own)
-- fall due push_wait after the first message of a delay window, as a direct send marks
-- them (inbox.sql send_message); with push off that part matches no row.
WITH grp AS (
    SELECT latest_seq + 1 AS seq FROM groups WHERE group_id = %(group_id)s AND NOT large
), stamp AS (
    SELECT now() AS created_at,
           to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS text
), locked AS (
    SELECT u.user_id
    FROM group_members AS m JOIN users AS u ON u.user_id = m.user_id
    WHERE m.group_id = %(group_id)s
      AND EXISTS (SELECT 1 FROM grp)
      AND EXISTS (SELECT 1 FROM group_members AS s
                  WHERE s.group_id = %(group_id)s AND s.user_id = %(sender)s)
    ORDER BY u.user_id
    FOR UPDATE OF u
), bumped AS (
    UPDATE users SET latest_version = users.latest_version + 1
    FROM locked
    WHERE users.user_id = locked.user_id
    RETURNING users.user_id, users.latest_version
), message AS (
    INSERT INTO messages (sender, recipient, pair_lo, pair_hi, body, client_msg_id,
                          sender_version, recipient_version, created_at, group_id, seq)
    SELECT %(sender)s, NULL, NULL, NULL, %(body)s, %(client_msg_id)s, bumped.latest_version,
           NULL, stamp.created_at, %(group_id)s, (SELECT seq FROM grp)
    FROM bumped, stamp
    WHERE bumped.user_id = %(sender)s
    RETURNING id, sender_version
), payload AS (
    SELECT message.id, message.sender_version,
           CAST(json_build_object(
               'id', message.id, 'from', CAST(%(sender)s AS text), 'to', CAST(NULL AS text),
               'body', CAST(%(body)s AS text), 'client_msg_id', CAST(%(client_msg_id)s AS text),
               'created_at', stamp.text, 'recalled_at', CAST(NULL AS text),
               'group_id', CAST(%(group_id)s AS text), 'seq', CAST((SELECT seq FROM grp) AS bigint)
           ) AS text) AS data
    FROM message, stamp
), logged AS (
    INSERT INTO group_events (group_id, seq, kind, actor, created_at, message_id, data)
    SELECT %(group_id)s, (SELECT seq FROM grp), 'message', %(sender)s, stamp.created_at, payload.id,
           payload.data
    FROM payload, stamp
), counted AS (
    UPDATE groups SET latest_seq = (SELECT seq FROM grp), last_message_id = payload.id
    FROM payload
    WHERE groups.group_id = %(group_id)s
), listed AS (
    -- The group moves to the top of every member's conversation list.
    UPDATE group_members SET last_message_id = payload.id
    FROM payload
    WHERE group_members.group_id = %(group_id)s
), entries AS (
    -- One entry per member; the sender's is how the sender's other devices learn of it.
    INSERT INTO inbox (user_id, version, kind, created_at, message_id, data)
    SELECT bumped.user_id, bumped.latest_version, 'message', stamp.created_at, payload.id,
           payload.data
    FROM bumped, payload, stamp
), marked AS (
    UPDATE pushers
    SET due_at = coalesce(pushers.due_at, stamp.created_at
                                   + CAST(%(push_wait)s AS double precision) * interval '1 second'),
        news = pushers.news OR pushers.leased_until IS NOT NULL
    FROM bumped, payload, stamp
    WHERE pushers.user_id = bumped.user_id AND bumped.user_id <> %(sender)s
      AND (pushers.due_at IS NULL OR pushers.leased_until IS NOT NULL)
      AND CAST(%(push_wait)s AS double precision) IS NOT NULL
)
SELECT payload.id, payload.sender_version, payload.data,
       (SELECT array_agg(user_id) FROM bumped)
FROM payload

-- name: send_large
-- A message to a large group, after lock_group_for_send took the group's lock (in one
-- pipeline, as send_message; nothing is written unless the group is large): logged once,
-- no message entry. Only the members holding no uncovered news (the partial index) are
-- locked, in user-id order, each getting a group_news entry and news_seq = seq; the sender
-- is a member like any other. The message's sender_version is the sender's latest (its
-- group_news entry's version when it got one).
-- With push on, the pushers of those who got an entry (never the sender's own) are marked
-- due as send_message marks them.
WITH grp AS (
    SELECT latest_seq + 1 AS seq FROM groups WHERE group_id = %(group_id)s AND large
), stamp AS (
    SELECT now() AS created_at,
           to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS text
), sender AS (
    SELECT user_id FROM group_members
    WHERE group_id = %(group_id)s AND user_id = %(sender)s AND EXISTS (SELECT 1 FROM grp)
), locked AS (
    SELECT u.user_id
    FROM group_members AS m JOIN users AS u ON u.user_id = m.user_id
    WHERE m.group_id = %(group_id)s AND m.news_seq IS NULL AND EXISTS (SELECT 1 FROM sender)
    ORDER BY u.user_id
    FOR UPDATE OF u
), bumped AS (
    UPDATE users SET latest_version = users.latest_version + 1
    FROM locked
    WHERE users.user_id = locked.user_id
    RETURNING users.user_id, users.latest_version
), message AS (
    INSERT INTO messages (sender, recipient, pair_lo, pair_hi, body, client_msg_id,
                          sender_version, recipient_version, created_at, group_id, seq)
    SELECT %(sender)s, NULL, NULL, NULL, %(body)s, %(client_msg_id)s,
           coalesce((SELECT latest_version FROM bumped WHERE user_id = %(sender)s),
                    (SELECT latest_version FROM users WHERE user_id = %(sender)s)),
           NULL, stamp.created_at, %(group_id)s, (SELECT seq FROM grp)
    FROM sender, stamp
    RETURNING id, sender_version
), payload AS (
    SELECT message.id, message.sender_version,
           CAST(json_build_object(
               'id', message.id, 'from', CAST(%(sender)s AS text), 'to', CAST(NULL AS text),
               'body', CAST(%(body)s AS text), 'client_msg_id', CAST(%(client_msg_id)s AS text),
               'created_at', stamp.text, 'recalled_at', CAST(NULL AS text),
               'group_id', CAST(%(group_id)s AS text), 'seq', CAST((SELECT seq FROM grp) AS bigint)
           ) AS text) AS data
    FROM message, stamp
), logged AS (
    INSERT INTO group_events (group_id, seq, kind, actor, created_at, message_id, data)
    SELECT %(group_id)s, (SELECT seq FROM grp), 'message', %(sender)s, stamp.created_at, payload.id,
           payload.data
    FROM payload, stamp
), counted AS (
    UPDATE groups SET latest_seq = (SELECT seq FROM grp), last_message_id = payload.id
    FROM payload
    WHERE groups.group_id = %(group_id)s
), noticed AS (
    UPDATE group_members SET news_seq = (SELECT seq FROM grp)
    FROM bumped
    WHERE group_members.group_id = %(group_id)s AND group_members.user_id = bumped.user_id
), entries AS (
    INSERT INTO inbox (user_id, version, kind, created_at, message_id, data)
    SELECT bumped.user_id, bumped.latest_version, 'group_news', stamp.created_at, NULL,
           CAST(json_build_object('group_id', CAST(%(group_id)s AS text),
                                  'seq', CAST((SELECT seq FROM grp) AS bigint)) AS text)
    FROM bumped, stamp
), marked AS (
    UPDATE pushers
    SET due_at = coalesce(pushers.due_at, stamp.created_at
                                   + CAST(%(push_wait)s AS double precision) * interval '1 second'),
        news = pushers.news OR pushers.leased_until IS NOT NULL
    FROM bumped, stamp
    WHERE pushers.user_id = bumped.user_id AND bumped.user_id <> %(sender)s
      AND (pushers.due_at IS NULL OR pushers.leased_until IS NOT NULL)
      AND CAST(%(push_wait)s AS double precision) IS NOT NULL
)
SELECT payload.id, payload.sender_version, payload.data,
       (SELECT array_agg(user_id) FROM bumped)
FROM payload

-- name: existing_send
SELECT id, sender_version, group_id FROM messages
WHERE sender = %(sender)s AND client_msg_id = %(client_msg_id)s

-- name: message_row
SELECT id, sender, body, client_msg_id, created_at, recalled_at, group_id, seq
FROM messages WHERE id = %(message_id)s

-- name: lock_reader
-- A read receipt bumps the reader alone: the user's lock, without the group's (the order
-- is kept: a member row is only ever locked after its user's row).
SELECT latest_version FROM users WHERE user_id = %(reader)s FOR UPDATE

-- name: move_read_cursor
UPDATE group_members SET read_seq = %(up_to_seq)s
WHERE group_id = %(group_id)s AND user_id = %(reader)s AND read_seq < %(up_to_seq)s
RETURNING read_seq

-- name: read_entry
WITH bumped AS (
    UPDATE users SET latest_version = latest_version + 1
    WHERE user_id = %(reader)s
    RETURNING latest_version
)
INSERT INTO inbox (user_id, version, kind, created_at, message_id, data)
SELECT %(reader)s, bumped.latest_version, 'read', now(), NULL, %(data)s FROM bumped
RETURNING version

-- name: conversations
-- The user's groups with a message, newest first, each with its unread count: one
-- statement, one snapshot. The page is taken by the index (user_id, last_message_id) of
-- the user's member rows, whatever the number of groups: a small group's row holds the
-- group's newest message; a large group's holds none (NULL), its order is the group's
-- row's (read for the user's large groups only). The groups, last messages and unread
-- counts are read for the page's rows only.
WITH page AS MATERIALIZED (
    SELECT * FROM (
        (SELECT m.group_id, m.read_seq, m.last_message_id
         FROM group_members AS m
         WHERE m.user_id = %(user_id)s AND m.last_message_id > 0
           AND m.last_message_id < %(before)s
         ORDER BY m.last_message_id DESC
         LIMIT %(limit)s)
        UNION ALL
        (SELECT m.group_id, m.read_seq, g.last_message_id
         FROM group_members AS m JOIN groups AS g ON g.group_id = m.group_id
         WHERE m.user_id = %(user_id)s AND m.last_message_id IS NULL
           AND g.last_message_id < %(before)s
         ORDER BY g.last_message_id DESC
         LIMIT %(limit)s)
    ) AS both_modes
    ORDER BY last_message_id DESC
    LIMIT %(limit)s
)
SELECT g.group_id, g.title, page.read_seq, msg.id, msg.sender, msg.body, msg.client_msg_id,
       msg.created_at, msg.recalled_at, msg.seq,
       (SELECT count(*) FROM messages AS u
        WHERE u.group_id = page.group_id AND u.seq > page.read_seq
          AND u.sender <> %(user_id)s AND u.recalled_at IS NULL) AS unread
FROM page
JOIN groups AS g ON g.group_id = page.group_id
JOIN messages AS msg ON msg.id = page.last_message_id
ORDER BY page.last_message_id DESC

-- name: groups_of
SELECT g.group_id, g.latest_seq
FROM group_members AS m JOIN groups AS g ON g.group_id = m.group_id
WHERE m.user_id = %(user_id)s
ORDER BY g.group_id

-- name: latest_version
SELECT latest_version FROM users WHERE user_id = %(user_id)s
