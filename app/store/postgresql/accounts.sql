-- The attempt counters (app/store/accounts.py explains the model). The clock is
-- clock_timestamp(), the moment of the call, in seconds since the epoch.

-- name: count_attempt
-- Returns the new count, or no row when the delay has not run out (nothing changes).
-- ON CONFLICT locks the row: concurrent attempts serialise on it.
INSERT INTO throttle_counters (key, hits, retry_at, expires_at)
VALUES (%(key)s, 1, CASE WHEN 1 < %(limit)s THEN 0 ELSE CAST(extract(epoch FROM clock_timestamp()) AS double precision) + least(%(cap)s, 1 << least(1 - %(limit)s, %(most)s)) END, greatest(CASE WHEN 1 < %(limit)s THEN 0 ELSE CAST(extract(epoch FROM clock_timestamp()) AS double precision) + least(%(cap)s, 1 << least(1 - %(limit)s, %(most)s)) END, CAST(extract(epoch FROM clock_timestamp()) AS double precision)) + %(cap)s)
ON CONFLICT (key) DO UPDATE SET
    hits = CASE WHEN throttle_counters.expires_at <= CAST(extract(epoch FROM clock_timestamp()) AS double precision) THEN 1 ELSE throttle_counters.hits + 1 END,
    retry_at = CASE WHEN CASE WHEN throttle_counters.expires_at <= CAST(extract(epoch FROM clock_timestamp()) AS double precision) THEN 1 ELSE throttle_counters.hits + 1 END < %(limit)s THEN 0 ELSE CAST(extract(epoch FROM clock_timestamp()) AS double precision) + least(%(cap)s, 1 << least(CASE WHEN throttle_counters.expires_at <= CAST(extract(epoch FROM clock_timestamp()) AS double precision) THEN 1 ELSE throttle_counters.hits + 1 END - %(limit)s, %(most)s)) END,
    expires_at = greatest(CASE WHEN CASE WHEN throttle_counters.expires_at <= CAST(extract(epoch FROM clock_timestamp()) AS double precision) THEN 1 ELSE throttle_counters.hits + 1 END < %(limit)s THEN 0 ELSE CAST(extract(epoch FROM clock_timestamp()) AS double precision) + least(%(cap)s, 1 << least(CASE WHEN throttle_counters.expires_at <= CAST(extract(epoch FROM clock_timestamp()) AS double precision) THEN 1 ELSE throttle_counters.hits + 1 END - %(limit)s, %(most)s)) END, CAST(extract(epoch FROM clock_timestamp()) AS double precision)) + %(cap)s
WHERE throttle_counters.retry_at <= CAST(extract(epoch FROM clock_timestamp()) AS double precision) OR throttle_counters.expires_at <= CAST(extract(epoch FROM clock_timestamp()) AS double precision)
RETURNING hits

-- name: attempt_wait
-- The seconds until the key's delay runs out.
SELECT retry_at - CAST(extract(epoch FROM clock_timestamp()) AS double precision)
FROM throttle_counters WHERE key = %(key)s

-- name: clear_attempts
DELETE FROM throttle_counters WHERE key = %(key)s

-- name: purge_attempts
DELETE FROM throttle_counters
WHERE expires_at <= CAST(extract(epoch FROM clock_timestamp()) AS double precision)
