"""Triggers: when a customer enters or leaves a segment, which channel hears about it.

A trigger file (TOML, ``[[trigger]]`` tables) is validated completely before anything is
stored, so a typo in a channel name or a cap fails at ``kequn trigger apply`` with the
closest valid name, not at three in the morning in the dispatcher. Secrets are written as
``${ENV_VAR}`` references and resolved only when a message is sent; they are never stored.
"""

from __future__ import annotations

import json
import os
import re
import string
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kequn.act.experiments import HOLDOUT, Experiment
from kequn.errors import InputError, SourceNotFound, closest

if TYPE_CHECKING:
    from kequn.workspace import Workspace, WorkspaceLike

__all__ = [
    "CHANNELS",
    "TEMPLATE_FIELDS",
    "Cap",
    "QuietHours",
    "Trigger",
    "apply_triggers",
    "load_triggers",
    "parse_cap",
    "parse_quiet_hours",
    "resolve_env",
    "stored_triggers",
]

CHANNELS = ("webhook", "email", "wecom", "dingtalk", "feishu", "file")
EVENTS = ("enter", "exit")

# Settings each channel understands; anything else in a [[trigger]] table is a typo.
_ROBOT = ("url", "secret", "msgtype", "template", "title", "language", "timeout")
SETTINGS: dict[str, tuple[str, ...]] = {
    "webhook": ("url", "secret", "headers", "timeout"),
    "email": (
        "host",
        "port",
        "security",
        "user",
        "password",
        "from",
        "to",
        "subject",
        "template",
        "language",
        "timeout",
    ),
    "wecom": tuple(k for k in _ROBOT if k != "secret"),
    "dingtalk": _ROBOT,
    "feishu": _ROBOT,
    "file": ("path", "format", "fields"),
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "webhook": ("url",),
    "email": ("host", "from", "subject", "template"),
    "wecom": ("url",),
    "dingtalk": ("url",),
    "feishu": ("url",),
    "file": ("path",),
}
# Settings whose ``${NAME}`` references name environment variables (resolved at send time);
# in templates ``${name}`` names a payload field instead.
ENV_SETTINGS = ("url", "secret", "headers", "host", "user", "password", "path")

# Fields a template (subject, body, robot text, e-mail ``to``) may use.
TEMPLATE_FIELDS = (
    "event",
    "kind",
    "segment",
    "customer_id",
    "at",
    "trigger",
    "variant",
    "idempotency_key",
    "name",
    "city",
    "email",
    "phone",
    "channel",
    "action_zh",
    "action_en",
)
_TRIGGER_KEYS = (
    "name",
    "segment",
    "on",
    "channel",
    "cap",
    "quiet_hours",
    "max_attempts",
    "consent",
    "owner",
)
# `consent`: the consent channel checked before sending (kequn/privacy; "none": no check)
CONSENT_VALUES = ("email", "sms", "im", "phone", "none")
_EXPERIMENT_KEYS = ("name", "arms", "outcome", "window_days", "variants")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CAP = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([mhdw])\s*$")
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
_UNITS["w"] = timedelta(weeks=1)


@dataclass(frozen=True)
class Cap:
    """At most ``count`` messages per customer per ``period`` for one trigger."""

    count: int
    period: timedelta
    text: str


@dataclass(frozen=True)
class QuietHours:
    """A daily window (workspace time) in which nothing is sent; it may wrap midnight."""

    start: time
    end: time
    text: str

    def contains(self, moment: datetime) -> bool:
        t = moment.time()
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def release(self, moment: datetime) -> datetime:
        """``moment`` itself outside the window, else the end of the window it falls in."""
        if not self.contains(moment):
            return moment
        end = datetime.combine(moment.date(), self.end)
        return end if end > moment else end + timedelta(days=1)


def parse_cap(text: str | None, where: str = "cap") -> Cap | None:
    """``"1/7d"``: one message per 7 days; units m, h, d, w; ``"none"`` or empty: no cap."""
    if text is None or str(text).strip().lower() in ("", "none"):
        return None
    match = _CAP.match(str(text))
    if not match:
        raise InputError(
            f"{where}: cap {text!r} is not N/PERIOD; write e.g. '1/7d' (one message per "
            "customer per 7 days), '3/24h' or '2/1w'; units m, h, d, w"
        )
    count, number, unit = int(match[1]), int(match[2] or 1), match[3]
    if count < 1 or number < 1:
        raise InputError(f"{where}: cap {text!r} needs a count and a period of at least 1")
    return Cap(count, number * _UNITS[unit], str(text).strip())


def parse_quiet_hours(text: str | None, where: str = "quiet_hours") -> QuietHours | None:
    """``"22:00-08:00"`` (workspace time, may wrap midnight); empty or ``"none"``: none."""
    if text is None or str(text).strip().lower() in ("", "none"):
        return None
    parts = str(text).split("-")
    try:
        if len(parts) != 2:
            raise ValueError
        start, end = (time.fromisoformat(p.strip()) for p in parts)
    except ValueError:
        raise InputError(
            f"{where}: quiet hours {text!r} are not HH:MM-HH:MM; write e.g. '22:00-08:00'"
        ) from None
    if start == end:
        raise InputError(f"{where}: quiet hours {text!r} start and end at the same time")
    return QuietHours(start, end, str(text).strip())


@dataclass(frozen=True)
class Trigger:
    """On ``on`` ("enter" or "exit") of ``segment``, send through ``channel``.

    ``settings`` are the channel's own (url, secret, headers, to, subject, template, path,
    ...); ``cap`` and ``quiet_hours`` are texts as written ("1/7d", "22:00-08:00"), None to
    use the workspace default (``[triggers]`` in kequn.toml). With an ``experiment`` each
    customer is assigned an arm; the holdout arm is recorded but never sent, and
    ``experiment.variants[arm]`` overrides settings (e.g. another template) for that arm.
    """

    name: str
    segment: str
    on: str
    channel: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    cap: str | None = None
    quiet_hours: str | None = None
    max_attempts: int = 8
    experiment: Experiment | None = None
    consent: str | None = None  # consent channel to check; None: by channel (docs/privacy.md)
    owner: str | None = None  # token whose grants decide what the payload may carry

    def __post_init__(self) -> None:
        where = f"trigger {self.name!r}"
        if self.consent is not None and self.consent not in CONSENT_VALUES:
            raise InputError(
                f"{where}: consent = {self.consent!r}{closest(str(self.consent), CONSENT_VALUES)}"
                f" (use one of {', '.join(CONSENT_VALUES)})"
            )
        if self.owner is not None and not isinstance(self.owner, str):
            raise InputError(f"{where}: owner must be a token name, got {self.owner!r}")
        if not self.name or not isinstance(self.name, str):
            raise InputError(f"a trigger needs a `name`, got {self.name!r}")
        if not self.segment or not isinstance(self.segment, str):
            raise InputError(f"{where}: give the `segment` it watches")
        if self.on not in EVENTS:
            raise InputError(
                f"{where}: on = {self.on!r}; use 'enter' or 'exit'{closest(str(self.on), EVENTS)}"
            )
        if self.channel not in CHANNELS:
            raise InputError(
                f"{where}: unknown channel {self.channel!r}{closest(str(self.channel), CHANNELS)}"
                f" (channels: {', '.join(CHANNELS)})"
            )
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise InputError(
                f"{where}: max_attempts = {self.max_attempts!r}; use a whole number ≥ 1"
            )
        parse_cap(self.cap, f"{where}")
        parse_quiet_hours(self.quiet_hours, f"{where}")
        _check_settings(self.channel, dict(self.settings), where)
        if self.experiment is not None:
            for arm, override in self.experiment.variants.items():
                if arm not in self.experiment.arms:
                    raise InputError(
                        f"{where}: experiment variant {arm!r} is not an arm"
                        f"{closest(arm, self.experiment.arms)} "
                        f"(arms: {', '.join(self.experiment.arms)})"
                    )
                if arm == HOLDOUT:
                    raise InputError(f"{where}: the holdout arm receives nothing; drop its variant")
                _check_settings(
                    self.channel, {**self.settings, **override}, f"{where}, variant {arm!r}"
                )

    def settings_for(self, variant: str | None) -> dict[str, Any]:
        """The channel settings for one arm: the trigger's, with the variant's overrides."""
        settings = dict(self.settings)
        if self.experiment is not None and variant in self.experiment.variants:
            settings.update(self.experiment.variants[variant])
        return settings

    def as_config(self) -> dict[str, Any]:
        """The definition as stored in the ``triggers`` table (JSON-ready, secrets unresolved)."""
        config: dict[str, Any] = {
            "name": self.name,
            "segment": self.segment,
            "on": self.on,
            "channel": self.channel,
            "settings": dict(self.settings),
            "cap": self.cap,
            "quiet_hours": self.quiet_hours,
            "max_attempts": self.max_attempts,
            "experiment": None,
            "consent": self.consent,
            "owner": self.owner,
        }
        if self.experiment is not None:
            e = self.experiment
            config["experiment"] = {
                "name": e.name,
                "arms": dict(e.arms),
                "outcome": e.outcome,
                "window_days": e.window_days,
                "variants": {k: dict(v) for k, v in e.variants.items()},
            }
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Trigger:
        experiment = None
        if config.get("experiment"):
            e = config["experiment"]
            experiment = Experiment(
                name=e["name"],
                arms=dict(e["arms"]),
                outcome=e.get("outcome", "order"),
                window_days=int(e.get("window_days", 7)),
                trigger=config["name"],
                segment=config["segment"],
                variants={k: dict(v) for k, v in (e.get("variants") or {}).items()},
            )
        return cls(
            name=config["name"],
            segment=config["segment"],
            on=config["on"],
            channel=config["channel"],
            settings=dict(config.get("settings") or {}),
            cap=config.get("cap"),
            quiet_hours=config.get("quiet_hours"),
            max_attempts=int(config.get("max_attempts", 8)),
            experiment=experiment,
            consent=config.get("consent"),
            owner=config.get("owner"),
        )


def _template_texts(value: Any, key: str, where: str) -> list[str]:
    """A template setting: one text, or ``{zh = ..., en = ...}``."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in ("zh", "en")]
        if unknown or not value:
            raise InputError(
                f"{where}: {key} takes a text or {{zh = ..., en = ...}}, got keys {sorted(value)!r}"
            )
        bad = [k for k, v in value.items() if not isinstance(v, str)]
        if bad:
            raise InputError(f"{where}: {key}.{bad[0]} must be text")
        return list(value.values())
    if isinstance(value, list) and key == "to" and all(isinstance(v, str) for v in value):
        return list(value)
    raise InputError(f"{where}: {key} must be text, got {value!r}")


def _check_template(text: str, key: str, where: str) -> None:
    tpl = string.Template(text)
    if not tpl.is_valid():
        raise InputError(
            f"{where}: {key} {text!r} has a stray '$'; write $$ for a dollar sign, "
            "$name or ${name} for a field"
        )
    for ident in tpl.get_identifiers():
        if ident not in TEMPLATE_FIELDS:
            raise InputError(
                f"{where}: {key} uses ${ident}, not a payload field"
                f"{closest(ident, TEMPLATE_FIELDS)} (fields: {', '.join(TEMPLATE_FIELDS)})"
            )


def _check_settings(channel: str, settings: dict[str, Any], where: str) -> None:
    allowed = SETTINGS[channel]
    for key in settings:
        if key not in allowed:
            raise InputError(
                f"{where}: {key!r} is not a {channel} setting{closest(key, allowed)} "
                f"(settings: {', '.join(allowed)})"
            )
    for key in REQUIRED[channel]:
        if settings.get(key) in (None, "", {}):
            raise InputError(f"{where}: a {channel} trigger needs `{key}`")
    url = settings.get("url")
    if url is not None:
        if not isinstance(url, str):
            raise InputError(f"{where}: url must be text, got {url!r}")
        if not (_ENV_REF.match(url) or url.startswith(("http://", "https://"))):
            raise InputError(f"{where}: url {url!r} must start with http:// or https://")
    for key in ("secret", "password", "user", "host", "from", "path"):
        if key in settings and not isinstance(settings[key], str):
            raise InputError(f"{where}: {key} must be text, got {settings[key]!r}")
    headers = settings.get("headers")
    if headers is not None and not (
        isinstance(headers, Mapping) and all(isinstance(v, str) for v in headers.values())
    ):
        raise InputError(f"{where}: headers must be a table of texts, got {headers!r}")
    for key in ("timeout",):
        if key in settings and not (
            isinstance(settings[key], int | float) and not isinstance(settings[key], bool)
        ):
            raise InputError(f"{where}: {key} must be a number of seconds, got {settings[key]!r}")
    if "port" in settings and not (
        isinstance(settings["port"], int) and 0 < settings["port"] < 65536
    ):
        raise InputError(f"{where}: port {settings['port']!r} is not a port number")
    choices = {
        "security": ("starttls", "ssl", "none"),
        "language": ("zh", "en", "both"),
        "msgtype": ("text", "markdown"),
        "format": ("jsonl", "csv"),
    }
    for key, options in choices.items():
        if key in settings and settings[key] not in options:
            raise InputError(
                f"{where}: {key} = {settings[key]!r}{closest(str(settings[key]), options)} "
                f"(use one of {', '.join(options)})"
            )
    for key in ("subject", "template", "to", "title"):
        if key in settings:
            for text in _template_texts(settings[key], key, where):
                _check_template(text, key, where)
    fields = settings.get("fields")
    if fields is not None:
        from kequn.act.channels import PAYLOAD_FIELDS

        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise InputError(f"{where}: fields must be a list of names, got {fields!r}")
        for f in fields:
            if f not in PAYLOAD_FIELDS:
                raise InputError(
                    f"{where}: field {f!r} is not in the payload{closest(f, PAYLOAD_FIELDS)}"
                )


def resolve_env(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """Replace ``${NAME}`` with the environment variable (in text, or a table's values).

    A variable that is not set raises :class:`InputError` naming it.
    """
    env = os.environ if environ is None else environ
    if isinstance(value, Mapping):
        return {k: resolve_env(v, env) for k, v in value.items()}
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name = match[1]
        if name not in env:
            raise InputError(
                f"environment variable {name!r} is not set (referenced as ${{{name}}})"
            )
        return env[name]

    return _ENV_REF.sub(sub, value)


def _parse_experiment(block: Any, trigger: Mapping[str, Any], where: str) -> Experiment:
    if not isinstance(block, Mapping):
        raise InputError(f"{where}: [trigger.experiment] must be a table, got {block!r}")
    for key in block:
        if key not in _EXPERIMENT_KEYS:
            raise InputError(
                f"{where}: {key!r} is not an experiment setting{closest(key, _EXPERIMENT_KEYS)} "
                f"(settings: {', '.join(_EXPERIMENT_KEYS)})"
            )
    arms = block.get("arms")
    if not isinstance(arms, Mapping) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in arms.values()
    ):
        raise InputError(
            f"{where}: experiment arms must be a table of shares, e.g. "
            f"arms = {{holdout = 0.1, a = 0.45, b = 0.45}}; got {arms!r}"
        )
    variants = block.get("variants") or {}
    if not isinstance(variants, Mapping) or not all(
        isinstance(v, Mapping) for v in variants.values()
    ):
        raise InputError(f"{where}: [trigger.experiment.variants.ARM] must be tables")
    window = block.get("window_days", 7)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise InputError(f"{where}: experiment window_days = {window!r}; use whole days ≥ 1")
    try:
        return Experiment(
            name=str(block.get("name") or trigger.get("name")),
            arms={str(k): float(v) for k, v in arms.items()},
            outcome=str(block.get("outcome", "order")),
            window_days=window,
            trigger=str(trigger.get("name", "")),
            segment=str(trigger.get("segment", "")),
            variants={str(k): dict(v) for k, v in variants.items()},
        )
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


def _parse(data: Mapping[str, Any], source: str) -> list[Trigger]:
    unknown = [k for k in data if k not in ("trigger", "defaults")]
    if unknown:
        raise InputError(
            f"{source}: unknown top-level key {unknown[0]!r}{closest(unknown[0], ['trigger'])}; "
            "define triggers as [[trigger]] tables (and shared settings in [defaults])"
        )
    defaults = data.get("defaults", {})
    if not isinstance(defaults, Mapping):
        raise InputError(f"{source}: [defaults] must be a table")
    tables = data.get("trigger", [])
    if isinstance(tables, Mapping):
        tables = [tables]
    if not isinstance(tables, list) or not tables:
        raise InputError(f"{source}: no [[trigger]] tables found")
    triggers: list[Trigger] = []
    seen: set[str] = set()
    for i, raw in enumerate(tables, start=1):
        table = {**defaults, **raw}
        name = table.get("name")
        where = f"{source}, trigger {name!r}" if name else f"{source}, trigger #{i}"
        if not name or not isinstance(name, str):
            raise InputError(f"{where}: every [[trigger]] needs a `name`")
        if name in seen:
            raise InputError(f"{where}: the name {name!r} is used twice")
        seen.add(name)
        for key in ("segment", "on", "channel"):
            if key not in table:
                raise InputError(f"{where}: missing `{key}`")
        experiment = None
        if "experiment" in table:
            experiment = _parse_experiment(table["experiment"], table, where)
        settings = {k: v for k, v in table.items() if k not in _TRIGGER_KEYS and k != "experiment"}
        try:
            triggers.append(
                Trigger(
                    name=name,
                    segment=str(table["segment"]),
                    on=str(table["on"]),
                    channel=str(table["channel"]),
                    settings=settings,
                    cap=table.get("cap"),
                    quiet_hours=table.get("quiet_hours"),
                    max_attempts=table.get("max_attempts", 8),
                    experiment=experiment,
                    consent=table.get("consent"),
                    owner=table.get("owner"),
                )
            )
        except InputError as exc:
            raise InputError(f"{source}: {exc}") from None
    return triggers


def load_triggers(path: str | os.PathLike) -> list[Trigger]:
    """Read and validate a trigger file (TOML with ``[[trigger]]`` tables)."""
    file = Path(path)
    if not file.is_file():
        raise SourceNotFound(f"trigger file {str(file)!r} does not exist")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{str(file)!r} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{str(file)!r} is not UTF-8 text") from None
    return _parse(data, repr(str(file)))


def apply_triggers(
    workspace: WorkspaceLike, definitions: str | os.PathLike | Iterable[Trigger]
) -> list[Trigger]:
    """Store (or replace, by name) the triggers of a file or list, in one transaction."""
    from kequn.workspace import opened

    if isinstance(definitions, str | os.PathLike):
        triggers = load_triggers(definitions)
    else:
        triggers = list(definitions)
    if not triggers:
        raise InputError("no triggers to apply")
    names = [t.name for t in triggers]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InputError(f"trigger name {dup!r} is used twice")
    with opened(workspace) as ws:
        import pyarrow as pa

        from kequn.act.outbox import workspace_now

        now = workspace_now(ws)
        rows = pa.table(
            {
                "name": names,
                "segment": [t.segment for t in triggers],
                "on": [t.on for t in triggers],
                "channel": [t.channel for t in triggers],
                "config": [json.dumps(t.as_config(), ensure_ascii=False) for t in triggers],
                "updated_at": pa.array([now] * len(triggers), pa.timestamp("us")),
            }
        )
        with ws.store.transaction():
            ws.store.delete("triggers", name=names)
            ws.store.append("triggers", rows)
    return triggers


def stored_triggers(workspace: WorkspaceLike, names: Sequence[str] | None = None) -> list[Trigger]:
    """The triggers in the workspace, by name."""
    from kequn.workspace import opened

    with opened(workspace) as ws:
        t = ws.table("triggers")
        if names is not None:
            t = t.filter(t.name.isin(list(names)))
        rows = t.order_by("name").select("config").to_pyarrow().to_pylist()
    return [Trigger.from_config(json.loads(r["config"])) for r in rows]


def remove_triggers(workspace: WorkspaceLike, names: Sequence[str]) -> None:
    """Forget triggers by name; their deliveries stay (pending ones go dead when due)."""
    from kequn.workspace import opened

    with opened(workspace) as ws:
        ws.store.delete("triggers", name=list(names))


def with_defaults(trigger: Trigger, ws: Workspace) -> Trigger:
    """The trigger with the workspace's ``[triggers]`` cap and quiet hours where it has none."""
    section = ws.config.raw.get("triggers", {})
    if not isinstance(section, Mapping):
        raise InputError("kequn.toml: [triggers] must be a table")
    changes: dict[str, Any] = {}
    if trigger.cap is None and section.get("cap"):
        parse_cap(section["cap"], "kequn.toml [triggers]")
        changes["cap"] = section["cap"]
    if trigger.quiet_hours is None and section.get("quiet_hours"):
        parse_quiet_hours(section["quiet_hours"], "kequn.toml [triggers]")
        changes["quiet_hours"] = section["quiet_hours"]
    return replace(trigger, **changes) if changes else trigger
