"""CLV end to end: raw CDNow transactions → import → `kequn clv fit` → the published figures."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from kequn.cli import app
from kequn.cli.clv import parse_horizon
from kequn.sample import write_cdnow_orders

runner = CliRunner()


@pytest.fixture(scope="module")
def cdnow_ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("cdnow")
    orders = write_cdnow_orders(root, "sample")
    ws = root / "ws"
    assert runner.invoke(app, ["init", str(ws)]).exit_code == 0
    result = runner.invoke(
        app, ["import", "orders", str(orders), "--keep-duplicates", "-w", str(ws), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["imported"] == 6919
    return ws


def test_fit_reproduces_the_published_bgnbd_and_gamma_gamma(cdnow_ws):
    result = runner.invoke(
        app, ["clv", "fit", "--calibration-end", "1997-09-30", "-w", str(cdnow_ws), "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["model"] == "bgnbd"
    got = {k: round(v, 3) for k, v in data["params"].items()}
    assert got == {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    assert round(data["log_likelihood"], 1) == -9582.4
    spend = data["spend_model"]["params"]
    # 946 repeat buyers; the paper's p = 6.25, q = 3.74, γ = 15.44
    assert (round(spend["p"], 2), round(spend["q"], 2), round(spend["gamma"], 2)) == (
        6.25,
        3.74,
        15.44,
    )


def test_fit_pareto(cdnow_ws):
    result = runner.invoke(
        app,
        ["clv", "fit", "--model", "pareto", "--calibration-end", "1997-09-30"]
        + ["-w", str(cdnow_ws), "--json"],
    )
    data = json.loads(result.output)
    got = {k: round(v, 3) for k, v in data["params"].items()}
    assert got == {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}
    assert round(data["log_likelihood"], 1) == -9595.0


def test_predict_stores_scores_and_writes_a_file(cdnow_ws, tmp_path):
    out = tmp_path / "clv.parquet"
    result = runner.invoke(
        app,
        ["clv", "predict", "--as-of", "1997-09-30", "--horizon", "39w", "--out", str(out)]
        + ["-w", str(cdnow_ws), "--json"],
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert len(frame) == 2357
    assert set(frame.columns) >= {"customer_id", "expected_purchases", "p_alive", "clv"}
    # sample customer 1: x = 2, t_x = 30.43, T = 38.86 → 1.226 purchases in 39 weeks
    assert frame.set_index("customer_id").loc["1", "expected_purchases"] == pytest.approx(
        1.226, abs=1e-3
    )
    # the paper's sum of conditional expectations over the holdout, 1,653.4 (39 weeks)
    assert frame["expected_purchases"].sum() == pytest.approx(1653.4, abs=0.5)
    from kequn import open_workspace

    ws = open_workspace(cdnow_ws)
    stored = ws.store.duck.execute(
        "SELECT count(*), any_value(horizon_days), any_value(model) FROM clv_scores"
    ).fetchall()
    ws.close()
    assert stored == [(2357, 273, "bgnbd")]


def test_errors(cdnow_ws, tmp_path):
    result = runner.invoke(app, ["clv", "predict", "--horizon", "soon", "-w", str(cdnow_ws)])
    assert result.exit_code == 2 and "--horizon 'soon'" in result.output
    result = runner.invoke(app, ["clv", "fit", "--model", "magic", "-w", str(cdnow_ws)])
    assert result.exit_code == 2 and "use bgnbd, pareto or gamma-gamma" in result.output
    result = runner.invoke(
        app, ["clv", "predict", "--out", str(tmp_path / "x.doc"), "-w", str(cdnow_ws)]
    )
    assert result.exit_code == 2 and "unknown file type" in result.output
    empty = tmp_path / "empty"
    runner.invoke(app, ["init", str(empty)])
    result = runner.invoke(app, ["clv", "fit", "-w", str(empty)])
    assert result.exit_code == 2 and "import orders first" in result.output


@pytest.mark.parametrize(
    ("text", "days"), [("90d", 90), ("90", 90), ("12w", 84), ("6m", 180), ("1y", 365)]
)
def test_horizons(text, days):
    assert parse_horizon(text) == days


def test_holdout_check_matches_the_paper(cdnow_ws, tmp_path):
    plot = tmp_path / "holdout.svg"
    result = runner.invoke(
        app,
        ["clv", "holdout", "--calibration-end", "1997-09-30", "--observation-end", "1998-06-30"]
        + ["--plot", str(plot), "-w", str(cdnow_ws), "--json"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    total = next(r for r in data["rows"] if r["frequency"] == "all")
    assert total["actual_total"] == 1882  # repeat purchase days in weeks 40-78
    assert total["predicted_total"] == pytest.approx(1653.4, abs=0.5)
    assert round(data["correlation"], 3) == 0.626
    svg = plot.read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 2


def test_calibration_end_past_the_data_warns(cdnow_ws):
    from kequn import open_workspace
    from kequn.models import DataWarning
    from kequn.models.clv import fit_clv

    ws = open_workspace(cdnow_ws)
    with pytest.warns(DataWarning, match="days after the last purchase"):
        fit_clv(ws, calibration_end="1999-06-30")
    ws.close()
