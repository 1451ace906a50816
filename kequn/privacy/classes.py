"""Field classes: which customer fields are public, personal or sensitive.

A workspace's registry (:func:`field_classes`) is built from three layers, later ones
winning: defaults by field name (phones, e-mails, ID numbers, names and addresses are
personal; health, religion, ethnicity, income, bank cards are sensitive), the columns
imports found to look personal (table ``field_classes``), and ``[privacy.fields]`` in
``kequn.toml``. Roles and grants decide what a reader sees of each class
(:meth:`kequn.access.Principal.may_read`); :func:`check_rule_grants` refuses a rule that
reads a sensitive field for a principal without the ``sensitive`` grant.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kequn.access.masking import PERSONAL_FIELDS, _norm
from kequn.errors import WorkspaceError

if TYPE_CHECKING:
    from kequn.access import Principal
    from kequn.workspace import Workspace

__all__ = [
    "CLASSES",
    "DEFAULT_CLASSES",
    "check_export_columns",
    "check_rule_grants",
    "configured_classes",
    "default_class",
    "denied_fields",
    "field_classes",
    "infer_class",
    "sensitive_present",
    "workspace_fields",
]

CLASSES = ("public", "personal", "sensitive")

_PERSONAL_NAMES = str.split(
    "name name_en full_name real_name first_name last_name english_name nickname "
    "birth_date birthday date_of_birth dob address addr home_address shipping_address "
    "street wechat wechat_id openid unionid qq "
    "姓名 英文名 真实姓名 昵称 生日 出生日期 地址 住址 家庭住址 收货地址 详细地址 微信 微信号"
)
_SENSITIVE_NAMES = str.split(
    "health health_condition medical medical_history diagnosis disease religion ethnicity "
    "race income salary bank_card bank_account credit_score sexual_orientation biometric "
    "fingerprint face_id criminal_record is_minor guardian "
    "健康 健康状况 病史 疾病 诊断 宗教 宗教信仰 民族 收入 月收入 年收入 工资 银行卡 银行卡号 "
    "信用分 指纹 人脸 犯罪记录 未成年 监护人"
)

# field name (normalised as in kequn.access.masking) → class, before the workspace's own
DEFAULT_CLASSES: dict[str, str] = {
    **dict.fromkeys(PERSONAL_FIELDS, "personal"),
    **{_norm(n): "personal" for n in _PERSONAL_NAMES},
    **{_norm(n): "sensitive" for n in _SENSITIVE_NAMES},
}


def default_class(field: str) -> str:
    """The class a field name implies on its own (public when nothing says otherwise)."""
    return DEFAULT_CLASSES.get(_norm(field), "public")


def configured_classes(config_raw: Mapping[str, Any]) -> dict[str, str]:
    """``[privacy.fields]`` of kequn.toml, checked; keys normalised."""
    privacy = config_raw.get("privacy", {})
    if not isinstance(privacy, Mapping):
        raise WorkspaceError("kequn.toml: [privacy] must be a table")
    fields = privacy.get("fields", {})
    if not isinstance(fields, Mapping):
        raise WorkspaceError("kequn.toml: [privacy.fields] must be a table of field = class")
    out: dict[str, str] = {}
    for name, kind in fields.items():
        if kind not in CLASSES:
            raise WorkspaceError(
                f"kequn.toml [privacy.fields]: {name} = {kind!r}; use one of {', '.join(CLASSES)}"
            )
        out[_norm(str(name))] = str(kind)
    return out


def field_classes(ws: Workspace) -> dict[str, str]:
    """The workspace's registry: defaults, then fields imports found, then the config."""
    classes = dict(DEFAULT_CLASSES)
    t = ws.table("field_classes")
    for row in t.order_by("detected_at").select("field", "class").to_pyarrow().to_pylist():
        classes[_norm(row["field"])] = row["class"]
    classes.update(configured_classes(ws.config.raw))
    return classes


# --- inference from values ------------------------------------------------------------------

# (kind, regex over a value with spaces, dashes and brackets removed where it says so)
_VALUE_PATTERNS = (
    ("phone number", r"^(\+?0{0,2}86)?1[3-9]\d{9}$", True),
    ("e-mail address", r"^[^@\s]+@[^@\s]+\.[^@\s]+$", False),
    ("ID card number", r"^\d{17}[\dXx]$", True),
    (
        "address",
        r"^.{1,12}(省|市|区|县|州|旗).{0,20}(路|街|道|巷|号|弄|村|里|苑|小区)"
        r"|^\d+\s+\w+.*\b(street|st|road|rd|avenue|ave|lane|ln|drive|dr)\b",
        False,
    ),
)
INFER_SHARE = 0.8  # share of non-empty values that must match


def infer_class(field: str, values: list[object]) -> tuple[str, str] | None:
    """(class, reason) when a column looks personal by its name or its values, else None.

    ``values`` is a sample; a pattern must match :data:`INFER_SHARE` of the non-empty ones.
    """
    by_name = default_class(field)
    if by_name != "public":
        return by_name, f"its name {field!r} reads as {by_name}"
    texts = [str(v).strip() for v in values if v is not None and str(v).strip()]
    if not texts:
        return None
    for kind, pattern, strip in _VALUE_PATTERNS:
        rx = re.compile(pattern, re.IGNORECASE)
        hits = sum(1 for t in texts if rx.search(re.sub(r"[\s\-()]", "", t) if strip else t))
        if hits >= INFER_SHARE * len(texts):
            return "personal", f"{hits} of {len(texts)} sampled values look like a {kind}"
    return None


# --- rules --------------------------------------------------------------------------------


def denied_fields(classes: Mapping[str, str], principal: Principal) -> dict[str, str]:
    """Field (normalised name) → the grant it needs, for the fields ``principal`` may not use."""
    if principal.may_read("sensitive"):
        return {}
    return {name: "sensitive" for name, kind in classes.items() if kind == "sensitive"}


def check_rule_grants(ws: Workspace, rule: str, principal: Principal) -> None:
    """Raise :class:`~kequn.errors.RuleError` when ``rule`` (or a segment it refers to)
    reads a sensitive field and ``principal`` lacks the ``sensitive`` grant."""
    from dataclasses import replace

    from kequn.segments.check import check_rule
    from kequn.segments.engine import _Context
    from kequn.segments.parser import parse_rule

    denied = denied_fields(field_classes(ws), principal)
    if not denied:
        return
    context = _Context(ws)
    catalog = replace(context.catalog, denied=denied, principal=principal.name)
    check_rule(parse_rule(rule), catalog, text=rule, lookup=context.rule_of)


# --- reads and exports ------------------------------------------------------------------------


def sensitive_present(record: Mapping[str, Any], classes: Mapping[str, str]) -> list[str]:
    """Sensitive fields with a value anywhere in ``record`` (``attributes`` JSON included),
    sorted: what reading the record in clear discloses, for the audit log."""
    import json

    from kequn.access.masking import class_of

    found: set[str] = set()

    def walk(data: Mapping[str, Any]) -> None:
        for key, value in data.items():
            if isinstance(value, str) and key == "attributes":
                with contextlib.suppress(ValueError):
                    value = json.loads(value)
            if isinstance(value, Mapping):
                walk(value)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, Mapping):
                        walk(item)
            elif value not in (None, "") and class_of(key, classes) == "sensitive":
                found.add(key)

    walk(record)
    return sorted(found)


def check_export_columns(ws: Workspace, principal: Principal, columns: list[str] | None) -> None:
    """Raise :class:`~kequn.errors.PermissionDenied` when an export would carry a sensitive
    column the principal lacks the grant for (``None``: the default columns)."""
    from kequn.access.masking import class_of
    from kequn.errors import PermissionDenied
    from kequn.segments.export import DEFAULT_COLUMNS

    if principal.may_read("sensitive"):
        return
    classes = field_classes(ws)
    for column in columns or DEFAULT_COLUMNS:
        if class_of(column, classes) == "sensitive":
            raise PermissionDenied(
                f"column {column!r} is sensitive; token {principal.name!r} lacks the "
                "'sensitive' grant needed to export it (leave the column out, or ask an "
                "admin for a token with --grant sensitive)"
            )


def workspace_fields(ws: Workspace) -> list[dict[str, str]]:
    """Every customer column and stored attribute key with its class and where it comes
    from (``config``, ``import``, ``default``), for ``kequn privacy fields``."""
    t = ws.table("customers")
    names = [c for c in t.columns if c not in ("customer_id", "attributes")]
    rows: list[str] = []
    if ws.store.is_duckdb:  # attribute keys: one query over the JSON texts
        query = ws.con.sql(
            "SELECT DISTINCT unnest(json_keys(attributes)) AS k FROM customers "
            "WHERE attributes IS NOT NULL"
        )
        rows = [str(k) for k in query.to_pyarrow().column(0).to_pylist()]
    configured = configured_classes(ws.config.raw)
    t2 = ws.table("field_classes")
    found = {_norm(r["field"]): r["class"] for r in t2.to_pyarrow().to_pylist()}
    out = []
    for name in [*names, *sorted(rows)]:
        key = _norm(name)
        if key in configured:
            kind, origin = configured[key], "config"
        elif key in found:
            kind, origin = found[key], "import"
        else:
            kind, origin = default_class(name), "default"
        out.append({"field": name, "class": kind, "from": origin})
    return out
