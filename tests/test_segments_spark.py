"""DuckDB/Spark parity: the same rules give the same members on both engines.

One workspace is built on the embedded DuckDB: the generated sample (400 customers with
orders and events, seed 7) plus the hand-made rows of ``test_segments_fixtures.py`` (nested
JSON properties, Chinese attribute values, window edges), with stored RFM, CLV and lifecycle
runs at as_of. A second workspace has ``[store] backend = "spark"`` (a local[2] session) and
gets the first one's tables through :func:`kequn.spark.copy_tables`. Every rule below is
compiled by the one compiler against each workspace and run as one query per engine; the
member lists must be identical, and enough rules select a real share of the customers for
that to mean something. Spark starts a JVM: Java 17 must be installed (a missing Java fails
here with a message saying so; it is not skipped).
"""

from __future__ import annotations

import gc
from pathlib import Path

import ibis
import pytest
from test_segments_fixtures import build_workspace

from kequn import open_workspace
from kequn.errors import WorkspaceError
from kequn.features.rfm import save_rfm
from kequn.ingest import import_files
from kequn.insight.lifecycle import save_lifecycle
from kequn.models.clv import predict_clv
from kequn.sample import write_sample
from kequn.segments import Segment, count, evaluate
from kequn.segments.compile import _has_asof_join, compile_rule, compile_rules
from kequn.segments.engine import _Context
from kequn.segments.timing import resolve_as_of
from kequn.spark import RULE_TABLES, copy_tables, java_version

# PySpark 4.0 drops the local sockets it reads results through without closing them
# (pyspark.util.local_connect_and_auth); the ResourceWarning is theirs, not kequn's.
pytestmark = [
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
    # PySpark 4.0's toPandas calls Series.astype(copy=False), deprecated in pandas 3
    pytest.mark.filterwarnings(
        "ignore:The copy keyword is deprecated:pandas.errors.Pandas4Warning"
    ),
]

AS_OF = "2024-06-30"
# a second moment, an instant: windows then end mid-day and no score run exists yet
INSTANT = "2024-03-15T14:30"
SEGMENTS = {
    "recent_buyers": "count(orders, last 90 days) >= 1",
    "beijing": "city = '北京'",
}

RULES = {
    # --- customer attributes, Chinese values, text matching -----------------------------------
    "city_eq": "city = '北京'",
    "city_ne": "city != '上海'",  # false where city is missing
    "city_in": "city in ('上海', '深圳', '杭州')",
    "city_not_in": "city not in ('北京', '上海')",
    "city_null": "city is null",
    "name_starts": "name starts with '张'",
    "email_contains": "email contains 'qq.com'",
    "email_ends_or_not_contains": "email ends with '.org' or email not contains '@'",
    "text_order": "city > '北京' and channel is not null",  # code-point order of Chinese
    "created_between": "created_at between '2023-06-01' and '2024-02-29'",
    "created_after_instant": "created_at > '2024-05-20 12:00'",
    "birth_or_null": "birth_date < '1991-01-01' or birth_date is null",
    "attr_level": "attributes.会员等级 in ('金卡', '银卡')",
    "attr_number": "attributes.score >= 80",
    "attr_null": "attributes.会员等级 is null and gender = '女'",
    # --- order windows and aggregates ---------------------------------------------------------
    "orders_30_days": "count(orders, last 30 days) >= 1",
    "orders_5_weeks": "count(orders, last 5 weeks) >= 1",
    "sum_12_months": "sum(orders.amount, last 12 months) > 1000",
    "never_ordered": "count(orders, ever) = 0",
    "returns": "count(returns) > 0",
    "all_orders_sum": "sum(all_orders.amount, last 6 months) between 0 and 500",
    "avg": "avg(orders.amount) > 300",
    "avg_null": "avg(orders.amount) is null",
    "min_and_max": "min(orders.amount) < 100 and max(orders.amount, last 90 days) >= 200",
    "max_timestamp": "max(orders.ordered_at) >= '2024-06-01'",
    "between_dates": "count(orders, between '2023-12-01' and '2024-01-31') >= 1",
    "distinct_channels": "count_distinct(orders.channel) >= 2",
    # --- computed, RFM and predicted fields ---------------------------------------------------
    "days_since_last": "days_since_last_order < 60",
    "days_since_first": "days_since_first_order >= 365",
    "days_since_null": "days_since_last_order is null",
    "rfm_scores": "r_score >= 4 and f_score >= 2",
    "rfm_segment": "rfm_segment in ('champions', 'loyal')",
    "clv": "clv > 200 or p_alive < 0.3",
    "churn_risk": "churn_risk > 0.5",
    "lifecycle": "status_stage = 'active' and funnel_stage is not null",
    # --- events, event types, JSON properties -------------------------------------------------
    "event_category": (
        "count(events where type = 'product_view' and properties.category = '美妆', "
        "last 90 days) > 0"
    ),
    "event_distinct_json": (
        "count_distinct(events.properties.product_id where type = 'product_view', "
        "last 30 days) >= 2"
    ),
    "event_types": "count_distinct(events.type, last 60 days) >= 3",
    "event_nested_json": "count(events where properties.detail.color = '红') > 0",
    "event_json_null": (
        "count(events where properties.category is null and type = 'product_view') > 0"
    ),
    "event_json_sum": "sum(events.properties.quantity, last 90 days) >= 3",
    "event_json_max": "max(events.properties.price) between 100 and 200",
    "event_json_in_or": (
        "count(events where properties.sku in ('A1', 'C1') or properties.coupon is not null, "
        "last 180 days) > 0"
    ),
    "no_events": "count(events) = 0",
    # --- sequences (as-of join on DuckDB, range join on Spark) --------------------------------
    "seq_same_table": (
        "count(events where type = 'product_view' then events where type = 'add_to_cart' "
        "within 1 day, last 90 days) > 0"
    ),
    "seq_cart_then_order": (
        "count(events where type = 'add_to_cart' then orders within 3 days, last 90 days) > 0"
    ),
    "seq_cart_then_no_order": (
        "count(events where type = 'add_to_cart' then no orders within 3 days, last 90 days) > 0"
    ),
    "seq_repeat_orders": "count(orders then orders within 8 weeks) >= 2",
    "seq_no_return": (
        "count(orders where channel = 'app' or amount > 1 then no returns within 3 weeks) = 0"
    ),
    # --- logic, Chinese keywords, segment references ------------------------------------------
    "not_and_or": (
        "not (city = '北京' or city is null) and (gender = '女' or count(orders, last 30 days) > 0)"
    ),
    "cart_but_no_order": (
        "count(events where type = 'add_to_cart', last 7 days) > 0 "
        "and count(orders, last 7 days) = 0"
    ),
    "chinese_keywords": "计数(订单, 最近 30 天) >= 1 或 city 属于 （'上海'，'深圳'）",
    "in_segment": "属于分群 'recent_buyers' 且 不属于分群 'beijing'",
}

QUIET_LOG4J = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = stderr
appender.console.type = Console
appender.console.name = stderr
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
"""


@pytest.fixture(scope="module")
def duck_ws(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("parity")
    paths = write_sample(
        folder / "sample",
        customers=400,
        seed=7,
        formats="parquet",
        end="2024-12-31",
        tables=["customers", "orders", "events"],
    )
    ws = build_workspace(folder / "duck")  # the hand-made rows c01…c10
    for kind in ("customers", "orders", "events"):
        import_files(ws, kind, [paths[f"{kind}.parquet"]])
    save_rfm(ws, as_of=AS_OF)
    predict_clv(ws, as_of=AS_OF)
    save_lifecycle(ws, AS_OF)
    # churn_risk needs stored churn scores; any per-customer number will do for parity
    clv = ws.table("clv_scores")
    churn = clv.select("customer_id", "as_of", "model", "computed_at", churn_risk=1 - clv.p_alive)
    ws.store.append("churn_scores", churn.to_pyarrow())
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def spark_ws(tmp_path_factory: pytest.TempPathFactory, duck_ws):
    folder = tmp_path_factory.mktemp("spark") / "ws"
    folder.mkdir()
    log4j = folder.parent / "log4j2.properties"
    log4j.write_text(QUIET_LOG4J, encoding="utf-8")
    (folder / "kequn.toml").write_text(
        f"""\
[store]
backend = "spark"

[store.spark]
master = "local[2]"
"spark.sql.shuffle.partitions" = "2"
"spark.default.parallelism" = "2"
"spark.driver.extraJavaOptions" = "-Dlog4j2.configurationFile=file:{log4j}"

[workspace]
timezone = "Asia/Shanghai"
""",
        encoding="utf-8",
    )
    ws = open_workspace(folder)
    copy_tables(duck_ws, ws)
    yield ws
    ws.close()  # stops the session
    gc.collect()  # sockets PySpark left behind warn here, under this module's filters


def _members(ws, moment: str) -> dict[str, list[str]]:
    """Every rule's member ids on one workspace, from one query."""
    ctx = _Context(ws, [Segment(name=n, rule=r) for n, r in SEGMENTS.items()])
    checked = {name: ctx.check(rule) for name, rule in RULES.items()}
    as_of = resolve_as_of(moment, ws.config.timezone)
    flags = compile_rules(checked, ctx.tables, as_of, ctx.catalog).to_pyarrow().to_pylist()
    return {name: sorted(str(r["customer_id"]) for r in flags if r[name]) for name in RULES}


@pytest.fixture(scope="module")
def members(duck_ws, spark_ws) -> dict[str, dict[str, dict[str, list[str]]]]:
    return {
        moment: {"duckdb": _members(duck_ws, moment), "spark": _members(spark_ws, moment)}
        for moment in (AS_OF, INSTANT)
    }


def test_the_spark_workspace_runs_on_spark_with_the_configured_master(spark_ws, duck_ws):
    assert spark_ws.con.name == "pyspark" and duck_ws.con.name == "duckdb"
    assert spark_ws.con._session.sparkContext.master == "local[2]"
    for name in RULE_TABLES:  # every table a rule reads arrived whole
        rows = duck_ws.table(name).count().execute()
        assert spark_ws.table(name).count().execute() == rows > 0, name


@pytest.mark.parametrize("moment", [AS_OF, INSTANT])
@pytest.mark.parametrize("rule", list(RULES))
def test_same_members_on_duckdb_and_spark(members, moment: str, rule: str) -> None:
    found = members[moment]
    assert found["spark"][rule] == found["duckdb"][rule], RULES[rule]


def test_parity_is_not_vacuous(members, duck_ws) -> None:
    total = duck_ws.table("customers").count().execute()
    sizes = {rule: len(ids) for rule, ids in members[AS_OF]["duckdb"].items()}
    # every rule selects someone, and most a real share of the customers (not all of them)
    assert all(n > 0 for n in sizes.values()), sizes
    real = [rule for rule, n in sizes.items() if 10 <= n <= total - 10]
    assert len(real) >= 30, sizes
    # the instant moves windows and hides the score runs (stored at 2024-06-30)
    early = members[INSTANT]["duckdb"]
    assert early["orders_30_days"] != members[AS_OF]["duckdb"]["orders_30_days"]
    assert early["clv"] == [] and len(early["orders_30_days"]) >= 10


def test_each_engine_runs_its_own_sequence_join(duck_ws, spark_ws) -> None:
    """The parity of sequences compares two algorithms: an as-of join and a range join."""
    assert _has_asof_join({"customers": duck_ws.table("customers")})
    assert not _has_asof_join({"customers": spark_ws.table("customers")})
    ctx = _Context(spark_ws)
    rule = ctx.check(RULES["event_nested_json"])
    as_of = resolve_as_of(AS_OF, spark_ws.config.timezone)
    sql = ibis.to_sql(compile_rule(rule, ctx.tables, as_of, ctx.catalog))
    assert "VARIANT_GET" in sql.upper() and "GET_JSON_OBJECT" not in sql.upper()


def test_public_api_on_a_spark_workspace(duck_ws, spark_ws) -> None:
    segs = [Segment(name=n, rule=r) for n, r in SEGMENTS.items()]
    for rule in ("attributes.会员等级 = '金卡'", "in segment 'recent_buyers'"):
        on_spark = evaluate(spark_ws, rule, AS_OF, segments=segs)
        assert on_spark == evaluate(duck_ws, rule, AS_OF, segments=segs)
    assert evaluate(spark_ws, "attributes.会员等级 = '金卡'", AS_OF) == ["c01"]
    assert count(spark_ws, "count(orders, last 30 days) >= 1", AS_OF) == len(
        evaluate(duck_ws, "count(orders, last 30 days) >= 1", AS_OF)
    )


def test_copy_into_a_non_spark_backend_is_refused(duck_ws) -> None:
    with pytest.raises(WorkspaceError, match="copies into Spark"):
        copy_tables(duck_ws, duck_ws)


def test_missing_java_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert "version" in java_version()  # Java is here: the banner of `java -version`
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))  # a folder without bin/java
    with pytest.raises(WorkspaceError, match="Java 17"):
        java_version()
