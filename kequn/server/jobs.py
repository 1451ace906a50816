"""Background work for the dashboard: jobs (import, evaluation, clustering) and figures.

Each job is a thread with its progress in memory (``GET /v1/jobs/{id}``), so a long import
never holds an HTTP request open and the page stays usable. A job that reads or writes the
workspace opens its own connection (DuckDB shares one database instance per process and
runs connections concurrently); evaluation goes through the service's evaluator lock, so
live membership and a full evaluation never interleave. Jobs are forgotten when the server
stops; what they wrote is in the workspace.

:class:`Background` does the same for read-only figures that take seconds on a large
workspace (segment health, personas, buyer counts): computed on worker threads with their
own connections, so the API's shared read connection is never held for seconds, and kept
until the state they were computed from changes.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations.
import contextlib
import itertools
import threading
import time
import traceback
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from kequn import access
from kequn.errors import KequnError
from kequn.server.http import HTTPProblem, jsonable

__all__ = ["Background", "Job", "Jobs", "register"]

MAX_KEPT = 200  # finished jobs remembered
MAX_FIGURES = 256  # background figures remembered (personas per segment, ...)


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


@dataclass
class _Figure:
    key: Hashable = None  # the state ``value`` was computed from
    value: Any = None
    computed_at: datetime | None = None
    seconds: float = 0.0
    error: str | None = None
    error_key: Hashable = None
    running: Future | None = None
    running_key: Hashable = None
    used: float = field(default_factory=time.monotonic)


class Background:
    """Read-only figures computed off the request path, kept per name until their key changes.

    ``get(name, key, compute)`` answers at once: ``status`` "ready" with the value computed
    for ``key``; or "computing" (the work started or still running), with the previous value
    and when it was computed if there is one (``stale``: true); or "failed" with the error
    (asked again, it retries). ``key`` is whatever the figure depends on (the number of
    evaluations, rows, imports, ...), so a figure is exact for the state it names. ``wait``
    seconds are spent waiting for the work first, so quick figures need no second request.
    """

    def __init__(self, workspace: Path, workers: int = 2) -> None:
        self._path = workspace
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="kequn-figures")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._figures: dict[str, _Figure] = {}
        self._all: list[Any] = []

    def _workspace(self):
        ws = getattr(self._local, "ws", None)
        if ws is None:
            from kequn.workspace import open_workspace

            ws = self._local.ws = open_workspace(self._path)
            with self._lock:
                self._all.append(ws)
        return ws

    def _run(self, figure: _Figure, key: Hashable, compute: Callable[[Any], Any]) -> None:
        started = time.perf_counter()
        try:
            value = compute(self._workspace())
        except Exception as exc:  # reported to the page; the next ask retries
            with self._lock:
                figure.error = str(exc) if isinstance(exc, KequnError) else (
                    f"{type(exc).__name__}: {exc}")  # fmt: skip
                figure.error_key = key
                figure.running = figure.running_key = None
            if not isinstance(exc, KequnError):
                traceback.print_exc()
            return
        with self._lock:
            figure.key, figure.value = key, value
            figure.computed_at = datetime.now()
            figure.seconds = time.perf_counter() - started
            figure.error = figure.error_key = None
            figure.running = figure.running_key = None

    def get(
        self, name: str, key: Hashable, compute: Callable[[Any], Any], *, wait: float = 0.0
    ) -> dict[str, Any]:
        with self._lock:
            figure = self._figures.get(name)
            if figure is None:
                figure = self._figures[name] = _Figure()
                self._forget_old()
            figure.used = time.monotonic()
            if figure.computed_at is not None and figure.key == key:
                return self._answer(figure, "ready")
            if figure.error is not None and figure.error_key == key:
                answer = self._answer(figure, "failed")
                figure.error = figure.error_key = None  # the next ask tries again
                return answer
            if figure.running is None:
                figure.running_key = key
                figure.running = self._pool.submit(self._run, figure, key, compute)
            running = figure.running
        if wait > 0 and running is not None:
            with contextlib.suppress(FutureTimeout):
                running.result(timeout=wait)
            return self.get(name, key, compute) if running.done() else self._computing(name)
        return self._computing(name)

    def _computing(self, name: str) -> dict[str, Any]:
        with self._lock:
            return self._answer(self._figures[name], "computing")

    @staticmethod
    def _answer(figure: _Figure, status: str) -> dict[str, Any]:
        return {
            "status": status,
            "value": figure.value,
            "computed_at": figure.computed_at,
            "seconds": round(figure.seconds, 3),
            "stale": status != "ready" and figure.computed_at is not None,
            "error": figure.error if status == "failed" else None,
        }

    def _forget_old(self) -> None:
        if len(self._figures) <= MAX_FIGURES:
            return
        idle = sorted(
            (f.used, n) for n, f in self._figures.items() if f.running is None
        )  # fmt: skip
        for _, name in idle[: len(self._figures) - MAX_FIGURES]:
            del self._figures[name]

    def close(self) -> None:
        """Stop taking work and close the workers' connections (at server shutdown)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for ws in self._all:
                ws.close()
            self._all.clear()


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
