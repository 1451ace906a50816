"""The web dashboard: the single page at ``/`` and the read-mostly routes it calls.

The page (``kequn/server/static``: plain ES modules, ECharts vendored, no CDN) talks only to
this API, so it sees exactly what a token may see: viewers get masked personal fields and no
export. Every figure is an aggregate computed in SQL (Ibis) with a LIMIT or a page, never by
loading all customers into Python, so pages stay quick on large workspaces. Long work
(imports, evaluations, clustering) runs as background jobs (:mod:`kequn.server.jobs`).

Figures that take seconds with a million customers (segment health, personas, distinct buyer
counts) are computed in the background on their own connections (``jobs.Background``) and
kept until what they depend on changes: the page shows the rest at once and fills them in.
Their keys are cheap to read (row counts, the ingest sequence, the number and time of
evaluations), so a kept figure is exact for the state it names; see :func:`data_version`.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations.
import contextlib
import json
import re
import shutil
import tempfile
import threading
import typing
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import ibis
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from kequn import access
from kequn.errors import KequnError, RuleError
from kequn.server.http import HTTPProblem, jsonable
from kequn.server.jobs import Background

__all__ = ["STATIC", "UPLOADS", "register"]

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD = 512 * 1024 * 1024  # bytes per uploaded file
UPLOAD_SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx", ".xls", ".parquet")


class Uploads:
    """Uploaded files waiting for their import: one temporary folder per server process."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="kequn-uploads-"))
        self.files: dict[str, Path] = {}
        self.lock = threading.Lock()

    def add(self, filename: str, data: bytes) -> tuple[str, Path]:
        upload_id = uuid.uuid4().hex[:12]
        safe = re.sub(r"[^\w.\-]+", "_", Path(filename).name) or "upload.csv"
        folder = self.folder / upload_id
        folder.mkdir()
        path = folder / safe
        path.write_bytes(data)
        with self.lock:
            self.files[upload_id] = path
        return upload_id, path

    def get(self, upload_id: str) -> Path:
        with self.lock:
            path = self.files.get(upload_id)
        if path is None:
            raise HTTPProblem(404, f"unknown upload {upload_id!r}; upload the file again")
        return path

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


UPLOADS: Uploads | None = None


class RuleIn(BaseModel):
    rule: str
    as_of: str | None = None
    sample: int = Field(10, ge=0, le=50)


class MappingIn(BaseModel):
    kind: str
    map: dict[str, str] = Field(default_factory=dict)


class ClusterSaveIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    role: str


def register(app: FastAPI, service) -> None:
    """Serve the page and add the ``/v1/dashboard/...`` routes (see docs/dashboard.md)."""
    global UPLOADS
    Caller = app.state.caller
    locked = app.state.locked
    ws = app.state.ws
    principal = typing.get_args(Caller)[1].dependency
    uploads = UPLOADS = Uploads()
    app.state.uploads = uploads
    # two workers: a quick figure (the month totals) need not wait behind a persona
    figures = app.state.figures = Background(service.ws.path, workers=2)
    kept = Kept()  # quick figures (a second or less) kept per state, computed in the request

    served = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: FastAPI):
        async with served(a) as state:
            try:
                yield state
            finally:  # before the service closes: finish the figure running, drop the rest
                await run_in_threadpool(figures.close)
                uploads.cleanup()

    app.router.lifespan_context = lifespan
    copies = Customers()  # the last customers' own rows, for their profiles and timelines

    # --- the page ---------------------------------------------------------------------------

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    async def read(func, *args, **kwargs):
        return await run_in_threadpool(locked, func, *args, **kwargs)

    async def masked(rows: list[dict[str, Any]], who) -> list[dict[str, Any]]:
        """Rows as ``who`` may see them, with the same field classes as the core routes."""
        classes = await read(_field_classes, ws)
        return [access.mask_record(r, who, classes) for r in rows]

    def versions() -> tuple[tuple, tuple]:
        """(data, evaluations): what the kept figures depend on; milliseconds to read."""
        seq = getattr(getattr(service, "journal", None), "seq", 0)
        return data_version(ws, seq), runs_version(ws)

    async def background(name: str, key, compute, wait: float = 1.0) -> dict[str, Any]:
        return await run_in_threadpool(figures.get, name, key, compute, wait=wait)

    def known(name: str) -> None:
        from kequn.errors import closest
        from kequn.segments.engine import stored_names

        names = locked(stored_names, ws)
        if name not in names:
            raise HTTPProblem(404, f"unknown segment {name!r}{closest(name, names) or ''}")

    # --- who is asking ----------------------------------------------------------------------

    @app.get("/v1/dashboard/session", tags=["dashboard"])
    async def session(request: Request) -> dict[str, Any]:
        """Who the page is signed in as; always 200, so the page can show a login box."""
        try:
            who = await run_in_threadpool(principal, request)
        except KequnError as exc:
            has_header = bool(request.headers.get("authorization"))
            return {"authenticated": False, "error": str(exc) if has_header else None}
        return {
            "authenticated": True,
            "name": who.name,
            "role": who.role,
            "actions": [a for a in access.ACTIONS if access.allowed(who, a)],
        }

    # --- overview ---------------------------------------------------------------------------

    @app.get("/v1/dashboard/overview", tags=["dashboard"])
    async def overview(who: Caller) -> dict[str, Any]:
        """Customers, RFM grid, segments and lifecycle; the figures over every order in
        ``orders`` (revenue, orders, monthly revenue) and ``buyers`` (distinct buyers), as
        ``/v1/dashboard/overview/{orders,buyers}`` answer."""
        access.require(who, "read")
        out = await read(overview_data, ws, kept)
        out["orders"] = await overview_part("orders", who, wait=1.5)
        out["buyers"] = await overview_part("buyers", who)
        return jsonable(out)

    @app.get("/v1/dashboard/overview/{part}", tags=["dashboard"])
    async def overview_part(
        part: typing.Literal["orders", "buyers"],
        who: Caller,
        wait: Annotated[float, Query(ge=0, le=5)] = 0.0,
    ) -> dict[str, Any]:
        """``orders``: revenue, orders, revenue and orders per month; ``buyers``: buyers,
        active customers (ordered in the 90 days to the last order), buyers and new buyers
        per month. ``status`` "computing" until ready: with millions of orders these take
        seconds (distinct counts most), so they are computed in the background and kept
        until the data changes."""
        access.require(who, "read")
        data, _ = await read(versions)
        compute = orders_summary if part == "orders" else buyers_summary
        return jsonable(await background(part, data, compute, wait=wait))

    @app.get("/v1/dashboard/health", tags=["dashboard"])
    async def segment_health(who: Caller) -> dict[str, Any]:
        """Health index per segment: ``status`` "computing" (with the previous figures, if
        any) until ready; kept until the next evaluation or change of data."""
        access.require(who, "read")
        key = await read(versions)
        answer = await background("health", key, health_summary, wait=0.5)
        value = answer.pop("value") or {}
        return jsonable({**answer, "index": value.get("index"),
                         "segments": value.get("segments", {}),
                         "warnings": value.get("warnings", [])})  # fmt: skip

    # --- the rule builder -------------------------------------------------------------------

    @app.post("/v1/dashboard/rule", tags=["dashboard"])
    async def check_rule(body: RuleIn, who: Caller) -> dict[str, Any]:
        """Validate a rule as it is typed; when valid, its live count and a sample of members.

        Always 200: an invalid rule is an answer here (``valid: false`` with the line and
        column of the error), not a failed request.
        """
        access.require(who, "read")
        try:
            result = await read(rule_preview, ws, body.rule, body.as_of or None, body.sample)
        except RuleError as exc:
            return {
                "valid": False,
                "error": {
                    "message": exc.message,
                    "text": str(exc),
                    "kind": exc.kind,
                    "line": exc.line,
                    "column": exc.column,
                    "start": exc.start,
                    "end": exc.end,
                },
            }
        except KequnError as exc:
            return {"valid": False, "error": {"message": str(exc), "text": str(exc)}}
        result["sample"] = await masked(result["sample"], who)
        return jsonable({"valid": True, **result})

    # --- segment detail ---------------------------------------------------------------------

    @app.get("/v1/dashboard/segments/{name}/persona", tags=["dashboard"])
    async def persona(name: str, who: Caller) -> dict[str, Any]:
        """The persona (用户画像) at the segment's latest evaluation, in ``persona``:
        ``status`` "computing" until ready (it reads every order and feature)."""
        access.require(who, "read")
        known(name)
        key = await read(versions)
        answer = await background(f"persona:{name}", key, lambda w: persona_data(w, name))
        answer["persona"] = answer.pop("value")
        return jsonable(answer)

    @app.get("/v1/dashboard/segments/{name}", tags=["dashboard"])
    async def segment_summary(name: str, who: Caller) -> dict[str, Any]:
        """The segment's definition, live size and latest evaluation (size, change, share)."""
        access.require(who, "read")
        known(name)
        return jsonable(await read(segment_data, ws, name))

    @app.get("/v1/dashboard/segments/{name}/analysis", tags=["dashboard"])
    async def analysis(name: str, who: Caller) -> dict[str, Any]:
        """History, R/F/M/CLV distributions, overlap and migration since the previous run;
        ``status`` "computing" until ready (they read every score and membership)."""
        access.require(who, "read")
        known(name)
        data, runs = await read(versions)

        def compute(w) -> dict[str, Any]:
            return analysis_data(w, name, kept, runs)

        answer = await background(f"analysis:{name}", (data, runs), compute, wait=1.0)
        return jsonable({**(answer.pop("value") or {}), **answer})

    @app.get("/v1/dashboard/segments/{name}/members", tags=["dashboard"])
    async def members(
        name: str,
        who: Caller,
        q: str = "",
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 20,
    ) -> dict[str, Any]:
        """Current members, searched by id, name, city or channel, a page at a time."""
        access.require(who, "read")
        known(name)
        total, rows = await read(members_page, ws, name, q.strip(), offset, limit)
        return jsonable(
            {"total": total, "offset": offset, "limit": limit,
             "members": await masked(rows, who)}
        )  # fmt: skip

    # --- customers --------------------------------------------------------------------------

    @app.get("/v1/dashboard/customers", tags=["dashboard"])
    async def customers(
        who: Caller, q: str = "", limit: Annotated[int, Query(ge=1, le=100)] = 20
    ) -> list[dict[str, Any]]:
        """Customers whose id, name, e-mail or phone contains ``q`` (for the search box)."""
        access.require(who, "read")
        rows = await read(
            search_customers, ws, q.strip(), limit, access.allowed(who, "read_personal")
        )
        return jsonable(await masked(rows, who))

    @app.get("/v1/dashboard/customers/{customer_id}/timeline", tags=["dashboard"])
    async def timeline(
        customer_id: str,
        who: Caller,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> dict[str, Any]:
        """Orders and events of one customer, newest first, a page at a time."""
        access.require(who, "read")
        from kequn.profiles import find_customer

        cid = await read(find_customer, ws, customer_id)
        key = await read(versions)
        total, rows = await read(timeline_page, ws, cid, offset, limit, copies, key)
        return jsonable({"customer_id": cid, "total": total, "offset": offset, "items": rows})

    @app.get("/v1/dashboard/customers/{customer_id}/profile", tags=["dashboard"])
    async def customer_profile(
        customer_id: str, who: Caller, recent: Annotated[int, Query(ge=0, le=100)] = 5
    ) -> dict[str, Any]:
        """``GET /v1/customers/{id}`` (same fields, masking and audit), reading each large
        table once for this customer instead of once per figure."""
        access.require(who, "read")
        from kequn.privacy.api import audit_sensitive_read

        key = await read(versions)
        data = await read(one_profile, ws, copies, key, customer_id, recent)
        await read(audit_sensitive_read, ws, who, data)
        return jsonable((await masked([data], who))[0])

    # --- clusters ---------------------------------------------------------------------------

    @app.get("/v1/dashboard/clusters", tags=["dashboard"])
    async def clusters(who: Caller) -> list[dict[str, Any]]:
        """Stored cluster runs, newest first: features, centroids, rules, silhouette."""
        access.require(who, "read")
        return jsonable(await read(cluster_runs, ws))

    @app.get("/v1/dashboard/clusters/{run_id}/points", tags=["dashboard"])
    async def cluster_points(
        run_id: str,
        who: Caller,
        x: str,
        y: str,
        limit: Annotated[int, Query(ge=10, le=5000)] = 1500,
    ) -> dict[str, Any]:
        """A deterministic sample of customers on two of the run's features, with clusters."""
        access.require(who, "read")
        key = ("points", run_id, x, y, limit)
        return jsonable(await read(kept.get, key, run_id, cluster_scatter, ws, run_id, x, y, limit))

    @app.post("/v1/dashboard/clusters/{run_id}/{number}/save", tags=["dashboard"])
    async def cluster_save(
        run_id: str, number: int, body: ClusterSaveIn, who: Caller
    ) -> dict[str, Any]:
        """Save a cluster's rule as a segment, evaluated now and kept live."""
        access.require(who, "write_rules")
        from kequn.insight.tables import load_run
        from kequn.segments.definitions import Segment

        run = await read(load_run, ws, run_id)
        info = run.rule(number)
        segment = Segment(
            name=body.name,
            rule=info["rule"],
            label_zh=f"聚类 {number}（{run.run_id}）",
            label_en=f"Cluster {number} of run {run.run_id}",
            description=f"Explains cluster {number} of cluster run {run.run_id}: precision "
            f"{info['precision']:.1%}, recall {info['recall']:.1%}.",
            owner=who.name,
            tags=("cluster", run.run_id),
        )
        report = await run_in_threadpool(service.save_segment, segment)
        await read(access.audit, ws, who.actor, "rule.create", body.name, {"rule": info["rule"]})
        return jsonable(report)

    # --- campaigns --------------------------------------------------------------------------

    @app.get("/v1/dashboard/campaigns", tags=["dashboard"])
    async def campaigns(who: Caller) -> dict[str, Any]:
        """Triggers with delivery counts by status, and experiment results with intervals."""
        access.require(who, "read")
        return jsonable(await read(campaign_data, ws))

    # --- import -----------------------------------------------------------------------------

    @app.post("/v1/dashboard/uploads", tags=["dashboard"])
    async def upload(request: Request, who: Caller, filename: str, kind: str) -> dict[str, Any]:
        """Receive a file (the raw request body) and preview how it would be imported."""
        access.require(who, "ingest")
        if not filename.lower().endswith(UPLOAD_SUFFIXES):
            raise HTTPProblem(
                422, f"file {filename!r}: upload CSV, Excel (.xlsx) or Parquet", field="filename"
            )
        data = await request.body()
        if len(data) > MAX_UPLOAD:
            raise HTTPProblem(413, f"upload over {MAX_UPLOAD >> 20} MiB; import it with the CLI")
        if not data:
            raise HTTPProblem(422, f"file {filename!r} is empty", field="file")
        upload_id, path = uploads.add(filename, data)
        preview = await run_in_threadpool(_preview, kind, path, {}, ws.config.column_map)
        return jsonable({"upload_id": upload_id, "filename": path.name, **preview})

    @app.post("/v1/dashboard/uploads/{upload_id}/preview", tags=["dashboard"])
    async def remap(upload_id: str, body: MappingIn, who: Caller) -> dict[str, Any]:
        """The preview again with the user's corrections (``map``: column → field)."""
        access.require(who, "ingest")
        path = uploads.get(upload_id)
        preview = await run_in_threadpool(_preview, body.kind, path, body.map, ws.config.column_map)
        return jsonable({"upload_id": upload_id, "filename": path.name, **preview})

    @app.get("/v1/dashboard/quarantine", tags=["dashboard"])
    async def quarantine(
        who: Caller, import_id: str, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> dict[str, Any]:
        """Rows an import rejected: counts by reason and the first rows with raw values."""
        access.require(who, "read")
        data = await read(quarantine_report, ws, import_id, limit)
        raws = await masked([row["raw"] for row in data["rows"]], who)
        for row, raw in zip(data["rows"], raws, strict=True):
            row["raw"] = raw
        return jsonable(data)

    # --- settings ---------------------------------------------------------------------------

    @app.get("/v1/dashboard/tokens", tags=["dashboard"])
    async def tokens(who: Caller) -> list[dict[str, Any]]:
        """API tokens (names, roles, prefixes; never the secrets). Admin only."""
        access.require(who, "admin")
        return jsonable(await read(access.list_tokens, ws))

    @app.post("/v1/dashboard/tokens", tags=["dashboard"])
    async def create_token(body: TokenIn, who: Caller) -> dict[str, Any]:
        """Create a token; the secret is in this answer only. Admin only."""
        access.require(who, "admin")
        if body.role not in access.ROLES:
            raise HTTPProblem(
                422, f"role {body.role!r}: use one of {', '.join(access.ROLES)}", field="role"
            )
        token = await read(access.create_token, ws, body.name, body.role, actor=who.actor)
        return {"name": body.name, "role": body.role, "token": token}

    @app.delete("/v1/dashboard/tokens/{name}", tags=["dashboard"])
    async def revoke_token(name: str, who: Caller) -> dict[str, Any]:
        """Revoke a token at once. Admin only."""
        access.require(who, "admin")
        await read(access.revoke_token, ws, name, actor=who.actor)
        return {"name": name, "revoked": True}


class Kept:
    """Quick figures kept per name until their key changes; computed in the asking request
    (on the read connection, under its lock), so a page's second visit costs nothing."""

    LIMIT = 128

    def __init__(self) -> None:
        self._values: dict[Any, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def get(self, name: Any, key: Any, func, *args) -> Any:
        with self._lock:
            found = self._values.get(name)
        if found is not None and found[0] == key:
            return found[1]
        value = func(*args)
        with self._lock:
            if len(self._values) >= self.LIMIT:
                self._values.pop(next(iter(self._values)))
            self._values[name] = (key, value)
        return value


def data_version(ws, seq: int = 0) -> tuple:
    """What the figures over orders, events and customers depend on, read in milliseconds.

    While ``kequn serve`` runs it alone writes the file, and every write changes one of
    these: the ingest sequence (API writes), the rows of the data tables (imports add rows,
    erasures delete them), the ``imports`` (an import that only merged identities) and the
    ``erasures``.
    """
    counts = [
        int(_scalar(ws.table(name).count()))
        for name in ("orders", "events", "customers", "imports", "erasures")
    ]
    return (seq, *counts)


def runs_version(ws) -> tuple:
    """What the figures over evaluations depend on: the runs recorded and segments stored."""
    r = ws.table("segment_runs")
    s = ws.table("segments")
    runs = _rows(r.aggregate(n=r.count(), t=r.computed_at.max()))[0]
    segs = _rows(s.aggregate(n=s.count(), t=s.updated_at.max()))[0]
    return (runs["n"], runs["t"], segs["n"], segs["t"])


def _field_classes(ws) -> dict[str, str] | None:
    try:
        from kequn.privacy import field_classes
    except ImportError:  # a build without the privacy module: masking by role only
        return None
    return field_classes(ws)


def _preview(kind, path, explicit, configured) -> dict[str, Any]:
    from kequn.ingest.mapping import preview_mapping

    return preview_mapping(kind, path, explicit, configured, rows=10)


# --- queries (each takes the read connection; all aggregation happens in SQL) -----------------


def _rows(expr: ibis.Table) -> list[dict[str, Any]]:
    return expr.to_pyarrow().to_pylist()


def _scalar(expr) -> Any:
    return expr.to_pyarrow().as_py()


ACTIVE_DAYS = 90  # "active": ordered in the 90 days to the last order
TREND_YEARS = 2


def overview_data(ws, kept: Kept | None = None) -> dict[str, Any]:
    """The overview's quick part: each figure reads a small table or stored scores (kept
    while their table keeps its rows: ``kequn rfm`` and ``kequn lifecycle`` add runs)."""
    from kequn.server.app import _segment_list

    def stored(name: str, func) -> Any:
        if kept is None:
            return func(ws)
        return kept.get(name, int(_scalar(ws.table(name).count())), func, ws)

    return {
        "customers": int(_scalar(ws.table("customers").count())),
        "rfm": stored("rfm_scores", rfm_grid),
        "segments": _segment_list(ws),
        "lifecycle": stored("lifecycle_stages", lifecycle_counts),
    }


def _purchases(ws) -> ibis.Table:
    o = ws.table("orders")
    return o.filter(~o.is_return)


def _trend_start(last: datetime) -> datetime:
    return datetime(last.year - TREND_YEARS, last.month, 1)


def orders_summary(ws) -> dict[str, Any]:
    """Revenue, orders and monthly revenue and orders: two scans of the orders, no DISTINCT."""
    buys = _purchases(ws)
    totals = _rows(
        buys.aggregate(
            revenue=buys.amount.sum(),
            orders=buys.count(),
            first=buys.ordered_at.min(),
            last=buys.ordered_at.max(),
        )
    )[0]
    last = totals["last"]
    trends: list[dict[str, Any]] = []
    if last is not None:
        window = buys.filter(buys.ordered_at >= _trend_start(last))
        trends = _rows(
            window.group_by(month=window.ordered_at.truncate("M"))
            .aggregate(revenue=window.amount.sum(), orders=window.count())
            .order_by("month")
        )
    return {
        "revenue": float(totals["revenue"] or 0.0),
        "orders": int(totals["orders"]),
        "active_window": {"days": ACTIVE_DAYS, "until": last},
        "trends": trends,
    }


def buyers_summary(ws) -> dict[str, Any]:
    """Distinct buyers: in all, active, and per month (all and new), exact.

    One GROUP BY customer gives each buyer's first and last purchase (buyers, active, new
    buyers per month); one over (month, customer) gives each month's buyers.
    """
    buys = _purchases(ws)
    per = buys.group_by("customer_id").aggregate(first=buys.ordered_at.min(),
                                                 last=buys.ordered_at.max())  # fmt: skip
    last = _scalar(buys.ordered_at.max())
    if last is None:
        return {"buyers": 0, "active": 0, "active_window": {"days": ACTIVE_DAYS, "until": None},
                "months": []}  # fmt: skip
    since = last - timedelta(days=ACTIVE_DAYS)
    start = _trend_start(last)
    totals = _rows(per.aggregate(buyers=per.count(), active=(per["last"] > since).sum()))[0]
    new = {
        r["month"]: int(r["n"])
        for r in _rows(
            per.filter(per["first"] >= start)
            .group_by(month=per["first"].truncate("M"))
            .aggregate(n=ibis._.count())
        )
    }
    window = buys.filter(buys.ordered_at >= start)
    pairs = window.select("customer_id", month=window.ordered_at.truncate("M")).distinct()
    months = _rows(pairs.group_by("month").aggregate(buyers=pairs.count()).order_by("month"))
    for r in months:
        r["new_buyers"] = new.get(r["month"], 0)
    return {
        "buyers": int(totals["buyers"]),
        "active": int(totals["active"] or 0),
        "active_window": {"days": ACTIVE_DAYS, "until": last},
        "months": months,
    }


def health_summary(ws) -> dict[str, Any]:
    """The health report reduced to what the segment list shows."""
    from kequn.insight.health import health

    report = health(ws).as_dict()
    return {
        "index": report["index"],
        "segments": {s["segment"]: s["index"] for s in report["segments"]},
        "warnings": [w.get("message_en") or w.get("message") or str(w)
                     for w in report["warnings"]][:20],
    }  # fmt: skip


def rfm_grid(ws) -> dict[str, Any] | None:
    """R × F counts and mean spend at the latest stored RFM run (``kequn rfm``)."""
    r = ws.table("rfm_scores")
    latest = _scalar(r.as_of.max())
    if latest is None:
        return None
    at = r.filter(r.as_of == latest)
    schemes = [x["scheme"] for x in _rows(at.select("scheme").distinct().order_by("scheme"))]
    scheme = ws.config.rfm.get("scheme", "intl")
    scheme = scheme if scheme in schemes else schemes[0]
    at = at.filter(at.scheme == scheme)
    cells = _rows(
        at.group_by(["r_score", "f_score"])
        .aggregate(customers=at.count(), monetary=at.monetary.mean())
        .order_by(["r_score", "f_score"])
    )
    labels = _rows(
        at.group_by("rfm_segment")
        .aggregate(customers=at.count(), revenue=at.monetary.sum())
        .order_by(ibis.desc("customers"))
        .limit(20)
    )
    bins = int(_scalar(at.bins.max()) or 5)
    return {"as_of": latest, "scheme": scheme, "bins": bins, "cells": cells, "segments": labels}


def lifecycle_counts(ws) -> dict[str, Any] | None:
    """Status and funnel counts at the latest stored lifecycle run (``kequn lifecycle``)."""
    from kequn.insight.lifecycle import FUNNEL_LABELS, FUNNEL_STAGES, STATUS_LABELS, STATUS_STAGES

    t = ws.table("lifecycle_stages")
    latest = _scalar(t.as_of.max())
    if latest is None:
        return None
    at = t.filter(t.as_of == latest)
    out: dict[str, Any] = {"as_of": latest}
    for col, stages, labels in (
        ("status_stage", STATUS_STAGES, STATUS_LABELS),
        ("funnel_stage", FUNNEL_STAGES, FUNNEL_LABELS),
    ):
        found = {r["s"]: int(r["n"]) for r in _rows(at.group_by(s=at[col]).aggregate(n=at.count()))}
        out[col.split("_")[0]] = [
            {"stage": s, "label_en": labels[s][0], "label_zh": labels[s][1],
             "customers": found.get(s, 0)}
            for s in stages
        ]  # fmt: skip
    return out


def rule_preview(ws, rule: str, as_of: str | None, sample: int) -> dict[str, Any]:
    from kequn.segments import engine
    from kequn.segments.timing import resolve_as_of

    moment = resolve_as_of(as_of, ws.config.timezone)
    ids = engine.members(ws, rule, moment)
    count = int(_scalar(ids.count()))
    c = ws.table("customers")
    rows: list[dict[str, Any]] = []
    if sample:
        picked = ids.order_by("customer_id").limit(sample)
        rows = _rows(
            picked.left_join(c, picked.customer_id == c.customer_id)
            .select(picked.customer_id, c.name, c.city, c.channel, c.phone, c.email)
            .order_by("customer_id")
        )
    total = int(_scalar(c.count()))
    return {"count": count, "customers": total, "as_of": moment.label, "sample": rows}


def segment_data(ws, name: str) -> dict[str, Any]:
    """What the segment page heads with: definition, live size, latest evaluation."""
    from kequn.segments import engine

    out = engine.header(ws, name)
    m = ws.table("memberships")
    out["live_size"] = int(_scalar(m.filter((m.segment == name) & m.exited_at.isnull()).count()))
    return out


def _latest_run(ws, name: str) -> dict[str, Any] | None:
    from kequn.segments import engine

    runs = engine.history(ws, name)
    return runs[-1] if runs else None


def persona_data(ws, name: str) -> dict[str, Any]:
    from kequn.insight.personas import persona
    from kequn.insight.tables import as_of_value

    last = _latest_run(ws, name)
    return persona(ws, name, as_of_value(last["as_of"]) if last else None)


def _histograms(values: ibis.Table, columns: list[str], bins: int = 12) -> dict[str, Any]:
    """Per column: ``bins`` equal-width bins from the minimum to the 98th percentile (the
    rest in the last bin), the median and the count. Two queries for all the columns."""
    aggs: dict[str, Any] = {}
    for c in columns:
        v = values[c]
        aggs.update({f"{c}__lo": v.min(), f"{c}__hi": v.quantile(0.98),
                     f"{c}__median": v.median(), f"{c}__n": v.count()})  # fmt: skip
    stats = _rows(values.aggregate(**aggs))[0]
    out: dict[str, Any] = {}
    parts = []
    for c in columns:
        lo, hi = stats[f"{c}__lo"], stats[f"{c}__hi"]
        if lo is None or hi is None:
            out[c] = {"edges": [], "counts": [], "median": None, "n": 0}
            continue
        lo, hi = float(lo), float(hi)
        width = (hi - lo) / bins if hi > lo else 1.0
        v = values[c]
        bucket = ((v - lo) / width).floor().cast("int64").clip(lower=0, upper=bins - 1)
        parts.append(
            values.filter(v.notnull())
            .group_by(b=bucket)
            .aggregate(n=ibis._.count())
            .mutate(col=ibis.literal(c))
        )
        out[c] = {"edges": [lo + i * width for i in range(bins + 1)], "counts": [0] * bins,
                  "median": stats[f"{c}__median"], "n": int(stats[f"{c}__n"])}  # fmt: skip
    if parts:
        for r in _rows(ibis.union(*parts, distinct=False) if len(parts) > 1 else parts[0]):
            out[r["col"]]["counts"][int(r["b"])] = int(r["n"])
    return out


def analysis_data(ws, name: str, kept: Kept | None = None, runs_key: Any = None) -> dict[str, Any]:
    from kequn.segments import engine

    runs = engine.history(ws, name)
    m = ws.table("memberships")
    cur = m.filter((m.segment == name) & m.exited_at.isnull()).select(_id="customer_id")
    out: dict[str, Any] = {"history": runs, "distributions": {}}
    r = ws.table("rfm_scores")
    latest = _scalar(r.as_of.max())
    if latest is not None:
        scheme = _scalar(r.filter(r.as_of == latest).scheme.min())
        at = r.filter((r.as_of == latest) & (r.scheme == scheme))
        mine = at.semi_join(cur, at.customer_id == cur._id)
        out["distributions"].update(_histograms(mine, ["recency_days", "frequency", "monetary"]))
        out["rfm_as_of"] = latest
    s = ws.table("clv_scores")
    latest_clv = _scalar(s.as_of.max())
    if latest_clv is not None:
        at = s.filter(s.as_of == latest_clv)
        first = _rows(
            at.select("model", "horizon_days").order_by(["model", "horizon_days"]).limit(1)
        )[0]
        at = at.filter((at.model == first["model"]) & (at.horizon_days == first["horizon_days"]))
        mine = at.semi_join(cur, at.customer_id == cur._id)
        out["distributions"].update(_histograms(mine, ["clv"]))
        out["clv_model"] = {**first, "as_of": latest_clv}
    out["overlap"] = overlap_with(ws, name)
    out["migration"] = None
    if len(runs) >= 2:
        # memberships at two past evaluations change only with a new evaluation
        args = (ws, name, runs[-2]["as_of"], runs[-1]["as_of"])
        if kept is None:
            out["migration"] = migration_of(*args)
        else:
            out["migration"] = kept.get(("migration", name), runs_key, migration_of, *args)
    return out


def overlap_with(ws, name: str) -> list[dict[str, Any]]:
    """Current members shared with each other segment (and its size, Jaccard), largest first.

    One join of this segment's members against the others', not every pair of segments.
    """
    from kequn.segments.engine import stored_names

    m = ws.table("memberships")
    cur = m.filter(m.exited_at.isnull()).select("segment", "customer_id")
    mine = cur.filter(cur.segment == name).select(_cid="customer_id").distinct()
    others = cur.filter(cur.segment != name)
    # a customer has one open interval per segment: rows are members
    sizes = {r["segment"]: int(r["n"])
             for r in _rows(cur.group_by("segment").aggregate(n=cur.count()))}  # fmt: skip
    both = {
        r["segment"]: int(r["n"])
        for r in _rows(
            others.join(mine, others.customer_id == mine._cid)
            .group_by("segment")
            .aggregate(n=ibis._.count())
        )
    }
    own = sizes.get(name, 0)
    out = []
    for other in stored_names(ws):
        if other == name:
            continue
        n, size = both.get(other, 0), sizes.get(other, 0)
        union = own + size - n
        out.append({"segment": other, "both": n, "size": size,
                    "jaccard": n / union if union else 0.0})  # fmt: skip
    return sorted(out, key=lambda p: -p["both"])


def migration_of(ws, name: str, start: Any, end: Any) -> dict[str, Any]:
    """Moves into and out of ``name`` between two evaluations (``engine.migration``'s rows
    that involve it)."""
    from kequn.segments import engine

    mig = engine.migration(ws, start, end)
    moves = [x for x in mig["moves"] if name in (x["from"], x["to"]) and x["customers"]]
    return {"from": mig["from"], "to": mig["to"], "moves": moves}


def members_page(ws, name: str, q: str, offset: int, limit: int) -> tuple[int, list[dict]]:
    m = ws.table("memberships")
    cur = m.filter((m.segment == name) & m.exited_at.isnull())
    c = ws.table("customers")
    j = cur.left_join(c, cur.customer_id == c.customer_id).select(
        customer_id=cur.customer_id,
        entered_at=cur.entered_at,
        name=c.name,
        city=c.city,
        channel=c.channel,
        phone=c.phone,
        email=c.email,
    )
    if q:
        needle = q.lower()
        j = j.filter(
            j.customer_id.lower().contains(needle)
            | j.name.lower().contains(needle).fill_null(False)
            | j.city.lower().contains(needle).fill_null(False)
            | j.channel.lower().contains(needle).fill_null(False)
        )
        total = int(_scalar(j.count()))
    else:  # a left join keeps every membership: count them alone
        total = int(_scalar(cur.count()))
    return total, _rows(j.order_by("customer_id").limit(limit, offset=offset))


def search_customers(ws, q: str, limit: int, personal: bool) -> list[dict[str, Any]]:
    c = ws.table("customers")
    t = c
    if q:
        needle = q.lower()
        cond = c.customer_id.lower().contains(needle) | c.name.lower().contains(needle).fill_null(
            False
        )
        if personal:  # a viewer may not find people by the fields masked for them
            cond |= c.email.lower().contains(needle).fill_null(False)
            cond |= c.phone.contains(needle).fill_null(False)
        t = c.filter(cond)
    cols = ["customer_id", "name", "city", "channel", "phone", "email"]
    return _rows(t.select(*cols).order_by("customer_id").limit(limit))


class _Tables:
    """A workspace whose named tables are replaced (the rest, and everything else, as is)."""

    def __init__(self, ws, tables: dict[str, ibis.Table]) -> None:
        self._ws, self._tables = ws, tables

    def table(self, name: str) -> ibis.Table:
        return self._tables[name] if name in self._tables else self._ws.table(name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)


# a customer's rows in these tables are read once per profile (each a scan of the table)
ONE_CUSTOMER = ("orders", "events", "rfm_scores", "clv_scores", "churn_scores", "memberships")


class Customers:
    """The last few customers' own rows, copied into temporary tables of the read connection.

    Orders and events are not sorted by customer, so every query about one customer scans
    the whole table; a profile asks a dozen. Copied once (one scan per table) and kept while
    the data and evaluations stay as they were, the profile, its timeline pages and the next
    visit read a few rows. Used under the read connection's lock only.
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._kept: dict[str, tuple[Any, list[str], _Tables]] = {}

    def get(self, ws, cid: str, key: Any) -> _Tables:
        found = self._kept.pop(cid, None)
        if found is not None and found[0] == key:
            self._kept[cid] = found  # the newest last
            return found[2]
        if found is not None:
            self._drop(ws, found[1])
        made: list[str] = []
        copies: dict[str, ibis.Table] = {}
        try:
            for name in ONE_CUSTOMER:
                t = ws.table(name)
                temp = f"_kequn_one_{name}_{uuid.uuid4().hex[:10]}"
                copies[name] = ws.con.create_table(temp, t.filter(t.customer_id == cid), temp=True)
                made.append(temp)
        except BaseException:
            self._drop(ws, made)
            raise
        self._kept[cid] = (key, made, _Tables(ws, copies))
        while len(self._kept) > self.size:
            oldest = next(iter(self._kept))
            self._drop(ws, self._kept.pop(oldest)[1])
        return self._kept[cid][2]

    @staticmethod
    def _drop(ws, names: list[str]) -> None:
        for name in names:
            ws.con.drop_table(name, force=True)


def one_profile(ws, copies: Customers, key: Any, who: str, recent: int) -> dict[str, Any]:
    """:func:`kequn.profiles.profile` over the customer's own rows (the same answer)."""
    from kequn.profiles import find_customer, profile

    cid = find_customer(ws, who)
    return profile(copies.get(ws, cid, key), cid, recent=recent)


def timeline_page(
    ws, cid: str, offset: int, limit: int, copies: Customers | None = None, key: Any = None
) -> tuple[int, list[dict[str, Any]]]:
    """Orders, returns and events of one customer, newest first: a page and the total."""
    if copies is not None:
        ws = copies.get(ws, cid, key)
    o = ws.table("orders")
    o = o.filter(o.customer_id == cid)
    e = ws.table("events")
    e = e.filter(e.customer_id == cid)
    orders = o.select(
        kind=ibis.ifelse(o.is_return, ibis.literal("return"), ibis.literal("order")),
        at=o.ordered_at,
        title=o.order_id,
        amount=o.amount,
        detail=o.status.cast("string"),
    )
    events = e.select(
        kind=ibis.literal("event"),
        at=e.occurred_at,
        title=e.type,
        amount=ibis.null("float64"),
        detail=e.properties,
    )
    both = orders.union(events, distinct=False)
    total = int(_scalar(both.count()))
    rows = _rows(both.order_by([ibis.desc("at"), "title"]).limit(limit, offset=offset))
    return total, rows


def cluster_runs(ws) -> list[dict[str, Any]]:
    t = ws.table("cluster_runs")
    rows = _rows(t.order_by([ibis.desc("computed_at"), ibis.desc("run_id")]).limit(20))
    for r in rows:
        for key in ("features", "curve", "rules"):
            r[key] = json.loads(r[key]) if r[key] else None
    return rows


def cluster_scatter(ws, run_id: str, x: str, y: str, limit: int) -> dict[str, Any]:
    from kequn.insight.features import feature_table
    from kequn.insight.tables import as_of_value, load_run

    run = load_run(ws, run_id)
    names = [f["name"] for f in run.features]
    for axis, value in (("x", x), ("y", y)):
        if value not in names:
            raise HTTPProblem(
                422, f"{axis}={value!r} is not a feature of run {run_id!r}; use one of "
                + ", ".join(names), field=axis
            )  # fmt: skip
    groups = sorted({f["group"] for f in run.features if f["group"] in ("rfm", "clv", "events")})
    types = []
    for f in run.features:
        if f["group"] == "events":
            found = re.search(r"type = (['\"])(.*?)\1", f["expr"])
            if found:
                types.append(found.group(2))
    # the sample first (by hash: the same customers every time), then their features only
    k = ws.table("clusters")
    k = k.filter(k.run_id == run.run_id)
    picked = _rows(k.order_by(k.customer_id.hash()).limit(limit).select("customer_id", "cluster"))
    ids = ibis.memtable({"_sid": [r["customer_id"] for r in picked]})
    table, _ = feature_table(_Only(ws, ids), as_of_value(run.as_of), groups, event_types=types)
    for axis in (x, y):
        if axis in {f["name"] for f in run.features if str(f["group"]).startswith("attr")}:
            raise HTTPProblem(422, f"feature {axis!r} is not numeric; pick another", field="x")
        if axis not in table.columns:  # scores none of the sampled customers has
            return {"run_id": run.run_id, "x": x, "y": y, "points": []}
    cluster = {r["customer_id"]: r["cluster"] for r in picked}
    values = _rows(table.select("customer_id", x=table[x], y=table[y]))
    points = [
        {"customer_id": v["customer_id"], "x": v["x"], "y": v["y"],
         "cluster": cluster[v["customer_id"]]}
        for v in values
        if v["x"] is not None and v["y"] is not None and v["customer_id"] in cluster
    ]  # fmt: skip
    points.sort(key=lambda p: p["customer_id"])
    return {"run_id": run.run_id, "x": x, "y": y, "points": points}


class _Only:
    """A workspace whose customers, orders and events are those of some customers only.

    Per-customer features are the same for a customer whether or not the others are there,
    so the scatter's sample needs its own rows only (milliseconds, not a pass over all).
    """

    TABLES = ("customers", "orders", "events", "clv_scores", "churn_scores")

    def __init__(self, ws, ids: ibis.Table) -> None:
        self._ws, self._ids = ws, ids

    def table(self, name: str) -> ibis.Table:
        t = self._ws.table(name)
        if name in self.TABLES and "customer_id" in t.columns:
            return t.filter(t.customer_id.isin(self._ids._sid))
        return t

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)


def campaign_data(ws) -> dict[str, Any]:
    from kequn.act.experiment_report import list_experiments, report

    t = ws.table("triggers")
    triggers = _rows(t.select("name", "segment", "on", "channel", "config", "updated_at"))
    d = ws.table("deliveries")
    counts = _rows(d.group_by(["trigger", "status"]).aggregate(n=d.count()))
    by: dict[str, dict[str, int]] = {}
    for r in counts:
        by.setdefault(r["trigger"], {})[r["status"]] = int(r["n"])
    for tr in triggers:
        config = json.loads(tr.pop("config") or "{}")
        tr["cap"] = config.get("cap")
        tr["experiment"] = (config.get("experiment") or {}).get("name")
        tr["deliveries"] = by.get(tr["name"], {})
    experiments = []
    for e in list_experiments(ws):
        try:
            e["report"] = report(ws, e["experiment"])
        except KequnError as exc:
            e["report"] = None
            e["error"] = str(exc)
        experiments.append(e)
    recent = _rows(
        d.order_by(ibis.desc("created_at"))
        .limit(50)
        .select("delivery_id", "trigger", "segment", "customer_id", "kind", "channel",
                "variant", "status", "attempts", "last_error", "created_at", "sent_at")
    )  # fmt: skip
    return {"triggers": triggers, "experiments": experiments, "deliveries": recent}


def quarantine_report(ws, import_id: str, limit: int) -> dict[str, Any]:
    q = ws.table("quarantine")
    q = q.filter(q.import_id == import_id)
    reasons = _rows(q.group_by("reason").aggregate(rows=q.count()).order_by(ibis.desc("rows")))
    rows = _rows(q.select("row_number", "reason", "raw").order_by("row_number").limit(limit))
    for r in rows:
        r["raw"] = json.loads(r["raw"]) if r["raw"] else {}
    return {"import_id": import_id, "reasons": reasons, "rows": rows}
