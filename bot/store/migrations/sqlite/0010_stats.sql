-- The server stats (an admin command): every request a server rule refused (blocked, paused, queue full, quota,
-- budget, blocklist, channel) and every job a provider's content policy refused, by member and day. `rule` is a
-- short name from bot/jobs/refusals.py, never the member's text. Rows are only ever added.
CREATE TABLE refusals (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id  INTEGER NOT NULL,
    user_id   INTEGER NOT NULL,
    rule      TEXT NOT NULL CHECK (length(rule) BETWEEN 1 AND 32),
    at        REAL NOT NULL
);
CREATE INDEX ix_refusals_guild ON refusals (guild_id, at);
-- The stats read a server's ledger by day, across its members (ix_usage_member starts with the member).
CREATE INDEX ix_usage_guild_at ON usage_ledger (guild_id, at);
