"""Lifecycle stages as rule fields: the latest stored run at or before as_of."""

from __future__ import annotations

import pytest

from kequn import RuleError
from kequn.ingest import import_files
from kequn.insight.lifecycle import lifecycle, save_lifecycle
from kequn.segments import evaluate


def test_stages_are_rule_fields(ws, write):
    orders = write(
        "o.csv",
        "customer_id,date,amount\n"
        "a,2024-06-20,10\n"  # bought 10 days before as_of: new
        "b,2023-01-01,10\n"
        "b,2023-02-01,10\n"  # nothing since early 2023: churned
        "c,2024-05-01,10\n"
        "c,2024-06-01,10\n",  # two purchases, the last one recent: active
    )
    import_files(ws, "orders", [orders])
    with pytest.raises(RuleError, match="kequn lifecycle"):
        evaluate(ws, "status_stage = 'active'", "2024-06-30")
    save_lifecycle(ws, "2024-06-30")
    stages = lifecycle(ws, "2024-06-30").set_index("customer_id")["status_stage"].to_dict()
    for stage in set(stages.values()):
        expected = sorted(c for c, s in stages.items() if s == stage)
        assert evaluate(ws, f"status_stage = '{stage}'", "2024-06-30") == expected
    assert evaluate(ws, "status_stage = 'churned'", "2024-06-30") == ["b"]
    # before the stored run the field is missing
    assert evaluate(ws, "status_stage is null", "2024-06-29") == ["a", "b", "c"]
