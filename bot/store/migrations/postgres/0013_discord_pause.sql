-- Discord's global REST limit is per bot token, shared by every gateway and worker process: the process that is
-- told "global: true" writes until when every process holds its bot-token requests (bot/discord/ratelimit.py).
-- One row per scope; only 'global' is used.
CREATE TABLE discord_rest_pause (
    scope         TEXT PRIMARY KEY,
    paused_until  DOUBLE PRECISION NOT NULL
);
