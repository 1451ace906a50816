"""The engine: segment files, apply and membership history, list/show/overlap/export."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_segments_fixtures import copy_workspace

from kequn.errors import InputError, SourceNotFound
from kequn.segments import (
    RuleError,
    Segment,
    apply,
    evaluate,
    export_segment,
    history,
    list_segments,
    load_segments,
    overlap,
    show,
)

SEGMENT_FILE = """\
[[segments]]
name = "beijing"
label_zh = "北京客户"
label_en = "Beijing customers"
owner = "crm"
tags = ["geo"]
rule = "city = '北京'"

[[segments]]
name = "recent_buyers"
label_zh = "近30天购买"
label_en = "Bought in the last 30 days"
description = "At least one purchase (returns excluded) in the last 30 days."
rule = "count(orders, last 30 days) >= 1"

[[segments]]
name = "bj_recent"
rule = '''
in segment 'beijing'
  and in segment 'recent_buyers'
'''
"""


@pytest.fixture
def ws(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path):
    workspace = copy_workspace(tmp_path_factory, tmp_path)
    yield workspace
    workspace.close()


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory):
    """A workspace with the segment file applied at 2024-06-30 and 2024-07-05 (read-only)."""
    folder = tmp_path_factory.mktemp("applied")
    (folder / "segments.toml").write_text(SEGMENT_FILE, encoding="utf-8")
    ws = copy_workspace(tmp_path_factory, folder)
    apply(ws, folder / "segments.toml", "2024-06-30")
    apply(ws, folder / "segments.toml", "2024-07-05")
    yield ws
    ws.close()


@pytest.fixture
def seg_file(tmp_path: Path) -> Path:
    path = tmp_path / "segments.toml"
    path.write_text(SEGMENT_FILE, encoding="utf-8")
    return path


def memberships(ws) -> list[tuple]:
    t = ws.table("memberships").order_by(["segment", "customer_id", "entered_at"])
    return [
        (r["segment"], r["customer_id"], r["entered_at"], r["exited_at"])
        for r in t.to_pyarrow().to_pylist()
    ]


JUNE, JULY, LATE = datetime(2024, 6, 30), datetime(2024, 7, 5), datetime(2024, 7, 25)


def test_history_across_runs(ws, seg_file: Path) -> None:
    first = apply(ws, seg_file, "2024-06-30")
    assert [(r.segment, r.size, r.entered, r.exited) for r in first.runs] == [
        ("beijing", 3, 3, 0),
        ("recent_buyers", 4, 4, 0),
        ("bj_recent", 1, 1, 0),
    ]
    # 2024-07-05: the window is 06-06 … 07-05; c09's order of 06-01 has dropped out
    second = apply(ws, seg_file, "2024-07-05")
    assert [(r.segment, r.size, r.entered, r.exited) for r in second.runs] == [
        ("beijing", 3, 0, 0),
        ("recent_buyers", 3, 0, 1),
        ("bj_recent", 1, 0, 0),
    ]
    # 2024-07-25: 06-26 … 07-25; c02 (06-10) leaves, c01 (07-01) and c04 (06-29) stay
    third = apply(ws, seg_file, "2024-07-25")
    assert [(r.segment, r.size, r.entered, r.exited) for r in third.runs] == [
        ("beijing", 3, 0, 0),
        ("recent_buyers", 2, 0, 1),
        ("bj_recent", 1, 0, 0),
    ]
    assert memberships(ws) == [
        ("beijing", "c01", JUNE, None),
        ("beijing", "c03", JUNE, None),
        ("beijing", "c07", JUNE, None),
        ("bj_recent", "c01", JUNE, None),
        ("recent_buyers", "c01", JUNE, None),
        ("recent_buyers", "c02", JUNE, LATE),
        ("recent_buyers", "c04", JUNE, None),
        ("recent_buyers", "c09", JUNE, JULY),
    ]
    assert history(ws, "recent_buyers") == [
        {"as_of": JUNE, "size": 4, "entered": 4, "exited": 0},
        {"as_of": JULY, "size": 3, "entered": 0, "exited": 1},
        {"as_of": LATE, "size": 2, "entered": 0, "exited": 1},
    ]


def test_reentry_opens_a_new_interval(ws, tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[[segments]]\nname = "x"\nrule = "count(orders, last 3 days) > 0"\n')
    apply(ws, path, "2024-06-26")  # c01 (06-25)
    apply(ws, path, "2024-06-29")  # c04 (06-29); c01 left
    apply(ws, path, "2024-07-01")  # c01 again (07-01), c04 still
    assert memberships(ws) == [
        ("x", "c01", datetime(2024, 6, 26), datetime(2024, 6, 29)),
        ("x", "c01", datetime(2024, 7, 1), None),
        ("x", "c04", datetime(2024, 6, 29), None),
    ]


def test_rerun_at_the_same_as_of_replaces_the_run(ws, seg_file: Path, tmp_path: Path) -> None:
    apply(ws, seg_file, "2024-06-30")
    apply(ws, seg_file, "2024-06-30")
    assert len(history(ws, "beijing")) == 1
    assert history(ws, "beijing")[0]["entered"] == 3
    # a changed rule at the same as_of: c07 never really entered, so no zero-length interval
    changed = tmp_path / "changed.toml"
    changed.write_text(
        "[[segments]]\nname = \"beijing\"\nrule = \"city = '北京' and channel = 'app'\"\n",
        encoding="utf-8",
    )
    report = apply(ws, changed, "2024-06-30")
    assert (report.runs[0].size, report.runs[0].entered, report.runs[0].exited) == (2, 2, 0)
    assert [m[1] for m in memberships(ws) if m[0] == "beijing"] == ["c01", "c03"]


def test_history_cannot_go_backwards(ws, seg_file: Path) -> None:
    apply(ws, seg_file, "2024-07-10")
    with pytest.raises(InputError, match="out of order"):
        apply(ws, seg_file, "2024-06-30")


def test_a_bad_rule_changes_nothing(ws, seg_file: Path) -> None:
    apply(ws, seg_file, "2024-06-30")
    before = memberships(ws)
    bad = [Segment(name="beijing", rule="city = '北京'"), Segment(name="z", rule="ctiy = 'x'")]
    with pytest.raises(RuleError, match="in segment 'z'"):
        apply(ws, bad, "2024-07-10")
    assert memberships(ws) == before
    assert len(history(ws, "beijing")) == 1


def test_stored_segments_are_found_by_name(applied) -> None:
    ws = applied
    assert evaluate(ws, "bj_recent", "2024-06-30") == ["c01"]
    assert evaluate(ws, "in segment 'beijing' and gender = '女'", "2024-06-30") == ["c03"]


def test_list_show_overlap(applied) -> None:
    ws = applied
    rows = {r["name"]: r for r in list_segments(ws)}
    assert rows["recent_buyers"]["size"] == 3
    assert rows["recent_buyers"]["previous"] == 4
    assert rows["recent_buyers"]["change"] == -1
    assert rows["beijing"]["tags"] == ["geo"]
    data = show(ws, "beijing", sample=2)
    assert data["size"] == 3 and data["share"] == pytest.approx(0.3)
    assert [r["customer_id"] for r in data["sample"]] == ["c01", "c03"]
    assert data["breakdown"]["channel"] == [
        {"value": "app", "customers": 2},
        {"value": "web", "customers": 1},
    ]
    pairs = {(p["a"], p["b"]): p for p in overlap(ws, ["beijing", "recent_buyers"])}
    p = pairs[("beijing", "recent_buyers")]
    # beijing {c01, c03, c07}, recent {c01, c02, c04}: one in both, five in either
    assert (p["size_a"], p["size_b"], p["both"]) == (3, 3, 1)
    assert p["jaccard"] == pytest.approx(1 / 5)
    assert len(overlap(ws)) == 3
    with pytest.raises(InputError, match="did you mean 'beijing'"):
        show(ws, "beijng")


@pytest.mark.parametrize("suffix", [".csv", ".xlsx", ".parquet", ".json"])
def test_export(applied, tmp_path: Path, suffix: str) -> None:
    ws = applied
    out = tmp_path / f"beijing{suffix}"
    assert export_segment(ws, "beijing", out, columns=["name", "city"]) == 3
    if suffix == ".csv":
        text = out.read_text(encoding="utf-8-sig")
        assert text.splitlines()[:2] == ["customer_id,name,city", "c01,张伟,北京"]
    elif suffix == ".json":
        assert json.loads(out.read_text(encoding="utf-8"))[0] == {
            "customer_id": "c01",
            "name": "张伟",
            "city": "北京",
        }
    elif suffix == ".parquet":
        assert pq.read_table(out).column("name").to_pylist() == ["张伟", "王芳", "刘洋"]
    else:
        import openpyxl

        sheet = openpyxl.load_workbook(out).active
        assert [c.value for c in sheet[2]] == ["c01", "张伟", "北京"]


def test_export_fresh_and_errors(applied, tmp_path: Path) -> None:
    ws = applied
    out = tmp_path / "r.csv"
    assert export_segment(ws, "recent_buyers", out, as_of="2024-07-25") == 2
    with pytest.raises(InputError, match="did you mean 'city'"):
        export_segment(ws, "beijing", out, columns=["ctiy"])
    with pytest.raises(InputError, match="unknown file type '.txt'"):
        export_segment(ws, "beijing", tmp_path / "x.txt")


BAD_FILES = [
    ('[[segments]]\nname = "a"\n', "'rule' is missing"),
    ('[[segments]]\nname = "a"\nrule = "city = 1"\nlabel = "x"\n', "unknown key 'label'"),
    ('[[segments]]\nname = "a"\nrule = "true"\n[[segments]]\nname = "a"\nrule = "true"\n', "twice"),
    ('[[segments]]\nname = "a"\nrule = "city = "\n', "in segment 'a'"),
    ('[[segments]]\nname = " a"\nrule = "true"\n', "leading/trailing"),
    ('[[segments]]\nname = "a"\nrule = "true"\ntags = [1]\n', "tags must be a list of text"),
    ("[segment]\nname = 1\n", "expected a list named 'segments'"),
    ("segments = [", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_bad_segment_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        load_segments(path)


def test_segment_file_types(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFound):
        load_segments(tmp_path / "missing.toml")
    other = tmp_path / "s.json"
    other.write_text("{}")
    with pytest.raises(InputError, match=r"\.toml, \.yaml or \.yml"):
        load_segments(other)


def test_file_metadata(seg_file: Path) -> None:
    segs = load_segments(seg_file)
    assert [s.name for s in segs] == ["beijing", "recent_buyers", "bj_recent"]
    assert segs[0].label_zh == "北京客户" and segs[0].tags == ("geo",)
    assert segs[2].rule.startswith("in segment 'beijing'")
