"""The reference client reports every scenario's expected code, under every profile.

Nothing here measures time: how long each scenario takes to deliver is printed
by benchmarks/bench_catalogue.py, not asserted.
"""

from __future__ import annotations

import pytest
from mailfakes import catalogue
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
    limit = max((h.smtp.max_recipients or 0 for h in world.spec.hosts), default=0)
    # One message, or one per transaction where the server takes a few recipients at a time.
    expected = -(-len(mail_scenario.rcpt_to) // limit) if limit else 1
    assert world.wait_until(lambda: len(world.deliveries) == expected, 2)
    kept = world.deliveries  # a TLS report to the sender's domain is not the message
    assert [r for m in kept for r in m.rcpt_tos] == mail_scenario.rcpt_to
    for msg in kept:
        assert msg.mail_from == mail_scenario.mail_from
        assert b"Subject: mailfakes delivery test" in msg.content
        # Over TLS, unless the host offers none (an MTA-STS policy in testing mode delivers anyway).
        plain = mail_scenario.world.spec.host(msg.host).smtp.tls == "none"
        assert msg.tls_version == (None if plain else "TLSv1.3")


TLS_REPORTED = [sid for sid, s in catalogue.load_catalogue().items() if s.tls_report is not None]


@pytest.mark.parametrize("mail_scenario", TLS_REPORTED, indirect=True)
def test_reference_client_sends_the_tls_report_its_scenario_names(mail_scenario):
    """RFC 8460: the connector reports the policy it applied and the result it met, by mail to the
    domain's rua; the world reads the report back (policy type, result types, counts)."""
    report = mail_scenario.deliver(timeout=0.5)
    mail_scenario.assert_reported(report)
    mail_scenario.assert_tls_reported()
    [tls] = mail_scenario.tls_reports
    expected = mail_scenario.scenario.tls_report
    assert tls.via == "mail" and tls.domains == [expected.domain]
    assert (tls.successes, tls.failures) == ((1, 0) if expected.result is None else (0, 1))


@pytest.mark.parametrize("mail_scenario", ["dane-tlsa-mismatch"], indirect=True)
def test_a_client_that_sends_no_tls_report_or_a_wrong_one_fails_the_assertion(mail_scenario):
    mail_scenario.deliver(timeout=0.5, tls_reports=False)
    with pytest.raises(AssertionError, match=r"expected a TLS report for contoso\.test; none arrived"):
        mail_scenario.assert_tls_reported(timeout=0.2)
    # A report naming another result (an MTA-STS client's view of the same session) is wrong too.
    mail_scenario.deliver(timeout=0.5, tls_reports=True)
    with pytest.raises(AssertionError, match="expected certificate-expired"):
        mail_scenario.assert_tls_reported(result="certificate-expired")
    with pytest.raises(AssertionError, match="names policy tlsa, expected sts"):
        mail_scenario.assert_tls_reported(policy="sts")
