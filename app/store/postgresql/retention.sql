-- The retention run's statements (app/store/postgresql/retention.py). The users' locks of
-- a batch are the inbox's lock_users (inbox.sql), the lock rule's statement.

-- name: try_run_lock
SELECT pg_try_advisory_lock(%(key)s)

-- name: run_lock
SELECT pg_advisory_lock(%(key)s)
