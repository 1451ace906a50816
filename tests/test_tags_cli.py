"""``kequn tag``: apply, list, refresh, show, health, import, from-segment, interests, score."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from test_tags_decay import append, event
from typer.testing import CliRunner

from kequn import init_workspace
from kequn.cli import app

runner = CliRunner()

TAGS = """
[[tags]]
name = "big_spender"
label_zh = "高消费"
type = "flag"
source = "rule"
rule = "sum(orders.amount) >= 100"
schedule = "1d"

[[tags]]
name = "interests"
source = "interest"
interest = { events = { product_view = 1, add_to_cart = 3 }, threshold = 3 }

[[tags]]
name = "activity"
source = "score"
score = { weights = { orders = 5, product_view = 1 }, half_life_days = 10 }

[[tags]]
name = "vip"
type = "flag"
source = "import"
"""


@pytest.fixture
def folder(tmp_path):
    ws = init_workspace(tmp_path / "ws")
    append(ws, "customers", [{"customer_id": c} for c in ("a", "b")])
    append(
        ws,
        "orders",
        [
            {
                "order_id": "o1",
                "customer_id": "a",
                "ordered_at": datetime(2024, 6, 30, 9),
                "amount": 150.0,
                "is_return": False,
            }
        ],
    )
    append(
        ws,
        "events",
        [
            event("b", "2024-06-30 10:00", "add_to_cart", "美妆"),
            event("a", "2024-06-29 10:00", "product_view", "数码"),
        ],
    )
    ws.close()
    (tmp_path / "tags.toml").write_text(TAGS, encoding="utf-8")
    return tmp_path


def kequn(folder, *args: str):
    result = runner.invoke(app, [*args, "-w", str(folder / "ws")])
    return result


def test_tag_commands_end_to_end(folder):
    r = kequn(folder, "tag", "apply", str(folder / "tags.toml"))
    assert r.exit_code == 0, r.output
    assert "stored 4 tag(s)" in r.output
    r = kequn(folder, "tag", "refresh", "--as-of", "2024-06-30", "--json")
    assert r.exit_code == 0, r.output
    runs = json.loads(r.output)
    assert set(runs) == {"big_spender", "interests", "activity"}
    assert runs["big_spender"]["valued"] == 2
    assert runs["interests"]["valued"] == 1  # b: 3 ≥ threshold 3; a: 1
    r = kequn(folder, "tag", "list")
    assert r.exit_code == 0 and "高消费" in r.output and "never" in r.output  # vip: imported
    r = kequn(folder, "tag", "show", "big_spender", "--as-of", "2024-06-30", "--json")
    shown = json.loads(r.output)
    assert shown["health"]["coverage"] == 1.0
    assert {v["customer_id"]: v["value"] for v in shown["values"]} == {"a": "true", "b": "false"}
    r = kequn(folder, "segment", "count", "tag.big_spender = true", "--as-of", "2024-06-30")
    assert r.exit_code == 0, r.output
    assert "1" in r.output
    (folder / "vip.csv").write_text("customer_id,tag,value\na,vip,1\n", encoding="utf-8")
    r = kequn(folder, "tag", "import", str(folder / "vip.csv"), "--as-of", "2024-06-30")
    assert r.exit_code == 0 and "1 with a value" in r.output, r.output
    r = kequn(folder, "tag", "health", "--as-of", "2024-06-30", "--json")
    health = {h["tag"]: h for h in json.loads(r.output)}
    assert health["vip"]["coverage"] == 0.5
    r = kequn(folder, "tag", "interests", "interests", "--as-of", "2024-06-30", "--json")
    weights = json.loads(r.output)["weights"]
    assert [(w["customer_id"], w["category"], w["weight"]) for w in weights] == [
        ("b", "美妆", 3.0),
        ("a", "数码", 1.0),
    ]
    r = kequn(folder, "tag", "score", "activity", "--as-of", "2024-06-30")
    assert r.exit_code == 0, r.output
    assert "share of score" in r.output and "核心" in r.output
    r = kequn(folder, "tag", "refresh", "--due")
    assert r.exit_code == 0, r.output


def test_tag_errors_are_clean(folder):
    kequn(folder, "tag", "apply", str(folder / "tags.toml"))
    r = kequn(folder, "tag", "show", "big_spendr")
    assert r.exit_code == 2
    assert "did you mean 'big_spender'" in r.output
    r = kequn(folder, "tag", "score", "interests")
    assert r.exit_code == 2 and "not a behaviour score" in r.output
    r = kequn(folder, "tag", "from-segment", "nope")
    assert r.exit_code == 2 and "unknown segment 'nope'" in r.output
