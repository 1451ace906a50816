"""Snapshots of the DuckDB SQL that rules compile to (through Ibis, never string-built).

A change here is a change in what every segment computes: review it, then update the
snapshot. Constants are bound as literals by Ibis; no rule text is pasted into SQL.
"""

from __future__ import annotations

import ibis
import pytest
from test_segments_fixtures import AS_OF, template

from kequn import open_workspace
from kequn.segments import flags

SNAPSHOTS = {
    "city = '北京' and not email is null": """
SELECT
  "t0"."customer_id",
  COALESCE("t0"."city" = '北京', FALSE) AND NOT (
    "t0"."email" IS NULL
  ) AS "member"
FROM "customers" AS "t0"
""",
    "count(events where properties.category = '美妆', last 7 days) > 0": """
SELECT
  "t2"."customer_id",
  COALESCE(COALESCE("t5"."_events_0", 0) > 0, FALSE) AS "member"
FROM "customers" AS "t2"
LEFT OUTER JOIN (
  SELECT
    "t3"."customer_id" AS "_key",
    COUNT("t3"."customer_id") FILTER(WHERE
      (
        "t3"."occurred_at" < MAKE_TIMESTAMP(2024, 7, 1, 0, 0, 0.0)
      )
      AND (
        "t3"."occurred_at" >= MAKE_TIMESTAMP(2024, 6, 24, 0, 0, 0.0)
      )
      AND COALESCE(
        CASE
          WHEN JSON_TYPE(CAST("t3"."properties" AS JSON) -> '$.category') = 'VARCHAR'
          THEN (
            CAST("t3"."properties" AS JSON) -> '$.category'
          ) ->> '$'
          ELSE NULL
        END = '美妆',
        FALSE
      )) AS "_events_0"
  FROM (
    SELECT
      *
    FROM "events" AS "t1"
    WHERE
      "t1"."occurred_at" < MAKE_TIMESTAMP(2024, 7, 1, 0, 0, 0.0)
      AND "t1"."occurred_at" >= MAKE_TIMESTAMP(2024, 6, 24, 0, 0, 0.0)
  ) AS "t3"
  GROUP BY
    1
) AS "t5"
  ON "t2"."customer_id" = "t5"."_key"
""",
    "days_since_last_order < 30": """
SELECT
  "t2"."customer_id",
  COALESCE(
    DATE_DIFF('DAY', CAST("t5"."_last_at" AS DATE), MAKE_DATE(2024, 6, 30)) < 30,
    FALSE
  ) AS "member"
FROM "customers" AS "t2"
LEFT OUTER JOIN (
  SELECT
    "t3"."customer_id" AS "_key",
    MIN("t3"."ordered_at") FILTER(WHERE
      NOT (
        COALESCE("t3"."is_return", FALSE)
      )) AS "_first_at",
    MAX("t3"."ordered_at") FILTER(WHERE
      NOT (
        COALESCE("t3"."is_return", FALSE)
      )) AS "_last_at"
  FROM (
    SELECT
      *
    FROM "orders" AS "t1"
    WHERE
      "t1"."ordered_at" < MAKE_TIMESTAMP(2024, 7, 1, 0, 0, 0.0)
  ) AS "t3"
  GROUP BY
    1
) AS "t5"
  ON "t2"."customer_id" = "t5"."_key"
""",
    "count(events where type = 'add_to_cart' then no orders within 1 day, last 7 days) > 0": """
SELECT
  "t3"."customer_id",
  COALESCE(COALESCE("t10"."_next0_0", 0) > 0, FALSE) AS "member"
FROM "customers" AS "t3"
LEFT OUTER JOIN (
  SELECT
    "t8"."_acid" AS "_next0_key",
    COUNT("t8"."_acid") FILTER(WHERE
      (
        "t8"."_ats" < MAKE_TIMESTAMP(2024, 7, 1, 0, 0, 0.0)
      )
      AND (
        "t8"."_ats" >= MAKE_TIMESTAMP(2024, 6, 24, 0, 0, 0.0)
      )
      AND NOT (
        COALESCE("t8"."_bts" <= (
          "t8"."_ats" + INTERVAL '1' DAY
        ), FALSE)
      )
      AND (
        (
          "t8"."_ats" + INTERVAL '1' DAY
        ) < MAKE_TIMESTAMP(2024, 7, 1, 0, 0, 0.0)
      )) AS "_next0_0"
  FROM (
    SELECT
      "t6"."_acid",
      "t6"."_ats",
      "t6"."_aid",
      "t7"."_bcid",
      "t7"."_bts",
      "t7"."_bid"
    FROM (
      SELECT
        "t1"."customer_id" AS "_acid",
        "t1"."occurred_at" AS "_ats",
        "t1"."event_id" AS "_aid"
      FROM "events" AS "t1"
      WHERE
        "t1"."occurred_at" < MAKE_TIMESTAMP(2024, 7, 1, 0, 0, 0.0)
        AND COALESCE("t1"."type" = 'add_to_cart', FALSE)
        AND "t1"."occurred_at" >= MAKE_TIMESTAMP(2024, 6, 24, 0, 0, 0.0)
    ) AS "t6"
    ASOF LEFT JOIN (
      SELECT
        "t2"."customer_id" AS "_bcid",
        "t2"."ordered_at" AS "_bts",
        "t2"."order_id" AS "_bid"
      FROM "orders" AS "t2"
      WHERE
        "t2"."ordered_at" < MAKE_TIMESTAMP(2024, 7, 1, 0, 0, 0.0)
        AND NOT (
          COALESCE("t2"."is_return", FALSE)
        )
    ) AS "t7"
      ON "t6"."_ats" <= "t7"."_bts" AND "t6"."_acid" = "t7"."_bcid"
  ) AS "t8"
  GROUP BY
    1
) AS "t10"
  ON "t3"."customer_id" = "t10"."_next0_key"
""",
    "count(orders then orders within 30 days) > 0": """
SELECT
  "t2"."customer_id",
  COALESCE(COALESCE("t9"."_seq0", 0) > 0, FALSE) AS "member"
FROM "customers" AS "t2"
LEFT OUTER JOIN (
  SELECT
    "t7"."_acid" AS "_seq0_key",
    COUNT(*) AS "_seq0"
  FROM (
    SELECT
      "t5"."_acid",
      "t5"."_ats",
      "t5"."_aid"
    FROM (
      SELECT
        "t1"."customer_id" AS "_acid",
        "t1"."ordered_at" AS "_ats",
        "t1"."order_id" AS "_aid"
      FROM "orders" AS "t1"
      WHERE
        "t1"."ordered_at" < MAKE_TIMESTAMP(2024, 7, 1, 0, 0, 0.0)
        AND NOT (
          COALESCE("t1"."is_return", FALSE)
        )
    ) AS "t5"
    SEMI JOIN (
      SELECT
        "t1"."customer_id" AS "_bcid",
        "t1"."ordered_at" AS "_bts",
        "t1"."order_id" AS "_bid"
      FROM "orders" AS "t1"
      WHERE
        "t1"."ordered_at" < MAKE_TIMESTAMP(2024, 7, 1, 0, 0, 0.0)
        AND NOT (
          COALESCE("t1"."is_return", FALSE)
        )
    ) AS "t6"
      ON "t5"."_acid" = "t6"."_bcid"
      AND "t6"."_bts" >= "t5"."_ats"
      AND "t6"."_bts" <= (
        "t5"."_ats" + INTERVAL '30' DAY
      )
      AND "t6"."_bid" <> "t5"."_aid"
  ) AS "t7"
  GROUP BY
    1
) AS "t9"
  ON "t2"."customer_id" = "t9"."_seq0_key"
""",
}


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory):
    workspace = open_workspace(template(tmp_path_factory))
    yield workspace
    workspace.close()


@pytest.mark.parametrize("rule", list(SNAPSHOTS))
def test_compiled_sql(ws, rule: str) -> None:
    sql = ibis.to_sql(flags(ws, rule, AS_OF), dialect="duckdb")
    assert sql.strip() == SNAPSHOTS[rule].strip()
