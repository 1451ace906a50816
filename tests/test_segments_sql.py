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
