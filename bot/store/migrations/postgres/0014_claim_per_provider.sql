-- The claim walks the queue per provider (claim_next): a provider at its limit is never walked past, however
-- many of its jobs wait. Same order as ix_jobs_dispatch within a provider.
CREATE INDEX ix_jobs_queue ON jobs (provider, priority DESC, fair_rank, seq) WHERE state = 'queued';
-- The scheduler's virtual time is now the head of the queue (fair_rank_floor): the row every claim wrote is gone.
DELETE FROM meta WHERE key = 'scheduler.virtual_time';
