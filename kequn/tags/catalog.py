"""The tag catalogue (标签目录): named, typed, layered tags with their definitions.

A tag is a stored value per customer. Its definition says where the value comes from:

* ``rule`` / ``model`` — segment-language rules: a flag from one rule (``rule``), a category
  from the first matching case (``cases``), a number from a value expression (``value``);
  ``model`` is the same over predicted fields (``churn_risk > 0.7``);
* ``segment`` — a saved segment as a flag (``in segment 'NAME'``);
* ``import`` — values from a CSV of ``customer_id,tag,value``;
* ``interest`` — the decayed interest categories (kequn/tags/interests.py);
* ``score`` — the behaviour score (kequn/tags/score.py).

Definitions are TOML (``[[tags]]`` tables, like segment files) and are stored in the ``tags``
table with the definition as JSON text. Rules are parsed when a file is applied and checked
against the workspace when the tag is refreshed (a rule may name tags refreshed before it).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kequn.errors import InputError, SourceNotFound, closest

if TYPE_CHECKING:
    from kequn.workspace import Workspace, WorkspaceLike

__all__ = [
    "LAYERS",
    "SOURCES",
    "TYPES",
    "TagDef",
    "apply_tags",
    "list_tags",
    "load_tags",
    "parse_schedule",
    "parse_tags",
    "stored_tags",
    "tag_fields",
    "tag_from_segment",
]

TYPES = ("flag", "category", "number", "score")
LAYERS = ("base", "behaviour", "predicted")
SOURCES = ("rule", "model", "segment", "import", "interest", "score")
_KEYS = (
    "name",
    "label_zh",
    "label_en",
    "type",
    "layer",
    "owner",
    "description",
    "source",
    "schedule",
    "rule",
    "cases",
    "default",
    "value",
    "segment",
    "interest",
    "score",
)
_DEFINITION_KEYS = ("rule", "cases", "default", "value", "segment", "interest", "score")
_NAME = re.compile(r"^[^\W\d]\w*$")
_SCHEDULE = re.compile(r"^\s*(\d+)\s*(m|min|h|d|w)\s*$")
_UNIT = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class TagDef:
    """One tag: what it is (type, layer, labels, owner), where it comes from and how often."""

    name: str
    type: str
    source: str
    layer: str = "base"
    label_zh: str = ""
    label_en: str = ""
    owner: str = ""
    description: str = ""
    schedule: str = ""
    definition: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.label_zh or self.label_en or self.name

    @property
    def interval(self) -> timedelta | None:
        """The refresh schedule as a period; None when the tag is refreshed by hand."""
        return parse_schedule(self.schedule, f"tag {self.name!r}") if self.schedule else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label_zh": self.label_zh,
            "label_en": self.label_en,
            "type": self.type,
            "layer": self.layer,
            "owner": self.owner,
            "description": self.description,
            "source": self.source,
            "schedule": self.schedule,
            "definition": dict(self.definition),
        }


def parse_schedule(text: str, where: str = "schedule") -> timedelta:
    """``30m``, ``12h``, ``1d``, ``1w`` → a period (the same spelling as segment schedules)."""
    match = _SCHEDULE.match(str(text))
    if not match or int(match.group(1)) == 0:
        raise InputError(
            f"{where}: schedule {text!r} is not a period; write a whole number and a unit, "
            "e.g. '30m', '12h', '1d' or '1w'"
        )
    return timedelta(seconds=int(match.group(1)) * _UNIT[match.group(2)])


def _text(item: Mapping[str, Any], key: str, here: str, default: str = "") -> str:
    value = item.get(key, default)
    if not isinstance(value, str):
        raise InputError(f"{here}: {key} must be text, not {value!r}")
    return value.strip()


def _choice(item: Mapping[str, Any], key: str, allowed: Sequence[str], here: str, default: str):
    value = _text(item, key, here, default)
    if value not in allowed:
        raise InputError(
            f"{here}: {key} = {value!r}; use one of {', '.join(allowed)}" + closest(value, allowed)
        )
    return value


def _rule(text: object, here: str) -> str:
    from kequn.segments.parser import parse_rule

    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{here}: expected a rule as text, not {text!r}")
    parse_rule(text)  # syntax now; names and types when the tag is refreshed
    return text.strip()


def _check_definition(tag: TagDef, item: Mapping[str, Any], here: str) -> dict[str, Any]:
    """The definition keys this tag's source and type need, validated."""
    source, kind = tag.source, tag.type
    given = {k: item[k] for k in _DEFINITION_KEYS if k in item}
    out: dict[str, Any] = {}
    if source in ("rule", "model"):
        if kind == "flag":
            out["rule"] = _rule(given.pop("rule", None), f"{here}: rule")
        elif kind == "category":
            cases = given.pop("cases", None)
            if not isinstance(cases, list) or not cases:
                raise InputError(
                    f"{here}: a category tag lists its cases, e.g. cases = [{{ value = '金卡', "
                    "rule = 'sum(orders.amount) > 5000' }}]"
                )
            out["cases"] = []
            for n, case in enumerate(cases, start=1):
                if not isinstance(case, Mapping) or set(case) != {"value", "rule"}:
                    raise InputError(
                        f"{here}: case #{n} needs exactly value and rule, not {case!r}"
                    )
                value = case["value"]
                if not isinstance(value, str) or not value:
                    raise InputError(f"{here}: case #{n} value must be text, not {value!r}")
                out["cases"].append(
                    {"value": value, "rule": _rule(case["rule"], f"{here}: case #{n}")}
                )
            default = given.pop("default", None)
            if default is not None and not isinstance(default, str):
                raise InputError(f"{here}: default must be text, not {default!r}")
            out["default"] = default
        else:
            value = given.pop("value", None)
            if not isinstance(value, str) or not value.strip():
                raise InputError(
                    f"{here}: a {kind} tag needs value = a field or aggregate, e.g. "
                    "value = 'sum(orders.amount, last 90 days)'"
                )
            _rule(f"{value} is null", f"{here}: value")
            out["value"] = value.strip()
    elif source == "segment":
        if kind != "flag":
            raise InputError(f"{here}: a segment tag is a flag, not {kind!r}")
        segment = given.pop("segment", None)
        if not isinstance(segment, str) or not segment:
            raise InputError(f"{here}: name the segment, e.g. segment = 'high_value'")
        out["segment"] = segment
    elif source == "interest":
        if kind != "category":
            raise InputError(f"{here}: an interest tag is a category, not {kind!r}")
        from kequn.tags.interests import InterestSpec

        out["interest"] = InterestSpec.parse(
            given.pop("interest", {}), f"{here}: interest"
        ).as_dict()
    elif source == "score":
        if kind != "score":
            raise InputError(f"{here}: a behaviour score tag has type 'score', not {kind!r}")
        from kequn.tags.score import ScoreSpec

        out["score"] = ScoreSpec.parse(given.pop("score", {}), f"{here}: score").as_dict()
    if given:
        key = next(iter(given))
        raise InputError(f"{here}: {key!r} does not apply to a {source} tag of type {kind!r}")
    return out


def parse_tags(data: object, where: str) -> list[TagDef]:
    """Tag definitions from loaded TOML data (``{"tags": [{...}, ...]}``)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("tags"), list):
        raise InputError(f"{where}: expected a list named 'tags' (TOML: [[tags]] tables)")
    extra = sorted(set(data) - {"tags"})
    if extra:
        raise InputError(f"{where}: unknown top-level key {extra[0]!r}; only 'tags' is read")
    out: list[TagDef] = []
    seen: set[str] = set()
    for n, item in enumerate(data["tags"], start=1):
        here = f"{where}: tag #{n}"
        if not isinstance(item, Mapping):
            raise InputError(f"{here}: expected a table with name, type and source, not {item!r}")
        unknown = [k for k in item if k not in _KEYS]
        if unknown:
            raise InputError(
                f"{here}: unknown key {unknown[0]!r}" + (closest(str(unknown[0]), _KEYS) or "")
            )
        name = _text(item, "name", here)
        if not _NAME.match(name):
            raise InputError(
                f"{here}: tag name {name!r}: use letters, digits and _ (not first a digit), so "
                "that rules can name it as tag.NAME"
            )
        here = f"{where}: tag {name!r}"
        if name in seen:
            raise InputError(f"{here}: the name is used twice")
        seen.add(name)
        source = _choice(item, "source", SOURCES, here, "rule")
        default_type = {"interest": "category", "score": "score"}.get(source, "flag")
        kind = _choice(item, "type", TYPES, here, default_type)
        default_layer = {"model": "predicted", "interest": "behaviour", "score": "behaviour"}
        layer = _choice(item, "layer", LAYERS, here, default_layer.get(source, "base"))
        schedule = _text(item, "schedule", here)
        if schedule:
            parse_schedule(schedule, here)
        tag = TagDef(
            name=name,
            type=kind,
            source=source,
            layer=layer,
            label_zh=_text(item, "label_zh", here),
            label_en=_text(item, "label_en", here),
            owner=_text(item, "owner", here),
            description=_text(item, "description", here),
            schedule=schedule,
        )
        definition = _check_definition(tag, item, here)
        out.append(TagDef(**{**tag.__dict__, "definition": definition}))
    return out


def load_tags(path: str | os.PathLike) -> list[TagDef]:
    """Read and validate a tag file (TOML with ``[[tags]]`` tables)."""
    file = Path(path)
    if not file.is_file():
        raise SourceNotFound(f"tag file {str(file)!r} does not exist")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{str(file)!r} is not valid TOML: {exc}") from exc
    return parse_tags(data, str(file))


def _now(ws: Workspace) -> datetime:
    from kequn.act.outbox import workspace_now

    return workspace_now(ws)


def apply_tags(
    workspace: WorkspaceLike, tags: Sequence[TagDef], now: datetime | None = None
) -> int:
    """Store definitions (a tag of the same name is replaced); values change on refresh."""
    import pyarrow as pa

    from kequn.workspace import opened

    with opened(workspace) as ws:
        when = now or _now(ws)
        rows = [
            {
                **{k: v for k, v in t.as_dict().items() if k != "definition"},
                "definition": json.dumps(dict(t.definition), ensure_ascii=False),
                "updated_at": when,
            }
            for t in tags
        ]
        if not rows:
            return 0
        with ws.store.transaction():
            ws.store.delete("tags", name=[t.name for t in tags])
            ws.store.append("tags", pa.Table.from_pylist(rows))
        return len(rows)


def stored_tags(workspace: WorkspaceLike, names: Sequence[str] | None = None) -> list[TagDef]:
    """The catalogue (or the named tags, in that order); an unknown name is an error."""
    from kequn.workspace import opened

    with opened(workspace) as ws:
        rows = ws.table("tags").order_by("name").to_pyarrow().to_pylist()
    found = {
        r["name"]: TagDef(
            name=r["name"],
            type=r["type"],
            source=r["source"],
            layer=r["layer"] or "base",
            label_zh=r["label_zh"] or "",
            label_en=r["label_en"] or "",
            owner=r["owner"] or "",
            description=r["description"] or "",
            schedule=r["schedule"] or "",
            definition=json.loads(r["definition"] or "{}"),
        )
        for r in rows
    }
    if names is None:
        return list(found.values())
    out = []
    for name in names:
        if name not in found:
            hint = closest(name, found) or "; `kequn tag list` shows the tags"
            raise InputError(f"unknown tag {name!r}{hint}")
        out.append(found[name])
    return out


def tag_from_segment(
    workspace: WorkspaceLike,
    segment: str,
    *,
    name: str | None = None,
    layer: str = "base",
    schedule: str = "",
    now: datetime | None = None,
) -> TagDef:
    """Save a stored segment as a flag tag (``in segment 'NAME'`` at each refresh)."""
    from kequn.segments.engine import segment_definition
    from kequn.workspace import opened

    with opened(workspace) as ws:
        seg = segment_definition(ws, segment)
        data = {
            "tags": [
                {
                    "name": name or seg.name,
                    "type": "flag",
                    "source": "segment",
                    "layer": layer,
                    "label_zh": seg.label_zh,
                    "label_en": seg.label_en,
                    "owner": seg.owner,
                    "description": seg.description or f"members of segment {seg.name!r}",
                    "schedule": schedule,
                    "segment": seg.name,
                }
            ]
        }
        (tag,) = parse_tags(data, f"segment {segment!r}")
        apply_tags(ws, [tag], now)
        return tag


def list_tags(workspace: WorkspaceLike) -> list[dict[str, Any]]:
    """The catalogue with each tag's last refresh (as_of, when computed, customers with a value)."""
    from kequn.workspace import opened

    with opened(workspace) as ws:
        runs = ws.table("tag_runs")
        last = runs.mutate(_r=_latest_first(runs.tag, runs.as_of, runs.computed_at)).filter(
            lambda t: t._r == 0
        )
        by_tag = {r["tag"]: r for r in last.to_pyarrow().to_pylist()}
        out = []
        for tag in stored_tags(ws):
            run = by_tag.get(tag.name)
            out.append(
                {
                    **tag.as_dict(),
                    "last_as_of": run and run["as_of"],
                    "last_refresh": run and run["computed_at"],
                    "valued": run and run["valued"],
                }
            )
        return out


def _latest_first(key, as_of, computed_at):
    import ibis

    return ibis.row_number().over(group_by=key, order_by=[ibis.desc(as_of), ibis.desc(computed_at)])


def tag_fields(ws: Workspace, has_values: bool) -> tuple[dict[str, str], frozenset[str]]:
    """(catalogued tag → type, tags with stored values) for the segment checker."""
    existing = set(ws.con.list_tables())
    if "tags" not in existing:
        return {}, frozenset()
    rows = ws.table("tags").select("name", "type").to_pyarrow().to_pylist()
    types = {r["name"]: r["type"] for r in rows}
    if not types or not has_values or "tag_values" not in existing:
        return types, frozenset()
    v = ws.table("tag_values")
    valued = v.select("tag").distinct().to_pyarrow().column(0).to_pylist()
    return types, frozenset(valued)
