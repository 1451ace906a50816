"""Merges that keep data: a documented rule picks the value a merged profile shows, and every
value that loses or is replaced stays in ``customer_history`` with its source and reason."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from conftest import rows
from typer.testing import CliRunner

from kequn import init_workspace, open_workspace
from kequn.errors import WorkspaceError
from kequn.ingest import import_files
from kequn.profiles import profile

# One person in three systems, linked by the e-mail; they disagree on city, name and phone.
SHOP = (
    "会员编号,姓名,城市,手机号,邮箱\n"
    "M1,张三丰,上海,13900139000,zs@example.com\n"
    "M2,,上海,,zs@example.com\n"  # a second shop account of the same person
)
CRM = "客户ID,姓名,城市,手机号,邮箱\nC1,张三,北京,13800138000,zs@example.com\n"
APP = "user_id,city,phone,email\nA1,杭州,13700137000,zs@example.com\n"

# Worked out by hand for each rule (imports in the order shop, crm, app; priority crm, shop):
EXPECTED = {
    # the last import that gives a field wins
    "newest": {
        "shows": ("杭州", "张三", "13700137000"),
        "lost": {
            ("city", "上海", "shop", "M1"),
            ("city", "上海", "shop", "M2"),
            ("city", "北京", "crm", "C1"),
            ("name", "张三丰", "shop", "M1"),
            ("phone", "13900139000", "shop", "M1"),
            ("phone", "13800138000", "crm", "C1"),
        },
    },
    # city: 上海 has two shop records against one each; name and phone tie, the newest wins
    "most_frequent": {
        "shows": ("上海", "张三", "13700137000"),
        "lost": {
            ("city", "北京", "crm", "C1"),
            ("city", "杭州", "app", "A1"),
            ("name", "张三丰", "shop", "M1"),
            ("phone", "13900139000", "shop", "M1"),
            ("phone", "13800138000", "crm", "C1"),
        },
    },
    # crm before shop; app is not listed, so it comes last
    "source_priority": {
        "shows": ("北京", "张三", "13800138000"),
        "lost": {
            ("city", "上海", "shop", "M1"),
            ("city", "上海", "shop", "M2"),
            ("city", "杭州", "app", "A1"),
            ("name", "张三丰", "shop", "M1"),
            ("phone", "13900139000", "shop", "M1"),
            ("phone", "13700137000", "app", "A1"),
        },
    },
}
LABEL = {"newest": "newest", "most_frequent": "most frequent", "source_priority": "source priority"}


def _with_rule(path: Path, rule: str, priority: str = '["crm", "shop"]'):
    ws = init_workspace(path)
    ws.close()
    config = path / "kequn.toml"
    text = config.read_text(encoding="utf-8")
    assert 'merge_rule = "newest"' in text and "source_priority = []" in text
    text = text.replace('merge_rule = "newest"', f"merge_rule = {rule!r}".replace("'", '"'))
    config.write_text(text.replace("source_priority = []", f"source_priority = {priority}"))
    return open_workspace(path)


def _three_sources(ws, write):
    import_files(ws, "customers", [write("shop.csv", SHOP)], source="shop")
    import_files(ws, "customers", [write("crm.csv", CRM)], source="crm")
    return import_files(ws, "customers", [write("app.csv", APP)], source="app")


def _lost(ws) -> set[tuple]:
    return set(
        rows(
            ws,
            "SELECT field, value, source, source_id FROM customer_history "
            "WHERE superseded_at IS NOT NULL",
        )
    )


@pytest.mark.parametrize("rule", list(EXPECTED))
def test_each_rule_picks_the_winner_and_keeps_the_losers(tmp_path, write, rule):
    ws = _with_rule(tmp_path / "ws", rule)
    _three_sources(ws, write)
    # one customer (the shop's first record named it), every record an identity of it
    assert rows(ws, "SELECT customer_id FROM customers") == [("M1",)]
    assert rows(ws, "SELECT count(*) FROM identities WHERE customer_id = 'M1'") == [(4,)]
    shows = rows(ws, "SELECT city, name, phone FROM customers")[0]
    assert shows == EXPECTED[rule]["shows"]
    assert _lost(ws) == EXPECTED[rule]["lost"]
    reasons = {r for (r,) in rows(ws, "SELECT DISTINCT reason FROM customer_history")}
    assert reasons == {None, f"merge: lost to {LABEL[rule]}"}
    # what is shown has a current history row naming where it came from
    current = rows(
        ws,
        "SELECT field, value FROM customer_history WHERE superseded_at IS NULL "
        "AND field IN ('city', 'name', 'phone')",
    )
    assert {f: v for f, v in current} == dict(zip(("city", "name", "phone"), shows, strict=True))
    # every value any source gave is either shown or in the history: nothing lost
    given = {("city", "上海"), ("city", "北京"), ("city", "杭州"), ("name", "张三丰")}
    given |= {("name", "张三"), ("phone", "13900139000"), ("phone", "13800138000")}
    given |= {("phone", "13700137000")}
    kept = {(f, v) for f, v, _, _ in _lost(ws)} | set(
        zip(("city", "name", "phone"), shows, strict=True)
    )
    assert kept == given

    # the profile carries the losing values, newest first, each under its field's name
    data = profile(ws, "zs@example.com")
    history = data["history"]
    got = {(e["field"], e["value"][e["field"]], e["source"], e["source_id"]) for e in history}
    assert got == EXPECTED[rule]["lost"]
    assert [e["superseded_at"] for e in history] == sorted(
        (e["superseded_at"] for e in history), reverse=True
    )
    ws.close()


@pytest.mark.parametrize("rule", list(EXPECTED))
def test_reimports_add_no_history(tmp_path, write, rule):
    ws = _with_rule(tmp_path / "ws", rule)
    _three_sources(ws, write)
    before = rows(ws, "SELECT * FROM customer_history ORDER BY ALL")
    shows = rows(ws, "SELECT * EXCLUDE (updated_at) FROM customers")
    # the same file: skipped by its sha256
    again = import_files(ws, "customers", [write("app.csv", APP)], source="app")
    assert again.files[0].skipped
    # the same rows exported again (other bytes): read, merged, and nothing new to keep
    export = import_files(
        ws, "customers", [write("app2.csv", APP.replace("\n", "\r\n"))], source="app"
    )
    assert export.imported == 1 and not export.files[0].skipped
    assert rows(ws, "SELECT * FROM customer_history ORDER BY ALL") == before
    assert rows(ws, "SELECT * EXCLUDE (updated_at) FROM customers") == shows
    ws.close()


def test_a_record_replacing_its_own_value_says_which_import(ws, write):
    import_files(ws, "customers", [write("a.csv", CRM)], source="crm")
    moved = CRM.replace("北京", "广州").replace("13800138000", "")
    report = import_files(ws, "customers", [write("b.csv", moved)], source="crm")
    assert rows(ws, "SELECT city, phone FROM customers") == [("广州", "13800138000")]
    assert rows(
        ws, "SELECT field, value, source_id, reason FROM customer_history WHERE reason IS NOT NULL"
    ) == [("city", "北京", "C1", f"replaced by import {report.import_id}")]


def test_attributes_merge_by_the_rule_too(tmp_path, write):
    ws = _with_rule(tmp_path / "ws", "source_priority")
    import_files(
        ws,
        "customers",
        [write("c.csv", "id,email,会员等级,积分\nC1,a@x.com,金卡,10\n")],
        source="crm",
    )
    import_files(
        ws,
        "customers",
        [write("s.csv", "id,email,会员等级,备注\nS1,a@x.com,银卡,vip\n")],
        source="shop",
    )
    import json

    attrs = json.loads(rows(ws, "SELECT attributes FROM customers")[0][0])
    assert attrs == {"会员等级": "金卡", "积分": "10", "备注": "vip"}
    assert _lost(ws) == {("会员等级", "银卡", "shop", "S1")}
    ws.close()


def test_values_stored_before_history_are_kept_when_they_lose(ws, write):
    import pyarrow as pa

    # a profile written before customer_history existed: no history row says where from
    ws.store.append("customers", pa.table({"customer_id": ["C1"], "city": ["北京"]}))
    report = import_files(ws, "customers", [write("c.csv", "客户ID,城市\nC1,上海\n")], source="crm")
    assert rows(ws, "SELECT city FROM customers") == [("上海",)]
    assert rows(
        ws, "SELECT value, source, reason FROM customer_history WHERE superseded_at IS NOT NULL"
    ) == [("北京", None, f"replaced by import {report.import_id}")]


def test_an_api_upsert_records_what_it_replaced(ws, write):
    from kequn.server.journal import Journal

    import_files(ws, "customers", [write("crm.csv", CRM)], source="crm")
    at = datetime(2030, 5, 1, 9, 30)
    Journal(ws).write(
        customers=[{"customer_id": "C1", "city": "深圳", "attributes": {"等级": "A"}}], now=at
    )
    Journal(ws).write(customers=[{"customer_id": "C1", "attributes": {"等级": "B"}}], now=at)
    assert rows(ws, "SELECT city FROM customers") == [("深圳",)]
    lost = rows(
        ws,
        "SELECT field, value, source, superseded_at, reason FROM customer_history "
        "WHERE superseded_at IS NOT NULL ORDER BY field",
    )
    assert lost == [
        ("city", "北京", "crm", at, "replaced via API"),
        ("等级", "A", "api", at, "replaced via API"),
    ]
    current = rows(
        ws,
        "SELECT field, value, source FROM customer_history WHERE superseded_at IS NULL "
        "AND source = 'api' ORDER BY field",
    )
    assert current == [("city", "深圳", "api"), ("等级", "B", "api")]


def test_profile_history_on_the_command_line(tmp_path, write):
    from kequn.cli import app

    ws = _with_rule(tmp_path / "ws", "newest")
    _three_sources(ws, write)
    ws.close()
    runner = CliRunner()
    w = str(tmp_path / "ws")
    plain = runner.invoke(app, ["profile", "M1", "-w", w])
    assert plain.exit_code == 0, plain.output
    assert "6 earlier values: --history lists them" in plain.output
    shown = runner.invoke(app, ["profile", "M1", "--history", "-w", w], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    lines = [ln for ln in shown.output.splitlines() if "lost to newest" in ln]
    assert len(lines) == 6
    assert any("北京" in ln and "crm:C1" in ln for ln in lines)
    assert any("13900139000" in ln and "shop:M1" in ln for ln in lines)


def test_a_bad_merge_rule_is_a_config_error(tmp_path, write):
    ws = _with_rule(tmp_path / "ws", "loudest")
    with pytest.raises(WorkspaceError, match="merge_rule = 'loudest'"):
        import_files(ws, "customers", [write("c.csv", CRM)], source="crm")
    ws.close()
    ws = _with_rule(tmp_path / "ws2", "source_priority", priority="[]")
    with pytest.raises(WorkspaceError, match="needs source_priority"):
        import_files(ws, "customers", [write("c.csv", CRM)], source="crm")
    assert rows(ws, "SELECT count(*) FROM customers") == [(0,)]
    ws.close()


def test_forget_erases_history_and_the_old_phone(tmp_path, write):
    from kequn.privacy import forget

    ws = _with_rule(tmp_path / "ws", "newest")
    _three_sources(ws, write)
    assert rows(ws, "SELECT count(*) FROM customer_history") != [(0,)]
    done = forget(ws, "M1", actor="test", compact_file=False)
    assert done.tables["customer_history"] > 0
    assert rows(ws, "SELECT count(*) FROM customer_history") == [(0,)]
    # a phone the profile only had in its history is recognised too: the row is quarantined
    later = import_files(
        ws, "customers", [write("x.csv", "id,phone\nX9,13900139000\n")], source="pos"
    )
    assert later.quarantined_total == 1 and later.imported == 0
    ws.close()


def test_history_values_are_masked_over_http(tmp_path, write):
    from server_util import Server

    from kequn.access import create_token

    ws = _with_rule(tmp_path / "ws", "newest")
    _three_sources(ws, write)
    tokens = {
        "viewer": create_token(ws, "dash", "viewer"),
        "admin": create_token(ws, "root", "admin"),
        "ingest": create_token(ws, "shop", "ingest"),
    }
    ws.close()
    srv = Server(tmp_path / "ws")
    try:
        with srv.client(tokens["ingest"]) as c:
            r = c.post(
                "/v1/customers", json={"customers": [{"customer_id": "M1", "phone": "13600136000"}]}
            )
            assert r.status_code == 200, r.text
        seen = {}
        for who in ("viewer", "admin"):
            with srv.client(tokens[who]) as c:
                r = c.get("/v1/customers/M1")
                assert r.status_code == 200, r.text
                seen[who] = r.json()["history"]
    finally:
        srv.stop()
    phones = {
        who: sorted(e["value"]["phone"] for e in h if e["field"] == "phone")
        for who, h in seen.items()
    }
    assert phones["admin"] == ["13700137000", "13800138000", "13900139000"]
    assert phones["viewer"] == ["137****7000", "138****8000", "139****9000"]
    names = {
        who: [e["value"]["name"] for e in h if e["field"] == "name"] for who, h in seen.items()
    }
    assert names == {"admin": ["张三丰"], "viewer": ["张**"]}
    api = [e for e in seen["admin"] if e["reason"] == "replaced via API"]
    assert [(e["field"], e["value"]["phone"], e["source"]) for e in api] == [
        ("phone", "13700137000", "app")
    ]
