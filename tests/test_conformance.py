"""The reference client reports every scenario's expected code, under every profile.

Nothing here measures time: how long each scenario takes to deliver is printed
by benchmarks/bench_catalogue.py, not asserted.
"""

from __future__ import annotations

import pytest
from mailfakes.codes import PROFILES


@pytest.mark.mail_scenarios()
def test_reference_client_reports_the_expected_code(mail_scenario):
    report = mail_scenario.deliver(timeout=0.3)
    mail_scenario.assert_reported(report)  # the active --mail-profile (eop by default)
    mail_scenario.assert_reported(str(report))  # and the trace line says the same
    for profile in PROFILES:
        assert report.failure.code(profile) == mail_scenario.scenario.code_for(profile), profile


@pytest.mark.mail_scenarios(code="success")
def test_delivered_messages_arrive_with_their_envelope(mail_scenario):
    report = mail_scenario.deliver(timeout=0.3)
    assert report.delivered
    world = mail_scenario.world
    assert world.wait_until(lambda: len(world.deliveries) == 1, 2)
    msg = world.deliveries[0]  # a TLS report to the sender's domain is not the message
    assert msg.mail_from == mail_scenario.mail_from
    assert list(msg.rcpt_tos) == mail_scenario.rcpt_to
    assert b"Subject: mailfakes delivery test" in msg.content
    # Over TLS, unless the host offers none (an MTA-STS policy in testing mode delivers anyway).
    plain = mail_scenario.world.spec.host(msg.host).smtp.tls == "none"
    assert msg.tls_version == (None if plain else "TLSv1.3")
