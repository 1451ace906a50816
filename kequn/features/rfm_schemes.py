"""The RFM segment maps: which R, F, M scores make a Champion, a 重要价值客户 or a Gold tier.

Each scheme is plain data (a grid or a table of codes with Chinese and English labels) plus
one small function that turns it into an Ibis expression, so the mapping is written once,
runs inside the database on every backend, and can be printed in the docs and tested cell by
cell. ``docs/rfm.md`` shows the same tables.

All three schemes read scores on the 1–5 grid. With another number of bins, each score is
first moved to the 1–5 grid by the midpoint of its bin (:func:`to_five`), so ``--bins 10`` or
``--bins 3`` keep the published maps instead of needing new ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import ibis
import ibis.expr.types as ir


@dataclass(frozen=True)
class Segment:
    """One segment: a stable code for rules and files, and its labels in both languages."""

    code: str
    zh: str
    en: str


@dataclass(frozen=True)
class Scheme:
    """A named segment map; ``segments`` is in display order (best customers first)."""

    name: str
    zh: str
    en: str
    segments: tuple[Segment, ...]

    def label(self, code: str, lang: str) -> str:
        for segment in self.segments:
            if segment.code == code:
                return getattr(segment, lang)
        return code


# --- intl: the 11-segment R × FM grid ------------------------------------------------------
# FM is the mean of the F and M scores rounded half up, ceil((F + M) / 2). The grid is the one
# published with the BigQuery RFM tutorials and reused by most SQL implementations; every one
# of its 25 cells has exactly one segment, so no customer is left as "other".

INTL_SEGMENTS = (
    Segment("champions", "冠军客户", "Champions"),
    Segment("loyal", "忠诚客户", "Loyal"),
    Segment("potential_loyalist", "潜在忠诚客户", "Potential Loyalist"),
    Segment("new_customers", "新客户", "New Customers"),
    Segment("promising", "有潜力客户", "Promising"),
    Segment("need_attention", "需要关注客户", "Need Attention"),
    Segment("about_to_sleep", "即将沉睡客户", "About to Sleep"),
    Segment("at_risk", "有流失风险客户", "At Risk"),
    Segment("cannot_lose_them", "不能失去的客户", "Cannot Lose Them"),
    Segment("hibernating", "休眠客户", "Hibernating"),
    Segment("lost", "流失客户", "Lost"),
)

# (R, FM) -> segment code; R = 5 is the most recent.
INTL_GRID: dict[tuple[int, int], str] = {
    (5, 5): "champions",
    (5, 4): "champions",
    (4, 5): "champions",
    (5, 3): "loyal",
    (4, 4): "loyal",
    (3, 5): "loyal",
    (3, 4): "loyal",
    (5, 2): "potential_loyalist",
    (4, 2): "potential_loyalist",
    (4, 3): "potential_loyalist",
    (3, 3): "potential_loyalist",
    (5, 1): "new_customers",
    (4, 1): "promising",
    (3, 1): "promising",
    (3, 2): "need_attention",
    (2, 3): "need_attention",
    (2, 2): "need_attention",
    (2, 1): "about_to_sleep",
    (2, 5): "at_risk",
    (2, 4): "at_risk",
    (1, 3): "at_risk",
    (1, 5): "cannot_lose_them",
    (1, 4): "cannot_lose_them",
    (1, 2): "hibernating",
    (1, 1): "lost",
}

# --- cn8: the Chinese eight-class model ------------------------------------------------------
# Each of R, F, M is "high" (高) when the customer's score is at or above the mean score of all
# scored customers (score >= mean counts as high), else "low" (低). R high means recent.

CN8_SEGMENTS = (
    Segment("important_value", "重要价值客户", "Important Value"),
    Segment("important_development", "重要发展客户", "Important Development"),
    Segment("important_retention", "重要保持客户", "Important Retention"),
    Segment("important_winback", "重要挽留客户", "Important Win-back"),
    Segment("general_value", "一般价值客户", "General Value"),
    Segment("general_development", "一般发展客户", "General Development"),
    Segment("general_retention", "一般保持客户", "General Retention"),
    Segment("general_winback", "一般挽留客户", "General Win-back"),
)

# (R high, F high, M high) -> segment code.
CN8_MAP: dict[tuple[bool, bool, bool], str] = {
    (True, True, True): "important_value",
    (True, False, True): "important_development",
    (False, True, True): "important_retention",
    (False, False, True): "important_winback",
    (True, True, False): "general_value",
    (True, False, False): "general_development",
    (False, True, False): "general_retention",
    (False, False, False): "general_winback",
}

# --- tiers: five value tiers -----------------------------------------------------------------
# The tier is the mean of the R, F and M scores (on the 1–5 grid) rounded to the nearest whole
# number; the mean of three integers is never exactly x.5, so there is no rounding tie.

TIER_SEGMENTS = (
    Segment("diamond", "钻石客户", "Diamond"),
    Segment("platinum", "铂金客户", "Platinum"),
    Segment("gold", "黄金客户", "Gold"),
    Segment("silver", "白银客户", "Silver"),
    Segment("bronze", "青铜客户", "Bronze"),
)

TIER_MAP: dict[int, str] = {5: "diamond", 4: "platinum", 3: "gold", 2: "silver", 1: "bronze"}

SCHEMES: dict[str, Scheme] = {
    "intl": Scheme("intl", "国际通用 11 类", "11 international segments", INTL_SEGMENTS),
    "cn8": Scheme("cn8", "八类价值模型", "Chinese 8-class model", CN8_SEGMENTS),
    "tiers": Scheme("tiers", "五级价值分层", "five value tiers", TIER_SEGMENTS),
}


def to_five(score: ir.IntegerValue, bins: int) -> ir.IntegerValue:
    """Move a 1..bins score to the 1–5 grid by the midpoint of its bin.

    ``1 + floor((2s - 1) * 5 / (2 * bins))``: identity for 5 bins, symmetric for others
    (3 bins -> 1, 3, 5; 10 bins -> 1, 1, 2, 2, ..., 5, 5). Integer arithmetic only.
    """
    if bins == 5:
        return score
    return ((score * 2 - 1) * 5) // (2 * bins) + 1


def segment_code(
    scheme: str,
    r: ir.IntegerValue,
    f: ir.IntegerValue,
    m: ir.IntegerValue,
    *,
    bins: int,
    r_high: ir.BooleanValue | None = None,
    f_high: ir.BooleanValue | None = None,
    m_high: ir.BooleanValue | None = None,
) -> ir.StringValue:
    """The segment code as an Ibis expression (a CASE over a small integer key).

    ``r_high`` and friends are only read by ``cn8``; they are passed in because they need a
    window over all customers, which belongs to the caller's query.
    """
    if scheme == "intl":
        r5, f5, m5 = to_five(r, bins), to_five(f, bins), to_five(m, bins)
        fm5 = (f5 + m5 + 1) // 2
        key = r5 * 10 + fm5
        cases = [(rr * 10 + fm, code) for (rr, fm), code in INTL_GRID.items()]
    elif scheme == "cn8":
        if r_high is None or f_high is None or m_high is None:
            raise ValueError("scheme 'cn8' needs r_high, f_high and m_high")
        key = (
            r_high.ifelse(4, 0).cast("int64")
            + f_high.ifelse(2, 0).cast("int64")
            + m_high.ifelse(1, 0).cast("int64")
        )
        cases = [(rh * 4 + fh * 2 + mh, code) for (rh, fh, mh), code in CN8_MAP.items()]
    elif scheme == "tiers":
        total = to_five(r, bins) + to_five(f, bins) + to_five(m, bins)
        key = (total * 2 + 3) // 6
        cases = list(TIER_MAP.items())
    else:  # validated before; a new scheme without a map must fail loudly
        raise ValueError(f"unknown RFM scheme {scheme!r}")
    return key.cases(*cases, else_=ibis.null("string"))


def segment_label(scheme: str, code: ir.StringValue, lang: str) -> ir.StringValue:
    """The Chinese (``lang="zh"``) or English (``"en"``) label for a code column."""
    pairs = [(s.code, getattr(s, lang)) for s in SCHEMES[scheme].segments]
    return code.cases(*pairs, else_=code)
