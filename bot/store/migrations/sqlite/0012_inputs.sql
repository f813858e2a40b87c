-- A member's input image for image-to-video, kept in the database so that every process sharing it (a gateway
-- and workers on other machines) can read it: the front end stores the checked bytes here, the worker that
-- takes the job writes them to its own disk. `id` is the job request's `image_ref` (32 hex digits and the
-- extension). A row is deleted when its job ends; the staging sweep deletes rows no unfinished job refers to.
CREATE TABLE job_inputs (
    id            TEXT PRIMARY KEY,
    content_type  TEXT NOT NULL,
    size          INTEGER NOT NULL CHECK (size > 0),
    data          BLOB NOT NULL,
    created_at    REAL NOT NULL
);
-- The sweep looks for rows older than its grace period.
CREATE INDEX ix_job_inputs_created ON job_inputs (created_at);
