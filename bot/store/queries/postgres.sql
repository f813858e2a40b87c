-- The statements where PostgreSQL differs from SQLite, by name; sqlite.sql has the same names, and
-- common.sql the statements both run as written (see bot/store/queries).
-- Parameters are :name, turned into $n at load; a list parameter is an array, read with = ANY(:name::type[]).
-- Every body runs in READ COMMITTED: the reads that decide a write lock what they read.

-- name: lock_member
-- Until the commit: this member's admission snapshot and the insert it guards do not interleave with another
-- enqueue of the same member (other members are not held up).
SELECT pg_advisory_xact_lock(hashtextextended(
    current_schema() || '/member/' || :guild_id::bigint::text || '/' || :user_id::bigint::text, 0));

-- name: running_by_provider
-- Active jobs per provider: before a look for lapsed leases, which names the providers that have any.
SELECT provider, COUNT(*) AS n FROM jobs WHERE state IN {active_states} GROUP BY provider;

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
-- The first queued job of each provider with room, in fair order (one short walk of ix_jobs_queue per provider,
-- however long the queue), and of those the first: the same order as ix_jobs_dispatch. :providers and :limits
-- are the worker's providers and their limits; a provider has room below its limit, and none has room once the
-- global limit is reached. Rows another claimer or a cancel holds are skipped. The limits are checked again after
-- the claim, by claim_check, under locks taken here in one order (global, provider, lane, member), never a lock
-- that every claimer shares:
-- - a tight provider (within :lanes of its limit, or in :exclusive after a lost race) is claimed under its
--   exclusive lock: claim_check then sees every claim of it that could commit;
-- - any other provider under its shared lock plus one of :lanes lane locks (try-locks: taken or skipped, never
--   waited for). At most :lanes such claims are in flight at once, so claim_check can leave room for the
--   others it cannot see; with no lane free, lane is NULL and the claim is retried as tight.
-- Claims of one member wait for each other (the member's lock), claims of other members do not.
WITH running AS (
    SELECT provider, COUNT(*) AS n FROM jobs WHERE state IN {active_states} GROUP BY provider
), room AS (
    SELECT l.provider, l.cap - COALESCE(r.n, 0) AS free
    FROM unnest(:providers::text[], :limits::bigint[]) AS l(provider, cap)
    LEFT JOIN running AS r ON r.provider = l.provider
    WHERE l.cap > COALESCE(r.n, 0)
      AND (:global_limit::int IS NULL OR (SELECT COALESCE(SUM(n), 0) FROM running) < :global_limit::int)
), pick AS (
    SELECT c.seq, room.free < :lanes::int OR room.provider = ANY(:exclusive::text[]) AS tight
    FROM room CROSS JOIN LATERAL (
        SELECT j.seq, j.priority, j.fair_rank FROM jobs AS j
        WHERE j.state = 'queued' AND j.provider = room.provider
          AND NOT COALESCE((SELECT g.paused FROM guild_settings AS g WHERE g.guild_id = j.guild_id), FALSE)
          AND j.max_running > (SELECT COUNT(*) FROM jobs AS a
                               WHERE a.guild_id = j.guild_id AND a.user_id = j.user_id AND a.state IN {active_states})
        ORDER BY j.priority DESC, j.fair_rank, j.seq LIMIT 1
        FOR UPDATE OF j SKIP LOCKED
    ) AS c
    ORDER BY c.priority DESC, c.fair_rank, c.seq LIMIT 1
)
UPDATE jobs SET state = 'submitting', lease_owner = :worker_id, lease_expires_at = :lease_until,
    started_at = :now, updated_at = :now
FROM pick WHERE jobs.seq = pick.seq
RETURNING jobs.*, NOT pick.tight AS laned,
    CASE WHEN :global_limit::int IS NOT NULL
         THEN pg_advisory_xact_lock(hashtextextended(current_schema() || '/claim', 0)) END AS global_lock,
    CASE WHEN pick.tight
         THEN pg_advisory_xact_lock(hashtextextended(current_schema() || '/claim/provider/' || jobs.provider, 0))
         ELSE pg_advisory_xact_lock_shared(
             hashtextextended(current_schema() || '/claim/provider/' || jobs.provider, 0)) END AS provider_lock,
    CASE WHEN NOT pick.tight THEN (
        SELECT l.lane FROM generate_series(0, :lanes::int - 1) AS s(i),
            LATERAL (SELECT (s.i + :lane_offset::int) % :lanes::int AS lane) AS l
        WHERE pg_try_advisory_xact_lock(hashtextextended(
            current_schema() || '/claim/provider/' || jobs.provider || '/lane/' || l.lane::text, 0))
        LIMIT 1) END AS lane,
    pg_advisory_xact_lock(hashtextextended(
        current_schema() || '/claim/member/' || jobs.guild_id::text || '/' || jobs.user_id::text, 0)) AS member_lock;

-- name: claim_check
-- Read after claim_next's locks, so it sees every claim committed before (and this one): two claimers that
-- passed the same last free slot find out here, and the later one rolls back. It also writes the claim's
-- history row (a row back tells the logic so; SQLite's empty statement gives none).
WITH recorded AS (
    INSERT INTO job_events (job_id, at, from_state, to_state, detail)
    VALUES (:id, :now, 'queued', 'submitting', :detail)
)
SELECT
    (SELECT COUNT(*) FROM jobs WHERE guild_id = :guild_id AND user_id = :user_id AND state IN {active_states})
        AS member_running,
    (SELECT COUNT(*) FROM jobs WHERE provider = :provider AND state IN {active_states}) AS provider_running,
    CASE WHEN :global_limit::int IS NOT NULL THEN (SELECT COUNT(*) FROM jobs WHERE state IN {active_states}) END
        AS all_running;

-- name: queued_providers
SELECT DISTINCT provider FROM jobs WHERE state = 'queued';

-- name: transition_checked
-- A whole state change in one statement (one round trip, its own transaction): the row locked, the change made only
-- from :from_states and by :worker_id's lease (when given), its history row written, and the refund's ledger row
-- when :refund. What it sets is move_job's or end_job's (:terminal); a Transition gives only the fields of its
-- kind, so the others keep their value. No row back: a check failed, and apply_transition finds out which (SQLite
-- always takes that path).
WITH cur AS (
    SELECT id, state FROM jobs WHERE id = :id FOR UPDATE
), changed AS (
    UPDATE jobs SET state = :state, updated_at = :now,
        finished_at = CASE WHEN :terminal::boolean THEN :now ELSE jobs.finished_at END,
        lease_owner = CASE WHEN :terminal::boolean THEN NULL ELSE jobs.lease_owner END,
        lease_expires_at = CASE WHEN :terminal::boolean THEN NULL ELSE jobs.lease_expires_at END,
        progress = CASE WHEN :state = 'delivered' THEN 1 ELSE jobs.progress END,
        error = COALESCE(:error, jobs.error),
        delivered_message_id = COALESCE(:delivered_message_id::bigint, jobs.delivered_message_id),
        remote_id = COALESCE(:remote_id, jobs.remote_id),
        result_path = COALESCE(:result_path, jobs.result_path),
        post_attempted_at = COALESCE(:post_attempted_at, jobs.post_attempted_at),
        vendor_credits = COALESCE(:vendor_credits, jobs.vendor_credits)
    FROM cur
    WHERE jobs.id = cur.id AND cur.state = ANY(:from_states::text[])
      AND (:worker_id::text IS NULL OR jobs.lease_owner = :worker_id::text)
    RETURNING jobs.*
), recorded AS (
    INSERT INTO job_events (job_id, at, from_state, to_state, detail)
    SELECT cur.id, :now, cur.state, :state, :detail FROM cur JOIN changed ON changed.id = cur.id
), refunded AS (
    INSERT INTO usage_ledger (guild_id, user_id, job_id, kind, credits, at)
    SELECT guild_id, user_id, id, 'refund', -credits, created_at FROM changed WHERE :refund::boolean
)
SELECT * FROM changed;

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
