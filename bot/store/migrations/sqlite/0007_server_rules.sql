-- The server's operating settings: where admin changes are posted, the monthly provider budget (US dollars by
-- list price, NULL: none), the language of public messages, the prompt blocklist and the allowed channels
-- (JSON lists; an empty channel list allows every channel).
ALTER TABLE guild_settings ADD COLUMN log_channel_id INTEGER;
ALTER TABLE guild_settings ADD COLUMN monthly_budget REAL;
ALTER TABLE guild_settings ADD COLUMN language TEXT;
ALTER TABLE guild_settings ADD COLUMN blocklist TEXT NOT NULL DEFAULT '[]';
ALTER TABLE guild_settings ADD COLUMN allowed_channels TEXT NOT NULL DEFAULT '[]';
