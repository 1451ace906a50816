"""The tag catalogue, rule/model/segment/import tags, tags in segment rules, tag health."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest

from kequn import InputError, RuleError
from kequn.segments import evaluate
from kequn.store import TABLES
from kequn.tags import (
    apply_tags,
    due_tag_refreshes,
    import_tag_values,
    list_tags,
    load_tags,
    parse_tags,
    refresh_tags,
    stored_tags,
    tag_from_segment,
    tag_health,
)

TAGS = """
[[tags]]
name = "high_value"
label_zh = "高价值"
label_en = "High value"
type = "flag"
layer = "base"
owner = "crm"
source = "rule"
rule = "sum(orders.amount) >= 1000"
schedule = "1d"

[[tags]]
name = "tier"
type = "category"
source = "rule"
cases = [
  { value = "金卡", rule = "sum(orders.amount) >= 1500" },
  { value = "银卡", rule = "sum(orders.amount) >= 200" },
]
default = "普通"

[[tags]]
name = "spend"
type = "number"
source = "rule"
value = "sum(orders.amount)"
schedule = "12h"

[[tags]]
name = "churn_risky"
type = "flag"
source = "model"
rule = "churn_risk > 0.7"

[[tags]]
name = "vip_import"
type = "flag"
source = "import"
"""


def append(ws, table: str, rows: list[dict]) -> None:
    names = TABLES[table].names
    data = {n: [r.get(n) for r in rows] for n in names}
    ws.store.append(table, pa.table(data).cast(TABLES[table].to_pyarrow(), safe=False))


def order(oid: str, cid: str, day: int, amount: float) -> dict:
    return {
        "order_id": oid,
        "customer_id": cid,
        "ordered_at": datetime(2024, 6, day, 12),
        "amount": amount,
        "is_return": amount < 0,
    }


@pytest.fixture
def tagged(ws, tmp_path):
    append(ws, "customers", [{"customer_id": c, "city": "北京"} for c in "abcde"])
    append(
        ws,
        "orders",
        [
            order("o1", "a", 1, 1200.0),
            order("o2", "b", 2, 300.0),
            order("o3", "c", 3, 50.0),
            order("o4", "e", 4, 2000.0),
            order("o5", "e", 20, 100.0),  # after the first refresh's as_of
        ],
    )
    append(
        ws,
        "churn_scores",
        [
            {"customer_id": c, "as_of": datetime(2024, 6, 10), "churn_risk": r, "model": "m"}
            for c, r in (("a", 0.9), ("b", 0.2), ("c", 0.75))
        ],
    )
    file = tmp_path / "tags.toml"
    file.write_text(TAGS, encoding="utf-8")
    apply_tags(ws, load_tags(file), now=datetime(2024, 6, 10))
    return ws


def test_catalogue_round_trip(tagged):
    tags = {t.name: t for t in stored_tags(tagged)}
    assert list(tags) == ["churn_risky", "high_value", "spend", "tier", "vip_import"]
    hv = tags["high_value"]
    assert (hv.type, hv.layer, hv.source, hv.label_zh, hv.owner) == (
        "flag",
        "base",
        "rule",
        "高价值",
        "crm",
    )
    assert hv.interval.total_seconds() == 86400
    assert tags["churn_risky"].layer == "predicted"  # model tags default to the predicted layer
    listed = {t["name"]: t for t in list_tags(tagged)}
    assert listed["high_value"]["last_refresh"] is None


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"name": "x", "type": "flg", "rule": "city = 'a'"}, "did you mean 'flag'"),
        ({"name": "1x", "rule": "city = 'a'"}, "tag.NAME"),
        ({"name": "x", "type": "category", "rule": "city = 'a'"}, "lists its cases"),
        ({"name": "x", "type": "number"}, "value = a field"),
        ({"name": "x", "rule": "city = "}, "rule"),
        ({"name": "x", "rule": "city = 'a'", "schedule": "daily"}, "'daily' is not a period"),
        ({"name": "x", "source": "segment", "type": "number"}, "is a flag"),
        ({"name": "x", "source": "interest", "interest": {"alpha": 2}}, "alpha = 2"),
        ({"name": "x", "rule": "city = 'a'", "segment": "s"}, "'segment' does not apply"),
    ],
)
def test_bad_definitions_say_what_to_do(item, message):
    with pytest.raises(InputError, match=message):
        parse_tags({"tags": [item]}, "tags.toml")


def test_rule_model_and_number_tags_in_segment_rules(tagged):
    runs = refresh_tags(tagged, now=datetime(2024, 6, 11, 1), as_of="2024-06-10")
    assert set(runs) == {"high_value", "tier", "spend", "churn_risky"}  # imports are not refreshed
    at = "2024-06-10"
    assert evaluate(tagged, "tag.high_value = true", at) == ["a", "e"]
    assert evaluate(tagged, "tag.high_value = false", at) == ["b", "c", "d"]
    assert evaluate(tagged, "tag.tier = '金卡'", at) == ["e"]
    assert evaluate(tagged, "tag.tier = '银卡'", at) == ["a", "b"]
    assert evaluate(tagged, "tag.tier = '普通'", at) == ["c", "d"]
    assert evaluate(tagged, "tag.spend >= 300 and tag.spend < 2000", at) == ["a", "b"]
    assert evaluate(tagged, "tag.spend = 0", at) == ["d"]  # no orders: the sum is 0
    assert evaluate(tagged, "tag.spend is null", at) == []
    assert evaluate(tagged, "tag.churn_risky = true", at) == ["a", "c"]
    # before the first refresh there are no values: every comparison is false
    assert evaluate(tagged, "tag.high_value = true or tag.high_value = false", "2024-06-01") == []


def test_unknown_tags_get_the_closest_names(tagged):
    refresh_tags(tagged, ["high_value"], now=datetime(2024, 6, 11), as_of="2024-06-10")
    with pytest.raises(RuleError, match="unknown tag 'high_valu'; did you mean 'high_value'"):
        evaluate(tagged, "tag.high_valu = true", "2024-06-10")
    with pytest.raises(RuleError, match="no stored values yet; run `kequn tag refresh tier`"):
        evaluate(tagged, "tag.tier = '金卡'", "2024-06-10")
    with pytest.raises(RuleError, match="true/false"):
        evaluate(tagged, "tag.high_value = 1", "2024-06-10")
    with pytest.raises(RuleError, match="name one tag after the dot"):
        evaluate(tagged, "tag = 1", "2024-06-10")


def test_values_are_stored_as_changes_with_history(tagged):
    refresh_tags(tagged, ["high_value"], now=datetime(2024, 6, 11), as_of="2024-06-10")
    # nothing changed: no rows, one more run
    again = refresh_tags(tagged, ["high_value"], now=datetime(2024, 6, 12), as_of="2024-06-11")
    assert again["high_value"] == {
        "tag": "high_value",
        "as_of": datetime(2024, 6, 11),
        "computed_at": datetime(2024, 6, 12),
        "kind": "full",
        "valued": 5,
        "compared": 5,
        "changed": 0,
        "written": 0,
    }
    # b buys 800 more on June 21: crosses 1000 at the next refresh
    append(tagged, "orders", [order("o6", "b", 21, 800.0)])
    later = refresh_tags(tagged, ["high_value"], now=datetime(2024, 6, 22), as_of="2024-06-21")
    assert later["high_value"]["changed"] == 1
    assert evaluate(tagged, "tag.high_value = true", "2024-06-15") == ["a", "e"]
    assert evaluate(tagged, "tag.high_value = true", "2024-06-21") == ["a", "b", "e"]
    n = tagged.table("tag_values").count().execute()
    assert n == 5 + 1


def test_segment_saved_as_a_tag(tagged, tmp_path):
    from kequn.segments import apply, load_segments

    seg = tmp_path / "s.toml"
    seg.write_text(
        '[[segments]]\nname = "big"\nlabel_zh = "大客户"\nrule = "sum(orders.amount) > 1000"\n',
        encoding="utf-8",
    )
    apply(tagged, load_segments(seg), "2024-06-10")
    tag = tag_from_segment(tagged, "big", schedule="1d", now=datetime(2024, 6, 10))
    assert (tag.name, tag.type, tag.source, tag.label_zh) == ("big", "flag", "segment", "大客户")
    refresh_tags(tagged, ["big"], now=datetime(2024, 6, 11), as_of="2024-06-10")
    assert evaluate(tagged, "tag.big = true", "2024-06-10") == ["a", "e"]
    with pytest.raises(InputError, match="unknown segment 'bgi'"):
        tag_from_segment(tagged, "bgi")


def test_import_and_health_on_data_with_known_gaps(tagged, write):
    # 2 of 5 customers have an imported value; x is not a customer
    path = write("vip.csv", "客户ID,标签,值\na,vip_import,是\nb,vip_import,0\nx,vip_import,1\n")
    report = import_tag_values(tagged, path, as_of="2024-06-10", now=datetime(2024, 6, 10, 8))
    assert report["unknown_customers"] == 1
    assert report["tags"]["vip_import"]["valued"] == 2
    assert evaluate(tagged, "tag.vip_import = true", "2024-06-10") == ["a"]
    refresh_tags(tagged, now=datetime(2024, 6, 10, 9), as_of="2024-06-10")
    health = {h["tag"]: h for h in tag_health(tagged, now=datetime(2024, 6, 11, 3))}
    assert health["vip_import"]["coverage"] == 2 / 5
    assert health["high_value"]["coverage"] == 1.0  # a rule has a value for everyone
    assert health["churn_risky"]["coverage"] == 1.0
    assert health["spend"]["coverage"] == 1.0
    # freshness: refreshed 18 h before; daily → fresh (0.75), every 12 h → stale (1.5)
    assert health["high_value"]["status"] == "fresh"
    assert health["high_value"]["freshness"] == pytest.approx(0.75)
    assert health["spend"]["status"] == "stale"
    assert health["spend"]["freshness"] == pytest.approx(1.5)
    assert health["tier"]["status"] == "unscheduled"
    assert health["high_value"]["stability"] is None  # first refresh: nothing to compare
    # the second import changes a (true → false), drops b and adds c: 3 of 3 changed
    path = write("vip2.csv", "customer_id,tag,value\na,vip_import,false\nc,vip_import,true\n")
    import_tag_values(tagged, path, as_of="2024-06-11", now=datetime(2024, 6, 11, 8))
    h = tag_health(tagged, ["vip_import"], now=datetime(2024, 6, 11, 9))[0]
    assert (h["changed"], h["compared"], h["changed_share"], h["stability"]) == (3, 3, 1.0, 0.0)
    assert evaluate(tagged, "tag.vip_import is null", "2024-06-11") == ["b", "d", "e"]
    # a refresh where one of five flags flips: stability 4/5
    append(tagged, "orders", [order("o7", "c", 25, 2000.0)])
    refresh_tags(tagged, ["high_value"], now=datetime(2024, 6, 26), as_of="2024-06-25")
    h = tag_health(tagged, ["high_value"], now=datetime(2024, 6, 26))[0]
    assert h["stability"] == pytest.approx(4 / 5)


def test_import_errors_quote_the_bad_value(tagged, write):
    with pytest.raises(InputError, match="unknown tag 'vip_imprt'; did you mean 'vip_import'"):
        import_tag_values(tagged, write("a.csv", "customer_id,tag,value\na,vip_imprt,1\n"))
    with pytest.raises(InputError, match="row 2: 'maybe' is not a flag value"):
        import_tag_values(
            tagged, write("b.csv", "customer_id,tag,value\na,vip_import,1\nb,vip_import,maybe\n")
        )
    with pytest.raises(InputError, match="computed"):
        import_tag_values(tagged, write("c.csv", "customer_id,tag,value\na,high_value,1\n"))
    with pytest.raises(InputError, match="is imported"):
        refresh_tags(tagged, ["vip_import"])


def test_due_refreshes_follow_the_schedule(tagged):
    # never refreshed: both scheduled tags are due; unscheduled and imported ones never
    assert due_tag_refreshes(tagged, datetime(2024, 6, 10)) == ["high_value", "spend"]
    refresh_tags(tagged, ["high_value", "spend"], now=datetime(2024, 6, 10, 0))
    assert due_tag_refreshes(tagged, datetime(2024, 6, 10, 11, 59)) == []
    assert due_tag_refreshes(tagged, datetime(2024, 6, 10, 12)) == ["spend"]
    assert due_tag_refreshes(tagged, datetime(2024, 6, 11)) == ["high_value", "spend"]


def test_tags_referring_to_tags_are_refreshed_after_them(tagged):
    (derived,) = parse_tags(
        {
            "tags": [
                {"name": "risky_vip", "rule": "tag.high_value = true and tag.churn_risky = true"}
            ]
        },
        "t",
    )
    apply_tags(tagged, [derived])
    runs = refresh_tags(
        tagged,
        ["risky_vip", "churn_risky", "high_value"],
        now=datetime(2024, 6, 11),
        as_of="2024-06-10",
    )
    assert list(runs) == ["churn_risky", "high_value", "risky_vip"]
    assert evaluate(tagged, "tag.risky_vip = true", "2024-06-10") == ["a"]
