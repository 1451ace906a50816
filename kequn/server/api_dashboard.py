"""The web dashboard: the single page at ``/`` and the read-mostly routes it calls.

The page (``kequn/server/static``: plain ES modules, ECharts vendored, no CDN) talks only to
this API, so it sees exactly what a token may see: viewers get masked personal fields and no
export. Every figure is an aggregate computed in SQL (Ibis) with a LIMIT or a page, never by
loading all customers into Python, so pages stay quick on large workspaces. Long work
(imports, evaluations, clustering) runs as background jobs (:mod:`kequn.server.jobs`).
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations.
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
    health_cache: dict[str, Any] = {}

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
        """Customers, revenue, active customers, RFM grid, segments, lifecycle, trends."""
        access.require(who, "read")
        return jsonable(await read(overview_data, ws))

    @app.get("/v1/dashboard/health", tags=["dashboard"])
    async def segment_health(who: Caller) -> dict[str, Any]:
        """Health index per segment (cached until the next evaluation: it takes seconds)."""
        access.require(who, "read")
        from kequn.insight.health import health

        def compute() -> dict[str, Any]:
            runs = ws.table("segment_runs")
            key = str(runs.aggregate(n=runs.count(), t=runs.computed_at.max()).execute().iloc[0])
            key += str(ws.table("segments").count().execute())
            if health_cache.get("key") != key:
                report = health(ws).as_dict()
                health_cache.update(key=key, value={
                    "index": report["index"],
                    "segments": {s["segment"]: s["index"] for s in report["segments"]},
                    "warnings": [w.get("message_en") or w.get("message") or str(w)
                                 for w in report["warnings"]][:20],
                })  # fmt: skip
            return health_cache["value"]

        return jsonable(await read(compute))

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
        """The persona (用户画像) at the segment's latest evaluation."""
        access.require(who, "read")
        known(name)
        return jsonable(await read(persona_data, ws, name))

    @app.get("/v1/dashboard/segments/{name}/analysis", tags=["dashboard"])
    async def analysis(name: str, who: Caller) -> dict[str, Any]:
        """History, R/F/M/CLV distributions, overlap and migration since the previous run."""
        access.require(who, "read")
        known(name)
        return jsonable(await read(analysis_data, ws, name))

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
        total, rows = await read(timeline_page, ws, cid, offset, limit)
        return jsonable({"customer_id": cid, "total": total, "offset": offset, "items": rows})

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
        return jsonable(await read(cluster_scatter, ws, run_id, x, y, limit))

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


def overview_data(ws) -> dict[str, Any]:
    from kequn.server.app import _segment_list

    c, o = ws.table("customers"), ws.table("orders")
    buys = o.filter(~o.is_return)
    totals = _rows(
        buys.aggregate(
            revenue=buys.amount.sum(),
            orders=buys.count(),
            buyers=buys.customer_id.nunique(),
            first=buys.ordered_at.min(),
            last=buys.ordered_at.max(),
        )
    )[0]
    last = totals["last"]
    active = 0
    trends: list[dict[str, Any]] = []
    if last is not None:
        since = last - timedelta(days=90)
        recent = buys.filter(buys.ordered_at > since)
        active = int(_scalar(recent.customer_id.nunique()))
        start = datetime(last.year - 2, last.month, 1)
        window = buys.filter(buys.ordered_at >= start)
        month = window.ordered_at.truncate("M")
        trends = _rows(
            window.group_by(month=month)
            .aggregate(
                revenue=window.amount.sum(),
                orders=window.count(),
                buyers=window.customer_id.nunique(),
            )
            .order_by("month")
        )
        first = buys.group_by("customer_id").aggregate(t=buys.ordered_at.min())
        first = first.filter(first.t >= start)
        new = {
            r["month"]: int(r["n"])
            for r in _rows(first.group_by(month=first.t.truncate("M")).aggregate(n=first.count()))
        }
        for r in trends:
            r["new_buyers"] = new.get(r["month"], 0)
    return {
        "customers": int(_scalar(c.count())),
        "revenue": float(totals["revenue"] or 0.0),
        "orders": int(totals["orders"]),
        "buyers": int(totals["buyers"]),
        "active": active,
        "active_window": {"days": 90, "until": last},
        "rfm": rfm_grid(ws),
        "segments": _segment_list(ws),
        "lifecycle": lifecycle_counts(ws),
        "trends": trends,
    }


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


def _latest_run(ws, name: str) -> dict[str, Any] | None:
    from kequn.segments import engine

    runs = engine.history(ws, name)
    return runs[-1] if runs else None


def persona_data(ws, name: str) -> dict[str, Any]:
    from kequn.insight.personas import persona
    from kequn.insight.tables import as_of_value

    last = _latest_run(ws, name)
    return persona(ws, name, as_of_value(last["as_of"]) if last else None)


def _histogram(values: ibis.Table, column: str, bins: int = 12) -> dict[str, Any]:
    v = values[column]
    stats = _rows(
        values.aggregate(lo=v.min(), hi=v.quantile(0.98), median=v.median(), n=v.count())
    )[0]
    lo, hi = stats["lo"], stats["hi"]
    if lo is None or hi is None:
        return {"edges": [], "counts": [], "median": None, "n": 0}
    lo, hi = float(lo), float(hi)
    width = (hi - lo) / bins if hi > lo else 1.0
    bucket = ((v - lo) / width).floor().cast("int64").clip(lower=0, upper=bins - 1)
    found = {
        int(r["b"]): int(r["n"])
        for r in _rows(values.filter(v.notnull()).group_by(b=bucket).aggregate(n=ibis._.count()))
    }
    return {
        "edges": [lo + i * width for i in range(bins + 1)],
        "counts": [found.get(i, 0) for i in range(bins)],
        "median": stats["median"],
        "n": int(stats["n"]),
    }


def analysis_data(ws, name: str) -> dict[str, Any]:
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
        for col in ("recency_days", "frequency", "monetary"):
            out["distributions"][col] = _histogram(mine, col)
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
        out["distributions"]["clv"] = _histogram(mine, "clv")
        out["clv_model"] = {**first, "as_of": latest_clv}
    pairs = [p for p in engine.overlap(ws) if name in (p["a"], p["b"])]
    out["overlap"] = sorted(
        ({"segment": p["b"] if p["a"] == name else p["a"], "both": p["both"],
          "size": p["size_b"] if p["a"] == name else p["size_a"], "jaccard": p["jaccard"]}
         for p in pairs),
        key=lambda p: -p["both"],
    )  # fmt: skip
    out["migration"] = None
    if len(runs) >= 2:
        mig = engine.migration(ws, runs[-2]["as_of"], runs[-1]["as_of"])
        moves = [x for x in mig["moves"] if name in (x["from"], x["to"]) and x["customers"]]
        out["migration"] = {"from": mig["from"], "to": mig["to"], "moves": moves}
    return out


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


def timeline_page(ws, cid: str, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
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
    table, _ = feature_table(ws, as_of_value(run.as_of), groups, event_types=types)
    for axis in (x, y):
        if axis not in table.columns:
            raise HTTPProblem(422, f"feature {axis!r} is not numeric; pick another", field="x")
    k = ws.table("clusters")
    k = k.filter(k.run_id == run.run_id)
    j = table.join(k, table.customer_id == k.customer_id).select(
        customer_id=table.customer_id, x=table[x], y=table[y], cluster=k.cluster
    )
    j = j.filter(j.x.notnull() & j.y.notnull())
    points = _rows(j.order_by(j.customer_id.hash()).limit(limit))
    return {"run_id": run.run_id, "x": x, "y": y, "points": points}


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
