"""The worker registry and leases in SQL, once for every dialect: who is alive, and which jobs each holds."""

from __future__ import annotations

from collections.abc import Sequence

from bot.domain import WorkerInfo
from bot.store.dialect import Connection, Dialect, fetch
from bot.store.rows import worker_from_row


class WorkersSql:
    dialect: Dialect

    async def register_worker(self, worker: WorkerInfo) -> None:
        await self.dialect.write_one(
            "register_worker", id=worker.id, host=worker.host, pid=worker.pid, pid_started=worker.pid_started,
            started_at=worker.started_at, heartbeat_at=worker.heartbeat_at,
        )  # fmt: skip

    async def heartbeat(self, worker_id: str, job_ids: Sequence[str], *, now: float, until: float) -> set[str]:
        async def beat(conn: Connection) -> set[str]:
            await conn.execute("worker_alive", id=worker_id, now=now)
            rows = await conn.fetch("renew_leases", worker_id=worker_id, ids=list(job_ids), until=until)
            return {str(row["id"]) for row in rows}

        return await self.dialect.write(beat)

    async def workers(self) -> list[WorkerInfo]:
        return [worker_from_row(row) for row in await fetch(self.dialect, "workers")]

    async def reap_workers(self, worker_ids: Sequence[str]) -> list[str]:
        if not worker_ids:
            return []

        async def reap(conn: Connection) -> list[str]:
            await conn.execute("forget_workers", ids=list(worker_ids))
            return [str(row["id"]) for row in await conn.fetch("expire_leases_of", ids=list(worker_ids))]

        return await self.dialect.write(reap)

    async def unregister_worker(self, worker_id: str) -> None:
        await self.dialect.write_one("forget_worker", id=worker_id)

    async def release_lease(self, job_id: str, worker_id: str) -> None:
        await self.dialect.write_one("release_lease", id=job_id, worker_id=worker_id)
