"""Routes that explain and preview: why-traces, dry-run diffs and the refresh calendar.

* ``GET /v1/segments/{name}/why/{customer_id}?as_of=`` — the rule tree for one customer,
  each condition with its actual value (masked for readers without ``read_personal``);
* ``POST /v1/segments/diff`` — one definition or a list (as ``POST /v1/segments`` takes,
  plus ``schedule``): who would enter and leave, which triggers would fire; nothing is
  written;
* ``GET /v1/schedule?horizon=7d`` — upcoming and missed scheduled refreshes.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations.
import json
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from kequn import access
from kequn.server.http import HTTPProblem, jsonable, validation_body
from kequn.server.schemas import SegmentIn

__all__ = ["SegmentDraft", "register"]

MAX_DRAFTS = 200


class SegmentDraft(SegmentIn):
    """A definition to preview: what ``POST /v1/segments`` takes, and a refresh schedule."""

    schedule: str | None = None


def _masked(step: dict[str, Any], who: access.Principal) -> dict[str, Any]:
    """A trace node with the values of personal fields masked for this reader."""
    out = dict(step)
    if "operand" in out and out.get("value") is not None:
        key = out["operand"].split(".")[-1]
        out["value"] = access.mask_record({key: out["value"]}, who)[key]
    if "children" in out:
        out["children"] = [_masked(c, who) for c in out["children"]]
    return out


def register(app: FastAPI, service: Any) -> None:
    Caller = app.state.caller
    locked = app.state.locked
    ws = app.state.ws

    @app.post("/v1/segments/diff", tags=["segments"])
    async def post_diff(
        request: Request,
        who: Caller,  # type: ignore[valid-type]
        as_of: str | None = None,
        show: Annotated[int, Query(ge=0, le=10000)] = 10,
    ) -> dict[str, Any]:
        """Dry run of saving definitions: entries, exits and trigger messages; writes nothing."""
        access.require(who, "write_rules")
        try:
            data = json.loads(await request.body())
        except ValueError as exc:
            raise HTTPProblem(400, f"malformed JSON: {exc}") from None
        if isinstance(data, dict) and set(data) == {"segments"}:
            data = data["segments"]
        items = data if isinstance(data, list) else [data]
        if not items:
            raise HTTPProblem(422, "no segments in the request", field="segments")
        if len(items) > MAX_DRAFTS:
            raise HTTPProblem(413, f"{len(items)} segments in one request; at most {MAX_DRAFTS}")
        try:
            drafts = TypeAdapter(list[SegmentDraft]).validate_python(items)
        except ValidationError as exc:
            raise HTTPProblem(422, **validation_body(exc.errors(), prefix="segments")) from None
        from kequn.segments.definitions import Segment

        segments = [
            Segment(
                name=d.name,
                rule=d.rule,
                label_zh=d.label_zh or "",
                label_en=d.label_en or "",
                description=d.description or "",
                owner=d.owner or who.name,
                tags=tuple(d.tags),
                schedule=(d.schedule or "").strip(),
            )
            for d in drafts
        ]
        names = [s.name for s in segments]
        if len(set(names)) != len(names):
            raise HTTPProblem(422, "a segment name is used twice", field="name")
        from kequn.segments.diff import diff_segments

        result = await run_in_threadpool(locked, diff_segments, ws, segments, as_of, show=show)
        return jsonable(result)

    @app.get("/v1/segments/{name}/why/{customer_id}", tags=["segments"])
    async def get_why(
        name: str,
        customer_id: str,
        who: Caller,  # type: ignore[valid-type]
        as_of: str | None = None,
    ) -> dict[str, Any]:
        """Why a customer is in a segment or not, condition by condition, at ``as_of``."""
        access.require(who, "read")
        from kequn.segments.engine import stored_names

        names = await run_in_threadpool(locked, stored_names, ws)
        if name not in names:
            from kequn.errors import closest

            raise HTTPProblem(404, f"unknown segment {name!r}{closest(name, names) or ''}")
        from kequn.errors import InputError
        from kequn.profiles import find_customer
        from kequn.segments.trace import why

        try:
            cid = await run_in_threadpool(locked, find_customer, ws, customer_id)
        except InputError as exc:
            raise HTTPProblem(404, str(exc)) from None
        trace = await run_in_threadpool(locked, why, ws, name, cid, as_of)
        data = trace.as_dict()
        data["trace"] = _masked(data["trace"], who)
        return jsonable(data)

    @app.get("/v1/schedule", tags=["segments"])
    async def get_schedule(
        who: Caller,  # type: ignore[valid-type]
        horizon: str = "7d",
    ) -> dict[str, Any]:
        """Upcoming and missed scheduled refreshes, overdue ones first."""
        access.require(who, "read")
        from kequn.segments.refresh import schedule_calendar

        data = await run_in_threadpool(locked, schedule_calendar, ws, None, horizon)
        return jsonable(data)
