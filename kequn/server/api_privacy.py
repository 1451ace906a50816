"""Privacy routes: consent, the right to be forgotten, access requests (docs/privacy.md).

* ``POST /v1/consents`` (ingest) — opt-in / opt-out rows;
* ``GET /v1/customers/{id}/consents`` (read) — the latest status per channel;
* ``DELETE /v1/customers/{id}`` (admin) — erase the person;
* ``GET /v1/customers/{id}/export`` (admin) — everything stored about them, as JSON.

Refused erasures and exports are audited, like granted ones.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations.
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from kequn import access
from kequn.server.http import HTTPProblem, jsonable, validation_body

MAX_CONSENTS = 1000


class ConsentIn(BaseModel):
    """One consent: opt_in or opt_out for a channel (email, sms, im, phone)."""

    customer_id: str
    channel: str
    status: str
    at: datetime | None = None
    source: str | None = None


def register(app: FastAPI, service: Any) -> None:
    Caller = app.state.caller
    locked = app.state.locked
    ws = app.state.ws

    def _guard(who: access.Principal, action: str, audit_action: str, target: str) -> None:
        try:
            access.require(who, action)
        except access.PermissionDenied as exc:
            access.audit(ws, who.actor, audit_action, target, {"reason": str(exc)})
            raise

    @app.post("/v1/consents", tags=["privacy"])
    async def post_consents(request: Request, who: Caller) -> dict[str, Any]:
        """Record consents: one, a list, or ``{"consents": [...]}``; latest ``at`` wins."""
        access.require(who, "ingest")
        try:
            data = await request.json()
        except ValueError as exc:
            raise HTTPProblem(400, f"malformed JSON: {exc}") from None
        if isinstance(data, dict) and list(data) == ["consents"]:
            data = data["consents"]
        items = data if isinstance(data, list) else [data]
        if not items or len(items) > MAX_CONSENTS:
            raise HTTPProblem(422, f"send 1 to {MAX_CONSENTS} consents", field="consents")
        try:
            parsed = TypeAdapter(list[ConsentIn]).validate_python(items)
        except ValidationError as exc:
            raise HTTPProblem(422, **validation_body(exc.errors(), prefix="consents")) from None
        from kequn.privacy.consent import record_consents

        rows = [p.model_dump() for p in parsed]
        for row in rows:
            row["source"] = row["source"] or "api"
        written = await run_in_threadpool(locked, record_consents, ws, rows, actor=who.actor)
        # rules may read consent.<channel>: re-evaluate these customers
        service.mark_changed({str(r["customer_id"]) for r in rows})
        return {"written": written}

    @app.get("/v1/customers/{customer_id}/consents", tags=["privacy"])
    async def get_consents(customer_id: str, who: Caller) -> list[dict[str, Any]]:
        """The customer's latest consent per channel (channels never recorded left out)."""
        access.require(who, "read")
        from kequn.privacy.consent import consents_of
        from kequn.profiles import find_customer

        cid = await run_in_threadpool(locked, find_customer, ws, customer_id)
        return jsonable(await run_in_threadpool(locked, consents_of, ws, cid))

    @app.delete("/v1/customers/{customer_id}", tags=["privacy"])
    async def delete_customer(customer_id: str, who: Caller) -> dict[str, Any]:
        """Erase the person (right to be forgotten); answers what was erased where.

        The database file keeps freed bytes until ``kequn compact`` runs while the server
        is stopped (``compacted`` is false here)."""
        await run_in_threadpool(locked, _guard, who, "admin", "erasure.refused", customer_id)
        from kequn.privacy.forget import forget

        # on the evaluator's connection, under its lock: the live path must not write the
        # person's memberships while they are erased
        done = await run_in_threadpool(
            service.exclusive, forget, customer_id, actor=who.actor, compact_file=False
        )
        body = done.as_dict()
        body.pop("customer_id")
        return jsonable(body)

    @app.get("/v1/customers/{customer_id}/export", tags=["privacy"])
    async def export_customer(customer_id: str, who: Caller) -> dict[str, Any]:
        """Everything stored about the person, as JSON (access request); audited."""
        await run_in_threadpool(locked, _guard, who, "admin", "export.refused", customer_id)
        from kequn.privacy.person import export_person

        return jsonable(
            await run_in_threadpool(locked, export_person, ws, customer_id, actor=who.actor)
        )
