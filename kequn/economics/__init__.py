"""Campaign economics and the segmentation benefit matrix (营销经济性 · 分群收益矩阵).

:mod:`kequn.economics.costs` loads cost lines (labour, technology, material per campaign,
channel and period); :mod:`kequn.economics.report` computes CAC, LTV/CAC, revenue, ROI and the
engagement funnel per channel, segment, campaign and variant; :mod:`kequn.economics.benefit`
scores a segmentation on four dimensions. See docs/economics.md.
"""

from __future__ import annotations

from kequn.economics.benefit import DIMENSIONS, THRESHOLD, benefit, segmentations
from kequn.economics.costs import COST_COLUMNS, import_costs, list_costs
from kequn.economics.report import BY, EconomicsReport, economics

__all__ = [
    "BY",
    "COST_COLUMNS",
    "DIMENSIONS",
    "THRESHOLD",
    "EconomicsReport",
    "benefit",
    "economics",
    "import_costs",
    "list_costs",
    "segmentations",
]
