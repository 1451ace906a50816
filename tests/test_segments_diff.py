"""Dry runs: a file that adds, changes and drops rules, with exact enter/leave sets worked out
by hand from the fixture, trigger counts checked against a real apply, and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_segments_fixtures import copy_workspace
from typer.testing import CliRunner

from kequn.act import enqueue_changes
from kequn.act.triggers import apply_triggers
from kequn.errors import InputError, RuleError
from kequn.segments import apply
from kequn.segments.diff import diff_segments
from kequn.store import TABLES

BEFORE = """\
[[segments]]
name = "beijing"
rule = "city = '北京'"

[[segments]]
name = "recent_buyers"
rule = "count(orders, last 30 days) >= 1"

[[segments]]
name = "bj_women"
rule = "city = '北京' and gender = '女'"

[[segments]]
name = "women"
rule = "gender = '女'"

[[segments]]
name = "recent30"
label_en = "Bought lately"
rule = "count(orders, last 30 days) >= 1"
"""

AFTER = """\
[[segments]]
name = "beijing"                                     # a condition added
rule = "city = '北京' and channel = 'app'"

[[segments]]
name = "recent_buyers"                               # a wider window
rule = "count(orders, last 60 days) >= 1"

[[segments]]
name = "bj_women"                                    # a condition removed
rule = "gender = '女'"

[[segments]]
name = "recent30"                                    # same rule, new label
label_en = "Bought in the last 30 days"
rule = '''
count(orders, last 30 days)   # layout and comments do not change a rule
  >= 1
'''

[[segments]]
name = "big_spenders"                                # new
rule = "sum(orders.amount) > 1000"
"""

TRIGGERS = """\
[[trigger]]
name = "bj-exit"
segment = "beijing"
on = "exit"
channel = "file"
path = "out/bj.jsonl"

[[trigger]]
name = "recent-enter"
segment = "recent_buyers"
on = "enter"
channel = "file"
path = "out/recent.jsonl"

[[trigger]]
name = "women-enter"
segment = "bj_women"
on = "enter"
channel = "file"
path = "out/women.jsonl"

[trigger.experiment]
arms = { holdout = 0.5, a = 0.5 }

[[trigger]]
name = "recent30-exit"
segment = "recent30"
on = "exit"
channel = "file"
path = "out/r30.jsonl"
cap = "1/7d"

[[trigger]]
name = "big-enter"
segment = "big_spenders"
on = "enter"
channel = "file"
path = "out/big.jsonl"

[[trigger]]
name = "women-all"
segment = "women"
on = "enter"
channel = "file"
path = "out/all.jsonl"
"""

# at 2024-07-05 (last 30 days: 06-06 … 07-05; last 60 days: 05-07 … 07-05)
EXPECTED = {
    # segment: (status, changes, before, after, entering, leaving)
    "beijing": ("changed", ["rule"], 3, 2, [], ["c07"]),  # c07 buys on the web
    "recent_buyers": ("changed", ["rule"], 4, 5, ["c08"], []),  # c08's order of 05-31
    "bj_women": ("changed", ["rule"], 1, 5, ["c02", "c05", "c06", "c09"], []),
    "recent30": ("unchanged", ["label_en"], 4, 3, [], ["c09"]),  # 06-01 has dropped out
    "big_spenders": ("new", [], 0, 2, ["c01", "c03"], []),  # everyone selected enters
}


@pytest.fixture
def ws(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path):
    workspace = copy_workspace(tmp_path_factory, tmp_path)
    (tmp_path / "before.toml").write_text(BEFORE, encoding="utf-8")
    (tmp_path / "after.toml").write_text(AFTER, encoding="utf-8")
    (tmp_path / "triggers.toml").write_text(TRIGGERS, encoding="utf-8")
    apply(workspace, tmp_path / "before.toml", "2024-06-30")
    apply_triggers(workspace, tmp_path / "triggers.toml")
    yield workspace
    workspace.close()


def snapshot(ws) -> dict[str, list]:
    """Every row of every table (and the list of tables)."""
    out: dict[str, list] = {"_tables": sorted(ws.con.list_tables())}
    for name in TABLES:
        rows = ws.store.duck.execute(f'SELECT * FROM "{name}"').fetchall()
        out[name] = sorted(rows, key=repr)
    return out


def test_enter_and_leave_sets_are_exact(ws, tmp_path: Path) -> None:
    data = diff_segments(ws, tmp_path / "after.toml", "2024-07-05", show=None)
    got = {
        r["segment"]: (
            r["status"],
            r["changes"],
            r["before"],
            r["after"],
            r["entering"],
            r["leaving"],
        )
        for r in data["segments"]
    }
    assert got == EXPECTED
    for r in data["segments"]:
        assert (r["enter"], r["leave"]) == (len(r["entering"]), len(r["leaving"]))
    assert data["absent"] == ["women"]
    rows = {r["segment"]: r for r in data["segments"]}
    assert rows["beijing"]["previous_rule"] == "city = '北京'"
    assert rows["big_spenders"]["previous_rule"] is None
    assert rows["big_spenders"]["evaluated"] is False


def test_samples_are_the_first_ids(ws, tmp_path: Path) -> None:
    data = diff_segments(ws, tmp_path / "after.toml", "2024-07-05", show=2)
    rows = {r["segment"]: r for r in data["segments"]}
    assert rows["bj_women"]["entering"] == ["c02", "c05"]
    assert rows["bj_women"]["enter"] == 4
    none = diff_segments(ws, tmp_path / "after.toml", "2024-07-05", show=0)
    assert all(r["entering"] == [] and r["leaving"] == [] for r in none["segments"])


def test_nothing_is_written(ws, tmp_path: Path) -> None:
    before = snapshot(ws)
    diff_segments(ws, tmp_path / "after.toml", "2024-07-05")
    assert snapshot(ws) == before


def test_trigger_counts_match_a_real_apply(ws, tmp_path: Path) -> None:
    data = diff_segments(ws, tmp_path / "after.toml", "2024-07-05")
    predicted = {t["trigger"]: t for t in data["triggers"]}
    assert "women-all" not in predicted  # its segment is not in the file
    assert {k: (t["transitions"], t["baseline"]) for k, t in predicted.items()} == {
        "bj-exit": (1, False),
        "recent-enter": (1, False),
        "women-enter": (4, False),
        "recent30-exit": (1, False),
        "big-enter": (0, True),  # a first evaluation is a baseline: no messages
    }
    assert predicted["recent30-exit"]["cap"] == "1/7d"
    report = apply(ws, tmp_path / "after.toml", "2024-07-05", notify=enqueue_changes)
    runs = {r.segment: (r.entered, r.exited) for r in report.runs}
    assert runs == {r["segment"]: (r["enter"], r["leave"]) for r in data["segments"]}
    d = ws.table("deliveries")
    queued = d.group_by(["trigger", "status"]).aggregate(n=d.count()).to_pyarrow().to_pylist()
    sent: dict[str, int] = {}
    held: dict[str, int] = {}
    for r in queued:
        bucket = held if r["status"] == "holdout" else sent
        bucket[r["trigger"]] = bucket.get(r["trigger"], 0) + int(r["n"])
    for name, t in predicted.items():
        assert sent.get(name, 0) == t["messages"], name
        assert held.get(name, 0) == t["holdout"], name
    assert predicted["women-enter"]["holdout"] + predicted["women-enter"]["messages"] == 4


def test_refuses_what_apply_refuses(ws, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="apply would refuse it"):
        diff_segments(ws, tmp_path / "after.toml", "2024-06-01")
    bad = tmp_path / "bad.toml"
    bad.write_text('[[segments]]\nname = "x"\nrule = "ctiy = 1"\n', encoding="utf-8")
    with pytest.raises(RuleError, match="unknown field 'ctiy'"):
        diff_segments(ws, bad, "2024-07-05")


def test_cli_diff(ws, tmp_path: Path) -> None:
    from kequn.cli import app

    runner = CliRunner()
    args = ["segment", "diff", str(tmp_path / "after.toml"), "--as-of", "2024-07-05"]
    result = runner.invoke(app, [*args, "--show", "3", "-w", str(ws.path)])
    assert result.exit_code == 0, result.output
    assert "nothing was written" in result.stdout
    assert "+ bj_women: c02, c05, c06 … and 1 more" in result.stdout
    assert "- beijing: c07" in result.stdout
    assert "unchanged (label_en)" in result.stdout
    assert "stored but not in the file" in result.stdout and "women" in result.stdout
    result = runner.invoke(app, [*args, "--json", "-w", str(ws.path)])
    data = json.loads(result.stdout)
    assert data["as_of"] == "2024-07-05T00:00:00"
    assert [r["segment"] for r in data["segments"]] == list(EXPECTED)
