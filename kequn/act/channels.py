"""Channels: how one delivery's payload reaches a webhook, a mailbox, a group robot or a file.

Each sender takes the payload and the trigger's (resolved) settings and returns an
:class:`Outcome`; none touches the database, so the server can run many at once in
threads. The outcome says whether a failure is worth retrying (timeouts, 5xx, 429, a robot's
rate limit) or permanent (a 4xx, a robot's bad-key error, a mailbox that does not exist).
"""

from __future__ import annotations

import base64
import csv
import email.policy
import functools
import hashlib
import hmac
import io
import json
import os
import smtplib
import ssl
import string
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

from kequn.act.triggers import TEMPLATE_FIELDS

__all__ = [
    "Outcome",
    "append_file",
    "dingtalk_sign",
    "feishu_sign",
    "post_robot",
    "post_webhook",
    "render",
    "robot_body",
    "send_email",
    "template_context",
    "webhook_signature",
]

# One per payload field a CSV export may carry (nested customer fields flattened): the
# template fields but the wording of the action, which is for people, not files.
PAYLOAD_FIELDS = tuple(f for f in TEMPLATE_FIELDS if not f.startswith("action_"))
PROFILE_FIELDS = ("name", "city", "email", "phone", "channel")

DEFAULT_TEXT = {
    "zh": "客户 ${name}（${customer_id}）${action_zh}客群 ${segment}",
    "en": "Customer ${name} (${customer_id}) ${action_en} segment ${segment}",
}
DEFAULT_TITLE = "kequn · ${segment}"
BOTH_SEPARATOR = "\n\n"

# Robot error codes that mean "slow down / try again", not "this request is wrong".
_ROBOT_RETRY = {
    "wecom": {-1, 45009},  # system busy, API frequency limit
    "dingtalk": {-1, 130101, 130102},  # system busy, sent too fast
    "feishu": {9499, 11232, 11233},  # frequency limits
}


@dataclass(frozen=True)
class Outcome:
    """What one attempt achieved.

    ``permanent`` failures go dead at once (the same request would fail again);
    other failures are retried with backoff, no sooner than ``retry_after`` seconds.
    """

    ok: bool
    error: str | None = None
    permanent: bool = False
    status_code: int | None = None
    retry_after: float | None = None


# --- templates -----------------------------------------------------------------------------


def template_context(payload: Mapping[str, Any]) -> dict[str, str]:
    """The payload flattened for templates: customer fields at the top, None as ''."""
    kind = str(payload.get("kind") or "")
    context = {k: payload.get(k) for k in PAYLOAD_FIELDS if k not in PROFILE_FIELDS}
    customer = payload.get("customer") or {}
    context.update({k: customer.get(k) for k in PROFILE_FIELDS})
    context["action_zh"] = {"enter": "进入", "exit": "离开"}.get(kind, kind)
    context["action_en"] = {"enter": "entered", "exit": "left"}.get(kind, kind)
    return {k: "" if v is None else str(v) for k, v in context.items()}


def render(value: Any, context: Mapping[str, str], language: str = "both", sep: str = "") -> str:
    """A template setting (text or ``{zh, en}``) filled in; ``both`` joins zh then en."""
    if isinstance(value, str):
        return string.Template(value).safe_substitute(context)
    texts = {k: string.Template(v).safe_substitute(context) for k, v in value.items()}
    if language in texts:
        return texts[language]
    if language == "both" and len(texts) == 2:
        return texts["zh"] + (sep or BOTH_SEPARATOR) + texts["en"]
    return next(iter(texts.values()))


# --- webhook -------------------------------------------------------------------------------


def webhook_signature(body: bytes, secret: str) -> str:
    """The ``X-Kequn-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of the exact body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@functools.cache
def _tls() -> ssl.SSLContext:
    """One verified TLS context for every request: building one costs ~30 ms, using it nothing."""
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:  # pragma: no cover - httpx depends on certifi
        return ssl.create_default_context()


def _post(url: str, body: bytes, headers: Mapping[str, str], timeout: float):
    """POST; an :class:`Outcome` for transport failures and non-2xx, else the response."""
    import httpx

    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, verify=_tls()) as client:
            response = client.post(url, content=body, headers=dict(headers))
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        return Outcome(False, f"bad url {url!r}: {exc}", permanent=True)
    except httpx.TimeoutException:
        return Outcome(False, f"timed out after {timeout:g} s")
    except httpx.TransportError as exc:
        return Outcome(False, f"{type(exc).__name__}: {exc}")
    code = response.status_code
    if 200 <= code < 300:
        return response
    text = response.text[:300].strip()
    error = f"HTTP {code}" + (f": {text}" if text else "")
    if code in (408, 429) or code >= 500:
        return Outcome(False, error, status_code=code, retry_after=_retry_after(response))
    if 300 <= code < 400:
        error += f" (redirect to {response.headers.get('location')!r} not followed; fix the url)"
    return Outcome(False, error, permanent=True, status_code=code)


def post_webhook(
    body: bytes,
    settings: Mapping[str, Any],
    idempotency_key: str,
    *,
    timeout: float = 5.0,
    now: float | None = None,
) -> Outcome:
    """POST the JSON body, signed when the trigger has a ``secret``."""
    headers = {str(k): str(v) for k, v in (settings.get("headers") or {}).items()}
    headers.update(
        {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "kequn",
            "Idempotency-Key": idempotency_key,
            "X-Kequn-Timestamp": str(int(time.time() if now is None else now)),
        }
    )
    if settings.get("secret"):
        headers["X-Kequn-Signature"] = webhook_signature(body, str(settings["secret"]))
    result = _post(str(settings["url"]), body, headers, timeout)
    if isinstance(result, Outcome):
        return result
    return Outcome(True, status_code=result.status_code)


# --- group robots --------------------------------------------------------------------------


def dingtalk_sign(timestamp_ms: int, secret: str) -> str:
    """DingTalk: base64(HMAC-SHA256(key=secret, msg="{timestamp}\\n{secret}"))."""
    msg = f"{timestamp_ms}\n{secret}".encode()
    return base64.b64encode(hmac.new(secret.encode(), msg, hashlib.sha256).digest()).decode()


def feishu_sign(timestamp_s: int, secret: str) -> str:
    """Feishu: base64(HMAC-SHA256(key="{timestamp}\\n{secret}", msg=empty))."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def robot_body(channel: str, msgtype: str, text: str, title: str) -> dict[str, Any]:
    """The robot's documented JSON for a text or markdown message."""
    if channel == "wecom":
        return {"msgtype": msgtype, msgtype: {"content": text}}
    if channel == "dingtalk":
        if msgtype == "markdown":
            return {"msgtype": "markdown", "markdown": {"title": title, "text": text}}
        return {"msgtype": "text", "text": {"content": text}}
    if channel == "feishu":
        if msgtype == "markdown":
            return {
                "msg_type": "interactive",
                "card": {
                    "header": {"title": {"tag": "plain_text", "content": title}},
                    "elements": [{"tag": "markdown", "content": text}],
                },
            }
        return {"msg_type": "text", "content": {"text": text}}
    raise ValueError(f"not a robot channel: {channel!r}")


def post_robot(
    channel: str,
    payload: Mapping[str, Any],
    settings: Mapping[str, Any],
    *,
    timeout: float = 5.0,
    now: float | None = None,
) -> Outcome:
    """Send a WeCom / DingTalk / Feishu group-robot message; errcode/code 0 is success."""
    from urllib.parse import quote_plus

    context = template_context(payload)
    language = str(settings.get("language", "both"))
    msgtype = str(settings.get("msgtype", "text"))
    text = render(settings.get("template", DEFAULT_TEXT), context, language, "\n")
    title = render(settings.get("title", DEFAULT_TITLE), context, language, " / ")
    body = robot_body(channel, msgtype, text, title)
    url = str(settings["url"])
    secret = settings.get("secret")
    moment = time.time() if now is None else now
    if secret and channel == "dingtalk":
        ts = int(moment * 1000)
        sep = "&" if "?" in url else "?"
        url = f"{url}{sep}timestamp={ts}&sign={quote_plus(dingtalk_sign(ts, str(secret)))}"
    elif secret and channel == "feishu":
        ts = int(moment)
        body = {"timestamp": str(ts), "sign": feishu_sign(ts, str(secret)), **body}
    data = json.dumps(body, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "kequn"}
    result = _post(url, data, headers, timeout)
    if isinstance(result, Outcome):
        return result
    try:
        answer = result.json()
    except ValueError:
        return Outcome(False, f"{channel} answered {result.text[:200]!r}, not JSON", permanent=True)
    code = answer.get("errcode", answer.get("code", answer.get("StatusCode", 0)))
    if code in (0, None):
        return Outcome(True, status_code=result.status_code)
    message = answer.get("errmsg") or answer.get("msg") or answer.get("StatusMessage") or ""
    error = f"{channel} error {code}: {message}"
    return Outcome(False, error, permanent=code not in _ROBOT_RETRY[channel], status_code=200)


# --- e-mail --------------------------------------------------------------------------------


def send_email(
    payload: Mapping[str, Any],
    settings: Mapping[str, Any],
    idempotency_key: str,
    *,
    timeout: float = 5.0,
) -> Outcome:
    """One message over SMTP; 5xx replies are permanent, 4xx and lost connections retry."""
    context = template_context(payload)
    language = str(settings.get("language", "both"))
    to_setting = settings.get("to", "${email}")
    targets = [to_setting] if isinstance(to_setting, str | Mapping) else list(to_setting)
    recipients = [r.strip() for t in targets for r in render(t, context, "en").split(",")]
    recipients = [r for r in recipients if r]
    if not recipients:
        who = payload.get("customer_id")
        return Outcome(False, f"no recipient: customer {who!r} has no e-mail", permanent=True)
    # no folding of long header values (the 64-hex idempotency key fits on its line)
    message = EmailMessage(policy=email.policy.SMTP.clone(max_line_length=998))
    message["From"] = str(settings["from"])
    message["To"] = ", ".join(recipients)
    message["Subject"] = render(settings["subject"], context, language, " / ")
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = f"<{idempotency_key}@kequn>"
    message["X-Kequn-Idempotency-Key"] = idempotency_key
    message.set_content(render(settings["template"], context, language, "\n\n---\n\n"))
    security = str(settings.get("security", "none"))
    default_port = {"ssl": 465, "starttls": 587}.get(security, 25)
    host, port = str(settings["host"]), int(settings.get("port", default_port))
    try:
        if security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                host, port, timeout=timeout, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
        with smtp:
            if security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if settings.get("user"):
                smtp.login(str(settings["user"]), str(settings.get("password", "")))
            smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = {code for code, _ in exc.recipients.values()}
        detail = "; ".join(
            f"{r}: {c} {m.decode(errors='replace')}" for r, (c, m) in exc.recipients.items()
        )
        return Outcome(False, f"recipients refused: {detail}", permanent=min(codes) >= 500)
    except smtplib.SMTPResponseException as exc:
        text = (
            exc.smtp_error.decode(errors="replace")
            if isinstance(exc.smtp_error, bytes)
            else exc.smtp_error
        )
        return Outcome(False, f"SMTP {exc.smtp_code}: {text}", permanent=exc.smtp_code >= 500)
    except smtplib.SMTPNotSupportedError as exc:
        return Outcome(False, f"SMTP server: {exc}", permanent=True)
    except (smtplib.SMTPException, OSError) as exc:
        return Outcome(False, f"{type(exc).__name__}: {exc}")
    return Outcome(True)


# --- export file ---------------------------------------------------------------------------

_FILE_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    with _LOCKS_LOCK:
        return _FILE_LOCKS.setdefault(str(path), threading.Lock())


def append_file(
    payload_text: str, settings: Mapping[str, Any], base: Path | None = None
) -> Outcome:
    """Append one JSON line (or CSV row) and fsync it, so a crash after 'sent' loses nothing.

    Relative paths are relative to the workspace folder. A CSV file gets its header when it
    is created. Delivery is at least once: readers dedupe on ``idempotency_key``.
    """
    path = Path(str(settings["path"])).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    fmt = str(settings.get("format", "jsonl"))
    payload = json.loads(payload_text)
    if fmt == "csv":
        fields = list(settings.get("fields") or PAYLOAD_FIELDS)
        flat = {**payload, **(payload.get("customer") or {})}
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(
            ["" if flat.get(f) is None else flat.get(f) for f in fields]
        )
        line = buffer.getvalue()
    else:
        line = json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _lock_for(path), open(path, "a", encoding="utf-8", newline="") as handle:
            if fmt == "csv" and handle.tell() == 0:
                handle.write(",".join(fields) + "\n")
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
    except (IsADirectoryError, PermissionError, NotADirectoryError) as exc:
        return Outcome(False, f"cannot write {str(path)!r}: {exc}", permanent=True)
    except OSError as exc:
        return Outcome(False, f"cannot write {str(path)!r}: {exc}")
    return Outcome(True)
