"""``kequn segment`` through the CLI runner: output, JSON, files and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from test_segments_engine import SEGMENT_FILE
from test_segments_fixtures import copy_workspace
from typer.testing import CliRunner

from kequn.cli.segment import register


def make_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """kequn (test app)."""

    register(app)
    return app


APP = make_app()
runner = CliRunner()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("cli")
    copy_workspace(tmp_path_factory, base).close()
    (base / "segments.toml").write_text(SEGMENT_FILE, encoding="utf-8")
    return base


def run(folder: Path, *args: str):
    return runner.invoke(APP, ["segment", *args, "-w", str(folder / "ws")])


def test_count(folder: Path) -> None:
    result = run(folder, "count", "city = '北京'", "--as-of", "2024-06-30")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "3"
    result = run(folder, "count", "count(订单, 最近 30 天) >= 1", "--as-of", "2024-06-30", "--json")
    assert json.loads(result.stdout)["count"] == 4


def test_rule_error_prints_the_caret_and_exits_2(folder: Path) -> None:
    result = run(folder, "count", "ctiy = '[b]北京'", "--as-of", "2024-06-30")
    assert result.exit_code == 2
    assert "unknown field 'ctiy'" in result.stderr
    assert "did you mean 'city'" in result.stderr
    assert "ctiy = '[b]北京'" in result.stderr  # brackets are shown, not read as markup
    assert "^^^^" in result.stderr


def test_bad_as_of_exits_2(folder: Path) -> None:
    result = run(folder, "count", "true", "--as-of", "someday")
    assert result.exit_code == 2
    assert "not a date" in result.stderr


def test_apply_list_show_overlap_history_export(folder: Path) -> None:
    seg = str(folder / "segments.toml")
    first = run(folder, "apply", seg, "--as-of", "2024-06-30", "--json")
    assert first.exit_code == 0, first.output
    sizes = {s["segment"]: s["size"] for s in json.loads(first.stdout)["segments"]}
    assert sizes == {"beijing": 3, "recent_buyers": 4, "bj_recent": 1}
    second = run(folder, "apply", seg, "--as-of", "2024-07-05")
    assert second.exit_code == 0 and "recent_buyers" in second.stdout

    listing = run(folder, "list", "--json")
    rows = {r["name"]: r for r in json.loads(listing.stdout)}
    assert rows["recent_buyers"]["change"] == -1
    table = run(folder, "list")
    assert "北京客户" in table.stdout

    show = run(folder, "show", "beijing")
    assert show.exit_code == 0 and "张伟" in show.stdout and "30.0%" in show.stdout

    pairs = json.loads(run(folder, "overlap", "beijing", "recent_buyers", "--json").stdout)
    assert pairs[0]["both"] == 1 and pairs[0]["jaccard"] == pytest.approx(0.2)
    assert "0.200" in run(folder, "overlap").stdout

    hist = json.loads(run(folder, "history", "recent_buyers", "--json").stdout)
    assert [h["size"] for h in hist] == [4, 3]
    assert "+4" in run(folder, "history", "recent_buyers").stdout

    out = folder / "bj.csv"
    exported = run(folder, "export", "beijing", "--out", str(out), "--columns", "name,city")
    assert exported.exit_code == 0, exported.output
    assert out.read_text(encoding="utf-8-sig").splitlines()[1] == "c01,张伟,北京"

    missing = run(folder, "show", "nope")
    assert missing.exit_code == 2 and "unknown segment 'nope'" in missing.stderr


def test_apply_bad_file_exits_2(folder: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[segments]]\nname = "x"\nrule = "count(orders, last 3 dayz) > 0"\n')
    result = run(folder, "apply", str(bad), "--as-of", "2024-06-30")
    assert result.exit_code == 2
    assert "in segment 'x'" in result.stderr and "'dayz'" in result.stderr
