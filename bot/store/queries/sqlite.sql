-- The statements where SQLite differs from PostgreSQL, by name; postgres.sql has the same names, and
-- common.sql the statements both run as written (see bot/store/queries).
-- Parameters are :name; a list parameter arrives as JSON text and is read with json_each(:name).
-- A block with only comments does nothing here: BEGIN IMMEDIATE takes the database's one write lock up front,
-- so the row and advisory locks PostgreSQL needs are plain reads or nothing at all.
-- A list is read as `x IN (SELECT value FROM json_each(:list))`, which SQLite matches against an index.

-- name: lock_member

-- name: running_by_provider
SELECT provider, COUNT(*) AS n FROM jobs WHERE state IN {active_states} GROUP BY provider;

-- name: claim_check
-- Nothing to check: BEGIN IMMEDIATE serializes claims, so claim_next's counts were exact (and the logic writes
-- the history row itself).

-- name: notify_job_queued
-- The process that queues a job wakes its own worker (JobService's on_enqueue).

-- name: find_expired_lease
-- An active job of one of :providers whose worker stopped renewing its lease, first the longest lapsed.
SELECT seq, id, state, lease_owner FROM jobs
WHERE state IN {active_states} AND provider IN (SELECT value FROM json_each(:providers))
  AND lease_expires_at < :now AND id NOT IN (SELECT value FROM json_each(:holding))
ORDER BY lease_expires_at LIMIT 1;

-- name: claim_next
-- The next queued job in fair order whose server is not paused and whose member has a free running slot, among
-- the :providers below their :limits (the same positions in both lists), while the global limit is not reached.
WITH running AS (
    SELECT provider, COUNT(*) AS n FROM jobs WHERE state IN {active_states} GROUP BY provider
), room AS (
    SELECT p.value AS provider FROM json_each(:providers) AS p JOIN json_each(:limits) AS l ON l.key = p.key
    WHERE l.value > COALESCE((SELECT r.n FROM running AS r WHERE r.provider = p.value), 0)
      AND (:global_limit IS NULL OR (SELECT COALESCE(SUM(n), 0) FROM running) < :global_limit)
)
UPDATE jobs SET state = 'submitting', lease_owner = :worker_id, lease_expires_at = :lease_until,
    started_at = :now, updated_at = :now
WHERE seq = (
    SELECT j.seq FROM jobs AS j
    WHERE j.state = 'queued' AND j.provider IN (SELECT provider FROM room)
      AND NOT EXISTS (SELECT 1 FROM guild_settings AS g WHERE g.guild_id = j.guild_id AND g.paused = 1)
      AND (SELECT COUNT(*) FROM jobs AS a WHERE a.guild_id = j.guild_id AND a.user_id = j.user_id
           AND a.state IN {active_states}) < j.max_running
    ORDER BY j.priority DESC, j.fair_rank, j.seq
    LIMIT 1
)
RETURNING *;

-- name: queued_providers
SELECT DISTINCT provider FROM jobs WHERE state = 'queued';

-- name: transition_checked
-- Nothing: apply_transition's steps are as cheap here (no round trips), and this dialect runs them.

-- name: transition_row
SELECT state, lease_owner, guild_id, user_id, credits, created_at FROM jobs WHERE id = :id;

-- name: job_for_update
SELECT * FROM jobs WHERE id = :id;

-- name: queued_jobs_of_guild
SELECT id FROM jobs WHERE guild_id = :guild_id AND state = 'queued' ORDER BY seq;

-- name: policy_for_update
SELECT * FROM quota_policies WHERE guild_id = :guild_id AND scope = :scope AND target_id = :target_id;

-- name: guild_settings_for_update
SELECT * FROM guild_settings WHERE guild_id = :guild_id;

-- name: job_events
-- The implicit rowid gives events of the same instant their insertion order.
SELECT * FROM job_events WHERE job_id = :job_id ORDER BY at, rowid;

-- name: queue_positions
SELECT j.id, 1 + (SELECT COUNT(*) FROM jobs AS o WHERE o.state = 'queued' AND
    (o.priority > j.priority OR (o.priority = j.priority AND
     (o.fair_rank < j.fair_rank OR (o.fair_rank = j.fair_rank AND o.seq < j.seq))))) AS position
FROM jobs AS j WHERE j.id IN (SELECT value FROM json_each(:ids)) AND j.state = 'queued';

-- name: renew_leases
UPDATE jobs SET lease_expires_at = :until
WHERE lease_owner = :worker_id AND id IN (SELECT value FROM json_each(:ids)) AND state IN {active_states}
RETURNING id;

-- name: forget_workers
DELETE FROM workers WHERE id IN (SELECT value FROM json_each(:ids));

-- name: expire_leases_of
UPDATE jobs SET lease_expires_at = 0
WHERE lease_owner IN (SELECT value FROM json_each(:ids)) AND state IN {active_states}
RETURNING id;

-- name: policy_layers
SELECT * FROM quota_policies WHERE guild_id = :guild_id AND (scope = 'default'
    OR (scope = 'role' AND target_id IN (SELECT value FROM json_each(:role_ids)))
    OR (scope = 'user' AND target_id = :user_id));

-- name: lock_guild_spend
-- (nothing: SQLite runs one write transaction at a time)

-- ===== the server stats (admin command) ====================================================================
-- A UTC day number is whole days since the epoch: CAST truncates, which is the floor for times after 1970.

-- name: stats_credits_by_day
-- Credits kept per UTC day and model: the ledger's reserve and refund rows of finished jobs (as the quota's "Used").
SELECT CAST(l.at / 86400 AS INTEGER) AS day, j.model AS model, SUM(l.credits) AS credits
FROM usage_ledger l JOIN jobs j ON j.id = l.job_id
WHERE l.guild_id = :guild_id AND l.kind IN ('reserve', 'refund') AND l.at >= :start AND l.at < :end
  AND j.state IN {terminal_states}
GROUP BY day, j.model;

-- name: stats_spend_by_day
-- Provider spend by list price per UTC day and model, as the monthly budget counts it: jobs not failed or cancelled.
SELECT CAST(created_at / 86400 AS INTEGER) AS day, model, SUM(cost_usd) AS spend_usd FROM jobs
WHERE guild_id = :guild_id AND created_at >= :start AND created_at < :end AND state NOT IN ('failed', 'cancelled')
GROUP BY day, model;
