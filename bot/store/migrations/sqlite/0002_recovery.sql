-- Crash safety: a registry of live workers (so a restarted process takes over a dead one's jobs at once),
-- the intent to post a clip (so a repeat looks for the first post before posting again), the state each status
-- message last showed (so edits lost in a crash are made after the restart), and the bot's permissions in the
-- job's channel (so delivery knows whether it may post there with an enforced nonce).

ALTER TABLE jobs ADD COLUMN post_attempted_at REAL;
ALTER TABLE jobs ADD COLUMN status_state TEXT;
ALTER TABLE jobs ADD COLUMN app_permissions INTEGER;

-- Jobs whose status message may be behind their state: looked up at start.
CREATE INDEX ix_jobs_updated ON jobs (updated_at);

CREATE TABLE workers (
    id            TEXT PRIMARY KEY,
    host          TEXT NOT NULL,   -- hostname, boot id and pid namespace: pids compare only within one
    pid           INTEGER NOT NULL,
    pid_started   TEXT,            -- the process's start time, so a reused pid is not taken for the same process
    started_at    REAL NOT NULL,
    heartbeat_at  REAL NOT NULL
);
