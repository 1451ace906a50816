"""Segment definitions: a rule plus its metadata, read from TOML (or YAML) files.

A file lists segments under ``segments`` (TOML: ``[[segments]]`` tables; YAML: a list)::

    [[segments]]
    name = "high_value"
    label_zh = "高价值客户"
    label_en = "High-value customers"
    owner = "crm-team"
    tags = ["value", "retention"]
    description = "Spent over ¥1,000 in the last 12 months."
    schedule = "1d"          # refresh daily; or a cron expression such as "0 6 * * *"
    rule = "sum(orders.amount, last 12 months) > 1000"

TOML is read with the standard library's ``tomllib``; YAML needs PyYAML installed (the
error says so). Every definition is validated here — keys, types, duplicate names — and
every rule parsed, before anything is evaluated.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kequn.errors import InputError, SourceNotFound
from kequn.segments.errors import RuleError, closest
from kequn.segments.parser import parse_rule

__all__ = ["Segment", "load_segments", "parse_segments"]

_KEYS = ("name", "label_zh", "label_en", "description", "owner", "tags", "rule", "schedule")
_MAX_NAME = 100


@dataclass(frozen=True)
class Segment:
    """A named rule with bilingual labels, a description, an owner, tags and a refresh
    schedule (``""``: refreshed only when applied; see :mod:`kequn.segments.schedule`)."""

    name: str
    rule: str
    label_zh: str = ""
    label_en: str = ""
    description: str = ""
    owner: str = ""
    tags: tuple[str, ...] = field(default=())
    schedule: str = ""

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.schedule:
            from kequn.segments.schedule import parse_schedule

            parse_schedule(self.schedule, f"segment {self.name!r}: schedule")
        try:
            parse_rule(self.rule)
        except RuleError as exc:
            raise exc.in_segment(self.name) from None

    @property
    def label(self) -> str:
        return self.label_zh or self.label_en or self.name


def check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"segment name {name!r}: give a non-empty text name")
    if name != name.strip() or len(name) > _MAX_NAME or any(ch < " " for ch in name):
        raise InputError(
            f"segment name {name!r}: no leading/trailing spaces or control characters, "
            f"at most {_MAX_NAME} characters"
        )
    return name


def parse_segments(data: object, where: str) -> list[Segment]:
    """Definitions from already-loaded data (``{"segments": [{...}, ...]}``)."""
    if not isinstance(data, Mapping) or "segments" not in data:
        raise InputError(f"{where}: expected a list named 'segments' (TOML: [[segments]] tables)")
    extra = sorted(set(data) - {"segments"})
    if extra:
        raise InputError(f"{where}: unknown top-level key {extra[0]!r}; only 'segments' is read")
    items = data["segments"]
    if not isinstance(items, list):
        raise InputError(f"{where}: 'segments' must be a list of tables")
    out: list[Segment] = []
    seen: set[str] = set()
    for n, item in enumerate(items, start=1):
        here = f"{where}: segment #{n}"
        if not isinstance(item, Mapping):
            raise InputError(f"{here}: expected a table with name and rule, got {item!r}")
        unknown = [k for k in item if k not in _KEYS]
        if unknown:
            raise InputError(
                f"{here}: unknown key {unknown[0]!r}; allowed: {', '.join(_KEYS)}"
                + closest(str(unknown[0]), _KEYS)
            )
        for key in ("name", "rule"):
            if key not in item:
                raise InputError(f"{here}: {key!r} is missing")
        for key in ("name", "rule", "label_zh", "label_en", "description", "owner", "schedule"):
            if key in item and not isinstance(item[key], str):
                raise InputError(f"{here}: {key} must be text, not {item[key]!r}")
        tags = item.get("tags", [])
        if isinstance(tags, str):
            tags = [tags]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InputError(f"{here}: tags must be a list of text, not {tags!r}")
        name = item["name"]
        if name in seen:
            raise InputError(f"{here}: the name {name!r} is used twice")
        seen.add(name)
        out.append(
            Segment(
                name=name,
                rule=item["rule"].strip(),
                label_zh=item.get("label_zh", ""),
                label_en=item.get("label_en", ""),
                description=item.get("description", ""),
                owner=item.get("owner", ""),
                tags=tuple(tags),
                schedule=item.get("schedule", "").strip(),
            )
        )
    return out


def load_segments(path: str | Path) -> list[Segment]:
    """Read and validate a segment file (``.toml``, or ``.yaml`` / ``.yml`` with PyYAML)."""
    file = Path(path)
    if not file.is_file():
        raise SourceNotFound(f"segment file {str(file)!r} does not exist")
    text = file.read_text(encoding="utf-8-sig")
    suffix = file.suffix.lower()
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{str(file)!r} is not valid TOML: {exc}") from exc
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise InputError(
                f"{str(file)!r}: reading YAML needs PyYAML (pip install pyyaml); "
                "or write the segments as TOML"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"{str(file)!r} is not valid YAML: {exc}") from exc
    else:
        raise InputError(f"{str(file)!r}: segment files are .toml, .yaml or .yml")
    return parse_segments(data, str(file))


def by_name(segments: Iterable[Segment]) -> dict[str, Segment]:
    return {s.name: s for s in segments}
