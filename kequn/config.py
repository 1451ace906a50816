"""The workspace configuration file, ``kequn.toml``.

The file is written once by ``kequn init`` with every setting spelled out and commented,
so users edit a file rather than learn flags. Reading is strict about types and lenient
about absent keys: a missing key takes its default.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kequn.errors import WorkspaceError

CONFIG_NAME = "kequn.toml"

TEMPLATE = """\
# kequn workspace configuration (客群工作区配置)

[store]
# "duckdb" keeps everything in one embedded file beside this config (the default).
# Any Ibis connection URL works too, e.g. "postgres://user:password@host:5432/db".
backend = "duckdb"
path = "kequn.duckdb"

[workspace]
# Time zone used for "today", day boundaries and relative windows.
timezone = "{timezone}"
currency = "CNY"

[import]
# Set to true when amounts are written with a decimal comma ("1 234,50").
decimal_comma = false
# Date order for ambiguous numeric dates such as 01/02/2024: "mdy" or "dmy".
date_order = "mdy"
# Working memory an import may use before DuckDB spills to disk (beside the database).
memory_limit = "1GB"

[import.map]
# Extra header → field mappings used by every import, e.g.
# "会员卡号" = "customer_id"

[identity]
# When records of several sources are one customer and disagree on a field (客户合并), the
# value the profile shows; the others stay in its history (`kequn profile ID --history`).
# "newest": the latest import wins; "most_frequent": the value most source records give
# (ties: newest); "source_priority": the value of the first source listed below (sources
# not listed come last; ties: newest). See docs/import.md.
merge_rule = "newest"
# import --source names, most trusted first, e.g. ["crm", "shop"]; "api" is the HTTP API
source_priority = []

[rfm]
bins = 5
scheme = "intl"          # intl (11 segments), cn8 (8 classes), tiers (5 value tiers)
method = "quantile"      # or "fixed": the thresholds below
net_returns = false      # true: monetary is purchases minus returns
# [rfm.thresholds]       # bins-1 ascending numbers each, used with method = "fixed"
# recency = [30, 90, 180, 365]
# frequency = [2, 3, 5, 8]
# monetary = [200, 500, 1000, 3000]

[health]
# Thresholds of `kequn health` (客群健康度); see docs/health.md.
min_segment_size = 100   # segments with fewer members are too small to act on
jaccard_threshold = 0.8  # pairs sharing at least this share of members are near-duplicates
max_segments = 20        # more segments than a team can give a strategy each
staleness_days = 7       # data newer than the last evaluation by more days is stale

[tags.interest]
# Defaults of decayed interest tags (兴趣标签); a tag's own settings win. docs/tags.md
alpha = 0.85             # share of interest kept per period
period_days = 7          # periods are whole days counted back from the as_of day
threshold = 7            # a category is an interest once its weight reaches this
top_k = 3                # interests kept per customer, strongest first
category = "category"    # the event property that names the category
orders = 5               # weight of a purchased order line of the category

[tags.interest.events]
product_view = 1
add_to_cart = 3

[tags.score]
# Defaults of the behaviour score (行为权重); docs/tags.md
half_life_days = 30      # an occurrence this old counts half
normalise = "percentile" # or "minmax"

[tags.score.weights]
orders = 5
add_to_cart = 3
product_view = 1

[economics]
# Campaign economics (营销经济性); docs/economics.md
attribution_days = 7     # a purchase this many days after a message converts it
open_events = ["message_open", "email_open", "open"]
click_events = ["message_click", "email_click", "click"]

# Segmentations for `kequn benefit NAME` (分群收益矩阵), scores 1–5, e.g.
# [segmentations.value_tiers]
# segments = ["champions", "at_risk", "hibernating"]
# market_maturity = 4
# product_standardisation = 3

[privacy]
# Triggers send to: "opt_out" everyone but customers who opted out of the channel;
# "opt_in" only customers who opted in (what PIPL/GDPR ask for marketing). docs/privacy.md
consent = "opt_out"

[privacy.fields]
# Field classes (public, personal, sensitive). personal: masked for viewers; sensitive:
# hidden, unusable in rules and left out of exports and trigger payloads without the
# "sensitive" grant. Unlisted fields use defaults by name (phone, e-mail, ID numbers,
# names, addresses: personal; health, religion, income, ...: sensitive).
# The bundled sample's fields:
name = "personal"
name_en = "personal"
email = "personal"
phone = "personal"
birth_date = "personal"
gender = "public"
age_band = "public"
city = "public"
province = "public"
channel = "public"
# health_condition = "sensitive"
"""


@dataclass(frozen=True)
class Config:
    """Settings read from ``kequn.toml``; every field has a default."""

    backend: str = "duckdb"
    db_path: str = "kequn.duckdb"
    timezone: str = "Asia/Shanghai"
    currency: str = "CNY"
    decimal_comma: bool = False
    date_order: str = "mdy"
    import_memory_limit: str = "1GB"
    column_map: dict[str, str] = field(default_factory=dict)
    rfm: dict[str, object] = field(default_factory=dict)
    raw: dict[str, object] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Config:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise WorkspaceError(f"{str(path)!r} is not valid TOML: {exc}") from exc
        store = _section(data, "store", path)
        ws = _section(data, "workspace", path)
        imp = _section(data, "import", path)
        date_order = str(imp.get("date_order", "mdy"))
        if date_order not in ("mdy", "dmy"):
            raise WorkspaceError(
                f"{str(path)!r}: [import] date_order = {date_order!r}; use 'mdy' or 'dmy'"
            )
        return cls(
            backend=str(store.get("backend", "duckdb")),
            db_path=str(store.get("path", "kequn.duckdb")),
            timezone=str(ws.get("timezone", "Asia/Shanghai")),
            currency=str(ws.get("currency", "CNY")),
            decimal_comma=bool(imp.get("decimal_comma", False)),
            date_order=date_order,
            import_memory_limit=str(imp.get("memory_limit", "1GB")),
            column_map={str(k): str(v) for k, v in dict(imp.get("map", {})).items()},
            rfm=dict(_section(data, "rfm", path)),
            raw=data,
        )


def _section(data: dict, name: str, path: Path) -> dict:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise WorkspaceError(f"{str(path)!r}: [{name}] must be a table, not {value!r}")
    return value


def zone_info(timezone: str) -> ZoneInfo:
    """The workspace time zone; a name Python does not know is a config error."""
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise WorkspaceError(
            f"[workspace] timezone = {timezone!r} is not a known time zone "
            "(use a name such as 'Asia/Shanghai' or 'UTC')"
        ) from exc
