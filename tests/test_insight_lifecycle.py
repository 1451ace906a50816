"""Lifecycle stages on hand-made histories, at the edges of every window, and the CLI.

As of the day 2024-06-30 the windows count from its end, 2024-07-01 00:00 (``END``): the last
N days start at ``END - N days``. Each customer below sits one minute inside or outside an
edge (defaults: new 30, active 90, at risk 180, lapsed 365 days).
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from kequn import init_workspace
from kequn.cli import lifecycle as lifecycle_cli
from kequn.errors import InputError
from kequn.insight.lifecycle import (
    LIFECYCLE_STAGES,
    lifecycle,
    lifecycle_rules,
    lifecycle_summary,
    save_lifecycle,
    stored_runs,
)
from kequn.store import CUSTOMERS, EVENTS, ORDERS
from kequn.workspace import open_workspace

AS_OF = date(2024, 6, 30)
END = datetime(2024, 7, 1)
MIN = timedelta(minutes=1)


def ago(days: int, delta: timedelta = timedelta()) -> datetime:
    return END - timedelta(days=days) + delta


# customer → purchases (True = a return), expected status stage, expected funnel stage
ORDERS_BY_CUSTOMER: dict[str, list[tuple[datetime, bool]]] = {
    "new_edge": [(ago(30), False)],
    "new_out": [(ago(30, -MIN), False)],  # one minute before the new window: active
    "active_edge": [(ago(90), False)],
    "at_risk_in": [(ago(90, -MIN), False)],
    "at_risk_edge": [(ago(180), False)],
    "lapsed_in": [(ago(180, -MIN), False)],
    "lapsed_edge": [(ago(365), False)],
    "churned": [(ago(365, -MIN), False), (ago(5), True)],  # a return is not a purchase
    "returns_only": [(ago(3), True)],
    "future_only": [(END + MIN, False)],  # after as_of: not seen yet
    # came back after a gap longer than 365 days, within the active window
    "reactivated": [(ago(500), False), (ago(20), False)],
    "reactivated_again": [(ago(800), False), (ago(80), False), (ago(10), False)],
    # a gap of exactly 365 days is not longer than the lapsed threshold
    "gap_edge": [(ago(60 + 365), False), (ago(60), False)],
    # the comeback was before the active window: only the recency counts
    "back_too_early": [(ago(900), False), (ago(100), False)],
    "retained": [(ago(200), False), (ago(40), False)],
    "two_old": [(ago(300), False), (ago(200), False)],
    "referrer": [(ago(120), False)],
}
EVENTS_BY_CUSTOMER: dict[str, list[tuple[datetime, str]]] = {
    "browser": [(ago(10), "page_view")],
    "late_browser": [(END, "page_view")],  # END itself is after a day's as_of
    "referrer": [(ago(50), "referral")],
    "prospect_referrer": [(ago(1), "referral")],
    "retained": [(ago(5), "page_view")],
}
EXPECTED = {
    # customer: (status, funnel)
    "new_edge": ("new", "activation"),
    "new_out": ("active", "activation"),
    "active_edge": ("active", "activation"),
    "at_risk_in": ("at_risk", "activation"),
    "at_risk_edge": ("at_risk", "activation"),
    "lapsed_in": ("lapsed", "activation"),
    "lapsed_edge": ("lapsed", "activation"),
    "churned": ("churned", "activation"),
    "returns_only": ("prospect", "acquisition"),
    "future_only": ("prospect", "acquisition"),
    "reactivated": ("reactivated", "retention"),
    "reactivated_again": ("reactivated", "retention"),
    "gap_edge": ("active", "retention"),
    "back_too_early": ("at_risk", "activation"),
    "retained": ("active", "retention"),
    "two_old": ("lapsed", "activation"),
    "referrer": ("at_risk", "referral"),
    "browser": ("prospect", "nurture"),
    "late_browser": ("prospect", "acquisition"),
    "prospect_referrer": ("prospect", "referral"),
    "known": ("prospect", "acquisition"),
}


def _table(schema, columns: dict) -> pa.Table:
    n = len(next(iter(columns.values())))
    return pa.table(
        {name: columns.get(name, [None] * n) for name in schema.names}, schema=schema.to_pyarrow()
    )


def fill(ws) -> None:
    ids = sorted(EXPECTED) + ["signed_up_later"]
    created = [END + timedelta(days=3) if c == "signed_up_later" else None for c in ids]
    ws.store.append("customers", _table(CUSTOMERS, {"customer_id": ids, "created_at": created}))
    orders = [(c, ts, ret) for c, rows in ORDERS_BY_CUSTOMER.items() for ts, ret in rows]
    ws.store.append(
        "orders",
        _table(
            ORDERS,
            {
                "order_id": [f"o{i}" for i in range(len(orders))],
                "customer_id": [c for c, _, _ in orders],
                "ordered_at": [ts for _, ts, _ in orders],
                "amount": [-50.0 if ret else 100.0 for _, _, ret in orders],
                "is_return": [ret for _, _, ret in orders],
            },
        ),
    )
    events = [(c, ts, kind) for c, rows in EVENTS_BY_CUSTOMER.items() for ts, kind in rows]
    ws.store.append(
        "events",
        _table(
            EVENTS,
            {
                "event_id": [f"e{i}" for i in range(len(events))],
                "customer_id": [c for c, _, _ in events],
                "occurred_at": [ts for _, ts, _ in events],
                "type": [k for _, _, k in events],
            },
        ),
    )


@pytest.fixture
def filled(ws):
    fill(ws)
    return ws


def test_every_stage_at_the_window_edges(filled):
    df = lifecycle(filled, AS_OF)
    got = {r.customer_id: (r.status_stage, r.funnel_stage) for r in df.itertuples()}
    assert got == EXPECTED  # signed_up_later is not known yet
    row = df.set_index("customer_id").loc["churned"]
    assert row.purchases == 1 and row.last_purchase_at == ago(365, -MIN)


def test_an_instant_as_of_counts_up_to_and_including_it(filled):
    df = lifecycle(filled, END).set_index("customer_id")
    assert df.loc["late_browser", "funnel_stage"] == "nurture"
    assert "signed_up_later" not in df.index
    # windows now start at END - N days exactly as before: the edges do not move
    assert df.loc["active_edge", "status_stage"] == "active"
    assert df.loc["at_risk_in", "status_stage"] == "at_risk"


def test_rules_from_the_config_and_their_checks(filled):
    rules = lifecycle_rules(filled, {"active_days": 100, "referral_events": "invite"})
    df = lifecycle(filled, AS_OF, rules).set_index("customer_id")
    assert df.loc["at_risk_in", "status_stage"] == "active"
    assert df.loc["back_too_early", "status_stage"] == "reactivated"
    assert df.loc["referrer", "funnel_stage"] == "activation"
    assert df.loc["prospect_referrer", "funnel_stage"] == "nurture"
    with pytest.raises(InputError, match="active_days < at_risk_days"):
        lifecycle_rules(filled, {"at_risk_days": 90})
    with pytest.raises(InputError, match="unknown setting 'idle_days'"):
        lifecycle_rules(filled, {"idle_days": 3})
    with pytest.raises(InputError, match="whole number"):
        lifecycle_rules(filled, {"new_days": 0})
    path = filled.path
    filled.close()
    with open(path / "kequn.toml", "a", encoding="utf-8") as f:
        f.write("\n[lifecycle]\nlapsed_days = 400\n")
    with open_workspace(path) as ws:
        assert lifecycle_rules(ws).lapsed_days == 400
        df = lifecycle(ws, AS_OF).set_index("customer_id")
        assert df.loc["churned", "status_stage"] == "lapsed"
        assert df.loc["reactivated", "status_stage"] == "reactivated"  # a 480-day gap


def test_movement_between_two_runs(filled):
    assert lifecycle_summary(filled, AS_OF).previous is None
    assert save_lifecycle(filled, date(2024, 3, 31)) == len(EXPECTED)
    assert save_lifecycle(filled, AS_OF) == len(EXPECTED)
    assert save_lifecycle(filled, AS_OF) == len(EXPECTED)  # replaces, does not add
    assert stored_runs(filled) == [datetime(2024, 3, 31), datetime(2024, 6, 30)]
    stored = filled.table("lifecycle_stages")
    assert dict(stored.schema().items()).keys() == dict(LIFECYCLE_STAGES.items()).keys()
    assert stored.count().execute() == 2 * len(EXPECTED)

    before = lifecycle(filled, date(2024, 3, 31)).set_index("customer_id")
    now = lifecycle(filled, AS_OF).set_index("customer_id")
    expected: dict[tuple[str, str], int] = {}
    for cid in now.index:
        a, b = before.loc[cid, "status_stage"], now.loc[cid, "status_stage"]
        if a != b:
            expected[(a, b)] = expected.get((a, b), 0) + 1
    summary = lifecycle_summary(filled, AS_OF)
    assert summary.previous == datetime(2024, 3, 31)
    moves = {(m["from"], m["to"]): m["customers"] for m in summary.status_movement}
    assert moves == expected
    assert moves[("prospect", "new")] == 1  # new_edge had no purchase yet on 2024-03-31
    # both had only their old order on 2024-03-31: churned then, back now
    assert moves[("churned", "reactivated")] == 2
    funnel = {(m["from"], m["to"]): m["customers"] for m in summary.funnel_movement}
    assert funnel[("activation", "retention")] == 4  # reactivated(_again), gap_edge, retained
    assert summary.customers == len(EXPECTED)
    assert sum(summary.status_counts.values()) == sum(summary.funnel_counts.values())

    explicit = lifecycle_summary(filled, AS_OF, previous="2024-03-31")
    assert explicit.status_movement == summary.status_movement
    with pytest.raises(InputError, match="no stored lifecycle run at 2024-01-01"):
        lifecycle_summary(filled, AS_OF, previous="2024-01-01")


def test_counts_and_funnel_conversion(filled):
    s = lifecycle_summary(filled, AS_OF)
    assert s.status_counts == {
        "prospect": 6,
        "new": 1,
        "active": 4,
        "reactivated": 2,
        "at_risk": 4,
        "lapsed": 3,
        "churned": 1,
    }
    assert s.funnel_counts == {
        "acquisition": 4,
        "nurture": 1,
        "activation": 10,
        "retention": 4,
        "referral": 2,
    }
    conv = {(c["from"], c["to"]): (c["reached_from"], c["reached_to"]) for c in s.conversion}
    assert conv == {
        ("acquisition", "nurture"): (21, 17),
        ("nurture", "activation"): (17, 16),
        ("activation", "retention"): (16, 6),
        ("retention", "referral"): (6, 2),
    }
    assert s.conversion[-1]["rate"] == pytest.approx(2 / 6)


def test_reactivation_threshold(ws):
    fill(ws)
    # reactivated's gap is 480 days: reactivated while lapsed_days < 480, active from 480 on
    at_479 = lifecycle_rules(ws, {"lapsed_days": 479})
    at_480 = lifecycle_rules(ws, {"lapsed_days": 480})
    assert lifecycle(ws, AS_OF, at_479).set_index("customer_id").loc[
        "reactivated", "status_stage"
    ] == "reactivated"  # fmt: skip
    assert lifecycle(ws, AS_OF, at_480).set_index("customer_id").loc[
        "reactivated", "status_stage"
    ] == "active"  # fmt: skip


# --- CLI -------------------------------------------------------------------------------

runner = CliRunner()
app = typer.Typer(pretty_exceptions_enable=False)


@app.callback()
def _root() -> None:
    """kequn (test app)."""


lifecycle_cli.register(app)


def test_cli_prints_counts_conversion_and_movement(tmp_path):
    with init_workspace(tmp_path / "ws") as ws:
        fill(ws)
    first = runner.invoke(app, ["lifecycle", "--as-of", "2024-03-31", "-w", str(tmp_path / "ws")])
    assert first.exit_code == 0, first.output
    assert "no earlier stored run" in first.output
    result = runner.invoke(app, ["lifecycle", "--as-of", "2024-06-30", "-w", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    for text in ("回流", "reactivated", "裂变", "引流 acquisition → 培育 nurture",
                 "movement since 2024-03-31", "prospect → new: 1", "stored 21 rows"):  # fmt: skip
        assert text in result.output, text
    out = runner.invoke(
        app, ["lifecycle", "--as-of", "2024-06-30", "--json", "-w", str(tmp_path / "ws")]
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["previous"] == "2024-03-31T00:00:00" and data["stored"] == 21
    assert {s["stage"]: s["customers"] for s in data["status"]}["reactivated"] == 2
    assert data["funnel"][0]["label_zh"] == "引流"
    bad = runner.invoke(app, ["lifecycle", "--as-of", "1 May", "-w", str(tmp_path / "ws")])
    assert bad.exit_code == 2 and "not a date" in bad.output
