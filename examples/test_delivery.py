"""Tests of delivery.py written as a team would: only the mailfakes plugin's public fixtures.

Run with ``pytest examples``; pass ``--mail-profile`` to check another convention.
"""

from __future__ import annotations

from email.message import EmailMessage

import pytest
from delivery import deliver


def alert(mail_from: str, rcpt_to: list[str]) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = ", ".join(rcpt_to)
    msg["Subject"] = "Disk almost full"
    msg.set_content("/var is 97% full.\n")
    return msg


# Every scenario whose connector uses a smart host (delivery.py does no MX lookup).
SMART_HOST_SCENARIOS = (
    "dns-n*",
    "dns-re*",
    "dns-s*",
    "dns-t*",
    "tcp-timeout-*",
    "tcp-refused-firewall",
    "smtp-*",
    "tls-*",
    "close-*",
    "baseline-delivered",
)


@pytest.mark.mail_scenarios(*SMART_HOST_SCENARIOS)
def test_delivery_reports_the_right_code(mail_scenario):
    try:
        reply = deliver(
            alert(mail_scenario.mail_from, mail_scenario.rcpt_to),
            smart_host=mail_scenario.smart_host,
            port=mail_scenario.port,
            cafile=mail_scenario.ca_file,
            crlfile=mail_scenario.crl_file,  # None unless the world revoked a certificate
            nameserver=(mail_scenario.dns_host, mail_scenario.dns_port),
            timeout=0.5,
        )
    except Exception as exc:  # what the application would log or show
        mail_scenario.assert_reported(exc)
    else:
        mail_scenario.assert_reported(reply)


@pytest.mark.mail_scenarios("baseline-delivered")
def test_the_alert_arrives_over_tls(mail_scenario):
    deliver(
        alert("alerts@fabrikam.test", ["ops@contoso.test"]),
        smart_host=mail_scenario.smart_host,
        port=mail_scenario.port,
        cafile=mail_scenario.ca_file,
        nameserver=(mail_scenario.dns_host, mail_scenario.dns_port),
        timeout=2,
    )
    [msg] = mail_scenario.messages
    assert msg.rcpt_tos == ("ops@contoso.test",)
    assert msg.tls_version == "TLSv1.3"
    assert b"Subject: Disk almost full" in msg.content
