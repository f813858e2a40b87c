-- Jobs, their history, per-server settings, quota policies and the usage ledger: all durable state.
-- Same tables, columns and indexes as the SQLite migration; Discord ids are BIGINT (snowflakes fit in 63 bits),
-- times are epoch seconds as DOUBLE PRECISION, flags are BOOLEAN (rows.py reads them through bool()).

CREATE TABLE jobs (
    seq                    BIGSERIAL PRIMARY KEY,  -- arrival order, breaks scheduling ties
    id                     TEXT NOT NULL UNIQUE,
    guild_id               BIGINT NOT NULL,
    user_id                BIGINT NOT NULL,
    channel_id             BIGINT NOT NULL,
    model                  TEXT NOT NULL,
    provider               TEXT NOT NULL,
    request_json           TEXT NOT NULL,
    credits                INTEGER NOT NULL,
    max_running            INTEGER NOT NULL,
    state                  TEXT NOT NULL,
    priority               INTEGER NOT NULL DEFAULT 0,
    fair_rank              BIGINT NOT NULL,
    created_at             DOUBLE PRECISION NOT NULL,
    updated_at             DOUBLE PRECISION NOT NULL,
    started_at             DOUBLE PRECISION,
    finished_at            DOUBLE PRECISION,
    remote_id              TEXT,
    progress               DOUBLE PRECISION NOT NULL DEFAULT 0,
    attempts               INTEGER NOT NULL DEFAULT 0,
    lease_owner            TEXT,
    lease_expires_at       DOUBLE PRECISION,
    cancel_requested       BOOLEAN NOT NULL DEFAULT FALSE,
    error                  TEXT,
    result_path            TEXT,
    delivered_message_id   BIGINT,
    application_id         BIGINT,
    interaction_token      TEXT,
    interaction_created_at DOUBLE PRECISION,
    attachment_size_limit  BIGINT,
    status_message_id      BIGINT
);
-- The scheduler's scan: queued jobs in dispatch order.
CREATE INDEX ix_jobs_dispatch ON jobs (priority DESC, fair_rank, seq) WHERE state = 'queued';
-- Per-member counts (queued, running) and the member's latest rank.
CREATE INDEX ix_jobs_member ON jobs (guild_id, user_id, state);
-- Leases that ran out (takeover) and per-provider running counts.
CREATE INDEX ix_jobs_active ON jobs (state, provider, lease_expires_at)
    WHERE state IN ('submitting', 'running', 'downloading', 'delivering');
-- Recent durations per model, for ETAs.
CREATE INDEX ix_jobs_finished ON jobs (model, finished_at) WHERE state = 'delivered';

-- `id` gives events of the same instant their insertion order (SQLite uses its implicit rowid).
CREATE TABLE job_events (
    id          BIGSERIAL PRIMARY KEY,
    job_id      TEXT NOT NULL,
    at          DOUBLE PRECISION NOT NULL,
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX ix_job_events_job ON job_events (job_id, at, id);

CREATE TABLE guild_settings (
    guild_id         BIGINT PRIMARY KEY,
    paused           BOOLEAN NOT NULL DEFAULT FALSE,
    default_model    TEXT,
    disabled_models  TEXT NOT NULL DEFAULT '[]',  -- JSON array, as in SQLite
    admin_role_id    BIGINT
);

-- One row per layer: scope 'default' (target_id 0), 'role' (role id) or 'user' (user id). NULL = inherit.
CREATE TABLE quota_policies (
    guild_id     BIGINT NOT NULL,
    scope        TEXT NOT NULL CHECK (scope IN ('default', 'role', 'user')),
    target_id    BIGINT NOT NULL,
    credits      INTEGER,
    unlimited    BOOLEAN,
    period       TEXT,
    max_queued   INTEGER,
    max_running  INTEGER,
    PRIMARY KEY (guild_id, scope, target_id)
);

CREATE TABLE quota_blocks (
    guild_id    BIGINT NOT NULL,
    user_id     BIGINT NOT NULL,
    blocked_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

-- Credits: 'reserve' (+, at enqueue), 'refund' (-, dated at the reservation so it lands in the same window),
-- 'grant' (one-off bonus, raises the limit), 'reset' (marker: usage before it no longer counts).
CREATE TABLE usage_ledger (
    id        BIGSERIAL PRIMARY KEY,
    guild_id  BIGINT NOT NULL,
    user_id   BIGINT NOT NULL,
    job_id    TEXT,
    kind      TEXT NOT NULL CHECK (kind IN ('reserve', 'refund', 'grant', 'reset')),
    credits   INTEGER NOT NULL,
    at        DOUBLE PRECISION NOT NULL
);
CREATE INDEX ix_usage_member ON usage_ledger (guild_id, user_id, kind, at);

-- Small named values: the scheduler's virtual time, the hash of the last command sync.
CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
