"""The HTTP API (FastAPI): ``/v1/...``, documented at ``/docs`` and ``/openapi.json``.

Handlers are thin: they check the caller's role, call the library under the service's lock
and shape the answer. Writes go through :class:`~kequn.server.service.Service`, which answers
only after its group commit, so a 2xx means "on disk". Errors are one JSON shape
(:class:`~kequn.server.schemas.Problem`): 400 malformed JSON, 401/403 tokens and roles, 404
unknown names, 413 oversized batches, 422 invalid fields and rules (with the rule's caret
message).
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations, and
# `Caller` is local to create_app.
import contextlib
import importlib
import json
import tempfile
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import TypeAdapter, ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from kequn import access
from kequn.config import zone_info
from kequn.errors import InputError, KequnError, RuleError
from kequn.server.http import HTTPProblem, jsonable, validation_body
from kequn.server.schemas import (
    CustomerIn,
    EventIn,
    ExportIn,
    OrderIn,
    Problem,
    SegmentIn,
    Written,
)
from kequn.server.service import Service

__all__ = ["EXTENSIONS", "MAX_BATCH", "MAX_BODY", "create_app"]

# Modules adding routes: each has ``register(app, service)`` and reads the shared pieces
# from ``app.state`` (``caller``: the Annotated dependency giving the Principal; ``locked``:
# run a function under the read connection's lock; ``ws``: the read connection).
EXTENSIONS: tuple[str, ...] = (
    "kequn.server.api_dashboard",
    "kequn.server.jobs",
    "kequn.server.api_explain",
    "kequn.server.api_privacy",
)

MAX_BATCH = 1000  # items per request
MAX_BODY = 8 * 1024 * 1024  # bytes per request
ERRORS = {400: {"model": Problem}, 401: {"model": Problem}, 403: {"model": Problem}}


def create_app(service: Service, *, open_access: bool | None = None) -> FastAPI:
    """The API over one running service.

    ``open_access``: with no tokens in the workspace the API is open to the local user (the
    server refuses a public address in that case, see ``kequn serve``); once a token exists
    every request needs one. None decides from the workspace.
    """
    ws = service.ws_read  # the API's own connection; writes go through the service
    if open_access is None:
        with service.read_lock:
            open_access = not access.list_tokens(ws, include_revoked=False)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.close()

    app = FastAPI(
        title="kequn",
        version=_version(),
        description="Customer segments (客群) that stay current: events in, members and "
        "triggers out. Authenticate with `Authorization: Bearer <token>` "
        "(`kequn token create`).",
        lifespan=lifespan,
    )
    app.state.service = service

    # --- errors -----------------------------------------------------------------------------

    @app.exception_handler(HTTPProblem)
    async def _problem(_: Request, exc: HTTPProblem) -> JSONResponse:
        body = {"error": exc.error, "field": exc.field, "detail": exc.detail}
        return JSONResponse(body, status_code=exc.status)

    @app.exception_handler(KequnError)
    async def _kequn(_: Request, exc: KequnError) -> JSONResponse:
        status = getattr(exc, "status_code", None) or (422 if isinstance(exc, InputError) else 500)
        field = "rule" if isinstance(exc, RuleError) else None
        return JSONResponse({"error": str(exc), "field": field, "detail": None}, status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_body(exc.errors()), status_code=422)

    # --- who is asking ---------------------------------------------------------------------

    def principal(request: Request) -> access.Principal:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        if token is None and open_access:
            return access.local_principal()
        with service.read_lock:
            return access.authenticate(ws, token)

    Caller = Annotated[access.Principal, Depends(principal)]

    # --- writes -----------------------------------------------------------------------------

    async def _items(request: Request, key: str, model: type) -> list[Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise HTTPProblem(413, f"request body over {MAX_BODY} bytes; send smaller batches")
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise HTTPProblem(400, f"malformed JSON: {exc}") from None
        if isinstance(data, dict) and key in data and len(data) == 1:
            data = data[key]
        items = data if isinstance(data, list) else [data]
        if not items:
            raise HTTPProblem(422, f"no {key} in the request", field=key)
        if len(items) > MAX_BATCH:
            raise HTTPProblem(
                413, f"{len(items)} {key} in one request; at most {MAX_BATCH}", field=key
            )
        try:
            return TypeAdapter(list[model]).validate_python(items)
        except ValidationError as exc:
            raise HTTPProblem(422, **validation_body(exc.errors(), prefix=key)) from None

    def _local(moment: datetime | None) -> datetime | None:
        if moment is None or moment.tzinfo is None:
            return moment
        return moment.astimezone(zone_info(ws.config.timezone)).replace(tzinfo=None)

    async def _submit(**items: list[dict[str, Any]]) -> Written:
        accepted = await run_in_threadpool(service.submit, **items)
        return Written(
            accepted=len(accepted.new),
            duplicates=len(accepted.duplicates),
            duplicate_ids=[k.split(":", 1)[1] for k in accepted.duplicates],
            erased_ids=[k.split(":", 1)[1] for k in accepted.erased],
        )

    @app.post("/v1/events", response_model=Written, responses=ERRORS, tags=["ingest"])
    async def post_events(request: Request, who: Caller) -> Written:
        """Accept one event, a list, or ``{"events": [...]}``; durable before the answer."""
        access.require(who, "ingest")
        events = await _items(request, "events", EventIn)
        now = service.clock()
        rows = []
        for e in events:
            rows.append(
                {
                    "event_id": e.event_id,
                    "customer_id": e.customer_id,
                    "occurred_at": _local(e.occurred_at) or now,
                    "type": e.type,
                    "properties": None
                    if e.properties is None
                    else json.dumps(e.properties, ensure_ascii=False),
                    "source": e.source or "api",
                    "import_id": "api",
                }
            )
        return await _submit(events=rows)

    @app.post("/v1/orders", response_model=Written, responses=ERRORS, tags=["ingest"])
    async def post_orders(request: Request, who: Caller) -> Written:
        """Accept one order, a list, or ``{"orders": [...]}``; returns have ``is_return``."""
        access.require(who, "ingest")
        orders = await _items(request, "orders", OrderIn)
        now = service.clock()
        rows = []
        for o in orders:
            amount = -abs(o.amount) if o.is_return else o.amount
            rows.append(
                {
                    **o.model_dump(),
                    "amount": amount,
                    "ordered_at": _local(o.ordered_at) or now,
                    "lines": 1,
                    "source": o.source or "api",
                    "import_id": "api",
                }
            )
        return await _submit(orders=rows)

    @app.post("/v1/customers", response_model=Written, responses=ERRORS, tags=["ingest"])
    async def post_customers(request: Request, who: Caller) -> Written:
        """Upsert one customer or a list: given fields replace, others are kept."""
        access.require(who, "ingest")
        customers = await _items(request, "customers", CustomerIn)
        rows = [c.model_dump(exclude_unset=True) for c in customers]
        return await _submit(customers=rows)

    # --- reads ------------------------------------------------------------------------------

    def _locked(func, *args, **kwargs):
        with service.read_lock:
            return func(*args, **kwargs)

    def _known(name: str) -> None:
        from kequn.segments.engine import stored_names

        with service.read_lock:
            names = stored_names(ws)
        if name not in names:
            from kequn.errors import closest

            raise HTTPProblem(404, f"unknown segment {name!r}{closest(name, names) or ''}")

    def _mask(record: dict[str, Any], who: access.Principal) -> dict[str, Any]:
        from kequn.privacy import field_classes  # public / personal / sensitive per field

        with service.read_lock:
            classes = field_classes(ws)
        return access.mask_record(record, who, classes)

    @app.get("/v1/customers/{customer_id}", responses=ERRORS, tags=["customers"])
    async def get_customer(customer_id: str, who: Caller, recent: int = 20) -> dict[str, Any]:
        """Profile: attributes, identities, orders summary, scores, segments, recent events."""
        access.require(who, "read")
        from kequn.profiles import profile

        data = await run_in_threadpool(_locked, profile, ws, customer_id, recent=recent)
        from kequn.privacy.api import audit_sensitive_read

        await run_in_threadpool(_locked, audit_sensitive_read, ws, who, data)
        return jsonable(_mask(data, who))

    @app.get("/v1/segments", tags=["segments"], responses=ERRORS)
    async def get_segments(who: Caller) -> list[dict[str, Any]]:
        """Every segment with its live size, last evaluated size and change."""
        access.require(who, "read")
        return jsonable(await run_in_threadpool(_locked, _segment_list, ws))

    @app.get("/v1/segments/{name}", tags=["segments"], responses=ERRORS)
    async def get_segment(name: str, who: Caller) -> dict[str, Any]:
        """Definition, size, sample members (masked for viewers), summary statistics."""
        access.require(who, "read")
        _known(name)
        from kequn.segments import engine

        data = await run_in_threadpool(_locked, engine.show, ws, name)
        data["live_size"] = await run_in_threadpool(_locked, _live_size, ws, name)
        if "sample" in data:
            data["sample"] = [_mask(r, who) if isinstance(r, dict) else r for r in data["sample"]]
        return jsonable(data)

    @app.get("/v1/segments/{name}/members", tags=["segments"], responses=ERRORS)
    async def get_members(
        name: str,
        who: Caller,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Current members, ordered by id, a page at a time (``offset``, ``limit`` ≤ 1000)."""
        access.require(who, "read")
        _known(name)
        total, rows = await run_in_threadpool(_locked, _members_page, ws, name, offset, limit)
        return jsonable(
            {
                "segment": name,
                "total": total,
                "offset": offset,
                "limit": limit,
                "members": [_mask(r, who) for r in rows],
            }
        )

    @app.post("/v1/segments", tags=["segments"], responses=ERRORS)
    async def post_segment(body: SegmentIn, who: Caller) -> dict[str, Any]:
        """Create or change a segment: checked first, then evaluated now and kept live."""
        access.require(who, "write_rules")
        from kequn.privacy import check_rule_grants  # sensitive fields need the grant

        await run_in_threadpool(_locked, check_rule_grants, ws, body.rule, who)
        from kequn.segments.definitions import Segment

        segment = Segment(
            name=body.name,
            rule=body.rule,
            label_zh=body.label_zh or "",
            label_en=body.label_en or "",
            description=body.description or "",
            owner=body.owner or who.name,
            tags=tuple(body.tags),
        )
        from kequn.segments.engine import stored_names

        existed = body.name in await run_in_threadpool(_locked, stored_names, ws)
        report = await run_in_threadpool(service.save_segment, segment)
        action = "rule.update" if existed else "rule.create"
        await run_in_threadpool(
            _locked, access.audit, ws, who.actor, action, body.name, {"rule": body.rule}
        )
        return jsonable(report)

    @app.post("/v1/segments/{name}/export", tags=["segments"], responses=ERRORS)
    async def export(name: str, who: Caller, body: ExportIn | None = None) -> Response:
        """The current members as a file (CSV with BOM, Excel, Parquet or JSON); no row cap.

        CSV and JSON stream as they are read (any number of members in bounded memory);
        Excel and Parquet are written to a temporary file first. ``X-Kequn-Rows`` gives the
        number of rows before the body starts.
        """
        body = body or ExportIn()
        from kequn.privacy.api import require_export  # role, sensitive columns; audits refusals

        await run_in_threadpool(_locked, require_export, ws, who, name, body.columns)
        _known(name)
        from kequn.export import csv_chunks, json_chunks, write_batches
        from kequn.segments.export import member_rows

        suffix = {"csv": ".csv", "xlsx": ".xlsx", "parquet": ".parquet", "json": ".json"}
        if body.format not in suffix:
            raise HTTPProblem(
                422, f"format {body.format!r}: use {', '.join(suffix)}", field="format"
            )
        filename = f"{name}{suffix[body.format]}"
        stream = await run_in_threadpool(_locked, member_rows, ws, name, columns=body.columns)
        try:
            if body.format == "xlsx":
                from kequn.export import check_excel_rows

                check_excel_rows(Path(filename), stream.rows)
            await run_in_threadpool(
                _locked,
                access.audit,
                ws,
                who.actor,
                "export",
                name,
                {"rows": stream.rows, "format": body.format, "columns": body.columns},
            )
        except BaseException:
            stream.close()
            raise
        headers = {"X-Kequn-Rows": str(stream.rows)}
        if body.format in ("csv", "json"):
            chunks = (
                csv_chunks(stream, list(stream.schema.names))
                if body.format == "csv"
                else json_chunks(stream)
            )
            media = "text/csv; charset=utf-8" if body.format == "csv" else "application/json"
            headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(filename)}"
            return StreamingResponse(
                chunks, media_type=media, headers=headers, background=BackgroundTask(stream.close)
            )
        folder = Path(tempfile.mkdtemp(prefix="kequn-export-"))
        path = folder / filename
        try:
            await run_in_threadpool(
                write_batches, stream, stream.schema, path, rows=stream.rows, sheet=name
            )
        except BaseException:
            stream.close()
            _remove(folder)
            raise
        return FileResponse(
            path, filename=path.name, headers=headers, background=BackgroundTask(_remove, folder)
        )

    # --- deliveries and the service ---------------------------------------------------------

    @app.get("/v1/deliveries", tags=["triggers"], responses=ERRORS)
    async def get_deliveries(
        who: Caller,
        status: str | None = None,
        segment: str | None = None,
        trigger: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Deliveries, newest first: attempts, status and the last error."""
        access.require(who, "read")
        from kequn.act.outbox import deliveries

        rows = await run_in_threadpool(
            _locked, deliveries, ws, status=status, segment=segment, trigger=trigger, limit=limit
        )
        return jsonable(rows)

    @app.get("/v1/status", tags=["service"])
    async def get_status() -> dict[str, Any]:
        """Liveness and progress: accepted vs processed sequence numbers, counters."""
        return {
            "status": "ok",
            "accepted_seq": service.journal.seq,
            "processed_seq": await run_in_threadpool(_locked, service.journal.processed, ws),
            "segments": len(service.live.segments),
            **service.stats,
            "timings": {
                step: {"count": int(n), "seconds": round(total, 3)}
                for step, (n, total) in service.timings.items()
            },
        }

    app.state.caller = Caller
    app.state.locked = _locked
    app.state.ws = ws
    for name in EXTENSIONS:
        importlib.import_module(name).register(app, service)
    return app


def _segment_list(ws) -> list[dict[str, Any]]:
    from kequn.segments import engine

    rows = engine.list_segments(ws)
    m = ws.table("memberships")
    open_ = m.filter(m.exited_at.isnull())
    counts = open_.group_by("segment").aggregate(n=open_.customer_id.count())
    live = {r["segment"]: r["n"] for r in counts.to_pyarrow().to_pylist()}
    for row in rows:
        row["live_size"] = int(live.get(row["name"], 0))
    return rows


def _live_size(ws, name: str) -> int:
    m = ws.table("memberships")
    return int(m.filter((m.segment == name) & m.exited_at.isnull()).count().execute())


def _members_page(ws, name: str, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
    from kequn.segments.engine import _require

    _require(ws, name)
    m = ws.table("memberships")
    current = m.filter((m.segment == name) & m.exited_at.isnull())
    total = int(current.count().execute())
    c = ws.table("customers")
    page = (
        current.left_join(c, current.customer_id == c.customer_id)
        .select(
            customer_id=current.customer_id,
            entered_at=current.entered_at,
            name=c.name,
            city=c.city,
            channel=c.channel,
            email=c.email,
            phone=c.phone,
        )
        .order_by("customer_id")
        .limit(limit, offset=offset)
    )
    return total, page.to_pyarrow().to_pylist()


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def _version() -> str:
    from kequn import __version__

    return __version__
