"""A/B/n experiments on a segment's trigger: who gets which variant, and who gets nothing.

Assignment is a pure function of (experiment, customer): the same customer lands in the
same arm on every server, after every restart and in every later report, with no state to
lose. The holdout arm receives nothing; it is the control that uplift is measured against.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from kequn.errors import InputError

HOLDOUT = "holdout"


@dataclass(frozen=True)
class Experiment:
    """An experiment attached to one trigger.

    ``arms`` maps each arm to its share (shares sum to 1; ``holdout`` receives nothing).
    ``outcome`` is ``order`` (converted: at least one order) or ``revenue``, counted over
    ``window_days`` after assignment.
    """

    name: str
    arms: Mapping[str, float]
    outcome: str = "order"
    window_days: int = 7
    trigger: str = ""
    segment: str = ""
    variants: Mapping[str, Mapping[str, object]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.arms:
            raise InputError(f"experiment {self.name!r}: give at least one arm in `arms`")
        bad = {k: v for k, v in self.arms.items() if not (0 <= float(v) <= 1)}
        if bad:
            raise InputError(f"experiment {self.name!r}: shares must be within 0..1, got {bad}")
        total = sum(float(v) for v in self.arms.values())
        if abs(total - 1) > 1e-9:
            raise InputError(
                f"experiment {self.name!r}: arm shares sum to {total:g}; they must sum to 1"
            )
        if self.outcome not in ("order", "revenue"):
            raise InputError(
                f"experiment {self.name!r}: outcome {self.outcome!r}; use 'order' or 'revenue'"
            )
        if int(self.window_days) < 1:
            raise InputError(
                f"experiment {self.name!r}: window_days {self.window_days!r} must be at least 1"
            )

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, object],
        *,
        name: str | None = None,
        trigger: str = "",
        segment: str = "",
    ) -> Experiment:
        """An experiment from a trigger's ``experiment`` object (JSON/TOML).

        Keys: ``name`` (default: the ``name`` argument, e.g. the trigger's name), ``arms``
        (arm → share), ``outcome``, ``window_days``, ``variants`` (arm → message settings).
        """
        if not isinstance(data, Mapping):
            raise InputError(f"experiment settings {data!r} must be a table/object")
        known = {"name", "arms", "outcome", "window_days", "trigger", "segment", "variants"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                f"experiment settings: unknown keys {unknown}; allowed: {sorted(known)}"
            )
        exp_name = data.get("name") or name
        if not exp_name:
            raise InputError("experiment settings: give the experiment a `name`")
        arms = data.get("arms")
        if not isinstance(arms, Mapping) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in arms.values()
        ):
            raise InputError(
                f"experiment {exp_name!r}: `arms` must map arm names to shares, got {arms!r}"
            )
        try:
            window = int(data.get("window_days", 7))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InputError(
                f"experiment {exp_name!r}: window_days {data.get('window_days')!r} "
                "is not a whole number of days"
            ) from None
        return cls(
            name=str(exp_name),
            arms={str(k): float(v) for k, v in arms.items()},  # type: ignore[arg-type]
            outcome=str(data.get("outcome", "order")),
            window_days=window,
            trigger=str(data.get("trigger") or trigger),
            segment=str(data.get("segment") or segment),
            variants=dict(data.get("variants") or {}),  # type: ignore[arg-type]
        )


def _unit(experiment: str, customer_id: str) -> float:
    """A uniform number in [0, 1) from the pair; SHA-256, so independent across experiments."""
    digest = hashlib.sha256(f"{experiment}\x1f{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(experiment: str, customer_id: str, arms: Mapping[str, float]) -> str:
    """The arm of ``customer_id`` in ``experiment``: deterministic, proportional to the shares.

    Arms are taken in sorted name order, so the result does not depend on how a config
    file happened to list them.
    """
    u = _unit(experiment, str(customer_id))
    acc = 0.0
    names = sorted(arms)
    for name in names:
        acc += float(arms[name])
        if u < acc:
            return name
    return names[-1]
