"""Experiment results: conversion and revenue per arm, uplift over the holdout, tests.

:func:`report` reads ``experiment_assignments`` and ``orders`` and computes, in one query,
per arm (and per sub-segment with ``by``): customers, conversions and revenue in the
outcome window after each customer's assignment. The statistics are then computed from
those sums (no per-customer data leaves the engine):

* conversion rate with a Wilson 95% interval;
* mean revenue per customer with a Student t 95% interval;
* absolute uplift of the rate over the baseline with Newcombe's hybrid score interval
  (method 10, built from the two Wilson intervals), relative uplift with the Katz log
  interval of the rate ratio, and a pooled two-proportion z test (the same p-value as a
  2×2 chi-square without continuity correction);
* absolute uplift of mean revenue with a Welch interval and Welch's t test, relative
  uplift with a delta-method interval of the ratio of means;
* a sample-ratio-mismatch check: chi-square of the assigned counts against the configured
  shares.

Only customers whose outcome window has ended by ``as_of`` are analysed (the others are
counted as ``pending``), so every analysed customer had the same time to convert.
See docs/experiments.md for the formulas and an example.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import ibis
import ibis.expr.types as ir

from kequn.act.experiments import HOLDOUT, Experiment
from kequn.asof import AsOf, resolve_as_of
from kequn.errors import InputError, closest
from kequn.workspace import Workspace

__all__ = [
    "SRM_ALPHA",
    "experiment_config",
    "list_experiments",
    "newcombe_interval",
    "report",
    "wilson_interval",
]

Z95 = 1.959963984540054  # the 97.5% point of the standard normal
SRM_ALPHA = 0.001  # a sample ratio this unlikely means the assignment is broken
NONE_GROUP = "(none)"
_EXPERIMENT_KEYS = ("name", "arms", "outcome", "window_days", "variants")

METHODS = {
    "rate_ci": "Wilson score interval, 95%",
    "rate_uplift_ci": "Newcombe hybrid score interval (method 10) for p_arm - p_baseline, 95%",
    "rate_relative_ci": "Katz log interval of the rate ratio p_arm / p_baseline, minus 1, 95%",
    "rate_test": "pooled two-proportion z test, two-sided (= 2x2 chi-square, no correction)",
    "revenue_ci": "Student t interval of the mean, 95%",
    "revenue_uplift_ci": "Welch interval (Welch-Satterthwaite df) for the difference, 95%",
    "revenue_relative_ci": "delta-method interval of mean_arm / mean_baseline, minus 1, 95%",
    "revenue_test": "Welch t test, two-sided",
    "srm": f"chi-square goodness of fit of assigned counts vs shares; mismatch if p < {SRM_ALPHA}",
}


# --- statistics from sums ----------------------------------------------------------------


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for a proportion; None without observations."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def newcombe_interval(
    x1: int, n1: int, x0: int, n0: int, z: float = Z95
) -> tuple[float, float] | None:
    """Newcombe's hybrid score interval (method 10) for p1 - p0."""
    w1, w0 = wilson_interval(x1, n1, z), wilson_interval(x0, n0, z)
    if w1 is None or w0 is None:
        return None
    p1, p0 = x1 / n1, x0 / n0
    d = p1 - p0
    lower = d - math.sqrt((p1 - w1[0]) ** 2 + (w0[1] - p0) ** 2)
    upper = d + math.sqrt((w1[1] - p1) ** 2 + (p0 - w0[0]) ** 2)
    return lower, upper


@dataclass(frozen=True)
class _Arm:
    """Sums for one arm (in one group): enough for every statistic in the report."""

    n: int
    conversions: int
    revenue: float
    revenue_sq: float

    @property
    def rate(self) -> float | None:
        return self.conversions / self.n if self.n else None

    @property
    def mean(self) -> float | None:
        return self.revenue / self.n if self.n else None

    @property
    def var(self) -> float | None:
        """Sample variance of revenue per customer (n - 1 in the denominator)."""
        if self.n < 2:
            return None
        return max(0.0, (self.revenue_sq - self.revenue**2 / self.n) / (self.n - 1))


def _mean_ci(arm: _Arm) -> list[float] | None:
    from scipy import stats

    var = arm.var
    if var is None or arm.mean is None:
        return None
    half = stats.t.ppf(0.975, arm.n - 1) * math.sqrt(var / arm.n)
    return [arm.mean - half, arm.mean + half]


def _rate_uplift(arm: _Arm, base: _Arm) -> dict[str, Any]:
    from scipy import stats

    out: dict[str, Any] = {"abs": None, "abs_ci": None, "rel": None, "rel_ci": None}
    out.update({"z": None, "p_value": None})
    if not arm.n or not base.n:
        return out
    p1, p0 = arm.rate, base.rate
    assert p1 is not None and p0 is not None
    out["abs"] = p1 - p0
    ci = newcombe_interval(arm.conversions, arm.n, base.conversions, base.n)
    out["abs_ci"] = list(ci) if ci else None
    if p0 > 0:
        out["rel"] = p1 / p0 - 1
    if arm.conversions > 0 and base.conversions > 0:
        se = math.sqrt(1 / arm.conversions - 1 / arm.n + 1 / base.conversions - 1 / base.n)
        log_rr = math.log(p1 / p0)
        out["rel_ci"] = [math.exp(log_rr - Z95 * se) - 1, math.exp(log_rr + Z95 * se) - 1]
    pooled = (arm.conversions + base.conversions) / (arm.n + base.n)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / arm.n + 1 / base.n))
    if se0 > 0:
        z = (p1 - p0) / se0
        out["z"] = z
        out["p_value"] = float(2 * stats.norm.sf(abs(z)))
    return out


def _revenue_uplift(arm: _Arm, base: _Arm) -> dict[str, Any]:
    from scipy import stats

    out: dict[str, Any] = {"abs": None, "abs_ci": None, "rel": None, "rel_ci": None}
    out.update({"t": None, "df": None, "p_value": None})
    if not arm.n or not base.n:
        return out
    m1, m0 = arm.mean, base.mean
    assert m1 is not None and m0 is not None
    out["abs"] = m1 - m0
    if m0 > 0:
        out["rel"] = m1 / m0 - 1
    v1, v0 = arm.var, base.var
    if v1 is None or v0 is None:
        return out
    a, b = v1 / arm.n, v0 / base.n
    se = math.sqrt(a + b)
    if se == 0:
        return out
    df = (a + b) ** 2 / (a * a / (arm.n - 1) + b * b / (base.n - 1))
    half = stats.t.ppf(0.975, df) * se
    out["abs_ci"] = [m1 - m0 - half, m1 - m0 + half]
    t = (m1 - m0) / se
    out["t"], out["df"] = t, df
    out["p_value"] = float(2 * stats.t.sf(abs(t), df))
    if m0 > 0:
        ratio = m1 / m0
        se_ratio = math.sqrt(a / m0**2 + m1**2 * b / m0**4)
        out["rel_ci"] = [ratio - Z95 * se_ratio - 1, ratio + Z95 * se_ratio - 1]
    return out


def _arm_figures(name: str, arm: _Arm, base: _Arm | None, baseline: str) -> dict[str, Any]:
    ci = wilson_interval(arm.conversions, arm.n)
    row: dict[str, Any] = {
        "arm": name,
        "n": arm.n,
        "conversions": arm.conversions,
        "rate": arm.rate,
        "rate_ci": list(ci) if ci else None,
        "revenue": arm.revenue,
        "revenue_mean": arm.mean,
        "revenue_mean_ci": _mean_ci(arm),
        "uplift": None,
    }
    if base is not None and name != baseline:
        row["uplift"] = {
            "rate": _rate_uplift(arm, base),
            "revenue": _revenue_uplift(arm, base),
        }
    return row


def _srm(counts: dict[str, int], shares: dict[str, float] | None) -> dict[str, Any] | None:
    from scipy import stats

    if not shares:
        return None
    total = sum(counts.values())
    if total == 0:
        return None
    arms = sorted(set(shares) | set(counts))
    unexpected = [a for a in arms if a not in shares and counts.get(a)]
    observed = {a: counts.get(a, 0) for a in arms}
    expected = {a: total * shares.get(a, 0.0) for a in arms}
    result: dict[str, Any] = {"observed": observed, "expected": expected}
    if unexpected:
        # an arm the configuration does not have: the mismatch is certain, no test needed
        result.update(chi2=None, p_value=0.0, mismatch=True, unexpected_arms=unexpected)
        return result
    tested = [a for a in arms if expected[a] > 0]
    if len(tested) < 2:
        result.update(chi2=None, p_value=None, mismatch=False)
        return result
    chi2, p = stats.chisquare([observed[a] for a in tested], [expected[a] for a in tested])
    result.update(chi2=float(chi2), p_value=float(p), mismatch=bool(p < SRM_ALPHA))
    return result


# --- configuration -----------------------------------------------------------------------


def _configured(ws: Workspace) -> list[Experiment]:
    """Experiments in stored trigger configs (table ``triggers``, when triggers exist)."""
    if "triggers" not in ws.con.list_tables():
        return []
    t = ws.table("triggers")
    if "config" not in t.columns:
        return []
    cols = [c for c in ("name", "segment", "config") if c in t.columns]
    found: list[Experiment] = []
    for row in t.select(*cols).to_pyarrow().to_pylist():
        try:
            config = json.loads(row["config"]) if row["config"] else {}
        except ValueError:
            continue
        exp = config.get("experiment") if isinstance(config, dict) else None
        if not isinstance(exp, dict):
            continue
        trigger = str(row.get("name") or config.get("name") or "")
        segment = str(row.get("segment") or config.get("segment") or "")
        known = {k: v for k, v in exp.items() if k in _EXPERIMENT_KEYS}
        try:
            found.append(
                Experiment.from_dict(known, name=trigger, trigger=trigger, segment=segment)
            )
        except InputError:  # a broken stored config is reported by `kequn trigger`, not here
            continue
    return found


def experiment_config(ws: Workspace, name: str) -> Experiment | None:
    """The experiment ``name`` as a stored trigger configures it, or None."""
    return next((e for e in _configured(ws) if e.name == name), None)


def list_experiments(ws: Workspace) -> list[dict[str, Any]]:
    """Experiments with assignments or a trigger configuring them, by name."""
    a = ws.table("experiment_assignments")
    per_arm = (
        a.group_by(["experiment", "variant"])
        .aggregate(
            customers=a.customer_id.nunique(),
            first=a.assigned_at.min(),
            last=a.assigned_at.max(),
            trigger=a.trigger.max(),
        )
        .to_pyarrow()
        .to_pylist()
    )
    out: dict[str, dict[str, Any]] = {}
    for r in per_arm:
        e = out.setdefault(
            r["experiment"],
            {
                "experiment": r["experiment"],
                "customers": 0,
                "arms": {},
                "first_assigned_at": r["first"],
                "last_assigned_at": r["last"],
                "trigger": r["trigger"],
            },
        )
        e["customers"] += r["customers"]
        e["arms"][r["variant"]] = r["customers"]
        e["first_assigned_at"] = min(e["first_assigned_at"], r["first"])
        e["last_assigned_at"] = max(e["last_assigned_at"], r["last"])
    for exp in _configured(ws):
        e = out.setdefault(
            exp.name,
            {
                "experiment": exp.name,
                "customers": 0,
                "arms": {},
                "first_assigned_at": None,
                "last_assigned_at": None,
            },
        )
        e.update(
            trigger=exp.trigger,
            segment=exp.segment,
            shares=dict(exp.arms),
            outcome=exp.outcome,
            window_days=exp.window_days,
        )
    for e in out.values():
        e.setdefault("trigger", None)
        for key in ("shares", "segment", "outcome", "window_days"):
            e.setdefault(key, None)
    return [out[k] for k in sorted(out)]


# --- the report ----------------------------------------------------------------------------


def _observed(column: ir.Value, as_of: AsOf) -> ir.BooleanValue:
    """``column`` is at or before as_of (a day as_of includes the whole day)."""
    end = ibis.literal(as_of.end, "timestamp")
    return column <= end if as_of.inclusive else column < end


def _warnings(
    arm_names: list[str], totals: dict[str, _Arm], srm: dict[str, Any] | None
) -> list[str]:
    """Plain-language cautions a reader should see before the p-values."""
    out = []
    if srm is not None and srm["mismatch"]:
        out.append(
            "sample ratio mismatch: the arms' sizes do not match the configured shares "
            f"(p = {srm['p_value']:.2g}); fix the assignment before trusting the results"
        )
    small = [
        a
        for a in arm_names
        if a in totals and min(totals[a].conversions, totals[a].n - totals[a].conversions) < 5
    ]
    if small:
        out.append(
            f"arms {', '.join(small)} have fewer than 5 conversions or non-conversions: "
            "the z test and the uplift intervals are rough approximations"
        )
    missing = [a for a in arm_names if a not in totals]
    if missing:
        out.append(f"arms {', '.join(missing)} have no analysed customers yet")
    return out


def _when(as_of: AsOf) -> str:
    return f"{as_of.end:%Y-%m-%d %H:%M:%S}" if as_of.inclusive else as_of.day.isoformat()


def _groups(ws: Workspace, by: str, as_of: AsOf) -> tuple[ir.Table, str]:
    """(customer_id, _group) pairs for ``by``, and a description of the grouping."""
    if by.startswith("segment:"):
        names = [n.strip() for n in by[len("segment:") :].split(",") if n.strip()]
        if not names:
            raise InputError(f"--by {by!r}: name segments after 'segment:', e.g. segment:vip,new")
        known = ws.table("segments").name.to_pyarrow().to_pylist()
        for n in names:
            if n not in known:
                raise InputError(
                    f"--by {by!r}: no stored segment {n!r}{closest(n, known)}; "
                    "see `kequn segment list`"
                )
        m = ws.table("memberships")
        pairs = (
            m.filter(m.segment.isin(names), m.exited_at.isnull())
            .select(customer_id="customer_id", _group="segment")
            .distinct()
        )
        return pairs, "current segment membership (a customer in several is in each group)"
    c = ws.table("customers")
    if by.startswith("attributes."):
        key = by[len("attributes.") :]
        if not key:
            raise InputError(f"--by {by!r}: name the attribute, e.g. attributes.会员等级")
        value = c.attributes.cast("json")[key]
        group = ibis.coalesce(value.str, value.cast("string"))
        return c.select("customer_id", _group=group), f"customer attribute {key!r}"
    columns = [n for n in c.columns if n not in ("customer_id", "attributes")]
    if by not in columns:
        raise InputError(
            f"--by {by!r} is not a customer field{closest(by, columns)}; use one of "
            f"{', '.join(columns)}, attributes.KEY or segment:NAME[,NAME...]"
        )
    return c.select("customer_id", _group=c[by].cast("string")), f"customer field {by!r}"


def _sums(
    ws: Workspace, name: str, as_of: AsOf, window_days: int, by: str | None
) -> tuple[dict[str, int], dict[str, int], dict[tuple[str, str], _Arm], str | None]:
    """Assigned and pending counts per arm, and sums per (group, arm), in two queries."""
    a = ws.table("experiment_assignments")
    a = a.filter(a.experiment == name, _observed(a.assigned_at, as_of))
    first = a.group_by("customer_id").aggregate(
        variant=a.variant.argmin(a.assigned_at), assigned_at=a.assigned_at.min()
    )
    first = first.mutate(window_end=first.assigned_at + ibis.interval(days=window_days))
    first = first.mutate(mature=_observed(first.window_end, as_of))
    counts = (
        first.group_by("variant")
        .aggregate(n=first.count(), pending=(~first.mature).sum())
        .to_pyarrow()
        .to_pylist()
    )
    assigned = {r["variant"]: int(r["n"]) for r in counts}
    pending = {r["variant"]: int(r["pending"] or 0) for r in counts}

    mature = first.filter(first.mature)
    o = ws.table("orders")
    o = o.filter(~o.is_return.fill_null(False)).select("customer_id", "ordered_at", "amount")
    joined = mature.left_join(
        o,
        [
            mature.customer_id == o.customer_id,
            o.ordered_at > mature.assigned_at,
            o.ordered_at <= mature.window_end,
        ],
    )
    per_customer = joined.group_by([joined.customer_id, joined.variant]).aggregate(
        orders=joined.ordered_at.count(),
        revenue=joined.amount.sum().fill_null(0.0),
    )
    description = None
    if by is None:
        rows = per_customer.mutate(_group=ibis.literal("", "string"))
    else:
        pairs, description = _groups(ws, by, as_of)
        rows = per_customer.left_join(pairs, per_customer.customer_id == pairs.customer_id)
        rows = rows.mutate(_group=rows._group.fill_null(NONE_GROUP))
    sums = (
        rows.group_by(["_group", "variant"])
        .aggregate(
            n=rows.count(),
            conversions=(rows.orders > 0).cast("int64").sum(),
            revenue=rows.revenue.sum(),
            revenue_sq=(rows.revenue * rows.revenue).sum(),
        )
        .to_pyarrow()
        .to_pylist()
    )
    arms = {
        (r["_group"], r["variant"]): _Arm(
            int(r["n"]),
            int(r["conversions"] or 0),
            float(r["revenue"] or 0.0),
            float(r["revenue_sq"] or 0.0),
        )
        for r in sums
    }
    return assigned, pending, arms, description


def _figures(
    arm_names: list[str], sums: dict[str, _Arm], baseline: str | None
) -> list[dict[str, Any]]:
    empty = _Arm(0, 0, 0.0, 0.0)
    base = sums.get(baseline, empty) if baseline is not None else None
    return [_arm_figures(a, sums.get(a, empty), base, baseline or "") for a in arm_names]


def report(
    ws: Workspace,
    name: str,
    as_of: object = None,
    by: str | None = None,
    *,
    outcome: str | None = None,
    window_days: int | None = None,
) -> dict[str, Any]:
    """Results of experiment ``name`` at ``as_of``: per arm and, with ``by``, per group.

    The outcome (``order``: converted, ``revenue``) and window come from the stored trigger
    configuration when one configures the experiment; ``outcome`` and ``window_days`` are
    the fallback when none does (default ``order`` over 7 days). Both conversion and
    revenue are always reported; ``outcome`` names the primary one. ``by`` is a customer
    field (``city``), ``attributes.KEY`` or ``segment:NAME1,NAME2`` (current membership).
    Uplift is against the ``holdout`` arm (else an arm named ``control``, else none).
    """
    moment = resolve_as_of(as_of, ws.config.timezone)
    config = experiment_config(ws, name)
    if config is not None:
        outcome_used, window_used = config.outcome, config.window_days
        source = f"trigger {config.trigger!r}" if config.trigger else "trigger config"
        shares: dict[str, float] | None = {k: float(v) for k, v in config.arms.items()}
    else:
        outcome_used = outcome or "order"
        window_used = 7 if window_days is None else int(window_days)
        source = "options" if (outcome or window_days is not None) else "defaults"
        shares = None
    if outcome_used not in ("order", "revenue"):
        raise InputError(f"outcome {outcome_used!r}; use 'order' or 'revenue'")
    if window_used < 1:
        raise InputError(f"window_days {window_used!r} must be at least 1")

    # overall figures count each customer once, whatever the groups
    assigned, pending, overall, _ = _sums(ws, name, moment, window_used, None)
    if not assigned and config is None:
        known = [e["experiment"] for e in list_experiments(ws)]
        raise InputError(
            f"no experiment {name!r} (no assignments up to {_when(moment)} "
            f"and no trigger configures it){closest(name, known)}; see `kequn experiment list`"
        )
    totals = {arm: s for (_, arm), s in overall.items()}
    sums: dict[tuple[str, str], _Arm] = {}
    description = None
    if by is not None:
        _, _, sums, description = _sums(ws, name, moment, window_used, by)
    arm_names = sorted(set(assigned) | set(shares or {}))
    baseline = HOLDOUT if HOLDOUT in arm_names else ("control" if "control" in arm_names else None)
    if baseline is not None:  # the baseline first, then the variants by name
        arm_names = [baseline] + [a for a in arm_names if a != baseline]

    srm = _srm(assigned, shares)
    result: dict[str, Any] = {
        "experiment": name,
        "as_of": moment.end if moment.inclusive else moment.day,
        "outcome": outcome_used,
        "window_days": window_used,
        "config": source,
        "trigger": config.trigger if config else None,
        "segment": config.segment if config else None,
        "shares": shares,
        "baseline": baseline,
        "assigned": sum(assigned.values()),
        "pending": sum(pending.values()),
        "analysed": sum(s.n for s in totals.values()),
        "srm": srm,
        "arms": _figures(arm_names, totals, baseline),
        "by": by,
        "grouping": description,
        "groups": None,
        "methods": METHODS,
        "warnings": _warnings(arm_names, totals, srm),
    }
    if by is not None:
        group_names = sorted({g for g, _ in sums}, key=lambda g: (g == NONE_GROUP, g))
        result["groups"] = [
            {
                "group": g,
                "n": sum(s.n for (gg, _), s in sums.items() if gg == g),
                "arms": _figures(
                    arm_names, {arm: s for (gg, arm), s in sums.items() if gg == g}, baseline
                ),
            }
            for g in group_names
        ]
    return result
