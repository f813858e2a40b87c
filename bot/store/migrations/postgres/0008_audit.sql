-- The audit trail: every admin change, who made it (NULL: not a member, e.g. an operator's script), when, what
-- (the command's path, e.g. 'quota grant'), on what (a member, a role, a model, a pattern, a channel) and the
-- value before and after, as JSON text. Rows are only ever added.
CREATE TABLE audit_log (
    id           BIGSERIAL PRIMARY KEY,
    guild_id     BIGINT NOT NULL,
    actor_id     BIGINT,
    at           DOUBLE PRECISION NOT NULL,
    action       TEXT NOT NULL,
    target_kind  TEXT,
    target       TEXT,
    before_json  TEXT NOT NULL DEFAULT 'null',
    after_json   TEXT NOT NULL DEFAULT 'null'
);
-- The audit command: a server's latest entries first.
CREATE INDEX ix_audit_log_guild ON audit_log (guild_id, id);
