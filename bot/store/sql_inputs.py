"""Input images in SQL, once for every dialect (`bot.store.base.InputStore`): a BLOB in SQLite, a BYTEA in
PostgreSQL, at most `MAX_IMAGE_BYTES` each, so a gateway and workers on other machines share them through the
database they already share."""

from __future__ import annotations

from collections.abc import Sequence

from bot.store.base import StoredInput
from bot.store.dialect import Connection, Dialect, fetch, fetchrow


class InputsSql:
    dialect: Dialect

    async def put_input(self, input_id: str, data: bytes, *, content_type: str, now: float) -> None:
        await self.dialect.write_one(
            "insert_input", id=input_id, content_type=content_type, size=len(data), data=data, created_at=now
        )

    async def get_input(self, input_id: str) -> StoredInput | None:
        row = await fetchrow(self.dialect, "get_input", id=input_id)
        if row is None:
            return None
        return StoredInput(id=str(row["id"]), content_type=str(row["content_type"]), data=bytes(row["data"]))

    async def delete_inputs(self, input_ids: Sequence[str]) -> int:
        if not input_ids:
            return 0
        ids = list(dict.fromkeys(input_ids))

        async def delete(conn: Connection) -> int:
            deleted = 0
            for input_id in ids:  # a handful at a time (a job's one input, a sweep's orphans)
                deleted += len(await conn.fetch("delete_input", id=input_id))
            return deleted

        return await self.dialect.write(delete)

    async def stale_inputs(self, before: float) -> list[str]:
        return [str(row["id"]) for row in await fetch(self.dialect, "stale_inputs", before=before)]
