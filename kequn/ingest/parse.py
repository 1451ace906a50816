"""SQL fragments that turn raw cell text into typed values, the way people write them.

These run inside the ingest engine (DuckDB) over whole columns at once. Each parser
returns NULL where the text cannot be read, so the caller can quarantine the row and
say which column failed; empty text is "missing", not "unparseable".
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute

_DATE_FORMATS_COMMON = [
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
    "%Y.%m.%d %H:%M:%S",
    "%Y.%m.%d",
    "%Y年%m月%d日 %H:%M:%S",
    "%Y年%m月%d日 %H:%M",
    "%Y年%m月%d日%H:%M:%S",
    "%Y年%m月%d日%H时%M分",
    "%Y年%m月%d日",
    "%Y%m%d",
    "%Y%m%d %H:%M:%S",
]
_DATE_FORMATS_MDY = ["%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y", "%m-%d-%Y"]
_DATE_FORMATS_DMY = [
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
    "%d-%m-%Y",
]

RETURN_WORDS = r"(return|refund|cancel|revers|chargeback|退|取消|撤销|作废)"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def clean(col: str) -> str:
    """Text cells trimmed once, blank ones NULL: the parsers below take this with
    ``clean=True`` instead of trimming the same cell again in every check."""
    return f"nullif(trim({col}), '')"


def blank(col: str, kind: pa.DataType | None = None, *, clean: bool = False) -> str:
    """True where a cell is missing or only whitespace (typed cells: only missing)."""
    if clean or (kind is not None and not is_text(kind)):
        return f"({col} IS NULL)"
    return f"({col} IS NULL OR trim(CAST({col} AS VARCHAR)) = '')"


def text(col: str, kind: pa.DataType, *, clean: bool = False) -> str:
    """A cell as trimmed text (NULL when blank); integral floats lose their '.0'."""
    if clean:
        return col
    if pa.types.is_floating(kind):
        return (
            f"CASE WHEN {col} = trunc({col}) THEN CAST(CAST({col} AS BIGINT) AS VARCHAR) "
            f"ELSE CAST({col} AS VARCHAR) END"
        )
    if not pa.types.is_string(kind) and not pa.types.is_large_string(kind):
        return f"CAST({col} AS VARCHAR)"
    return f"nullif(trim({col}), '')"


def identifier(col: str, kind: pa.DataType, *, clean: bool = False) -> str:
    """An id as text; '12346.0' (ids saved through a float column) becomes '12346'."""
    value = text(col, kind, clean=clean)
    return (
        f"CASE WHEN ends_with({value}, '.0') "
        f"THEN regexp_replace({value}, '^(\\d+)\\.0+$', '\\1') ELSE {value} END"
    )


def date_formats(date_order: str) -> list[str]:
    return _DATE_FORMATS_COMMON + (_DATE_FORMATS_DMY if date_order == "dmy" else _DATE_FORMATS_MDY)


def sniff_date_format(engine, values: pa.Array, date_order: str) -> str | None:
    """The format that reads most of a sample of a column (ISO text needs none).

    ``try_strptime`` with a list of formats is slow when the first ones fail, so each
    file's column is parsed with its own format first and the full list only for the
    rows that format does not read.
    """
    sample = pa.table({"v": values.cast(pa.string())}).filter(
        pa.compute.invert(pa.compute.is_null(values))
    )
    if sample.num_rows == 0:
        return None
    engine.register("_date_sample", sample.slice(0, 2000))
    try:
        iso, total = engine.execute(
            "SELECT count(TRY_CAST(trim(v) AS TIMESTAMP)), count(*) FROM _date_sample"
        ).fetchall()[0]
        if iso == total:
            return None
        best, best_n = None, iso
        for fmt in date_formats(date_order):
            n = engine.execute(
                "SELECT count(try_strptime(trim(v), ?)) FROM _date_sample", [fmt]
            ).fetchall()[0][0]
            if n > best_n:
                best, best_n = fmt, n
        return best
    finally:
        engine.unregister("_date_sample")


def timestamp(
    col: str,
    kind: pa.DataType,
    *,
    date_order: str,
    timezone: str,
    preferred: str | None = None,
    clean: bool = False,
) -> str:
    """Dates and times in the common forms; offsets are converted to the workspace zone."""
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        if pa.types.is_timestamp(kind) and kind.tz is not None:
            return f"timezone({quote_str(timezone)}, {col})"
        return f"CAST({col} AS TIMESTAMP)"
    if pa.types.is_integer(kind):
        return f"try_strptime(CAST({col} AS VARCHAR), '%Y%m%d')"
    value = col if clean else f"trim(CAST({col} AS VARCHAR))"
    fmt_list = "[" + ", ".join(quote_str(f) for f in date_formats(date_order)) + "]"
    first = f"try_strptime({value}, {quote_str(preferred)}), " if preferred else ""
    # coalesce evaluates lazily: the slow full list runs only where the cheap forms fail
    return (
        f"CASE WHEN {blank(col, clean=clean)} THEN NULL "
        # an offset is at most the last 6 characters: the regex need not scan the rest
        f"WHEN regexp_matches(right({value}, 6), '(Z|[+-]\\d\\d:?\\d\\d)$') "
        f"THEN timezone({quote_str(timezone)}, TRY_CAST({value} AS TIMESTAMPTZ)) "
        f"ELSE coalesce(TRY_CAST({value} AS TIMESTAMP), {first}"
        f"try_strptime({value}, {fmt_list})) END"
    )


def number(col: str, kind: pa.DataType, *, decimal_comma: bool, clean: bool = False) -> str:
    """Amounts as written: '¥1,234.50', '1 234,50' (decimal comma), '$12', '12元'."""
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return f"CAST({col} AS DOUBLE)"
    value = col if clean else f"trim(CAST({col} AS VARCHAR))"
    stripped = f"regexp_replace({value}, '(RMB|CNY|USD|EUR|[¥￥$€£元\\s\u00a0\u202f])', '', 'g')"
    if decimal_comma:
        stripped = f"replace(replace({stripped}, '.', ''), ',', '.')"
    else:
        stripped = f"replace({stripped}, ',', '')"
    # plain numbers take the fast cast; only the others go through the text clean-up
    plain = "" if decimal_comma else f"TRY_CAST({value} AS DOUBLE), "
    missing = blank(col, clean=clean)
    return f"CASE WHEN {missing} THEN NULL ELSE coalesce({plain}TRY_CAST({stripped} AS DOUBLE)) END"


def email_norm(expr: str) -> str:
    """Lower-cased, trimmed e-mail; NULL when it does not look like one."""
    value = f"lower(trim({expr}))"
    return f"CASE WHEN regexp_matches({value}, '^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$') THEN {value} END"


def phone_norm(expr: str) -> str:
    """Digits only; Chinese mobiles lose +86/0086 so every form of one number is equal."""
    digits = f"regexp_replace({expr}, '\\D', '', 'g')"
    cn = f"regexp_extract({digits}, '^(?:0086|86)?(1[3-9]\\d{{9}})$', 1)"
    return f"CASE WHEN {cn} <> '' THEN {cn} WHEN length({digits}) >= 7 THEN {digits} END"
