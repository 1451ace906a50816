"""Migration between evaluations: the transition matrix read off the memberships history.

Two segments over the fixture workspace, applied at 2024-06-30, 2024-07-05 and 2024-07-25:

* ``recent`` — bought in the last 30 days: {c01, c02, c04, c09} on 06-30, {c01, c02, c04}
  on 07-05, {c01, c04} on 07-25;
* ``dormant`` — no purchase for 40 days or more: {c03, c05} on 06-30, {c02, c03, c05, c08,
  c09} on 07-25 (c08's last order is 2024-05-31, c09's 2024-06-01, c02's 2024-06-10).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from test_segments_cli import APP, runner
from test_segments_fixtures import copy_workspace

from kequn.errors import InputError
from kequn.segments import Segment, apply, migration

SEGMENTS = [
    Segment(name="recent", rule="count(orders, last 30 days) >= 1"),
    Segment(name="dormant", rule="days_since_last_order >= 40"),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("migration")
    ws = copy_workspace(tmp_path_factory, base)
    for day in ("2024-06-30", "2024-07-05", "2024-07-25"):
        apply(ws, SEGMENTS, day)
    ws.close()
    return base


@pytest.fixture(scope="module")
def ws(folder: Path):
    from kequn import open_workspace

    workspace = open_workspace(folder / "ws")
    yield workspace
    workspace.close()


def moves(data: dict) -> dict[tuple, int]:
    return {(m["from"], m["to"]): m["customers"] for m in data["moves"]}


def test_matrix_between_two_runs(ws) -> None:
    data = migration(ws, "2024-06-30", "2024-07-25")
    assert data["from"] == datetime(2024, 6, 30)
    assert data["to"] == datetime(2024, 7, 25)
    assert data["segments"] == ["dormant", "recent"]  # stored names, sorted
    assert moves(data) == {
        ("recent", "recent"): 2,  # c01, c04 stayed
        ("recent", "dormant"): 2,  # c02, c09 went quiet
        ("dormant", "dormant"): 2,  # c03, c05
        (None, "dormant"): 1,  # c08 was in neither
    }
    assert data["sizes"] == {"recent": {"from": 4, "to": 2}, "dormant": {"from": 2, "to": 5}}


def test_chosen_segments_and_exits_to_none(ws) -> None:
    data = migration(ws, "2024-06-30", "2024-07-25", ["recent"])
    assert moves(data) == {("recent", "recent"): 2, ("recent", None): 2}
    data = migration(ws, "2024-06-30", "2024-07-05", ["recent"])
    assert moves(data) == {("recent", "recent"): 3, ("recent", None): 1}  # c09 left


def test_a_time_between_runs_reads_the_run_before(ws) -> None:
    assert moves(migration(ws, "2024-07-01", "2024-07-25")) == moves(
        migration(ws, "2024-06-30", "2024-07-25")
    )
    # before the first run nobody was in any segment: every member entered from none
    data = migration(ws, "2024-01-01", "2024-06-30")
    assert moves(data) == {(None, "dormant"): 2, (None, "recent"): 4}
    # the same time twice: everyone stays
    data = migration(ws, "2024-07-25", "2024-07-25")
    assert moves(data) == {("dormant", "dormant"): 5, ("recent", "recent"): 2}


def test_bad_arguments(ws) -> None:
    with pytest.raises(InputError, match="before --from"):
        migration(ws, "2024-07-25", "2024-06-30")
    with pytest.raises(InputError, match="unknown segment 'recnt'; did you mean 'recent'"):
        migration(ws, "2024-06-30", "2024-07-25", ["recnt"])
    with pytest.raises(InputError, match="not a date"):
        migration(ws, "yesterday", "2024-07-25")


def test_cli(folder: Path) -> None:
    args = ["segment", "migration", "--from", "2024-06-30", "--to", "2024-07-25"]
    result = runner.invoke(APP, [*args, "-w", str(folder / "ws")])
    assert result.exit_code == 0, result.output
    assert "(none)" in result.stdout and "dormant" in result.stdout
    result = runner.invoke(APP, [*args, "--segments", "recent", "--json", "-w", str(folder / "ws")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["moves"] == [
        {"from": "recent", "to": "recent", "customers": 2},
        {"from": "recent", "to": None, "customers": 2},
    ]
    result = runner.invoke(APP, [*args, "--segments", "nope", "-w", str(folder / "ws")])
    assert result.exit_code != 0
    assert "unknown segment 'nope'" in result.output
