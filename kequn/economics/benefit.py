"""The segmentation benefit matrix (分群收益矩阵): is this segmentation worth running?

A segmentation is a named set of segments (``[segmentations.NAME]`` in kequn.toml or in a
TOML file: ``segments = [...]`` and optional scores). Four dimensions are scored 1–5, each
so that 5 favours running the segmentation:

* ``market_maturity`` — set by the user (a mature market rewards fine targeting);
* ``product_standardisation`` — set by the user (5: offers can be tailored per segment;
  1: one standard product for everyone);
* ``decision_cycle`` — from the data: the median days from a member's first touch (first
  event, or the customer record if earlier) to their first purchase; a long cycle leaves
  room for segment-specific nurturing (≤ 1 day → 1, ≤ 7 → 2, ≤ 30 → 3, ≤ 90 → 4, more → 5);
* ``segment_roi`` — from the campaign economics of the campaigns aimed at the segments:
  ROI < 0 → 1, < 0.5 → 2, < 1 → 3, < 2 → 4, else 5.

A score given by the user overrides the computed one; a dimension neither given nor
computable counts as 3 (neutral) and says so. Below 3.5 overall, the report recommends
pausing or simplifying the segmentation and names the low dimensions.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kequn.errors import InputError, SourceNotFound, closest

if TYPE_CHECKING:
    from kequn.workspace import Workspace, WorkspaceLike

__all__ = ["DIMENSIONS", "THRESHOLD", "benefit", "cycle_score", "roi_score", "segmentations"]

DIMENSIONS = ("market_maturity", "product_standardisation", "decision_cycle", "segment_roi")
LABELS = {
    "market_maturity": "市场成熟度 market maturity",
    "product_standardisation": "产品标准化 product standardisation",
    "decision_cycle": "决策周期 decision cycle",
    "segment_roi": "客群ROI segment ROI",
}
THRESHOLD = 3.5
_CYCLE = ((1, 1), (7, 2), (30, 3), (90, 4))
_ROI = ((0.0, 1), (0.5, 2), (1.0, 3), (2.0, 4))


def cycle_score(days: float) -> int:
    """Median days from first touch to first order → 1–5 (longer favours segmentation)."""
    for bound, score in _CYCLE:
        if days <= bound:
            return score
    return 5


def roi_score(roi: float) -> int:
    """Campaign ROI of the segmentation → 1–5."""
    for bound, score in _ROI:
        if roi < bound:
            return score
    return 5


def _score(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= 5:
        raise InputError(f"{where} = {value!r}; scores are numbers from 1 to 5")
    return float(value)


def segmentations(ws: Workspace, file: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """``[segmentations.NAME]`` from the file given, else from kequn.toml."""
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise SourceNotFound(f"segmentation file {str(path)!r} does not exist")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{str(path)!r} is not valid TOML: {exc}") from exc
        where = str(path)
    else:
        data, where = ws.config.raw, "kequn.toml"
    found = data.get("segmentations", {})
    if not isinstance(found, Mapping):
        raise InputError(f"{where}: [segmentations] must be a table of named segmentations")
    out = {}
    for name, item in found.items():
        here = f"{where} [segmentations.{name}]"
        if not isinstance(item, Mapping):
            raise InputError(f"{here}: expected a table with segments = [...]")
        unknown = [k for k in item if k not in ("segments", "description", *DIMENSIONS)]
        if unknown:
            allowed = ("segments", "description", *DIMENSIONS)
            raise InputError(f"{here}: unknown key {unknown[0]!r}" + closest(unknown[0], allowed))
        segs = item.get("segments")
        if not isinstance(segs, list) or not segs or not all(isinstance(s, str) for s in segs):
            raise InputError(f"{here}: segments must be a non-empty list of segment names")
        scores = {d: _score(item[d], f"{here} {d}") for d in DIMENSIONS if d in item}
        out[str(name)] = {
            "segments": segs,
            "description": str(item.get("description", "")),
            "scores": scores,
        }
    return out


def _members(ws: Workspace, segments: list[str], as_of):
    import ibis

    m = ws.table("memberships")
    end = ibis.literal(as_of.end, type="timestamp")
    inside = m.entered_at <= end if as_of.inclusive else m.entered_at < end
    m = m.filter(m.segment.isin(segments), inside, m.exited_at.isnull() | (m.exited_at > end))
    return m.select("customer_id").distinct()


def decision_cycle_days(ws: Workspace, segments: list[str], as_of) -> tuple[float | None, int]:
    """(median days from first touch to first order, members measured) over the members."""
    import ibis

    members = _members(ws, segments, as_of)
    end = ibis.literal(as_of.end, type="timestamp")

    def upto(ts):
        return ts <= end if as_of.inclusive else ts < end

    o = ws.table("orders")
    o = o.filter(~o.is_return.fill_null(False), upto(o.ordered_at))
    first_order = o.group_by(_ocid=o.customer_id).aggregate(first_order=o.ordered_at.min())
    e = ws.table("events")
    e = e.filter(upto(e.occurred_at))
    first_event = e.group_by(_ecid=e.customer_id).aggregate(first_event=e.occurred_at.min())
    c = ws.table("customers").select(_ccid="customer_id", created=ibis._.created_at)
    j = members.join(first_order, members.customer_id == first_order._ocid)
    j = j.left_join(first_event, j.customer_id == first_event._ecid)
    j = j.left_join(c, j.customer_id == c._ccid)
    touch = ibis.least(j.first_event, j.created, j.first_order)  # NULLs are skipped
    days = j.first_order.date().delta(touch.date(), unit="day")
    r = j.aggregate(median=days.median(), n=j.count()).to_pyarrow().to_pylist()[0]
    n = int(r["n"] or 0)
    return (None if not n else float(r["median"])), n


def benefit(
    workspace: WorkspaceLike,
    name: str,
    *,
    file: str | Path | None = None,
    scores: Mapping[str, float] | None = None,
    as_of: object = None,
    start: Any = None,
    end: Any = None,
) -> dict[str, Any]:
    """The benefit matrix of one segmentation: four scores, their basis, the overall mean
    and the recommendation (pause or simplify below 3.5, with the low dimensions)."""
    from kequn.asof import resolve_as_of
    from kequn.economics.report import economics
    from kequn.segments.engine import stored_names
    from kequn.workspace import opened

    with opened(workspace) as ws:
        defined = segmentations(ws, file)
        if name not in defined:
            hint = closest(name, defined) or (
                "; define it as [segmentations.NAME] with segments = [...] in kequn.toml "
                "or in the file given with --file"
            )
            raise InputError(f"unknown segmentation {name!r}{hint}")
        spec = defined[name]
        known = set(stored_names(ws))
        for seg in spec["segments"]:
            if seg not in known:
                raise InputError(
                    f"segmentation {name!r}: unknown segment {seg!r}" + closest(seg, known)
                )
        given = dict(spec["scores"])
        for dim, value in (scores or {}).items():
            if dim not in DIMENSIONS:
                raise InputError(f"unknown dimension {dim!r}" + closest(dim, DIMENSIONS))
            given[dim] = _score(value, dim)
        at = resolve_as_of(as_of, ws.config.timezone)
        dims: dict[str, dict[str, Any]] = {}
        # decision cycle from the data
        median, n = decision_cycle_days(ws, spec["segments"], at)
        computed_cycle = None if median is None else cycle_score(median)
        cycle_basis = (
            f"median {median:g} days from first touch to first order over {n} members"
            if median is not None
            else "no member has a purchase yet"
        )
        # ROI from the economics of the campaigns aimed at the segments
        report = economics(ws, "segment", start=start, end=end, as_of=at)
        rows = [r for r in report.rows if r["key"] in spec["segments"]]
        cost = sum(r["cost"] for r in rows)
        revenue = sum(r["revenue"] for r in rows)
        roi = (revenue - cost) / cost if cost else None
        computed_roi = None if roi is None else roi_score(roi)
        roi_basis = (
            f"ROI {roi:.2f} (revenue {revenue:,.2f}, cost {cost:,.2f})"
            if roi is not None
            else "no campaign cost for these segments (`kequn costs import FILE`)"
        )
        computed = {
            "decision_cycle": (computed_cycle, cycle_basis),
            "segment_roi": (computed_roi, roi_basis),
        }
        for dim in DIMENSIONS:
            value, basis = computed.get(dim, (None, "not measurable from the data"))
            if dim in given:
                dims[dim] = {
                    "score": given[dim],
                    "source": "user",
                    "basis": basis,
                    "computed": value,
                }
            elif value is not None:
                dims[dim] = {
                    "score": float(value),
                    "source": "data",
                    "basis": basis,
                    "computed": value,
                }
            else:
                dims[dim] = {
                    "score": 3.0,
                    "source": "assumed",
                    "basis": basis + "; not set, counted as 3 (neutral)",
                    "computed": None,
                }
            dims[dim]["label"] = LABELS[dim]
        overall = sum(d["score"] for d in dims.values()) / len(dims)
        low = sorted(
            (d for d in DIMENSIONS if dims[d]["score"] < THRESHOLD), key=lambda d: dims[d]["score"]
        )
        if overall < THRESHOLD:
            why = ", ".join(f"{d} {dims[d]['score']:g}" for d in low)
            recommendation = (
                f"pause or simplify: overall {overall:.2f} is below {THRESHOLD}; low: {why}. "
                "Merge segments that get the same treatment, or run one campaign for all until "
                "these improve."
            )
        else:
            recommendation = f"keep: overall {overall:.2f} is at least {THRESHOLD}"
        return {
            "segmentation": name,
            "segments": spec["segments"],
            "as_of": at.label,
            "dimensions": dims,
            "overall": overall,
            "threshold": THRESHOLD,
            "pause": overall < THRESHOLD,
            "low": low,
            "recommendation": recommendation,
        }
