"""``kequn rfm``: summary, JSON, files by extension, the migration matrix, clean errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import typer
from test_rfm import AS_OF, make_workspace
from typer.testing import CliRunner

from kequn.cli import rfm as rfm_cli

runner = CliRunner()


def _app() -> typer.Typer:
    """The real ``kequn`` app once it registers ``rfm``, else one with just this command."""
    from kequn.cli import app

    if any(c.name == "rfm" for c in app.registered_commands):
        return app
    local = typer.Typer(pretty_exceptions_enable=False)
    local.callback()(lambda: None)
    rfm_cli.register(local)
    return local


APP = _app()


def invoke(*args: object):
    return runner.invoke(APP, ["rfm", *[str(a) for a in args]])


@pytest.fixture(scope="module")
def wsdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("rfmcli") / "ws"
    make_workspace(path).close()
    return path


def test_summary_table(wsdir):
    result = invoke("--as-of", AS_OF, "-w", wsdir)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "忠诚客户 Loyal" in out and "冠军客户" in out and "25.0%" in out
    assert "8 customers" in out and "as of 2024-03-31" in out


def test_summary_json(wsdir):
    result = invoke("--as-of", AS_OF, "--scheme", "cn8", "--json", "-w", wsdir)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["customers"] == 8 and data["scheme"] == "cn8" and data["bins"] == 5
    seg = {s["rfm_segment"]: s for s in data["segments"]}
    assert seg["important_value"]["customers"] == 2
    assert seg["important_value"]["rfm_segment_zh"] == "重要价值客户"
    assert seg["general_value"]["customers"] == 0 and seg["general_value"]["monetary"] is None
    assert sum(s["customer_share"] for s in data["segments"]) == pytest.approx(1.0)


@pytest.mark.parametrize("suffix", [".csv", ".xlsx", ".parquet", ".json"])
def test_out_writes_by_extension(wsdir, tmp_path, suffix):
    path = tmp_path / f"scores{suffix}"
    result = invoke("--as-of", AS_OF, "--out", path, "--net-returns", "-w", wsdir)
    assert result.exit_code == 0, result.output
    assert "wrote 8 customers" in result.output
    if suffix == ".csv":
        assert path.read_bytes().startswith(b"\xef\xbb\xbf")  # BOM: Excel reads UTF-8
        frame = pd.read_csv(path, encoding="utf-8-sig")
    elif suffix == ".xlsx":
        frame = pd.read_excel(path, engine="calamine")
    elif suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.DataFrame(json.loads(path.read_text(encoding="utf-8")))
        assert frame.loc[0, "last_purchase_date"] == "2024-03-31"
    assert len(frame) == 8 and frame.columns[0] == "customer_id"
    assert frame["customer_id"].tolist() == list("abcdefij")
    assert frame.loc[0, "monetary"] == 120.0  # net of the return
    assert frame.loc[0, "rfm_segment_zh"] == "忠诚客户"


def test_out_unknown_extension_is_a_clean_error(wsdir, tmp_path):
    result = invoke("--as-of", AS_OF, "--out", tmp_path / "x.txt", "-w", wsdir)
    assert result.exit_code == 2
    assert "unknown file type '.txt'" in result.output and "Traceback" not in result.output


def test_compare_prints_the_migration_matrix(wsdir):
    result = invoke("--compare", "2024-02-01", AS_OF, "--scheme", "tiers", "-w", wsdir)
    assert result.exit_code == 0, result.output
    assert "未评分" in result.output and "白银客户" in result.output
    assert "of 8 customers stayed" in result.output
    result = invoke("--compare", "2024-02-01", AS_OF, "--scheme", "tiers", "--json", "-w", wsdir)
    data = json.loads(result.output)
    assert sum(m["customers"] for m in data["moves"]) == 8
    assert data["matrix"]["(none)"]["platinum"] == 2  # a and b are new and platinum
    assert data["matrix"]["silver"]["silver"] == 4  # c d e i stayed silver


def test_compare_writes_the_matrix(wsdir, tmp_path):
    path = tmp_path / "moves.csv"
    result = invoke("--compare", "2024-02-01", AS_OF, "--out", path, "-w", wsdir)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(path, encoding="utf-8-sig")
    assert frame.iloc[:, 1:].to_numpy().sum() == 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--as-of", "31/03/2024"], "as_of '31/03/2024' is not a date or time"),
        (["--bins", "12"], "bins = 12: bins must be from 2 to 10"),
        (["--method", "fixed"], "method 'fixed' needs thresholds"),
        (["--compare", "2024-02-01", AS_OF, "--as-of", AS_OF], "leave out --as-of"),
    ],
)
def test_bad_options_exit_2_with_the_value(wsdir, args, message):
    result = invoke(*args, "-w", wsdir)
    assert result.exit_code == 2
    assert message in result.output


def test_no_workspace(tmp_path):
    result = invoke("-w", tmp_path / "nowhere")
    assert result.exit_code == 3 and "no kequn workspace" in result.output


def test_docs_cover_every_option_and_segment():
    """docs/rfm.md names every option of ``kequn rfm`` and every segment code and label."""
    import typer.main

    from kequn.features.rfm_schemes import SCHEMES

    docs = (Path(__file__).parent.parent / "docs" / "rfm.md").read_text(encoding="utf-8")
    command = typer.main.get_command(APP)
    rfm_command = command.commands["rfm"] if hasattr(command, "commands") else command
    options = [
        opt
        for param in rfm_command.params
        for opt in param.opts + param.secondary_opts
        if opt.startswith("--") and opt != "--help"
    ]
    assert len(options) >= 10
    for opt in options:
        assert f"`{opt}" in docs or f"{opt} " in docs, opt
    for scheme in SCHEMES.values():
        assert f"`{scheme.name}`" in docs
        for seg in scheme.segments:
            assert f"`{seg.code}`" in docs and seg.zh in docs and seg.en in docs, seg


def test_matrix_counts_shorten_only_when_the_terminal_is_narrow():
    assert rfm_cli._count(141_234, compact=False) == "141,234"
    assert rfm_cli._count(9_999, compact=True) == "9,999"
    assert rfm_cli._count(141_234, compact=True) == "141k"
    assert rfm_cli._count(999_600, compact=True) == "1.0M"
    assert rfm_cli._count(1_234_567, compact=True) == "1.2M"
