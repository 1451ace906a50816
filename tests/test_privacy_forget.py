"""The right to be forgotten: `kequn forget` leaves no byte of the person anywhere in the
workspace, keeps anonymous totals, and a re-import does not bring them back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kequn import init_workspace, open_workspace
from kequn.access import audit_entries
from kequn.cli import app

runner = CliRunner()

NAME, EMAIL, PHONE, ID_NO = (
    "欧阳子轩",
    "ouyang.zixuan@example.com",
    "13800138000",
    "110101199003071234",
)
OTHER_EMAIL = "sima.yiran@example.com"

CUSTOMERS = (
    "客户ID,姓名,邮箱,手机号,城市,身份证号,注册时间\r\n"
    f"C1,{NAME},{EMAIL},138 0013 8000,上海,{ID_NO},2024-01-05 10:00:00\r\n"
    f"C2,司马懿然,{OTHER_EMAIL},13900139000,上海,110101198805051111,2024-01-06 10:00:00\r\n"
    # quarantined (bad date), with C1's phone in another form and no id of theirs
    "X77,无名,,+86 138-0013-8000,北京,,not-a-date\r\n"
)
ORDERS = (
    "InvoiceNo,InvoiceDate,CustomerID,StockCode,Description,Quantity,UnitPrice,Channel\n"
    "536365,2024/1/5 8:26,C1,20111A,卫衣,2,100.00,天猫\n"
    "536365,2024/1/5 8:26,C1,20112B,帽子,1,50.00,天猫\n"
    "536366,2024/1/5 9:00,C2,20111A,卫衣,1,100.00,天猫\n"
    "C536367,2024/1/6 9:00,C1,20112B,帽子,-1,50.00,天猫\n"
)
EVENTS = (
    "event_id,customer_id,occurred_at,type,properties\n"
    'e1,C1,2024-01-05T08:00:00,page_view,"{""page"": ""/""}"\n'
    'e2,C1,2024-01-05T08:01:00,page_view,"{""page"": ""/item""}"\n'
    'e3,C2,2024-01-05T08:02:00,search,"{""query"": ""卫衣""}"\n'
)
SEGMENTS = """
[[segments]]
name = "buyers_sh"
rule = "count(orders, ever) >= 1 and city = '上海'"
"""
TRIGGERS = """
[[trigger]]
name = "buyers-file"
segment = "buyers_sh"
on = "enter"
channel = "file"
path = "exports/buyers.jsonl"
"""


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def needles() -> dict[str, bytes]:
    out = {}
    for label, text in (("name", NAME), ("email", EMAIL), ("phone", PHONE), ("id", ID_NO)):
        out[label] = text.encode("utf-8")
    out["name (GBK)"] = NAME.encode("gbk")
    out["phone as written"] = b"138 0013 8000"
    return out


def files_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def found_in(folder: Path) -> dict[str, list[str]]:
    hits: dict[str, list[str]] = {}
    for path in files_of(folder):
        data = path.read_bytes()
        for label, needle in needles().items():
            if needle in data:
                hits.setdefault(label, []).append(path.name)
    return hits


@pytest.fixture
def populated(tmp_path: Path):
    """A workspace with C1 everywhere: tables, quarantine, memberships, deliveries, files."""
    ws = init_workspace(tmp_path / "ws")
    ws.close()
    w = str(tmp_path / "ws")
    (tmp_path / "customers.csv").write_bytes(CUSTOMERS.encode("gbk"))
    (tmp_path / "orders.csv").write_text(ORDERS, encoding="utf-8")
    (tmp_path / "events.csv").write_text(EVENTS, encoding="utf-8")
    (tmp_path / "segments.toml").write_text(SEGMENTS, encoding="utf-8")
    (tmp_path / "triggers.toml").write_text(TRIGGERS, encoding="utf-8")
    cli("import", "customers", str(tmp_path / "customers.csv"), "-w", w)
    cli("trigger", "apply", str(tmp_path / "triggers.toml"), "-w", w)
    cli("segment", "apply", str(tmp_path / "segments.toml"), "--as-of", "2024-01-04", "-w", w)
    cli("import", "orders", str(tmp_path / "orders.csv"), "-w", w)
    cli("import", "events", str(tmp_path / "events.csv"), "-w", w)
    cli("segment", "apply", str(tmp_path / "segments.toml"), "--as-of", "2024-01-07", "-w", w)
    cli("deliveries", "send", "-w", w)
    cli("rfm", "--as-of", "2024-01-07", "-w", w)
    cli("consent", "set", "C1", "email", "opt_in", "-w", w)
    return tmp_path


def test_forget_leaves_no_trace_and_keeps_anonymous_totals(populated: Path):
    folder = populated / "ws"
    w = str(folder)
    with open_workspace(folder) as ws:
        ws.store.duck.execute("CHECKPOINT")
        count = ws.store.duck.execute
        assert count("select count(*) from memberships where customer_id = 'C1'").fetchone()[0]
        assert count("select count(*) from rfm_scores where customer_id = 'C1'").fetchone()[0]
        quarantined = count("select count(*) from quarantine").fetchone()[0]
        assert quarantined == 1
    # the check can fail: before the erasure every needle is in the workspace's files
    before = found_in(folder)
    assert set(before) >= {"name", "email", "phone", "id", "phone as written"}, before
    assert "buyers.jsonl" in before["email"]  # the file trigger wrote the profile

    out = cli("forget", "C1", "--yes", "--json", "-w", w)
    done = json.loads(out)
    assert done["compacted"] is True
    assert done["tables"]["customers"] == 1 and done["tables"]["orders"] == 2
    assert done["tables"]["order_lines"] == 3 and done["tables"]["quarantine"] == 1
    assert done["files"] == {str(folder / "exports" / "buyers.jsonl"): 1}

    after = found_in(folder)
    assert after == {}, after
    assert not (folder / "kequn.duckdb.wal").exists()
    # positive control: the other customer's data is still readable in the same files
    assert any(OTHER_EMAIL.encode() in p.read_bytes() for p in files_of(folder))

    with open_workspace(folder) as ws:
        q = ws.store.duck.execute
        for table in ("customers", "identities", "orders", "events", "memberships", "rfm_scores"):
            assert q(f"select count(*) from {table} where customer_id = 'C1'").fetchone()[0] == 0
        assert q("select count(*) from customers where customer_id = 'C2'").fetchone()[0] == 1
        # deliveries keep their row (trigger counts) without customer or payload
        rows = q("select customer_id, payload from deliveries order by customer_id").fetchall()
        assert rows == [("(erased)", '{"erased": true}'), ("C2", rows[1][1])]
        # anonymous aggregates: C1's order (250.0) and return (-50.0), two page views
        totals = q(
            "select day::VARCHAR, kind, category, rows, amount from erased_totals order by 2"
        ).fetchall()
        assert totals == [
            ("2024-01-05", "events", "page_view", 2, 0.0),
            ("2024-01-05", "orders", "天猫", 1, 250.0),
            ("2024-01-06", "returns", "天猫", 1, -50.0),
        ]
        [erasure] = q("select erasure_id, actor, keys, tables from erasures").fetchall()
        assert erasure[1].startswith("cli:") and erasure[2] == 4  # id, e-mail, phone, ID no.
        assert json.loads(erasure[3])["customers"] == 1
        entries = audit_entries(ws, action="erasure")
        assert [e["target"] for e in entries] == [f"erasure:{erasure[0]}"]
        text = json.dumps(entries, default=str)
        assert "C1" not in text and EMAIL not in text


def test_reimport_after_forget_is_quarantined(populated: Path):
    folder = populated / "ws"
    w = str(folder)
    cli("forget", "C1", "--yes", "-w", w)
    # the same person comes back in a new file: by id, by e-mail (other case), by phone
    again = populated / "again.csv"
    again.write_text(
        "客户ID,姓名,邮箱,手机号\n"
        f"C1,{NAME},,\n"
        f"M9,{NAME},{EMAIL.upper()},\n"
        f"M8,{NAME},,+86-138-0013-8000\n"
        "M7,新客户,new@example.com,13700137000\n",
        encoding="utf-8",
    )
    report = json.loads(
        cli("import", "customers", str(again), "--source", "crm2", "--json", "-w", w)
    )
    [reason] = report["quarantined"]
    assert reason.startswith("erased on ") and reason.endswith("(right to be forgotten)")
    assert report["quarantined"][reason] == 3 and report["customers_new"] == 1
    orders = populated / "orders2.csv"
    orders.write_text("order_id,customer_id,ordered_at,amount\nz1,C1,2024-02-01,10\n")
    report = json.loads(cli("import", "orders", str(orders), "--json", "-w", w))
    assert report["imported"] == 0 and report["quarantined_total"] == 1
    with open_workspace(folder) as ws:
        q = ws.store.duck.execute
        assert q("select customer_id from customers order by 1").fetchall() == [("C2",), ("M7",)]
        # the quarantine keeps the row number and reason, not the erased person's values
        raws = q("select raw from quarantine where reason like 'erased on%'").fetchall()
        assert len(raws) == 4 and all(r[0] is None for r in raws)
    assert found_in(folder).get("email", []) == []


def test_export_person_has_every_row_and_is_audited(populated: Path):
    folder = populated / "ws"
    out = populated / "c1.json"
    cli("export-person", "C1", "--out", str(out), "-w", str(folder))
    data = json.loads(out.read_text(encoding="utf-8"))
    tables = data["tables"]
    assert data["customer_id"] == "C1"
    assert tables["customers"][0]["name"] == NAME
    assert tables["customers"][0]["attributes"]["身份证号"] == ID_NO
    assert {r["order_id"] for r in tables["orders"]} == {"536365", "C536367"}
    assert len(tables["order_lines"]) == 3 and len(tables["events"]) == 2
    assert tables["memberships"][0]["segment"] == "buyers_sh"
    assert tables["consents"][0]["status"] == "opt_in"
    assert len(tables["quarantine"]) == 1 and "138-0013-8000" in json.dumps(tables["quarantine"])
    assert tables["deliveries"][0]["payload"]["customer"]["email"] == EMAIL
    assert "C2" not in json.dumps(tables["customers"])
    with open_workspace(folder) as ws:
        [entry] = audit_entries(ws, action="person.export")
    assert entry["target"] == "C1" and entry["detail"]["file"] == str(out)


def test_forget_asks_before_erasing(populated: Path):
    w = str(populated / "ws")
    result = runner.invoke(app, ["forget", "C1", "-w", w], input="n\n")
    assert result.exit_code == 1
    result = runner.invoke(app, ["forget", "nobody@example.com", "--yes", "-w", w])
    assert result.exit_code != 0 and "no customer 'nobody@example.com'" in result.output
    with open_workspace(w) as ws:
        assert ws.store.duck.execute("select count(*) from erasures").fetchone()[0] == 0
