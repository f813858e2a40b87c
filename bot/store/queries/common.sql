-- The store's statements that both databases run as written, by name (see bot/store/queries). The rest, where
-- the dialects differ (locks, lists, syntax), are in sqlite.sql and postgres.sql, under the same names in each.
-- Parameters are :name. Only standard SQL here: CAST, not ::; TRUE and FALSE (SQLite stores them as 1 and 0).

-- ===== jobs: enqueue ====================================================================================

-- name: admission
-- A member's standing in a quota window. An admin's reset hides what was charged up to and including it.
WITH reset AS (
    SELECT COALESCE(MAX(at), -1e18) AS at FROM usage_ledger
    WHERE guild_id = :guild_id AND user_id = :user_id AND kind = 'reset' AND at >= :start AND at < :end
)
SELECT
    COALESCE((SELECT paused FROM guild_settings WHERE guild_id = :guild_id), FALSE) AS paused,
    EXISTS (SELECT 1 FROM quota_blocks WHERE guild_id = :guild_id AND user_id = :user_id) AS blocked,
    COALESCE((SELECT SUM(credits) FROM usage_ledger WHERE guild_id = :guild_id AND user_id = :user_id
              AND kind IN ('reserve', 'refund') AND at >= :start AND at < :end
              AND at > (SELECT at FROM reset)), 0) AS charged,
    COALESCE((SELECT SUM(credits) FROM jobs WHERE guild_id = :guild_id AND user_id = :user_id
              AND state NOT IN {terminal_states} AND created_at >= :start AND created_at < :end
              AND created_at > (SELECT at FROM reset)), 0) AS reserved,
    COALESCE((SELECT SUM(credits) FROM usage_ledger WHERE guild_id = :guild_id AND user_id = :user_id
              AND kind = 'grant' AND at >= :start AND at < :end), 0) AS granted,
    (SELECT COUNT(*) FROM jobs WHERE guild_id = :guild_id AND user_id = :user_id AND state = 'queued') AS queued,
    (SELECT COUNT(*) FROM jobs WHERE guild_id = :guild_id AND user_id = :user_id
     AND state IN {active_states}) AS running;

-- name: fair_rank_floor
-- A new job ranks with the head of the queue (the next job to be claimed) and after the member's last queued
-- job: every member's n-th job comes before any member's (n+1)-th. Read from the dispatch index's first entry,
-- so no row is written on every claim (a "virtual time" row would be a lock every claimer waits on).
SELECT
    COALESCE((SELECT fair_rank FROM jobs WHERE state = 'queued' ORDER BY priority DESC, fair_rank, seq LIMIT 1),
             0) AS head_rank,
    COALESCE((SELECT MAX(fair_rank) FROM jobs WHERE guild_id = :guild_id AND user_id = :user_id
              AND state = 'queued'), 0) AS member_last;

-- name: insert_job
INSERT INTO jobs ({job_columns}) VALUES ({job_values});

-- name: insert_ledger
INSERT INTO usage_ledger (guild_id, user_id, job_id, kind, credits, at)
VALUES (:guild_id, :user_id, :job_id, :kind, :credits, :at);

-- name: insert_event
INSERT INTO job_events (job_id, at, from_state, to_state, detail) VALUES (:job_id, :at, :from_state, :to_state, :detail);

-- ===== jobs: the claim ==================================================================================

-- name: take_over
UPDATE jobs SET lease_owner = :worker_id, lease_expires_at = :lease_until, attempts = attempts + 1, updated_at = :now
WHERE seq = :seq RETURNING *;

-- ===== jobs: moves ======================================================================================

-- name: move_job
-- To a working state. Fields left NULL keep their value.
UPDATE jobs SET state = :state, updated_at = :now,
    remote_id = COALESCE(:remote_id, remote_id),
    result_path = COALESCE(:result_path, result_path),
    post_attempted_at = COALESCE(:post_attempted_at, post_attempted_at),
    vendor_credits = COALESCE(:vendor_credits, vendor_credits)
WHERE id = :id RETURNING *;

-- name: reroute_job
-- A job on a model alias moves on to the next model of its chain, before any provider took it: no remote id,
-- and no earlier attempt at this provider.
UPDATE jobs SET state = :state, updated_at = :now, model = :model, provider = :provider,
    request_json = :request_json, credits = :credits, route = :route, cost_usd = :cost_usd, remote_id = NULL,
    attempts = 0
WHERE id = :id RETURNING *;

-- name: end_job
-- To a terminal state: the lease is cleared and the end dated. Fields left NULL keep their value.
UPDATE jobs SET state = :state, updated_at = :now, finished_at = :now,
    lease_owner = NULL, lease_expires_at = NULL,
    progress = CASE WHEN :state = 'delivered' THEN 1 ELSE progress END,
    error = COALESCE(:error, error),
    delivered_message_id = COALESCE(:delivered_message_id, delivered_message_id)
WHERE id = :id RETURNING *;

-- name: set_progress
UPDATE jobs SET progress = :progress, remote_position = :remote_position, remote_waiting = :remote_waiting,
    updated_at = :now
WHERE id = :id AND lease_owner = :worker_id;

-- name: flag_cancel
UPDATE jobs SET cancel_requested = TRUE, updated_at = :now WHERE id = :id RETURNING *;

-- name: set_delivery_ref
UPDATE jobs SET delivery_ref = :delivery_ref, status_state = COALESCE(status_state, 'queued') WHERE id = :id;

-- name: mark_status_shown
UPDATE jobs SET status_state = :state WHERE id = :id;

-- ===== jobs: reads ======================================================================================

-- name: get_job
SELECT * FROM jobs WHERE id = :id;

-- name: stale_status_jobs
SELECT * FROM jobs WHERE updated_at >= :since AND (status_state IS NULL OR status_state <> state) ORDER BY seq;

-- name: member_jobs
SELECT * FROM jobs WHERE guild_id = :guild_id AND user_id = :user_id
  AND (CAST(:include_finished AS BOOLEAN) OR state NOT IN {terminal_states})
ORDER BY seq;

-- name: queue_depth
SELECT COUNT(*) AS n FROM jobs
WHERE state = 'queued' AND (CAST(:guild_id AS BIGINT) IS NULL OR guild_id = :guild_id);

-- name: running_count
SELECT COUNT(*) AS n FROM jobs
WHERE state IN {active_states} AND (CAST(:provider AS TEXT) IS NULL OR provider = :provider);

-- name: recent_durations
SELECT finished_at - started_at AS seconds FROM jobs
WHERE model = :model AND state = 'delivered' AND started_at IS NOT NULL
ORDER BY finished_at DESC LIMIT :limit;

-- name: unfinished_jobs
SELECT * FROM jobs WHERE state NOT IN {terminal_states} ORDER BY seq;

-- ===== the worker registry ==============================================================================

-- name: register_worker
INSERT INTO workers (id, host, pid, pid_started, started_at, heartbeat_at)
VALUES (:id, :host, :pid, :pid_started, :started_at, :heartbeat_at)
ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, pid_started = excluded.pid_started,
    started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at;

-- name: worker_alive
UPDATE workers SET heartbeat_at = :now WHERE id = :id;

-- name: workers
SELECT * FROM workers ORDER BY started_at;

-- name: forget_worker
DELETE FROM workers WHERE id = :id;

-- name: release_lease
UPDATE jobs SET lease_owner = NULL, lease_expires_at = 0 WHERE id = :id AND lease_owner = :worker_id;

-- ===== quotas ===========================================================================================

-- name: delete_policy
DELETE FROM quota_policies WHERE guild_id = :guild_id AND scope = :scope AND target_id = :target_id;

-- name: ensure_policy
-- A row first, so there is one to lock (PostgreSQL): two concurrent merges then apply one after the other.
INSERT INTO quota_policies (guild_id, scope, target_id) VALUES (:guild_id, :scope, :target_id)
ON CONFLICT DO NOTHING;

-- name: save_policy
UPDATE quota_policies SET credits = :credits, unlimited = :unlimited, period = :period,
    max_queued = :max_queued, max_running = :max_running
WHERE guild_id = :guild_id AND scope = :scope AND target_id = :target_id;

-- name: block_member
INSERT INTO quota_blocks (guild_id, user_id, blocked_at) VALUES (:guild_id, :user_id, :now) ON CONFLICT DO NOTHING;

-- name: unblock_member
DELETE FROM quota_blocks WHERE guild_id = :guild_id AND user_id = :user_id;

-- name: is_blocked
SELECT COUNT(*) AS n FROM quota_blocks WHERE guild_id = :guild_id AND user_id = :user_id;

-- ===== settings and meta ================================================================================

-- name: guild_settings
SELECT * FROM guild_settings WHERE guild_id = :guild_id;

-- name: ensure_guild_settings
-- A row first, so there is one to lock (PostgreSQL): concurrent changes then apply one after the other, each
-- reading what the previous one committed (READ COMMITTED re-reads the row once the lock is free).
INSERT INTO guild_settings (guild_id) VALUES (:guild_id) ON CONFLICT DO NOTHING;

-- name: save_guild_settings
INSERT INTO guild_settings (guild_id, paused, default_model, disabled_models, admin_role_id, log_channel_id,
    monthly_budget, language, blocklist, allowed_channels)
VALUES (:guild_id, :paused, :default_model, :disabled_models, :admin_role_id, :log_channel_id, :monthly_budget,
    :language, :blocklist, :allowed_channels)
ON CONFLICT (guild_id) DO UPDATE SET paused = excluded.paused, default_model = excluded.default_model,
    disabled_models = excluded.disabled_models, admin_role_id = excluded.admin_role_id,
    log_channel_id = excluded.log_channel_id, monthly_budget = excluded.monthly_budget,
    language = excluded.language, blocklist = excluded.blocklist, allowed_channels = excluded.allowed_channels;

-- name: get_meta
SELECT value FROM meta WHERE key = :key;

-- name: set_meta
INSERT INTO meta (key, value) VALUES (:key, :value) ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- Spend (the monthly budget) ----------------------------------------------------------------------------------

-- name: guild_spend
-- A server's provider spend by list price in a month: every job of the month that did not fail or get cancelled
-- (a running job's cost is reserved; a failure or a cancel returns it).
SELECT COALESCE(SUM(cost_usd), 0) AS spent FROM jobs
WHERE guild_id = :guild_id AND created_at >= :start AND created_at < :end AND state NOT IN ('failed', 'cancelled');

-- ===== metrics (scraped by /metrics) ====================================================================

-- name: queue_depth_by_model
SELECT model, COUNT(*) AS n FROM jobs WHERE state = 'queued' GROUP BY model;

-- name: leases_held
SELECT COUNT(*) AS n FROM jobs
WHERE lease_owner = :worker_id AND lease_expires_at > :now AND state IN {active_states};

-- ===== the server stats (admin command) and refusals by rule =========================================
-- The day-by-day totals differ by dialect only in how a UTC day number is taken from epoch seconds, so they are
-- in sqlite.sql and postgres.sql (stats_credits_by_day, stats_spend_by_day).

-- name: insert_refusal
INSERT INTO refusals (guild_id, user_id, rule, at) VALUES (:guild_id, :user_id, :rule, :at);

-- name: stats_top_members
-- Credits each member kept in [start, end): the ledger's reserve and refund rows (a refund is dated at its
-- reservation) of finished jobs, as the quota's "Used" counts them; a job still running holds, not uses, its credits.
SELECT l.user_id AS user_id, SUM(l.credits) AS credits
FROM usage_ledger l JOIN jobs j ON j.id = l.job_id
WHERE l.guild_id = :guild_id AND l.kind IN ('reserve', 'refund') AND l.at >= :start AND l.at < :end
  AND j.state IN {terminal_states}
GROUP BY l.user_id
HAVING SUM(l.credits) > 0
ORDER BY SUM(l.credits) DESC, l.user_id
LIMIT :limit;

-- name: stats_refusals_by_rule
SELECT rule, COUNT(*) AS n FROM refusals WHERE guild_id = :guild_id AND at >= :start AND at < :end GROUP BY rule;

-- ===== the audit trail (admin changes) ==================================================================

-- name: insert_audit_entry
INSERT INTO audit_log (guild_id, actor_id, at, action, target_kind, target, before_json, after_json)
VALUES (:guild_id, :actor_id, :at, :action, :target_kind, :target, :before_json, :after_json)
RETURNING id;

-- name: audit_entries
SELECT * FROM audit_log WHERE guild_id = :guild_id ORDER BY id DESC LIMIT :limit;

-- name: stats_vendor_credits
-- What the vendors say delivered jobs cost, in their own credits (only those that report it).
SELECT provider, SUM(vendor_credits) AS credits FROM jobs
WHERE guild_id = :guild_id AND created_at >= :start AND created_at < :end AND state = 'delivered'
    AND vendor_credits IS NOT NULL
GROUP BY provider ORDER BY provider;

-- ===== inputs (image-to-video input images, reachable from every process) ==============================

-- name: insert_input
INSERT INTO job_inputs (id, content_type, size, data, created_at)
VALUES (:id, :content_type, :size, :data, :created_at);

-- name: get_input
SELECT id, content_type, data FROM job_inputs WHERE id = :id;

-- name: delete_input
DELETE FROM job_inputs WHERE id = :id RETURNING id;

-- name: stale_inputs
-- Inputs stored before :before (the sweep leaves younger ones alone: their request may still be being queued).
SELECT id FROM job_inputs WHERE created_at < :before ORDER BY created_at;

-- ===== discord rate limit ===============================================================================

-- name: discord_paused_until
-- Until when Discord's global REST limit holds bot-token requests (epoch seconds); no row: never paused.
SELECT paused_until FROM discord_rest_pause WHERE scope = 'global';

-- name: pause_discord
-- Only ever extends the pause: two processes told at once keep the later end.
INSERT INTO discord_rest_pause (scope, paused_until) VALUES ('global', :until)
ON CONFLICT (scope) DO UPDATE SET paused_until = excluded.paused_until
WHERE discord_rest_pause.paused_until < excluded.paused_until;
