"""Personas on a hand-made workspace (every figure below is checked by hand) and the CLI.

Ten customers; the segment ``count(orders) >= 2`` holds p1..p4:

====  ======  ======  =======================================
id    city    gender  purchases (amount, channel, day)
====  ======  ======  =======================================
p1    北京    女      100 app Mon 10h, 300 app Tue 10h
p2    北京    女      200 app Mon 10h, 200 web Mon 20h
p3    北京    女      50 app Mon 10h, 50 app Wed 10h
p4    上海    女      400 store Mon 10h, 400 app Mon 10h
p5    上海    男      1000 web Fri 15h
p6    上海    男      -
p7-p8 广州    男      -
p9    北京    女      -
p10   -       男      -
====  ======  ======  =======================================
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest
import typer
from test_insight_clustering import AS_OF, build_workspace
from typer.testing import CliRunner

from kequn import init_workspace
from kequn.cli import cluster as cluster_cli
from kequn.cli import persona as persona_cli
from kequn.insight import persona, persona_markdown, persona_text
from kequn.store import CUSTOMERS, ORDERS

RULE = "count(orders) >= 2"
CITIES = ["北京", "北京", "北京", "上海", "上海", "上海", "广州", "广州", "北京", None]
GENDERS = ["女", "女", "女", "女", "男", "男", "男", "男", "女", "男"]
# 2024-06-24 is a Monday
ORDERS_ROWS = [
    ("p1", 100, "app", "2024-06-24 10:00"),
    ("p1", 300, "app", "2024-06-25 10:00"),
    ("p2", 200, "app", "2024-06-24 10:00"),
    ("p2", 200, "web", "2024-06-24 20:00"),
    ("p3", 50, "app", "2024-06-24 10:00"),
    ("p3", 50, "app", "2024-06-26 10:00"),
    ("p4", 400, "store", "2024-06-24 10:00"),
    ("p4", 400, "app", "2024-06-24 10:30"),
    ("p5", 1000, "web", "2024-06-28 15:00"),
]


def _table(schema, columns: dict) -> pa.Table:
    n = len(next(iter(columns.values())))
    return pa.table(
        {name: columns.get(name, [None] * n) for name in schema.names}, schema=schema.to_pyarrow()
    )


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory):
    workspace = init_workspace(tmp_path_factory.mktemp("persona") / "ws")
    ids = [f"p{i}" for i in range(1, 11)]
    workspace.store.append(
        "customers", _table(CUSTOMERS, {"customer_id": ids, "city": CITIES, "gender": GENDERS})
    )
    workspace.store.append(
        "orders",
        _table(
            ORDERS,
            {
                "order_id": [f"o{i}" for i in range(len(ORDERS_ROWS))],
                "customer_id": [r[0] for r in ORDERS_ROWS],
                "amount": [float(r[1]) for r in ORDERS_ROWS],
                "channel": [r[2] for r in ORDERS_ROWS],
                "ordered_at": [datetime.fromisoformat(r[3]) for r in ORDERS_ROWS],
                "is_return": [False] * len(ORDERS_ROWS),
            },
        ),
    )
    yield workspace
    workspace.close()


def test_persona_figures_by_hand(ws) -> None:
    p = persona(ws, RULE, AS_OF, min_count=2)
    assert p["size"] == 4 and p["customers"] == 10 and p["share"] == pytest.approx(0.4)
    # revenue: members 1700 of 2700
    assert p["revenue_share"] == pytest.approx(1700 / 2700)
    # spend 400, 400, 100, 800 -> median 400; orders all 2; last orders 5, 6, 4, 6 days ago
    assert p["median"] == {"recency_days": 5.5, "frequency": 2.0, "monetary": 400.0}
    attrs = {(a["field"], a["value"]): a for a in p["attributes"]}
    # gender 女: 4 of 4 members vs 5 of 10 customers -> lift 2.0
    assert attrs[("gender", "女")]["lift"] == pytest.approx(2.0)
    assert attrs[("gender", "女")]["count"] == 4
    # city 北京: 3 of 4 vs 4 of 10 -> 1.875; 上海 (1 member) is under min_count and lift < 1
    assert attrs[("city", "北京")]["lift"] == pytest.approx(1.875)
    assert ("city", "上海") not in attrs
    assert [a["value"] for a in p["attributes"]] == ["女", "北京"]
    # channel: 6 of 8 member orders in app; overall 6 of 9
    assert p["channel"]["value"] == "app" and p["channel"]["share"] == pytest.approx(0.75)
    assert p["channel"]["lift"] == pytest.approx(0.75 / (6 / 9))
    # weekday: 6 of 8 member orders on Monday; hour: 7 of 8 between 10:00 and 10:59
    assert p["weekday"]["en"] == "Monday" and p["weekday"]["share"] == pytest.approx(6 / 8)
    assert p["hour"]["value"] == 10 and p["hour"]["share"] == pytest.approx(7 / 8)
    assert p["clv"] is None and p["churn_risk"] is None


def test_min_count_filters_support(ws) -> None:
    p = persona(ws, RULE, AS_OF, min_count=4)
    assert [(a["field"], a["value"]) for a in p["attributes"]] == [("gender", "女")]


def test_words_are_deterministic_and_bilingual(ws) -> None:
    a = persona(ws, RULE, AS_OF, min_count=2)
    b = persona(ws, RULE, AS_OF, min_count=2)
    assert a == b
    assert a["name_zh"] == "女·活跃客户" or a["name_zh"].endswith("客户")
    assert "4 位客户" in a["description_zh"] and "4 customers" in a["description_en"]
    assert a["name_zh"] in persona_text(a) and persona_markdown(a).startswith("## ")
    json.dumps(a, ensure_ascii=False)  # JSON-ready


def make_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """kequn (test app)."""

    cluster_cli.register(app)
    persona_cli.register(app)
    return app


def test_cli_cluster_save_and_persona(tmp_path: Path) -> None:
    build_workspace(tmp_path / "ws").close()
    app, runner, w = make_app(), CliRunner(), ["-w", str(tmp_path / "ws")]
    out = runner.invoke(app, ["cluster", "--as-of", AS_OF, "--features", "rfm,events", *w])
    assert out.exit_code == 0, out.output
    assert "silhouette by k" in out.output and "precision" in out.output
    out = runner.invoke(app, ["cluster", "--k", "3", "--as-of", AS_OF, "--json", *w])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["k"] == 3 and len(data["clusters"]) == 3 and "rule" in data["clusters"][0]
    out = runner.invoke(app, ["cluster", "save", "0", "--as", "biggest", "--json", *w])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["rule"] == data["clusters"][0]["rule"]
    out = runner.invoke(app, ["persona", "biggest", "--as-of", AS_OF, "--format", "json", *w])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["size"] == data["clusters"][0]["rule_size"]
    out = runner.invoke(app, ["persona", "cluster:1", "--format", "markdown", *w])
    assert out.exit_code == 0 and out.output.startswith("## ")
    for bad in (["persona", "x", "--format", "pdf"], ["cluster", "--k", "one"],
                ["persona", "cluster:9"], ["persona", "ctiy = '北京'"]):  # fmt: skip
        result = runner.invoke(app, [*bad, *w])
        assert result.exit_code == 2, (bad, result.output)
