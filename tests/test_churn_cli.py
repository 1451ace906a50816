"""``kequn churn train|predict`` through the CLI runner: output, files, exit codes."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from kequn import init_workspace
from kequn.cli import admin
from kequn.cli import churn as churn_cli
from kequn.ingest import import_files
from kequn.sample import write_sample

runner = CliRunner()

# The churn group on its own app (with `init`), so these tests do not depend on which
# groups kequn.cli.app registers.
app = typer.Typer(pretty_exceptions_enable=False)


@app.callback()
def _root() -> None:
    """kequn (test app)."""


admin.register(app)
churn_cli.register(app)


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def wsdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("churn_cli")
    paths = write_sample(
        folder / "sample", customers=700, seed=2, formats="parquet", tables=["orders", "events"]
    )
    with init_workspace(folder / "ws") as ws:
        import_files(ws, "orders", [paths["orders.parquet"]])
        import_files(ws, "events", [paths["events.parquet"]])
    return folder / "ws"


def test_predict_before_train_says_what_to_do(wsdir):
    result = invoke("churn", "predict", "-w", wsdir)
    assert result.exit_code == 1
    assert "no churn model" in result.output and "kequn churn train" in result.output


def test_train_errors(wsdir):
    result = invoke("churn", "train", "--cutoff", "2020-01-01", "-w", wsdir)
    assert result.exit_code == 2 and "before the first purchase" in result.output
    result = invoke("churn", "train", "--test-cutoff", "2025-12-01", "-w", wsdir)
    assert result.exit_code == 2 and "run past the last purchase" in result.output
    result = invoke("churn", "train", "--cutoff", "1 May", "-w", wsdir)
    assert result.exit_code == 2 and "'1 May' is not a day; use YYYY-MM-DD" in result.output
    result = invoke("churn", "train", "--horizon", "0", "-w", wsdir)
    assert result.exit_code == 2  # typer's range check


def test_train_prints_the_report_and_saves_the_model(wsdir):
    result = invoke("churn", "train", "-w", wsdir)
    assert result.exit_code == 0, result.output
    for text in (
        "no purchase within 90 days",
        "ROC AUC",
        "BG/NBD 1 − P(alive)",
        "recency alone",
        "calibration",
        "top features",
        "days_since_last_event",
        "saved models/churn.pkl",
    ):
        assert text in result.output, text
    assert (wsdir / "models" / "churn.pkl").is_file()


def test_train_json_then_predict(wsdir, tmp_path):
    result = invoke("churn", "train", "--horizon", "60", "--no-refit", "--json", "-w", wsdir)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["horizon_days"] == 60 and report["auc"] > 0.7
    # defaults: test cutoff 60 days before the data end (2025-12-31), training 60 before that
    assert (report["cutoff"], report["test_cutoff"]) == ("2025-09-02", "2025-11-01")
    assert report["model_cutoff"] == report["cutoff"]  # --no-refit: the tested model is saved
    assert report["model_customers"] == report["train"]["customers"]
    assert report["baseline"]["name"] == "bgnbd_1_minus_p_alive"
    assert 0 < report["baseline"]["auc"] < 1 and report["bgnbd_no_purchase"]["auc"] > 0.5
    assert len(report["calibration"]) == 10 and report["importances"][0]["importance"] > 0
    assert report["saved"].endswith("churn.pkl")

    out = tmp_path / "风险.csv"
    result = invoke(
        "churn", "predict", "--as-of", "2025-11-30", "--out", out, "--json", "-w", wsdir
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["as_of"] == "2025-11-30" and data["model"] == "churn-hgb-60d"
    assert data["trained_at"] == report["model_cutoff"]
    assert sum(b["customers"] for b in data["bands"]) == data["customers"]
    frame = pd.read_csv(out, encoding="utf-8-sig")
    assert list(frame.columns) == ["customer_id", "as_of", "churn_risk", "model", "computed_at"]
    assert len(frame) == data["customers"] and frame["churn_risk"].between(0, 1).all()

    result = invoke("churn", "predict", "-w", wsdir)  # default: the last purchase day
    assert result.exit_code == 0, result.output
    assert "as of 2025-12-31" in result.output and "stored in churn_scores" in result.output
    result = invoke("churn", "predict", "--as-of", "2030-01-01", "-w", wsdir)
    assert result.exit_code == 2 and "after the last purchase" in result.output


def test_predict_errors(wsdir, tmp_path):
    result = invoke("churn", "predict", "--out", tmp_path / "x.txt", "-w", wsdir)
    assert result.exit_code == 2 and "unknown file type '.txt'" in result.output
