"""The delivery outbox: transitions become delivery rows, rows become messages, once.

The caller writes a segment's membership changes and their deliveries in ONE transaction
(:func:`enqueue` opens none), so a crash can never record an entry without its message or
a message without its entry. A dispatcher then takes :func:`due` rows, :func:`send`s each
(no database access, safe in threads) and :func:`record`s the outcome. A crash between
send and record resends the same row later with the same idempotency key: delivery is at
least once, and receivers dedupe on ``Idempotency-Key``.

Statuses: ``pending`` (waiting for ``next_attempt_at``), ``sent``, ``dead`` (a permanent
error or ``max_attempts`` used up; ``last_error`` says why), ``holdout`` (the experiment's
control arm: recorded, never sent) and ``capped`` (over the trigger's frequency cap).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kequn.act.channels import (
    PROFILE_FIELDS,
    Outcome,
    append_file,
    post_robot,
    post_webhook,
    send_email,
)
from kequn.act.experiments import HOLDOUT, assign
from kequn.act.triggers import (
    ENV_SETTINGS,
    EVENTS,
    Trigger,
    parse_cap,
    parse_quiet_hours,
    resolve_env,
    stored_triggers,
    with_defaults,
)
from kequn.errors import InputError, closest

if TYPE_CHECKING:
    from kequn.workspace import Workspace

__all__ = [
    "STATUSES",
    "Delivery",
    "Outcome",
    "Transition",
    "backoff",
    "deliveries",
    "delivery_counts",
    "dispatch_once",
    "due",
    "enqueue",
    "idempotency_key",
    "record",
    "record_many",
    "requeue",
    "send",
]

STATUSES = ("pending", "sent", "dead", "holdout", "capped")
# no consent for the trigger's channel (kequn/privacy): recorded with the reason, never sent
NO_CONSENT = "no_consent"
BACKOFF_BASE = 2.0  # seconds before the first retry
BACKOFF_MAX = 3600.0  # no wait longer than an hour
JITTER = 0.2  # ±20 %, so a receiver coming back is not hit by every retry at once


@dataclass(frozen=True)
class Transition:
    """A customer entered or left a segment at ``at`` (naive, workspace time)."""

    segment: str
    customer_id: str
    kind: str
    at: datetime


@dataclass(frozen=True)
class Delivery:
    """One outbox row, with the trigger definition it is sent by (None: trigger removed)."""

    delivery_id: str
    idempotency_key: str
    trigger: str
    segment: str
    customer_id: str
    kind: str
    channel: str
    variant: str | None
    payload: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    definition: Trigger | None = None
    base: Path | None = None  # the workspace folder, for relative export paths


def workspace_now(ws: Workspace) -> datetime:
    """Now as naive wall time in the workspace zone (how every timestamp is stored)."""
    from kequn.config import zone_info

    return datetime.now(zone_info(ws.config.timezone)).replace(tzinfo=None)


def _naive(ws: Workspace, moment: datetime | None) -> datetime:
    if moment is None:
        return workspace_now(ws)
    if moment.tzinfo is not None:
        from kequn.config import zone_info

        return moment.astimezone(zone_info(ws.config.timezone)).replace(tzinfo=None)
    return moment


def idempotency_key(trigger: str, segment: str, customer_id: str, kind: str, at: datetime) -> str:
    """Hex SHA-256 of the transition and trigger: the same event always has the same key."""
    text = "\x1f".join(
        (trigger, segment, str(customer_id), kind, at.isoformat(sep=" ", timespec="microseconds"))
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _memtable(columns: Mapping[str, list]):
    import ibis
    import pyarrow as pa

    return ibis.memtable(pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()}))


# --- enqueue -------------------------------------------------------------------------------


@dataclass
class _Candidate:
    transition: Transition
    trigger: Trigger
    key: str
    variant: str | None = None
    status: str = "pending"
    error: str | None = None


def enqueue(
    ws: Workspace,
    transitions: Sequence[Transition],
    now: datetime,
    triggers: Sequence[Trigger] | None = None,
) -> int:
    """Write one delivery per transition × matching trigger; returns the rows written.

    Opens no transaction: call it inside the one that records the memberships. A
    transition enqueued again (a replay after a crash) is skipped by its idempotency key.
    ``triggers`` defaults to the stored ones.
    """
    import pyarrow as pa

    if not transitions:
        return 0
    now = _naive(ws, now)
    defined = stored_triggers(ws) if triggers is None else list(triggers)
    by_event: dict[tuple[str, str], list[Trigger]] = defaultdict(list)
    for trig in defined:
        by_event[(trig.segment, trig.on)].append(with_defaults(trig, ws))
    candidates: list[_Candidate] = []
    seen: set[str] = set()
    for tr in transitions:
        if tr.kind not in EVENTS:
            raise InputError(f"transition kind {tr.kind!r}; use 'enter' or 'exit'")
        if tr.at.tzinfo is not None:  # keys and payloads use workspace wall time
            tr = Transition(tr.segment, tr.customer_id, tr.kind, _naive(ws, tr.at))
        for trig in by_event.get((tr.segment, tr.kind), ()):
            key = idempotency_key(trig.name, tr.segment, tr.customer_id, tr.kind, tr.at)
            if key not in seen:
                seen.add(key)
                candidates.append(_Candidate(tr, trig, key))
    if not candidates:
        return 0
    d = ws.table("deliveries")
    keys = _memtable({"k": [c.key for c in candidates]})
    present = d.semi_join(keys, d.idempotency_key == keys.k).select("idempotency_key")
    existing = set(present.to_pyarrow().column(0).to_pylist())
    candidates = [c for c in candidates if c.key not in existing]
    if not candidates:
        return 0
    candidates.sort(key=lambda c: (c.transition.at, c.trigger.name, str(c.transition.customer_id)))
    customers = sorted({str(c.transition.customer_id) for c in candidates})
    profiles = _profiles(ws, customers)
    assignments = _assign(ws, candidates, customers)
    _apply_consent(ws, candidates)
    _apply_caps(ws, candidates, customers, now)
    hidden = _hidden_fields(ws, {c.trigger.name: c.trigger for c in candidates}.values())
    rows = [
        _row(
            c,
            profiles.get(str(c.transition.customer_id), {}),
            now,
            hidden.get(c.trigger.name, frozenset()),
        )
        for c in candidates
    ]
    columns = {name: [r[name] for r in rows] for name in rows[0]}
    table = pa.table(columns)
    ws.store.append("deliveries", table)
    if assignments:
        ws.store.append(
            "experiment_assignments",
            pa.table({name: [a[name] for a in assignments] for name in assignments[0]}),
        )
    return len(rows)


def _profiles(ws: Workspace, customers: list[str]) -> dict[str, dict[str, Any]]:
    c = ws.table("customers")
    ids = _memtable({"cid": customers})
    found = c.semi_join(ids, c.customer_id == ids.cid).select("customer_id", *PROFILE_FIELDS)
    return {r.pop("customer_id"): r for r in found.to_pyarrow().to_pylist()}


def _assign(ws: Workspace, candidates: list[_Candidate], customers: list[str]) -> list[dict]:
    """Each candidate's arm; the first assignment per experiment × customer to record."""
    experiments = {c.trigger.experiment.name for c in candidates if c.trigger.experiment}
    if not experiments:
        return []
    a = ws.table("experiment_assignments")
    ids = _memtable({"cid": customers})
    known = (
        a.filter(a.experiment.isin(sorted(experiments)))
        .semi_join(ids, a.customer_id == ids.cid)
        .select("experiment", "customer_id")
        .to_pyarrow()
        .to_pylist()
    )
    recorded = {(r["experiment"], r["customer_id"]) for r in known}
    new: list[dict] = []
    for c in candidates:  # sorted by time: the first transition is the assignment
        exp = c.trigger.experiment
        if exp is None:
            continue
        cid = str(c.transition.customer_id)
        c.variant = assign(exp.name, cid, exp.arms)
        if c.variant == HOLDOUT:
            c.status = "holdout"
        if (exp.name, cid) not in recorded:
            recorded.add((exp.name, cid))
            new.append(
                {
                    "experiment": exp.name,
                    "customer_id": cid,
                    "variant": c.variant,
                    "trigger": c.trigger.name,
                    "segment": c.transition.segment,
                    "assigned_at": c.transition.at,
                }
            )
    return new


def _apply_consent(ws: Workspace, candidates: list[_Candidate]) -> None:
    """Mark candidates without consent for their trigger's channel ``no_consent``, with why
    (kequn/privacy/consent.py); before caps, so they use no allowance."""
    from kequn.privacy.consent import allowed_customers, trigger_channel

    by_channel: dict[str, list[_Candidate]] = defaultdict(list)
    for c in candidates:
        if c.status in ("pending", "holdout"):
            channel = trigger_channel(c.trigger.channel, c.trigger.consent)
            if channel is not None:
                by_channel[channel].append(c)
    for channel, group in by_channel.items():
        verdict = allowed_customers(ws, [str(c.transition.customer_id) for c in group], channel)
        for c in group:
            reason = verdict[str(c.transition.customer_id)]
            if reason is not None:
                c.status, c.error = NO_CONSENT, reason


def _hidden_fields(ws: Workspace, triggers: Iterable[Trigger]) -> dict[str, frozenset[str]]:
    """Per trigger, the sensitive profile fields its payload leaves out: all of them unless
    the trigger's ``owner`` token holds the ``sensitive`` grant."""
    from kequn.access import token_principal
    from kequn.access.masking import class_of
    from kequn.privacy.classes import field_classes

    classes = field_classes(ws)
    sensitive = frozenset(f for f in PROFILE_FIELDS if class_of(f, classes) == "sensitive")
    if not sensitive:
        return {}
    out: dict[str, frozenset[str]] = {}
    for trig in triggers:
        owner = token_principal(ws, trig.owner) if trig.owner else None
        out[trig.name] = frozenset() if owner and owner.may_read("sensitive") else sensitive
    return out


def _apply_caps(
    ws: Workspace, candidates: list[_Candidate], customers: list[str], now: datetime
) -> None:
    """Mark candidates over their trigger's cap as capped (messages = pending or sent)."""
    import ibis

    caps = {
        c.trigger.name: parse_cap(c.trigger.cap, f"trigger {c.trigger.name!r}") for c in candidates
    }
    caps = {name: cap for name, cap in caps.items() if cap is not None}
    if not caps:
        return
    d = ws.table("deliveries")
    ids = _memtable({"cid": customers})
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for name, cap in caps.items():
        since = ibis.literal(now - cap.period, type="timestamp")
        recent = d.filter(
            d.trigger == name, d.status.isin(["pending", "sent"]), d.created_at > since
        ).semi_join(ids, d.customer_id == ids.cid)
        for r in (
            recent.group_by("customer_id").aggregate(n=recent.count()).to_pyarrow().to_pylist()
        ):
            counts[(name, r["customer_id"])] = int(r["n"])
    for c in candidates:  # in time order, so the earliest transitions use the allowance
        cap = caps.get(c.trigger.name)
        if cap is None or c.status != "pending":
            continue
        pair = (c.trigger.name, str(c.transition.customer_id))
        if counts[pair] >= cap.count:
            c.status = "capped"
            c.error = (
                f"capped: cap {cap.text!r} allows {cap.count} message(s) per customer per "
                f"{cap.text.split('/', 1)[1].strip()}; {counts[pair]} already in that period"
            )
        else:
            counts[pair] += 1


def _row(
    c: _Candidate, profile: Mapping[str, Any], now: datetime, hidden: frozenset[str] = frozenset()
) -> dict[str, Any]:
    tr, trig = c.transition, c.trigger
    payload = {
        "event": f"segment.{tr.kind}",
        "kind": tr.kind,
        "segment": tr.segment,
        "customer_id": str(tr.customer_id),
        "at": tr.at.isoformat(),
        "trigger": trig.name,
        "variant": c.variant,
        "idempotency_key": c.key,
        "customer": {f: profile.get(f) for f in PROFILE_FIELDS if f not in hidden},
    }
    next_at = None
    if c.status == "pending":
        quiet = parse_quiet_hours(trig.quiet_hours, f"trigger {trig.name!r}")
        next_at = quiet.release(now) if quiet else now
    return {
        "delivery_id": c.key[:16],
        "idempotency_key": c.key,
        "trigger": trig.name,
        "segment": tr.segment,
        "customer_id": str(tr.customer_id),
        "kind": tr.kind,
        "channel": trig.channel,
        "variant": c.variant,
        "payload": json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
        "status": c.status,
        "attempts": 0,
        "next_attempt_at": next_at,
        "last_error": c.error,
        "created_at": now,
        "sent_at": None,
        "updated_at": now,
    }


# --- dispatch ------------------------------------------------------------------------------


_DUE_SQL: dict[tuple[int, int], str] = {}


def _due_sql(ws: Workspace, limit: int) -> str:
    """The pending-deliveries query, compiled once per connection and limit (it runs often)."""
    import ibis

    key = (id(ws.store), limit)
    if key not in _DUE_SQL:
        d = ws.table("deliveries")
        at = ibis.param("timestamp")
        query = (
            d.filter(d.status == "pending", d.next_attempt_at <= at)
            .order_by([d.next_attempt_at, d.delivery_id])
            .limit(limit)
        )
        _DUE_SQL[key] = ws.store.with_parameter(query, at, "due_at")
    return _DUE_SQL[key]


def due(
    ws: Workspace,
    now: datetime | None = None,
    limit: int = 100,
    *,
    triggers: Sequence[Trigger] | None = None,
    lease: float | None = None,
) -> list[Delivery]:
    """Pending deliveries whose time has come, oldest first, with their trigger definitions.

    ``triggers`` adds definitions that are not stored (as given to :func:`enqueue`); a
    delivery whose trigger is found nowhere goes dead when sent.
    With ``lease`` (seconds) the rows are pushed that far into the future as they are
    taken, so a second dispatcher does not take them too; a dispatcher that dies before
    :func:`record` leaves them to be retried once the lease runs out.
    """

    now = _naive(ws, now)
    rows = ws.store.query_arrow(_due_sql(ws, limit), {"due_at": now}).to_pylist()
    if not rows:
        return []
    names = sorted({r["trigger"] for r in rows})
    definitions = {t.name: t for t in stored_triggers(ws, names)}
    definitions.update({t.name: t for t in triggers or ()})
    definitions = {k: with_defaults(t, ws) for k, t in definitions.items()}
    if lease:
        ws.store.update(
            "deliveries",
            {"next_attempt_at": now + timedelta(seconds=lease), "updated_at": now},
            delivery_id=[r["delivery_id"] for r in rows],
            status="pending",
        )
    fields = Delivery.__dataclass_fields__
    return [
        Delivery(
            **{k: v for k, v in r.items() if k in fields},
            definition=definitions.get(r["trigger"]),
            base=ws.path,
        )
        for r in rows
    ]


def send(delivery: Delivery, *, timeout: float = 5.0) -> Outcome:
    """One attempt through the delivery's channel. No database access; never raises."""
    trig = delivery.definition
    if trig is None:
        return Outcome(
            False,
            f"trigger {delivery.trigger!r} is no longer defined; apply it again and "
            "`kequn deliveries retry`",
            permanent=True,
        )
    try:
        settings = trig.settings_for(delivery.variant)
        settings.update({k: resolve_env(settings[k]) for k in ENV_SETTINGS if k in settings})
    except InputError as exc:
        return Outcome(False, str(exc), permanent=True)
    timeout = float(settings.get("timeout", timeout))
    try:
        if trig.channel == "webhook":
            return post_webhook(
                delivery.payload.encode(), settings, delivery.idempotency_key, timeout=timeout
            )
        if trig.channel == "file":
            return append_file(delivery.payload, settings, delivery.base)
        payload = json.loads(delivery.payload)
        if trig.channel == "email":
            return send_email(payload, settings, delivery.idempotency_key, timeout=timeout)
        return post_robot(trig.channel, payload, settings, timeout=timeout)
    except Exception as exc:  # a bug or an odd answer must not kill the dispatcher
        return Outcome(False, f"{type(exc).__name__}: {exc}")


def backoff(attempts: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after ``attempts`` failed attempts: 2 s × 2^(attempts−1), ±20 %, ≤ 1 h."""
    base = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** max(0, attempts - 1))
    factor = 1 + JITTER * (2 * (rng or random).random() - 1)
    return min(BACKOFF_MAX, base * factor)


def _next_state(
    ws: Workspace, delivery: Delivery, outcome: Outcome, now: datetime, rng: random.Random | None
) -> dict[str, Any]:
    attempts = delivery.attempts + 1
    values: dict[str, Any] = {"attempts": attempts, "updated_at": now}
    max_attempts = delivery.definition.max_attempts if delivery.definition else 8
    if outcome.ok:
        values.update(status="sent", sent_at=now, next_attempt_at=None)
    elif outcome.permanent:
        values.update(status="dead", last_error=outcome.error, next_attempt_at=None)
    elif attempts >= max_attempts:
        values.update(
            status="dead",
            last_error=f"gave up after {attempts} attempts: {outcome.error}",
            next_attempt_at=None,
        )
    else:
        wait = backoff(attempts, rng)
        if outcome.retry_after is not None:
            wait = min(BACKOFF_MAX, max(wait, outcome.retry_after))
        later = now + timedelta(seconds=wait)
        if delivery.definition is not None:
            quiet = parse_quiet_hours(delivery.definition.quiet_hours)
            if quiet is not None:
                later = quiet.release(later)
        values.update(status="pending", last_error=outcome.error, next_attempt_at=later)
    return values


def record(
    ws: Workspace,
    delivery: Delivery,
    outcome: Outcome,
    now: datetime | None = None,
    *,
    rng: random.Random | None = None,
) -> None:
    """Count the attempt: sent, pending again after a backoff, or dead with the reason.

    Only a row still pending is changed, so a late second dispatcher cannot undo a 'sent'.
    """
    values = _next_state(ws, delivery, outcome, _naive(ws, now), rng)
    ws.store.update("deliveries", values, delivery_id=delivery.delivery_id, status="pending")


def record_many(
    ws: Workspace,
    results: Iterable[tuple[Delivery, Outcome]],
    now: datetime | None = None,
    *,
    rng: random.Random | None = None,
) -> None:
    """:func:`record` for a batch, in one transaction (far fewer commits under load)."""
    moment = _naive(ws, now)
    with ws.store.transaction():
        for delivery, outcome in results:
            values = _next_state(ws, delivery, outcome, moment, rng)
            ws.store.update(
                "deliveries", values, delivery_id=delivery.delivery_id, status="pending"
            )


def dispatch_once(
    ws: Workspace, now: datetime | None = None, limit: int = 100, *, timeout: float = 5.0
) -> dict[str, int]:
    """Send what is due, one at a time, and record each outcome; returns the tallies."""
    moment = _naive(ws, now)
    batch = due(ws, moment, limit)
    tally = {"due": len(batch), "sent": 0, "retrying": 0, "dead": 0}
    for delivery in batch:
        outcome = send(delivery, timeout=timeout)
        at = moment if now is not None else workspace_now(ws)
        values = _next_state(ws, delivery, outcome, at, None)
        ws.store.update("deliveries", values, delivery_id=delivery.delivery_id, status="pending")
        tally[{"sent": "sent", "dead": "dead"}.get(values["status"], "retrying")] += 1
    return tally


# --- reading and requeueing ----------------------------------------------------------------


def _check_status(status: str | None) -> None:
    if status is not None and status not in (*STATUSES, NO_CONSENT):
        raise InputError(
            f"unknown delivery status {status!r}{closest(status, STATUSES)} "
            f"(statuses: {', '.join(STATUSES)})"
        )


def deliveries(
    ws: Workspace,
    status: str | None = None,
    segment: str | None = None,
    trigger: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Deliveries, newest first, with the payload parsed; ``limit`` 0 lists all."""
    _check_status(status)
    d = ws.table("deliveries")
    if status is not None:
        d = d.filter(d.status == status)
    if segment is not None:
        d = d.filter(d.segment == segment)
    if trigger is not None:
        d = d.filter(d.trigger == trigger)
    d = d.order_by([d.created_at.desc(), d.updated_at.desc(), d.delivery_id])
    if limit:
        d = d.limit(limit)
    rows = d.to_pyarrow().to_pylist()
    for r in rows:
        r["payload"] = json.loads(r["payload"]) if r["payload"] else None
    return rows


def delivery_counts(ws: Workspace) -> dict[str, int]:
    """Deliveries per status (every status listed, zeros included)."""
    d = ws.table("deliveries")
    rows = d.group_by("status").aggregate(n=d.count()).to_pyarrow().to_pylist()
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({r["status"]: int(r["n"]) for r in rows})
    return counts


def requeue(
    ws: Workspace,
    ids: Sequence[str] = (),
    *,
    dead: bool = False,
    now: datetime | None = None,
) -> int:
    """Make dead deliveries pending again (attempts from zero); by id, or every dead one.

    An id is a delivery id or an idempotency key. Returns how many were requeued.
    """
    moment = _naive(ws, now)
    d = ws.table("deliveries")
    if not ids and not dead:
        raise InputError("name delivery ids to retry, or retry every dead one with --dead")
    if ids:
        wanted = list(ids)
        found = (
            d.filter(d.delivery_id.isin(wanted) | d.idempotency_key.isin(wanted))
            .select("delivery_id", "idempotency_key", "status")
            .to_pyarrow()
            .to_pylist()
        )
        known = {r["delivery_id"] for r in found} | {r["idempotency_key"] for r in found}
        missing = [i for i in wanted if i not in known]
        if missing:
            raise InputError(f"no delivery {missing[0]!r}; list them with `kequn deliveries`")
        not_dead = [r for r in found if r["status"] != "dead"]
        if not_dead:
            r = not_dead[0]
            raise InputError(
                f"delivery {r['delivery_id']!r} is {r['status']}, not dead; only dead ones retry"
            )
        targets = [r["delivery_id"] for r in found]
    else:
        targets = d.filter(d.status == "dead").select("delivery_id").to_pyarrow().column(0)
        targets = targets.to_pylist()
    if not targets:
        return 0
    ws.store.update(
        "deliveries",
        {"status": "pending", "attempts": 0, "next_attempt_at": moment, "updated_at": moment},
        delivery_id=targets,
        status="dead",
    )
    return len(targets)
