-- The statements where PostgreSQL differs from SQLite, by name; sqlite.sql has the same names, and
-- common.sql the statements both run as written (see bot/store/queries).
-- Parameters are :name, turned into $n at load; a list parameter is an array, read with = ANY(:name::type[]).
-- Every body runs in READ COMMITTED: the reads that decide a write lock what they read.

-- name: lock_member
-- Until the commit: this member's admission snapshot and the insert it guards do not interleave with another
-- enqueue of the same member (other members are not held up).
SELECT pg_advisory_xact_lock(hashtextextended(
    current_schema() || '/member/' || :guild_id::bigint::text || '/' || :user_id::bigint::text, 0));

-- name: lock_claims
-- Claims one at a time: the running counts read after it include every claim committed before, so two claimers
-- cannot both pass a member's, a provider's or the global limit.
SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || '/claim', 0));

-- name: notify_job_queued
-- Wakes the workers of every process LISTENing on this schema (bot.store.dialects.postgres.CHANNEL). The
-- server sends it at commit, and never for an enqueue that rolled back.
SELECT pg_notify('videobot_jobs', current_schema());

-- name: find_expired_lease
-- Skipping rows a cancel holds: it may be changing the job right now.
SELECT seq, id, state, lease_owner FROM jobs
WHERE lease_expires_at < :now AND provider = ANY(:providers::text[]) AND state IN {active_states}
  AND NOT (id = ANY(:holding::text[]))
ORDER BY lease_expires_at LIMIT 1
FOR UPDATE SKIP LOCKED;

-- name: claim_next
-- As in sqlite.sql, skipping rows a cancel or a clear holds.
WITH pick AS (
    SELECT j.seq FROM jobs AS j
    WHERE j.state = 'queued' AND NOT (j.provider = ANY(:skip::text[]))
      AND (:only::text[] IS NULL OR j.provider = ANY(:only::text[]))
      AND NOT EXISTS (SELECT 1 FROM guild_settings AS g WHERE g.paused AND g.guild_id = j.guild_id)
      AND j.max_running > (SELECT COUNT(*) FROM jobs AS a
                           WHERE a.guild_id = j.guild_id AND a.user_id = j.user_id AND a.state IN {active_states})
    ORDER BY j.priority DESC, j.fair_rank, j.seq LIMIT 1
    FOR UPDATE OF j SKIP LOCKED
)
UPDATE jobs SET state = 'submitting', lease_owner = :worker_id, lease_expires_at = :lease_until,
    started_at = :now, updated_at = :now
FROM pick WHERE jobs.seq = pick.seq
RETURNING jobs.*;

-- name: transition_row
-- Locked: the checks must still hold at the update (a takeover or a cancel may be racing this).
SELECT state, lease_owner, guild_id, user_id, credits, created_at FROM jobs WHERE id = :id FOR UPDATE;

-- name: job_for_update
SELECT * FROM jobs WHERE id = :id FOR UPDATE;

-- name: queued_jobs_of_guild
-- Locked in seq order, so two clears cannot deadlock; claimers skip these rows meanwhile.
SELECT id FROM jobs WHERE guild_id = :guild_id AND state = 'queued' ORDER BY seq FOR UPDATE;

-- name: policy_for_update
SELECT * FROM quota_policies WHERE guild_id = :guild_id AND scope = :scope AND target_id = :target_id FOR UPDATE;

-- name: guild_settings_for_update
SELECT * FROM guild_settings WHERE guild_id = :guild_id FOR UPDATE;

-- name: job_events
-- The serial id gives events of the same instant their insertion order.
SELECT * FROM job_events WHERE job_id = :job_id ORDER BY at, id;

-- name: queue_positions
SELECT j.id, 1 + (SELECT COUNT(*) FROM jobs AS o WHERE o.state = 'queued' AND
    (o.priority > j.priority OR (o.priority = j.priority AND
     (o.fair_rank < j.fair_rank OR (o.fair_rank = j.fair_rank AND o.seq < j.seq))))) AS position
FROM jobs AS j WHERE j.id = ANY(:ids::text[]) AND j.state = 'queued';

-- name: renew_leases
UPDATE jobs SET lease_expires_at = :until
WHERE id = ANY(:ids::text[]) AND lease_owner = :worker_id AND state IN {active_states}
RETURNING id;

-- name: forget_workers
DELETE FROM workers WHERE id = ANY(:ids::text[]);

-- name: expire_leases_of
UPDATE jobs SET lease_expires_at = 0
WHERE lease_owner = ANY(:ids::text[]) AND state IN {active_states}
RETURNING id;

-- name: policy_layers
SELECT * FROM quota_policies WHERE guild_id = :guild_id AND (scope = 'default'
    OR (scope = 'role' AND target_id = ANY(:role_ids::bigint[]))
    OR (scope = 'user' AND target_id = :user_id));

-- name: lock_guild_spend
-- Until the commit: the server's spend snapshot and the insert it guards do not interleave with another member's
-- enqueue on the same server (only servers with a budget take it).
SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || '/spend/' || :guild_id::bigint::text, 0));

-- ===== the server stats (admin command) ====================================================================
-- A UTC day number is whole days since the epoch: FLOOR, since CAST of a double rounds in PostgreSQL.

-- name: stats_credits_by_day
-- Credits kept per UTC day and model: the ledger's reserve and refund rows of finished jobs (as the quota's "Used").
SELECT CAST(FLOOR(l.at / 86400) AS BIGINT) AS day, j.model AS model, SUM(l.credits) AS credits
FROM usage_ledger l JOIN jobs j ON j.id = l.job_id
WHERE l.guild_id = :guild_id AND l.kind IN ('reserve', 'refund') AND l.at >= :start AND l.at < :end
  AND j.state IN {terminal_states}
GROUP BY day, j.model;

-- name: stats_spend_by_day
-- Provider spend by list price per UTC day and model, as the monthly budget counts it: jobs not failed or cancelled.
SELECT CAST(FLOOR(created_at / 86400) AS BIGINT) AS day, model, SUM(cost_usd) AS spend_usd FROM jobs
WHERE guild_id = :guild_id AND created_at >= :start AND created_at < :end AND state NOT IN ('failed', 'cancelled')
GROUP BY day, model;
