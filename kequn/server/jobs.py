"""Background jobs for the dashboard: import, evaluation, clustering.

Each job is a thread with its progress in memory (``GET /v1/jobs/{id}``), so a long import
never holds an HTTP request open and the page stays usable. A job that reads or writes the
workspace opens its own connection (DuckDB shares one database instance per process and
runs connections concurrently); evaluation goes through the service's evaluator lock, so
live membership and a full evaluation never interleave. Jobs are forgotten when the server
stops; what they wrote is in the workspace.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations.
import itertools
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from kequn import access
from kequn.errors import KequnError
from kequn.server.http import HTTPProblem, jsonable

__all__ = ["Job", "Jobs", "register"]

MAX_KEPT = 200  # finished jobs remembered


@dataclass
class Job:
    """One background job: what it is, how far it got, and its result or error."""

    job_id: str
    kind: str
    owner: str
    status: str = "running"  # running, done, failed
    progress: float = 0.0  # 0..1
    message: str = ""
    result: Any = None
    error: str | None = None
    started_at: datetime = field(default_factory=datetime.now)
    finished_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "kind": self.kind,
            "owner": self.owner,
            "status": self.status,
            "progress": round(self.progress, 4),
            "message": self.message,
            "result": self.result,
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


class Jobs:
    """The running and recent jobs of one server process."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def start(self, kind: str, owner: str, work: Callable[[Job], Any]) -> Job:
        job = Job(f"{kind}-{next(self._ids)}-{int(time.time())}", kind, owner)
        with self._lock:
            self._jobs[job.job_id] = job
            done = [j for j in self._jobs.values() if j.status != "running"]
            for old in done[: max(0, len(done) - MAX_KEPT)]:
                del self._jobs[old.job_id]

        def run() -> None:
            try:
                job.result = work(job)
                job.progress = 1.0
                job.status = "done"
            except KequnError as exc:
                job.error, job.status = str(exc), "failed"
            except Exception as exc:  # a job must never die silently
                job.error = f"{type(exc).__name__}: {exc}"
                job.status = "failed"
                traceback.print_exc()
            finally:
                job.finished_at = datetime.now()

        threading.Thread(target=run, name=f"kequn-job-{job.job_id}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise HTTPProblem(404, f"unknown job {job_id!r}; jobs are kept until a restart")
        return job

    def all(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.started_at, reverse=True)


class ImportIn(BaseModel):
    upload_id: str
    kind: str
    source: str = Field("dashboard", min_length=1, max_length=100)
    map: dict[str, str] = Field(default_factory=dict)
    keep_duplicates: bool = False


class EvaluateIn(BaseModel):
    segments: list[str] | None = None


class ClusterIn(BaseModel):
    features: str | None = None
    k: str = "auto"
    as_of: str | None = None


def register(app: FastAPI, service) -> None:
    """``POST /v1/jobs/{import,evaluate,cluster}``, ``GET /v1/jobs``, ``GET /v1/jobs/{id}``."""
    Caller = app.state.caller
    jobs = Jobs()
    app.state.jobs = jobs

    def own_workspace():
        from kequn.workspace import open_workspace

        return open_workspace(service.ws.path)

    @app.post("/v1/jobs/import", tags=["jobs"])
    async def import_job(body: ImportIn, who: Caller) -> dict[str, Any]:
        """Import an uploaded file in the background; the result has the import report."""
        access.require(who, "ingest")
        path = app.state.uploads.get(body.upload_id)

        def work(job: Job) -> dict[str, Any]:
            from kequn.ingest import import_files

            def progress(done: int, total: int) -> None:
                job.progress = 0.9 * done / total if total else 0.0
                job.message = f"read {done:,} of {total:,} bytes"

            with own_workspace() as ws:
                job.message = "reading"
                report = import_files(
                    ws,
                    body.kind,
                    [path],
                    source=body.source,
                    column_map=body.map or None,
                    keep_duplicates=body.keep_duplicates,
                    progress=progress,
                )
                access.audit(ws, who.actor, "import", body.kind, {"file": path.name,
                             "import_id": report.import_id, "rows": report.rows_read})  # fmt: skip
            # the live path sees API writes only: bring the segments up to date with the file
            job.message, job.progress = "evaluating segments", 0.95
            service.evaluate_all()
            job.message = "done"
            data = report.as_dict()
            data["quarantined"] = report.quarantined
            return data

        return jsonable(jobs.start("import", who.name, work).as_dict())

    @app.post("/v1/jobs/evaluate", tags=["jobs"])
    async def evaluate_job(who: Caller, body: EvaluateIn | None = None) -> dict[str, Any]:
        """Evaluate stored segments in full now (after an import, say), in the background."""
        access.require(who, "write_rules")

        def work(job: Job) -> dict[str, Any]:
            job.message = "evaluating"
            sizes = service.evaluate_all(body.segments if body and body.segments else None)
            job.progress = 1.0
            return {"segments": sizes}

        return jsonable(jobs.start("evaluate", who.name, work).as_dict())

    @app.post("/v1/jobs/cluster", tags=["jobs"])
    async def cluster_job(body: ClusterIn, who: Caller) -> dict[str, Any]:
        """Cluster customers in the background; the run is stored like ``kequn cluster``."""
        access.require(who, "write_rules")

        def work(job: Job) -> dict[str, Any]:
            from kequn.insight import cluster

            job.message, job.progress = "computing features", 0.1
            with own_workspace() as ws:
                run = cluster(ws, features=body.features, k=body.k, as_of=body.as_of)
            return {"run_id": run.run_id, "k": run.k, "silhouette": run.silhouette}

        return jsonable(jobs.start("cluster", who.name, work).as_dict())

    @app.get("/v1/jobs", tags=["jobs"])
    async def list_jobs(who: Caller) -> list[dict[str, Any]]:
        """Running and recent jobs, newest first."""
        access.require(who, "read")
        return jsonable([j.as_dict() for j in jobs.all()][:50])

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    async def get_job(job_id: str, who: Caller) -> dict[str, Any]:
        """One job's status, progress (0..1), message, and result or error."""
        access.require(who, "read")
        job = await run_in_threadpool(jobs.get, job_id)
        return jsonable(job.as_dict())
