"""Small self-contained SVG charts for model checks (no plotting library, works offline).

An SVG opens in any browser and embeds in reports and the dashboard as it is.
"""

from __future__ import annotations

from html import escape

import pandas as pd

_W, _H = 640, 380
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 24, 48, 64


def holdout_plot_svg(table: pd.DataFrame, title: str) -> str:
    """Mean actual vs predicted holdout purchases by calibration frequency (the paper's Fig. 4).

    ``table`` is :func:`kequn.models.calibration_holdout_table`'s output; its ``all`` row is
    left out of the chart.
    """
    rows = table.drop(index="all", errors="ignore")
    labels = [str(i) for i in rows.index]
    series = {"actual": rows["actual"].tolist(), "predicted": rows["predicted"].tolist()}
    top = max(max(v) for v in series.values()) * 1.1 or 1.0
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    step = plot_w / max(len(labels) - 1, 1)

    def x(i: int) -> float:
        return _LEFT + i * step

    def y(v: float) -> float:
        return _TOP + plot_h * (1 - v / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{_W}" height="{_H}" fill="white"/>',
        f'<text x="{_W / 2}" y="24" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    for k in range(5):  # horizontal grid with values
        v = top * k / 4
        parts.append(
            f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            'stroke="#ddd"/>'
            f'<text x="{_LEFT - 8}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>'
        )
    for i, label in enumerate(labels):
        parts.append(
            f'<text x="{x(i):.1f}" y="{_H - _BOTTOM + 18}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    parts.append(
        f'<text x="{_LEFT + plot_w / 2}" y="{_H - 16}" text-anchor="middle">'
        "repeat purchases in the calibration period (校准期复购次数)</text>"
        f'<text x="16" y="{_TOP + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {_TOP + plot_h / 2})">'
        "mean purchases in the holdout (验证期平均购买)</text>"
    )
    styles = {"actual": ("#1f77b4", ""), "predicted": ("#d62728", ' stroke-dasharray="6 4"')}
    for n, (name, values) in enumerate(series.items()):
        color, dash = styles[name]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"{dash}/>'
        )
        parts += [
            f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{color}"/>'
            for i, v in enumerate(values)
        ]
        ly = _TOP + 8 + n * 18
        parts.append(
            f'<line x1="{_LEFT + 12}" x2="{_LEFT + 40}" y1="{ly}" y2="{ly}" stroke="{color}" '
            f'stroke-width="2"{dash}/><text x="{_LEFT + 46}" y="{ly + 4}">{name}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
