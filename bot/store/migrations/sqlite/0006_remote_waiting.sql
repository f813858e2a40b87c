-- Whether the video service says the job still waits there (queued, throttled), with or without a position.
ALTER TABLE jobs ADD COLUMN remote_waiting BOOLEAN NOT NULL DEFAULT FALSE;
