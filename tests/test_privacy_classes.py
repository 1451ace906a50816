"""Field classes: the registry, masking by class and grant, import inference, token grants."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kequn import open_workspace
from kequn.access import Principal, authenticate, create_token, list_tokens, mask_record
from kequn.act.outbox import Transition, deliveries, enqueue
from kequn.act.triggers import Trigger
from kequn.cli import app
from kequn.errors import InputError, RuleError, WorkspaceError
from kequn.ingest import import_files
from kequn.privacy import check_rule_grants, field_classes, infer_class

RECORD = {
    "customer_id": "C1",
    "name": "张三",
    "city": "北京",
    "phone": "13812341234",
    "attributes": json.dumps({"health_condition": "哮喘", "会员等级": "gold"}, ensure_ascii=False),
}
CLASSES = {"name": "personal", "health_condition": "sensitive", "city": "public"}


def test_mask_record_by_class_and_grant():
    viewer = mask_record(RECORD, Principal("v", "viewer"), CLASSES)
    assert (viewer["name"], viewer["phone"], viewer["city"]) == ("张*", "138****1234", "北京")
    assert json.loads(viewer["attributes"]) == {"会员等级": "gold"}
    analyst = mask_record(RECORD, Principal("a", "analyst"), CLASSES)
    assert (analyst["name"], analyst["phone"]) == ("张三", "13812341234")
    assert json.loads(analyst["attributes"]) == {"会员等级": "gold"}
    granted = mask_record(RECORD, Principal("a", "analyst", frozenset({"sensitive"})), CLASSES)
    assert granted == RECORD
    assert mask_record(RECORD, Principal("r", "admin"), CLASSES) == RECORD
    # a viewer with the personal grant sees personal fields, still not sensitive ones
    personal = mask_record(RECORD, Principal("v", "viewer", frozenset({"personal"})), CLASSES)
    assert personal["phone"] == "13812341234" and "哮喘" not in personal["attributes"]


def test_registry_layers_and_bad_config(ws):
    classes = field_classes(ws)
    # the template sets the sample's fields; defaults cover the rest by name
    assert classes["name"] == classes["phone"] == classes["身份证号"] == "personal"
    assert classes["city"] == "public" and classes["健康状况"] == "sensitive"
    config = ws.path / "kequn.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace('city = "public"', 'city = "secret"'),
        encoding="utf-8",
    )
    with (
        open_workspace(ws.path) as again,
        pytest.raises(WorkspaceError, match="city = 'secret'; use one of public, personal"),
    ):
        field_classes(again)


def test_infer_class_by_name_and_values():
    assert infer_class("手机号码", []) == ("personal", "its name '手机号码' reads as personal")
    assert infer_class("contact", ["13800138000", "+86 139-0013-9000", "137 0013 7000"])[0] == (
        "personal"
    )
    assert "ID card" in infer_class("证件", ["110101199003071234", "11010119900307123X"])[1]
    assert (
        "address"
        in infer_class("收件", ["上海市浦东新区世纪大道100号", "北京市朝阳区建国路8号"])[1]
    )
    assert "e-mail" in infer_class("contact2", ["a@b.cn", "x.y@example.com"])[1]
    assert infer_class("会员等级", ["gold", "silver"]) is None
    assert infer_class("mixed", ["13800138000", "gold", "silver"]) is None  # under 80 %


def test_import_reports_and_records_personal_columns(ws, write):
    f = write(
        "c.csv",
        "客户ID,联系人电话,收货信息,会员等级,病史\n"
        "C1,13800138000,上海市浦东新区世纪大道100号,gold,无\n"
        "C2,139 0013 9000,北京市朝阳区建国路8号,silver,哮喘\n",
    )
    report = import_files(ws, "customers", [f])
    found = report.personal_fields
    assert set(found) == {"联系人电话", "收货信息", "病史"}
    assert found["联系人电话"]["class"] == "personal" and "phone" in found["联系人电话"]["reason"]
    assert found["病史"] == {"class": "sensitive", "reason": "its name '病史' reads as sensitive"}
    assert field_classes(ws)["联系人电话"] == "personal"
    assert report.as_dict()["personal_fields"] == found
    # known now: a second import does not report them again
    g = write("d.csv", "客户ID,联系人电话\nC3,13700137000\n")
    assert import_files(ws, "customers", [g]).personal_fields == {}


def test_rule_refused_without_grant(ws):
    config = ws.path / "kequn.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace('# health_condition = "sensitive"', 'health_condition = "sensitive"')
    )
    ws2 = open_workspace(ws.path)
    try:
        rule = "city = '北京' and attributes.health_condition = '哮喘'"
        with pytest.raises(RuleError, match="'attributes.health_condition' is sensitive") as info:
            check_rule_grants(ws2, rule, Principal("bi", "analyst"))
        assert "token 'bi' lacks the 'sensitive' grant" in str(info.value)
        assert "^" in str(info.value)  # points at the field in the rule
        check_rule_grants(ws2, rule, Principal("care", "analyst", frozenset({"sensitive"})))
        check_rule_grants(ws2, rule, Principal("cli:me", "admin"))
        check_rule_grants(ws2, "city = '北京'", Principal("bi", "analyst"))
    finally:
        ws2.close()


def test_token_grants_stored_checked_and_migrated(ws, tmp_path):
    token = create_token(ws, "care", "analyst", grants=["sensitive"])
    assert authenticate(ws, token).grants == frozenset({"sensitive"})
    assert [t["grants"] for t in list_tokens(ws)] == [["sensitive"]]
    with pytest.raises(InputError, match="unknown grant 'sensitiv'.*did you mean 'sensitive'"):
        create_token(ws, "x", "analyst", grants=["sensitiv"])
    with pytest.raises(InputError, match="role 'ingest' reads nothing"):
        create_token(ws, "y", "ingest", grants=["sensitive"])
    # a workspace from before grants: the column is added when it opens
    ws.store.duck.execute("ALTER TABLE api_tokens DROP COLUMN grants")
    ws.close()
    with open_workspace(ws.path) as again:
        cols = [r[0] for r in again.store.duck.execute("DESCRIBE api_tokens").fetchall()]
        assert cols[-1] == "grants"
        assert authenticate(again, "Bearer " + create_token(again, "z", "viewer")).grants == set()
    out = CliRunner().invoke(
        app,
        [
            "token",
            "create",
            "care2",
            "--role",
            "analyst",
            "--grant",
            "sensitive",
            "--json",
            "-w",
            str(ws.path),
        ],
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["grants"] == ["sensitive"]


def test_trigger_payload_leaves_out_sensitive_fields_unless_owner_granted(ws):
    config = ws.path / "kequn.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace('city = "public"', 'city = "sensitive"'), encoding="utf-8")
    ws.close()
    ws2 = open_workspace(ws.path)
    try:
        ws2.store.duck.execute(
            "INSERT INTO customers (customer_id, name, city) VALUES ('C1', '张三', '北京')"
        )
        create_token(ws2, "care", "analyst", grants=["sensitive"])
        create_token(ws2, "bi", "analyst")
        triggers = [
            Trigger(n, "vip", "enter", "file", {"path": f"{n}.jsonl"}, owner=o)
            for n, o in (("granted", "care"), ("plain", "bi"), ("nobody", None))
        ]
        from datetime import datetime

        at = datetime(2025, 3, 1, 10)
        with ws2.store.transaction():
            enqueue(ws2, [Transition("vip", "C1", "enter", at)], at, triggers)
        customer = {r["trigger"]: r["payload"]["customer"] for r in deliveries(ws2)}
        assert customer["granted"]["city"] == "北京"
        assert "city" not in customer["plain"] and "city" not in customer["nobody"]
        assert customer["plain"]["name"] == "张三"
    finally:
        ws2.close()


def test_import_command_prints_the_inferred_classes(ws, write):
    from typer.testing import CliRunner

    from kequn.cli import app

    f = write("c.csv", "客户ID,联系人电话\nC1,13800138000\n")
    ws.close()
    result = CliRunner().invoke(app, ["import", "customers", str(f), "-w", str(ws.path)])
    assert result.exit_code == 0, result.output
    assert "personal data?" in result.stdout and "'联系人电话' classed personal" in result.stdout
