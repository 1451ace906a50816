"""``kequn costs``, ``kequn economics`` and ``kequn benefit`` through the CLI."""

from __future__ import annotations

import json

from test_economics import COSTS, append
from test_economics import shop as shop  # noqa: F401 - the fixture
from typer.testing import CliRunner

from kequn import open_workspace
from kequn.cli import app

runner = CliRunner()


def kequn(ws, *args: str):
    return runner.invoke(app, [*args, "-w", str(ws.path)])


def test_economics_commands(shop, tmp_path):  # noqa: F811
    ws = shop
    ws.close()
    (tmp_path / "more.csv").write_text(COSTS, encoding="utf-8")
    r = kequn(ws, "costs", "import", str(tmp_path / "more.csv"))
    assert r.exit_code == 0, r.output
    assert "imported 3 cost line(s)" in r.output and "total 1,910.00" in r.output
    r = kequn(ws, "costs", "list", "--json")
    assert len(json.loads(r.output)) == 6
    args = ("--from", "2024-06-01", "--to", "2024-06-30", "--as-of", "2024-06-30")
    r = kequn(ws, "economics", "--by", "campaign", *args)
    assert r.exit_code == 0, r.output
    assert "strategy" in r.output and "welcome" in r.output
    r = kequn(ws, "economics", "--by", "channel", *args, "--json")
    rows = {row["key"]: row for row in json.loads(r.output)["rows"]}
    assert rows["social"]["cost"] == 600.0  # both files' winback lines
    r = kequn(ws, "economics", "--by", "chanel")
    assert r.exit_code == 2 and "did you mean 'channel'" in r.output


def test_benefit_command(shop, tmp_path):  # noqa: F811
    ws = shop
    ws.close()
    seg = tmp_path / "seg.toml"
    seg.write_text('[segmentations.buyers]\nsegments = ["new_buyers"]\n', encoding="utf-8")
    with open_workspace(ws.path) as w:
        append(w, "segments", [{"name": "new_buyers", "rule": "count(orders) > 0"}])
    base = (
        "--file",
        str(seg),
        "--as-of",
        "2024-06-30",
        "--from",
        "2024-06-01",
        "--to",
        "2024-06-30",
    )
    r = kequn(ws, "benefit", "buyers", *base, "--score", "market_maturity=1")
    assert r.exit_code == 0, r.output
    assert "pause or simplify" in r.output and "market_maturity 1" in r.output
    r = kequn(ws, "benefit", "buyers", *base, "--score", "market_maturity")
    assert r.exit_code == 2 and "DIMENSION=NUMBER" in r.output
