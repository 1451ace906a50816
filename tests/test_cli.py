"""The CLI: exit codes, messages, JSON output."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kequn.cli import app

runner = CliRunner()


@pytest.fixture
def wsdir(tmp_path):
    result = runner.invoke(app, ["init", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    return tmp_path / "ws"


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_import_prints_a_summary_and_json(wsdir, write):
    path = write("o.csv", "订单号,客户ID,下单时间,金额\nA,u1,2024-01-01,5\nB,,2024-01-01,5\n")
    result = invoke("import", "orders", path, "-w", wsdir)
    assert result.exit_code == 0, result.output
    assert "rows read" in result.output and "missing customer_id" in result.output
    path2 = write("o2.csv", "订单号,客户ID,下单时间,金额\nC,u1,2024-01-02,7\n")
    result = invoke("import", "orders", path2, "-w", wsdir, "--json")
    data = json.loads(result.output)
    assert data["imported"] == 1 and data["rows_read"] == 1 and data["kind"] == "orders"


def test_missing_file_exit_code(wsdir, tmp_path):
    result = invoke("import", "orders", tmp_path / "nope.csv", "-w", wsdir)
    assert result.exit_code == 2
    assert "file not found" in result.output and "nope.csv" in result.output


def test_unknown_column_mapping_exit_code(wsdir, write):
    path = write("o.csv", "order_id,customer_id,date,amount\nA,u,2024-01-01,1\n")
    result = invoke("import", "orders", path, "--map", "Kunde=customer_id", "-w", wsdir)
    assert result.exit_code == 2
    assert "no column 'Kunde'" in result.output
    result = invoke("import", "orders", path, "--map", "order_id=order_number", "-w", wsdir)
    assert result.exit_code == 2 and "not a orders field" in result.output
    result = invoke("import", "orders", path, "--map", "nonsense", "-w", wsdir)
    assert result.exit_code == 2 and "SOURCE_COLUMN=FIELD" in result.output


def test_empty_file_exit_code(wsdir, write):
    result = invoke("import", "orders", write("empty.csv", ""), "-w", wsdir)
    assert result.exit_code == 2 and "empty" in result.output


def test_unknown_kind_and_missing_workspace(tmp_path, write):
    path = write("o.csv", "a\n1\n")
    result = invoke("import", "products", path, "-w", tmp_path)
    assert result.exit_code == 2 and "unknown kind 'products'" in result.output
    result = invoke("import", "orders", path, "-w", tmp_path / "nowhere")
    assert result.exit_code == 3 and "kequn init" in result.output


def test_workspace_from_environment(wsdir, write, monkeypatch):
    monkeypatch.setenv("KEQUN_WORKSPACE", str(wsdir))
    path = write("o.csv", "order_id,customer_id,date,amount\nA,u,2024-01-01,1\n")
    assert invoke("import", "orders", path).exit_code == 0
    result = invoke("profile", "u", "--json")
    assert json.loads(result.output)["orders"]["orders"] == 1


def test_quarantine_and_profile(wsdir, write):
    path = write("c.csv", "客户ID,姓名,手机号,城市\nC1,张三,13800138000,北京\n,无名,139,上海\n")
    invoke("import", "customers", path, "-w", wsdir)
    result = invoke("quarantine", "-w", wsdir, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    data = json.loads(result.output)
    assert data["rows"][0]["reason"] == "missing customer_id"
    assert json.loads(data["rows"][0]["raw"])["姓名"] == "无名"
    result = invoke("profile", "+86 138 0013 8000", "-w", wsdir)
    assert result.exit_code == 0 and "张三" in result.output
    result = invoke("profile", "nobody", "-w", wsdir)
    assert result.exit_code == 2 and "no customer 'nobody'" in result.output


def test_import_identities(wsdir, write):
    path = write("map.csv", "source_id,customer_id\nK1,C1\n")
    result = invoke("import", "identities", path, "--source", "pos", "-w", wsdir, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["added"] == 1
    result = invoke("import", "identities", path, "-w", wsdir)
    assert result.exit_code == 2 and "no source column" in result.output
