-- The front end's record of where a job's answers go, as one opaque value the engine stores and hands back.
-- Rows written before keep their interaction columns (no longer read); their record is built from them here.

ALTER TABLE jobs ADD COLUMN delivery_ref TEXT;

UPDATE jobs SET delivery_ref = json_build_object(
    'application_id', application_id, 'token', interaction_token, 'created_at', interaction_created_at,
    'attachment_size_limit', attachment_size_limit, 'app_permissions', app_permissions,
    'status_message_id', status_message_id)::text
WHERE interaction_token IS NOT NULL;
