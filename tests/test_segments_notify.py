"""Batch ``segment apply`` fires triggers for entries and exits, after a segment's baseline."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from kequn.act.triggers import Trigger, apply_triggers
from kequn.cli import app


def test_apply_queues_deliveries_after_the_first_evaluation(ws, write, tmp_path):
    customers = write("c.csv", "customer_id,city\nC1,北京\nC2,上海\nC3,北京\n")
    orders = write(
        "o.csv",
        "order_id,customer_id,order_date,amount\n"
        "o1,C1,2025-01-05,10\no2,C2,2025-03-05,10\no3,C3,2025-03-06,10\n",
    )
    seg = write(
        "s.toml",
        '[[segments]]\nname = "recent"\nrule = "count(orders, last 30 days) > 0"\n',
    )
    apply_triggers(
        ws,
        [
            Trigger("in", "recent", "enter", "file", {"path": str(tmp_path / "in.jsonl")}),
            Trigger("out", "recent", "exit", "file", {"path": str(tmp_path / "out.jsonl")}),
        ],
    )
    ws.close()
    run = CliRunner().invoke
    w = ["-w", str(ws.path)]
    assert run(app, ["import", "customers", str(customers), *w]).exit_code == 0
    assert run(app, ["import", "orders", str(orders), *w]).exit_code == 0
    first = run(app, ["segment", "apply", str(seg), "--as-of", "2025-01-31", "--json", *w])
    assert json.loads(first.stdout)["segments"][0]["entered"] == 1  # C1: the baseline
    later = run(app, ["segment", "apply", str(seg), "--as-of", "2025-03-31", "--json", *w])
    assert json.loads(later.stdout)["segments"][0] == {
        "segment": "recent",
        "size": 2,
        "entered": 2,
        "exited": 1,
    }
    listed = run(app, ["deliveries", "--json", *w])
    rows = json.loads(listed.stdout)
    assert sorted((d["trigger"], d["customer_id"], d["status"]) for d in rows) == [
        ("in", "C2", "pending"),
        ("in", "C3", "pending"),
        ("out", "C1", "pending"),
    ]
    # --no-triggers records the movement but queues nothing
    quiet = run(app, ["segment", "apply", str(seg), "--as-of", "2025-06-30", "--no-triggers", *w])
    assert quiet.exit_code == 0, quiet.output
    assert len(json.loads(run(app, ["deliveries", "--json", *w]).stdout)) == 3
