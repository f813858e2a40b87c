-- What each job costs at the provider by list price (catalogue price × seconds), in US dollars: the monthly
-- budget counts the jobs of the month that have not failed or been cancelled.
ALTER TABLE jobs ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0;
CREATE INDEX ix_jobs_guild_month ON jobs (guild_id, created_at);
