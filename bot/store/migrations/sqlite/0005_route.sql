-- A job queued on a model alias keeps its fallback route: the alias, the models still to try, those tried.
ALTER TABLE jobs ADD COLUMN route TEXT;
