"""What a family member reads: one outbox row's `message` made into an email, an SMS, a push.

The SQL side writes the facts (who, what, when in the member's zone, the signed link tokens);
this module only lays them out and builds the links on the API's public URL:

- `{base}/alerts/ack?token=...`: acknowledge (a page, then a POST; no login needed);
- `{base}/alerts/call?token=...`: "call her now" (`request_call_now`).

Never a transcript: `what` is the alert's one-line message (PROTOCOLS.md, "Email").
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

ACK_PATH = "/alerts/ack"
CALL_PATH = "/alerts/call"
#: RFC 8291: a single record of 4096 bytes leaves 3993 bytes of plaintext.
MAX_PUSH_PLAINTEXT = 3993
#: Two SMS segments at most (GSM-7, concatenated: 153 characters each).
MAX_SMS_CHARS = 306


@dataclass(frozen=True)
class Links:
    ack: str | None
    call: str | None


def links(message: dict[str, Any], base_url: str) -> Links:
    """The acknowledgement and "call her now" links of a message (None where it has none)."""
    base = base_url.rstrip("/")
    ack, call = message.get("ack_token"), message.get("call_token")
    return Links(
        f"{base}{ACK_PATH}?token={quote(str(ack), safe='')}" if ack else None,
        f"{base}{CALL_PATH}?token={quote(str(call), safe='')}" if call else None,
    )


def _headline(message: dict[str, Any]) -> str:
    return str(message.get("subject") or message.get("what") or "CallPanion alert")


def _when(message: dict[str, Any]) -> str:
    return str(message.get("happened_at_local") or message.get("happened_at") or "")


def email_text(message: dict[str, Any], link: Links) -> str:
    """The plain-text part (every mail has one)."""
    kind = message.get("kind")
    if kind == "verification":
        return (
            f"Your CallPanion verification code is {message.get('code')}.\n\n"
            "Enter it in the dashboard to receive alerts at this address. If you did not ask "
            "for it, ignore this message.\n"
        )
    lines = [str(message.get("text") or message.get("what") or "")]
    if kind == "all_clear":
        lines.append("")
        lines.append("No need to do anything.")
    else:
        when = _when(message)
        if when and "When:" not in lines[0]:  # the SQL text usually says it already
            lines += ["", f"When: {when}"]
        if link.call:
            lines += ["", f"Call her now: {link.call}"]
        if link.ack:
            lines += ["", f"I'm on it (acknowledge, stops the others being told): {link.ack}"]
    lines += ["", f"— CallPanion, for {message.get('household_name') or 'your family'}"]
    return "\n".join(lines) + "\n"


def email_html(message: dict[str, Any], link: Links) -> str:
    """The HTML part: the same facts and links."""
    esc = html.escape
    if message.get("kind") == "verification":
        return (
            f"<p>Your CallPanion verification code is <strong>{esc(str(message.get('code')))}"
            "</strong>.</p><p>Enter it in the dashboard to receive alerts at this address.</p>"
        )
    text = esc(str(message.get("text") or message.get("what") or "")).replace("\n", "<br>")
    parts = [f"<p>{text}</p>"]
    when = _when(message)
    if when and message.get("kind") != "all_clear" and "When:" not in parts[0]:
        parts.append(f"<p>When: {esc(when)}</p>")
    if link.call:
        parts.append(f'<p><a href="{esc(link.call)}">Call her now</a></p>')
    if link.ack:
        parts.append(f'<p><a href="{esc(link.ack)}">I\'m on it (acknowledge)</a></p>')
    return "<html><body>" + "".join(parts) + "</body></html>"


def email_subject(message: dict[str, Any]) -> str:
    if message.get("kind") == "verification":
        return "Your CallPanion verification code"
    return _headline(message)[:200]


def sms_text(message: dict[str, Any], link: Links) -> str:
    """One SMS: what happened, then the links; "Reply OK to acknowledge"."""
    kind = message.get("kind")
    if kind == "verification":
        return f"CallPanion code: {message.get('code')}. Enter it in the dashboard."
    text = str(message.get("what") or message.get("text") or "")
    if kind == "all_clear":
        return f"CallPanion: all clear. {text}"[:MAX_SMS_CHARS]
    tail = ""
    if link.call:
        tail += f" Call her now: {link.call}"
    if link.ack:
        tail += f" Reply OK to acknowledge, or: {link.ack}"
    head = f"CallPanion: {text}"
    room = MAX_SMS_CHARS - len(tail)
    return (head if len(head) <= room else head[: max(room - 1, 0)] + "…") + tail


def push_payload(message: dict[str, Any], link: Links, outbox_id: str) -> bytes:
    """The JSON the dashboard's service worker receives (README, "Web Push to the dashboard")."""
    body = {
        "type": "callpanion_alert"
        if message.get("kind") != "all_clear"
        else "callpanion_all_clear",
        "outbox_id": outbox_id,
        "alert_id": message.get("alert_id"),
        "alert_kind": message.get("alert_kind"),
        "severity": message.get("severity"),
        "title": _headline(message)[:120],
        "body": str(message.get("text") or message.get("what") or "")[:500],
        "relative_name": message.get("relative_name"),
        "happened_at": message.get("happened_at"),
        "happened_at_local": message.get("happened_at_local"),
        "ack_url": link.ack,
        "call_url": link.call,
    }
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    if len(data) > MAX_PUSH_PLAINTEXT:
        body["body"] = ""
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return data
