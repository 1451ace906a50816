"""Dry run of a change: who would enter and leave, and which triggers would fire.

``diff_segments`` evaluates the definitions (a file or Segments) exactly as
:func:`~kequn.segments.engine.apply` would, in one query at ``as_of``, and compares each
segment's members with its current open memberships, without writing anything: no
definition, run, membership or delivery changes. A segment not stored yet has no members,
so everyone it selects "enters". Triggers count what :func:`~kequn.act.enqueue_changes`
would queue: one delivery per entry (``on = "enter"``) or exit, none for a segment's first
evaluation (its baseline). Holdout arms are counted exactly (the arm is a pure function of
experiment and customer); caps and quiet hours are not applied, so ``messages`` is an upper
bound when a trigger has a cap, and quiet hours only delay messages.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir

from kequn.errors import InputError
from kequn.segments.definitions import Segment, load_segments
from kequn.segments.engine import _Context, check_history_order, stored_segments
from kequn.segments.parser import parse_rule
from kequn.segments.timing import resolve_as_of
from kequn.workspace import Workspace, WorkspaceLike, opened

__all__ = ["diff_segments"]


def diff_segments(
    workspace: WorkspaceLike,
    definitions: str | os.PathLike | Iterable[Segment],
    as_of: object = None,
    *,
    show: int | None = 10,
) -> dict[str, Any]:
    """What applying ``definitions`` at ``as_of`` would change, changing nothing.

    Returns ``as_of``, ``segments`` (per segment: ``status`` new / changed / unchanged,
    ``changes`` (the keys that differ from the stored definition), sizes ``before`` and
    ``after``, ``enter`` and ``leave`` counts with up to ``show`` ids each in ``entering``
    and ``leaving``, sorted; ``show=None`` lists them all), ``absent`` (stored segments the
    file does not name: apply keeps them as they are) and ``triggers`` (per trigger on these
    segments: ``transitions``, ``holdout`` and ``messages``).
    """
    with opened(workspace) as ws:
        if isinstance(definitions, str | os.PathLike):
            segs = load_segments(Path(definitions))
        else:
            segs = list(definitions)
        if not segs:
            raise InputError("no segments to compare")
        moment = resolve_as_of(as_of, ws.config.timezone)
        label = moment.label
        names = [s.name for s in segs]
        evaluated = check_history_order(
            ws, names, label, ", and apply would refuse it (history moves forward)"
        )
        stored = {s.name: s for s in stored_segments(ws)}
        context = _Context(ws, segs)
        everything = context.flags_many(segs, moment)  # checks every rule first
        temp = f"_kequn_diff_{uuid.uuid4().hex[:12]}"
        flagged = ws.con.create_table(temp, obj=everything, temp=True)
        try:
            pairs = _pairs(ws, segs, flagged)
            counts, samples = _compare(pairs, show)
            triggers = _triggers(ws, segs, evaluated, pairs, counts)
        finally:
            ws.con.drop_table(temp, force=True)
        rows = []
        for seg in segs:
            old = stored.get(seg.name)
            got = counts.get(seg.name, {})
            rows.append(
                {
                    "segment": seg.name,
                    "status": _status(old, seg),
                    "changes": _changes(old, seg),
                    "rule": seg.rule,
                    "previous_rule": None if old is None else old.rule,
                    "evaluated": seg.name in evaluated,
                    "before": got.get("before", 0),
                    "after": got.get("after", 0),
                    "enter": got.get("enter", 0),
                    "leave": got.get("leave", 0),
                    "entering": samples.get((seg.name, "enter"), []),
                    "leaving": samples.get((seg.name, "leave"), []),
                }
            )
        return {
            "as_of": label,
            "segments": rows,
            "absent": sorted(set(stored) - set(names)),
            "triggers": triggers,
        }


def _pairs(ws: Workspace, segs: list[Segment], flagged: ir.Table) -> ir.Table:
    """(segment, customer_id, kind) for kind in before, after, enter, leave."""
    new = ibis.union(
        *(
            flagged.filter(flagged[f"_s{i}"]).select(
                segment=ibis.literal(seg.name, type="string"),
                customer_id=flagged.customer_id.cast("string"),
            )
            for i, seg in enumerate(segs)
        ),
        distinct=False,
    )
    m = ws.table("memberships")
    old = m.filter(m.exited_at.isnull(), m.segment.isin([s.name for s in segs])).select(
        segment=m.segment.cast("string"), customer_id=m.customer_id.cast("string")
    )
    enter = new.anti_join(old, [new.segment == old.segment, new.customer_id == old.customer_id])
    leave = old.anti_join(new, [old.segment == new.segment, old.customer_id == new.customer_id])
    parts = [
        t.select("segment", "customer_id", kind=ibis.literal(kind, type="string"))
        for t, kind in ((old, "before"), (new, "after"), (enter, "enter"), (leave, "leave"))
    ]
    return ibis.union(*parts, distinct=False)


def _compare(
    pairs: ir.Table, show: int | None
) -> tuple[dict[str, dict[str, int]], dict[tuple[str, str], list[str]]]:
    counts: dict[str, dict[str, int]] = {}
    rows = pairs.group_by(["segment", "kind"]).aggregate(n=pairs.count()).to_pyarrow()
    for r in rows.to_pylist():
        counts.setdefault(r["segment"], {})[r["kind"]] = int(r["n"])
    moved = pairs.filter(pairs.kind.isin(["enter", "leave"]))
    if show is not None:
        if show < 0:
            raise InputError(f"show {show!r}: give 0 or more ids to list")
        rank = ibis.row_number().over(
            group_by=[moved.segment, moved.kind], order_by=moved.customer_id
        )
        moved = moved.mutate(_n=rank).filter(ibis._._n < show)
    samples: dict[tuple[str, str], list[str]] = {}
    listed = moved.order_by(["segment", "kind", "customer_id"]).to_pyarrow().to_pylist()
    for r in listed:
        samples.setdefault((r["segment"], r["kind"]), []).append(r["customer_id"])
    return counts, samples


def _triggers(
    ws: Workspace,
    segs: list[Segment],
    evaluated: set[str],
    pairs: ir.Table,
    counts: dict[str, dict[str, int]],
) -> list[dict[str, Any]]:
    from kequn.act.experiments import HOLDOUT, assign
    from kequn.act.triggers import stored_triggers, with_defaults

    names = {s.name for s in segs}
    out = []
    for trig in stored_triggers(ws):
        if trig.segment not in names:
            continue
        trig = with_defaults(trig, ws)
        kind = "enter" if trig.on == "enter" else "leave"
        baseline = trig.segment not in evaluated
        moved = 0 if baseline else counts.get(trig.segment, {}).get(kind, 0)
        held_out = 0
        if moved and trig.experiment is not None:
            ids = pairs.filter(pairs.segment == trig.segment, pairs.kind == kind).customer_id
            exp = trig.experiment
            held_out = sum(
                assign(exp.name, cid, exp.arms) == HOLDOUT for cid in ids.to_pyarrow().to_pylist()
            )
        out.append(
            {
                "trigger": trig.name,
                "segment": trig.segment,
                "on": trig.on,
                "channel": trig.channel,
                "transitions": moved,
                "holdout": held_out,
                "messages": moved - held_out,
                "cap": trig.cap,
                "baseline": baseline,
            }
        )
    return out


_COMPARED = [f.name for f in fields(Segment) if f.name != "name"]


def _status(old: Segment | None, new: Segment) -> str:
    if old is None:
        return "new"
    return "unchanged" if parse_rule(old.rule) == parse_rule(new.rule) else "changed"


def _changes(old: Segment | None, new: Segment) -> list[str]:
    """The keys whose values differ; the rule by meaning (layout and comments do not count)."""
    if old is None:
        return []
    out = []
    for key in _COMPARED:
        if key == "rule":
            differs = parse_rule(old.rule) != parse_rule(new.rule)
        else:
            differs = getattr(old, key) != getattr(new, key)
        if differs:
            out.append(key)
    return out
