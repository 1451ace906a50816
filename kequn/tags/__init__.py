"""Tags (标签): stored values per customer in three layers — base, behaviour, predicted.

The catalogue (:mod:`kequn.tags.catalog`) names and types each tag and says where its values
come from; :mod:`kequn.tags.values` refreshes, imports and reads values (stored as changes,
so every refresh is history) and measures tag health; :mod:`kequn.tags.interests` computes
decayed interest weights and :mod:`kequn.tags.score` the behaviour score, both in SQL.
Segment rules read tags as ``tag.NAME``. See docs/tags.md.
"""

from __future__ import annotations

from kequn.tags.catalog import (
    LAYERS,
    SOURCES,
    TYPES,
    TagDef,
    apply_tags,
    list_tags,
    load_tags,
    parse_schedule,
    parse_tags,
    stored_tags,
    tag_from_segment,
)
from kequn.tags.interests import InterestSpec, interest_values, interest_weights, update_interests
from kequn.tags.score import LEVELS, ScoreSpec, behaviour_scores, score_summary
from kequn.tags.values import (
    due_tag_refreshes,
    import_tag_values,
    latest_values,
    refresh_tags,
    tag_health,
    tag_values,
)

__all__ = [
    "LAYERS",
    "LEVELS",
    "SOURCES",
    "TYPES",
    "InterestSpec",
    "ScoreSpec",
    "TagDef",
    "apply_tags",
    "behaviour_scores",
    "due_tag_refreshes",
    "import_tag_values",
    "interest_values",
    "interest_weights",
    "latest_values",
    "list_tags",
    "load_tags",
    "parse_schedule",
    "parse_tags",
    "refresh_tags",
    "score_summary",
    "stored_tags",
    "tag_from_segment",
    "tag_health",
    "tag_values",
    "update_interests",
]
