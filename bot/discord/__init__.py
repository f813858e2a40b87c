"""Everything Discord: the client and its one error handler, delivery of statuses and clips, message rendering
and replies. Nothing below this package (`bot.jobs`, `bot.store`, `bot.providers`) knows Discord exists."""
