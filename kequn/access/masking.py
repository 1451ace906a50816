"""Masking of personal fields for readers without ``read_personal`` (the viewer role).

Phones keep their first three and last four digits (``138****1234``), e-mails their first
letter and domain (``a***@example.com``), ID numbers their first three and last four
characters (``110***********1234``). The registry :data:`PERSONAL_FIELDS` names the fields
by English and Chinese names; keys inside a customer's ``attributes`` JSON are masked too,
since imports keep unknown input columns there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from kequn.access.permissions import Principal, allowed

__all__ = [
    "PERSONAL_FIELDS",
    "class_of",
    "mask_email",
    "mask_id_number",
    "mask_phone",
    "mask_record",
    "mask_value",
]

_DIGITS = re.compile(r"\d")


def _keep_ends(text: str, head: int, tail: int) -> str:
    """``head`` first and ``tail`` last characters kept, every other one a ``*``."""
    if len(text) <= head + tail:
        # Too short to show both ends without giving it away: keep at most the last two.
        keep = min(2, max(0, len(text) - 2))
        return "*" * (len(text) - keep) + text[len(text) - keep :]
    return text[:head] + "*" * (len(text) - head - tail) + text[len(text) - tail :]


def mask_phone(value: object) -> object:
    """``13812341234`` → ``138****1234``; spaces, dashes and a +86 prefix are dropped."""
    if value is None or value == "":
        return value
    digits = "".join(_DIGITS.findall(str(value)))
    if len(digits) == 13 and digits.startswith("86"):
        digits = digits[2:]
    if not digits:
        return "*" * len(str(value))
    return _keep_ends(digits, 3, 4)


def mask_email(value: object) -> object:
    """``alice@example.com`` → ``a***@example.com``; the domain stays (it is rarely personal)."""
    if value is None or value == "":
        return value
    text = str(value).strip()
    local, at, domain = text.rpartition("@")
    if not at or not local:
        return _keep_ends(text, 1, 0) if len(text) > 1 else "*"
    return f"{local[0]}***@{domain}"


def mask_id_number(value: object) -> object:
    """``110101199003071234`` → ``110***********1234`` (length kept)."""
    if value is None or value == "":
        return value
    text = re.sub(r"\s", "", str(value))
    return _keep_ends(text, 3, 4)


def _norm(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


_PHONE = ("phone", "mobile", "mobile_phone", "cellphone", "tel", "telephone", "phone_norm")
_PHONE_ZH = ("手机", "手机号", "手机号码", "电话", "电话号码", "联系电话", "联系方式")
_EMAIL = ("email", "e_mail", "mail", "email_address", "email_norm")
_EMAIL_ZH = ("邮箱", "电子邮箱", "电子邮件", "邮件")
_ID = ("id_number", "id_card", "id_card_number", "national_id", "identity_number", "passport")
_ID_ZH = ("身份证", "身份证号", "身份证号码", "证件号", "证件号码", "护照号")

# field name (lower case, spaces and dashes as underscores) → masking function
PERSONAL_FIELDS: dict[str, Callable[[object], object]] = {
    **{_norm(n): mask_phone for n in _PHONE + _PHONE_ZH},
    **{_norm(n): mask_email for n in _EMAIL + _EMAIL_ZH},
    **{_norm(n): mask_id_number for n in _ID + _ID_ZH},
}


def mask_value(field: str, value: object) -> object:
    """The value masked if ``field`` is a personal field, else as it is."""
    masker = PERSONAL_FIELDS.get(_norm(field))
    return value if masker is None else masker(value)


def _mask_mapping(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out[key] = _mask_mapping(value)
        elif isinstance(value, list):
            out[key] = [
                mask_value(key, v) if not isinstance(v, Mapping) else _mask_mapping(v)
                for v in value
            ]
        else:
            out[key] = mask_value(key, value)
    return out


def _mask_attributes(value: object) -> object:
    if isinstance(value, Mapping):
        return _mask_mapping(value)
    if isinstance(value, str) and value.strip():
        try:
            data = json.loads(value)
        except ValueError:
            return value
        if isinstance(data, dict):
            return json.dumps(_mask_mapping(data), ensure_ascii=False)
    return value


def mask_text(value: object) -> object:
    """A personal value with no particular shape (a name, an address): first character kept."""
    if value is None or value == "":
        return value
    text = str(value)
    return text[0] + "*" * (len(text) - 1) if len(text) > 1 else "*"


def class_of(field: str, classes: Mapping[str, str]) -> str:
    """A field's class: the registry's (keys normalised), else personal for the fields
    :data:`PERSONAL_FIELDS` names, else public."""
    key = _norm(field)
    found = classes.get(key)
    if found is not None:
        return found
    return "personal" if key in PERSONAL_FIELDS else "public"


def _by_class(data: Mapping[str, Any], who: Principal, classes: Mapping[str, str]) -> dict:
    out: dict[str, Any] = {}
    for key, value in data.items():
        kind = class_of(key, classes)
        if kind == "sensitive" and not who.may_read("sensitive"):
            continue  # hidden: not even masked
        if key == "attributes" and isinstance(value, str) and value.strip():
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                out[key] = json.dumps(_by_class(parsed, who, classes), ensure_ascii=False)
                continue
        if isinstance(value, Mapping):
            out[key] = _by_class(value, who, classes)
        elif isinstance(value, list):
            out[key] = [
                _by_class(v, who, classes)
                if isinstance(v, Mapping)
                else _mask_one(key, v, kind, who)
                for v in value
            ]
        else:
            out[key] = _mask_one(key, value, kind, who)
    return out


def _mask_one(key: str, value: object, kind: str, who: Principal) -> object:
    if kind != "personal" or who.may_read("personal"):
        return value
    masker = PERSONAL_FIELDS.get(_norm(key), mask_text)
    return masker(value)


def mask_record(
    record: Mapping[str, Any],
    principal: Principal | None,
    classes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A copy of ``record`` as ``principal`` may see it.

    Without ``classes``: roles with ``read_personal`` see everything; others (and ``None``)
    get the personal fields masked, including those inside ``attributes`` (a JSON string
    stays a string). With ``classes`` (field → public/personal/sensitive, the workspace's
    registry, see :func:`kequn.privacy.field_classes`): personal fields are masked unless
    the principal may read them, and sensitive ones are left out unless it holds the
    ``sensitive`` grant (admins always), at any depth.
    """
    if classes is not None:
        who = principal or Principal("anonymous", "viewer")
        return _by_class(record, who, classes)
    if principal is not None and allowed(principal, "read_personal"):
        return dict(record)
    out = _mask_mapping({k: v for k, v in record.items() if k != "attributes"})
    if "attributes" in record:
        out["attributes"] = _mask_attributes(record["attributes"])
    # keep the caller's key order
    return {k: out[k] for k in record}
