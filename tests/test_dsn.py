"""Delivery status notifications (RFC 3464): what a queue sends back, and reading any MTA's."""

from __future__ import annotations

import email
import email.policy

from mailfakes.dsn import Bounce, Failed, compose, parse

ORIGINAL = b"From: <sender@fabrikam.test>\r\nTo: <user@contoso.test>\r\nSubject: quarterly report\r\nMessage-ID: <42@fabrikam.test>\r\n\r\nbody\r\n"

# Written here by hand in the form Postfix's bounce daemon uses: its own
# diagnostic type, an RFC 3464 report, and the original message attached.
POSTFIX_STYLE = (
    b"From: MAILER-DAEMON@relay.fabrikam.test (Mail Delivery System)\r\n"
    b"To: sender@fabrikam.test\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\n"
    b"Auto-Submitted: auto-replied\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="B.1/relay"\r\n'
    b"\r\n"
    b"--B.1/relay\r\n"
    b"Content-Description: Notification\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"I'm sorry to have to inform you that your message could not be delivered.\r\n"
    b"\r\n"
    b"--B.1/relay\r\n"
    b"Content-Description: Delivery report\r\n"
    b"Content-Type: message/delivery-status\r\n"
    b"\r\n"
    b"Reporting-MTA: dns; relay.fabrikam.test\r\n"
    b"X-Postfix-Queue-ID: 4F2A1\r\n"
    b"Arrival-Date: Tue,  1 Dec 2026 10:00:00 +0000 (UTC)\r\n"
    b"\r\n"
    b"Final-Recipient: rfc822; user@contoso.test\r\n"
    b"Original-Recipient: rfc822;user@contoso.test\r\n"
    b"Action: failed\r\n"
    b"Status: 4.4.1\r\n"
    b"Diagnostic-Code: X-Postfix; connect to mail.contoso.test[127.9.9.2]:25:\r\n"
    b"    Connection refused\r\n"
    b"\r\n"
    b"--B.1/relay\r\n"
    b"Content-Description: Undelivered Message\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n" + ORIGINAL + b"\r\n--B.1/relay--\r\n"
)


def test_a_composed_report_reads_back_field_by_field() -> None:
    raw = compose(
        reporting_mta="connector.fabrikam.test",
        sender="sender@fabrikam.test",
        recipients=[
            Failed(
                "user@contoso.test",
                "4.4.7",
                "smtp; 450 4.4.316 Connection refused",
                remote_mta="mail.contoso.test",
            ),
            Failed("other@contoso.test", "5.1.1", "smtp; 550 5.1.1 unknown user"),
        ],
        original=ORIGINAL,
        arrival=0.0,
        last_attempt=86400.0,
    )
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert [p.get_content_type() for p in msg.iter_parts()] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    first, second = parse(raw)
    assert first == Bounce(
        action="failed",
        status="4.4.7",
        final_recipient="user@contoso.test",
        diagnostic_code="smtp; 450 4.4.316 Connection refused",
        remote_mta="mail.contoso.test",
        reporting_mta="connector.fabrikam.test",
        original_headers=first.original_headers,
    )
    assert first.diagnostic_reply == "450 4.4.316 Connection refused"
    assert first.original_headers["Subject"] == "quarterly report"
    assert first.original_headers["Message-ID"] == "<42@fabrikam.test>"
    assert (second.final_recipient, second.status, second.remote_mta) == ("other@contoso.test", "5.1.1", None)
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")


def test_a_postfix_style_report_is_read_with_its_own_diagnostic_type() -> None:
    [bounce] = parse(POSTFIX_STYLE)
    assert bounce.action == "failed"
    assert bounce.status == "4.4.1"
    assert bounce.final_recipient == "user@contoso.test"
    assert bounce.reporting_mta == "relay.fabrikam.test"
    assert (
        bounce.diagnostic_code == "X-Postfix; connect to mail.contoso.test[127.9.9.2]:25: Connection refused"
    )
    assert bounce.diagnostic_reply is None  # not an SMTP reply: Postfix never got one
    assert bounce.original_headers["Subject"] == "quarterly report"


def test_what_is_no_report_gives_no_bounce_and_raises_nothing() -> None:
    assert parse(ORIGINAL) == []
    assert parse(b"") == []
    assert parse(b"\xff\xfe garbage \x00\r\n\r\n") == []
    half = POSTFIX_STYLE[: POSTFIX_STYLE.index(b"Action:")]
    [bounce] = parse(half)  # cut inside the recipient block: what is there is read
    assert (bounce.final_recipient, bounce.action, bounce.status) == ("user@contoso.test", None, None)
    no_status = b'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="x"\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n'
    assert parse(no_status) == []


def test_a_report_field_cannot_be_split_by_a_line_break_in_a_reply() -> None:
    raw = compose(
        reporting_mta="connector.fabrikam.test",
        sender="sender@fabrikam.test",
        recipients=[Failed("user@contoso.test", "5.0.0", "smtp; 550 line one\r\nInjected: header")],
        original=ORIGINAL,
    )
    [bounce] = parse(raw)
    assert bounce.diagnostic_code == "smtp; 550 line one Injected: header"
