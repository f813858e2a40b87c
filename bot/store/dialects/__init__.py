"""The thin per-database adapters behind `SqlStore` (see `bot.store.dialect` for what one must do)."""
