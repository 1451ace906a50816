"""Segments (客群): a rule language compiled to Ibis, and the engine that keeps history.

Modules, in the order data flows through them:

* :mod:`~kequn.segments.lexer`, :mod:`~kequn.segments.parser` — rule text → syntax tree
  (:mod:`~kequn.segments.nodes`, frozen dataclasses); :mod:`~kequn.segments.format` prints
  a tree back as text;
* :mod:`~kequn.segments.check` — names, types and ``in segment`` references, against the
  workspace's tables, before any query runs;
* :mod:`~kequn.segments.timing` — ``as_of`` and window bounds;
* :mod:`~kequn.segments.compile` — a checked tree → one Ibis expression;
* :mod:`~kequn.segments.definitions` — named segments with metadata, from TOML/YAML files;
* :mod:`~kequn.segments.engine` — evaluate, count, apply (membership history), overlap,
  migration between evaluations.

``docs/segments.md`` is the language reference and cookbook.
"""

from __future__ import annotations

from kequn.segments.definitions import Segment, load_segments, parse_segments
from kequn.segments.engine import (
    ApplyReport,
    SegmentRun,
    apply,
    count,
    current_members,
    evaluate,
    flags,
    history,
    list_segments,
    members,
    migration,
    overlap,
    segment_definition,
    show,
    stored_segments,
)
from kequn.segments.errors import RuleError
from kequn.segments.export import export_segment
from kequn.segments.format import format_rule
from kequn.segments.parser import parse_rule

__all__ = [
    "ApplyReport",
    "RuleError",
    "Segment",
    "SegmentRun",
    "apply",
    "count",
    "current_members",
    "evaluate",
    "export_segment",
    "flags",
    "format_rule",
    "history",
    "list_segments",
    "load_segments",
    "members",
    "migration",
    "overlap",
    "parse_rule",
    "parse_segments",
    "segment_definition",
    "show",
    "stored_segments",
]
