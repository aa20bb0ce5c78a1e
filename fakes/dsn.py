"""Delivery status notifications (RFC 3464): writing a non-delivery report, and reading one.

A queue that gives up on a message sends its sender a DSN: a
``multipart/report; report-type=delivery-status`` message with an empty
envelope sender, made of a text for people, a ``message/delivery-status``
part (one block of fields for the report, one per recipient: ``Action``,
``Status``, ``Diagnostic-Code``, ``Remote-MTA``...) and the original
message's headers. :func:`compose` writes one, :func:`parse` reads what a
client under test sent back, whichever MTA wrote it (Postfix's
``X-Postfix`` diagnostics included). Reading never raises: a message that is
no DSN gives no bounce, a block that lacks a field gives ``None`` there.

Example::

    raw = compose(
        reporting_mta="connector.fabrikam.test",
        sender="sender@fabrikam.test",
        recipients=[Failed("user@contoso.test", "4.4.7", "smtp; 450 4.4.316 Connection refused",
                           remote_mta="mail.contoso.test")],
        original=b"Subject: hello\\r\\nMessage-ID: <1@fabrikam.test>\\r\\n\\r\\nhi\\r\\n",
    )
    [bounce] = parse(raw)
    assert bounce.status == "4.4.7" and bounce.original_headers["Subject"] == "hello"
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import secrets
import time
from collections.abc import Iterable, Mapping
from email.message import Message as EmailMessage
from types import MappingProxyType

from .values import frozen

ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")  # RFC 3464 2.3.3


@frozen
class Failed:
    """One recipient of a report: what happened to it, and why (RFC 3464 2.3)."""

    recipient: str
    status: str  # an RFC 3463 code: 5.1.1, 4.4.7 ...
    diagnostic: str | None = None  # "smtp; 550 5.1.1 ..." as the remote server said it
    remote_mta: str | None = None
    action: str = "failed"


@frozen
class Bounce:
    """A recipient's entry of a DSN that arrived, with what the report says of the message.

    ``final_recipient``, ``remote_mta`` and ``reporting_mta`` are given
    without their type (``rfc822;``, ``dns;``); ``diagnostic_code`` keeps its
    type (``smtp; 450 ...``, ``X-Postfix; ...``), since it says who wrote it.
    """

    action: str | None
    status: str | None
    final_recipient: str | None
    diagnostic_code: str | None
    remote_mta: str | None
    reporting_mta: str | None
    original_headers: Mapping[str, str]
    # How it arrived, when a world received it: the envelope sender (RFC 3464: empty for a DSN),
    # the envelope recipients, and the world time its session opened (seconds; see mailfakes.clock).
    envelope_from: str | None = None
    envelope_to: tuple[str, ...] = ()
    at: float | None = None

    @property
    def diagnostic_reply(self) -> str | None:
        """The SMTP reply inside an ``smtp;`` diagnostic (``450 4.4.316 ...``), else None."""
        if self.diagnostic_code is None:
            return None
        kind, _, text = self.diagnostic_code.partition(";")
        return text.strip() if kind.strip().lower() == "smtp" else None


def _field_line(name: str, value: str) -> str:
    # Values come from our own queue and the remote server's reply: one line each.
    return f"{name}: {' '.join(value.split())}"


def compose(
    *,
    reporting_mta: str,
    sender: str,
    recipients: Iterable[Failed],
    original: bytes,
    text: str | None = None,
    arrival: float | None = None,
    last_attempt: float | None = None,
    subject: str = "Undeliverable: your message could not be delivered",
    date: float | None = None,
) -> bytes:
    """A DSN to ``sender`` about ``recipients``, as bytes ready for DATA (CRLF line ends)."""
    failed = list(recipients)
    boundary = "mailfakes-report-" + secrets.token_hex(8)
    head, _, _ = original.replace(b"\r\n", b"\n").partition(b"\n\n")
    headers = head.decode("utf-8", "replace").splitlines()
    people = text or "\n".join(
        ["Delivery to these recipients has failed and will not be tried again:", ""]
        + [f"  {f.recipient}: {f.status}" + (f" ({f.diagnostic})" if f.diagnostic else "") for f in failed]
    )
    per_message = [_field_line("Reporting-MTA", f"dns; {reporting_mta}")]
    if arrival is not None:
        per_message.append(_field_line("Arrival-Date", email.utils.formatdate(arrival)))
    blocks = ["\r\n".join(per_message)]
    for f in failed:
        if f.action not in ACTIONS:
            raise ValueError(f"action {f.action!r}: expected one of {', '.join(ACTIONS)}")
        fields = [
            _field_line("Final-Recipient", f"rfc822; {f.recipient}"),
            _field_line("Action", f.action),
            _field_line("Status", f.status),
        ]
        if f.remote_mta:
            fields.append(_field_line("Remote-MTA", f"dns; {f.remote_mta}"))
        if f.diagnostic:
            fields.append(_field_line("Diagnostic-Code", f.diagnostic))
        if last_attempt is not None:
            fields.append(_field_line("Last-Attempt-Date", email.utils.formatdate(last_attempt)))
        blocks.append("\r\n".join(fields))
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{sender}>",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate(time.time() if date is None else date)}",
        f"Message-ID: <{secrets.token_hex(12)}@{reporting_mta}>",
        "Auto-Submitted: auto-replied",  # RFC 3834: no one answers a bounce
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "",
        people.replace("\n", "\r\n"),
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        "\r\n\r\n".join(blocks),
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "",
        *headers,
        "",
        f"--{boundary}--",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


def _untyped(value: str | None) -> str | None:
    """``rfc822; user@x`` -> ``user@x`` (RFC 3464 2.1.2: a type, a semicolon, the value)."""
    if value is None:
        return None
    kind, sep, rest = value.partition(";")
    return rest.strip() if sep else kind.strip()


def _headers_of(part: EmailMessage) -> Mapping[str, str]:
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload()
        original = inner[0] if isinstance(inner, list) and inner else None
    else:
        text = part.get_payload(decode=True) or b""
        original = email.message_from_bytes(bytes(text), policy=email.policy.compat32)
    if not isinstance(original, EmailMessage):
        return MappingProxyType({})
    return MappingProxyType({name: str(value) for name, value in original.items()})


def parse(
    content: bytes,
    *,
    envelope_from: str | None = None,
    envelope_to: tuple[str, ...] = (),
    at: float | None = None,
) -> list[Bounce]:
    """Every recipient entry of the DSN in ``content`` (empty when it is no DSN, or a broken one);
    the keywords say how it arrived (they go into each :class:`Bounce` as they are)."""
    try:
        msg = email.message_from_bytes(content, policy=email.policy.compat32)
    except Exception:  # a broken message from a client is no failure of ours
        return []
    if msg.get_content_type() != "multipart/report" or not msg.is_multipart():
        return []
    status_part: EmailMessage | None = None
    headers: Mapping[str, str] = MappingProxyType({})
    for part in msg.get_payload():
        if not isinstance(part, EmailMessage):
            continue
        kind = part.get_content_type()
        if kind == "message/delivery-status" and status_part is None:
            status_part = part
        elif kind in ("text/rfc822-headers", "message/rfc822") and not headers:
            headers = _headers_of(part)
    if status_part is None:
        return []
    blocks = status_part.get_payload()
    if not isinstance(blocks, list) or not blocks:
        return []
    report = blocks[0]
    reporting = _untyped(report.get("Reporting-MTA")) if isinstance(report, EmailMessage) else None
    bounces = []
    for block in blocks[1:]:
        if not isinstance(block, EmailMessage):
            continue
        action = block.get("Action")
        bounces.append(
            Bounce(
                action=action.strip().lower() if action else None,
                status=(block.get("Status") or "").strip() or None,
                final_recipient=_untyped(block.get("Final-Recipient")),
                diagnostic_code=" ".join(str(block.get("Diagnostic-Code")).split())
                if block.get("Diagnostic-Code")
                else None,
                remote_mta=_untyped(block.get("Remote-MTA")),
                reporting_mta=reporting,
                original_headers=headers,
                envelope_from=envelope_from,
                envelope_to=envelope_to,
                at=at,
            )
        )
    return bounces
