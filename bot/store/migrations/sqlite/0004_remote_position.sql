-- Where a running job waits in the video service's own queue (0 = next), while the service reports it.
ALTER TABLE jobs ADD COLUMN remote_position INTEGER;
