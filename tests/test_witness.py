"""The witness: what the fakes saw tells a right code for the right reason from one for another reason.

Every client here is real (smtplib, ssl, dnspython, openssl, gnutls-cli) on
loopback; each test makes a client stop at, before or beside a scenario's
faulty step and checks what the witness says about it.
"""

from __future__ import annotations

import contextlib
import shutil
import smtplib
import socket
import ssl
import subprocess

import dns.resolver
import pytest
from mailfakes import catalogue as scenarios
from mailfakes.witness import Testimony, alert_of, observe


def witnessed(mail_scenario) -> Testimony:
    return observe(mail_scenario.scenario, mail_scenario.world)


def checks(testimony: Testimony) -> dict[str, tuple[bool, bool | None]]:
    return {e.check: (e.strict, e.ok) for e in testimony.evidence}


class _To(smtplib.SMTP):
    """smtplib that connects to an address but names the host it wants in TLS (SNI and the check)."""

    def __init__(self, address: str, port: int, host: str) -> None:
        self._address = address
        super().__init__(host, port, timeout=2, local_hostname="app.fabrikam.test")

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((self._address, port), timeout)


def starttls(
    mail_scenario, *, server_hostname: str | None, context: ssl.SSLContext, mail: bool = False
) -> None:
    address = mail_scenario.address_of(mail_scenario.smart_host)
    smtp = _To(address, mail_scenario.port, server_hostname or address)
    try:
        smtp.ehlo()
        smtp.starttls(context=context)
        if mail:
            smtp.ehlo()
            smtp.mail(mail_scenario.mail_from)
        smtp.quit()
    except (ssl.SSLError, smtplib.SMTPException, OSError):
        pass
    finally:
        smtp.close()


def lookup(mail_scenario, name: str) -> None:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [mail_scenario.dns_host]
    resolver.port = mail_scenario.dns_port
    resolver.lifetime = 1
    with contextlib.suppress(dns.exception.DNSException):
        resolver.resolve(name, "A")


def test_alert_names_come_from_the_server_side_openssl_reason():
    assert alert_of("SSLV3_ALERT_CERTIFICATE_EXPIRED") == "certificate_expired"
    assert alert_of("TLSV1_ALERT_UNKNOWN_CA") == "unknown_ca"
    assert alert_of("[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate") == "bad_certificate"
    assert alert_of("EOF occurred in violation of protocol") is None
    assert alert_of(None) is None


@pytest.mark.parametrize("mail_scenario", list(scenarios.load_catalogue()), indirect=True)
def test_the_reference_client_is_never_told_it_failed_for_another_reason(mail_scenario):
    mail_scenario.deliver(timeout=0.3)
    testimony = witnessed(mail_scenario)
    assert testimony.ok, testimony.lines()
    assert testimony.evidence


# -- DNS -----------------------------------------------------------------------


@pytest.mark.parametrize("mail_scenario", ["dns-nxdomain"], indirect=True)
def test_a_dns_failure_without_asking_for_the_failing_name_is_another_reason(mail_scenario):
    lookup(mail_scenario, "contoso.test")  # asks, but not for the smart host
    testimony = witnessed(mail_scenario)
    assert not testimony.ok
    assert checks(testimony)["dns query"] == (True, False)
    assert "never asked the world's DNS for mail.contoso.test" in testimony.reason()
    assert "A contoso.test" in testimony.reason()


@pytest.mark.parametrize("mail_scenario", ["dns-nxdomain"], indirect=True)
def test_a_client_that_connects_despite_the_dns_failure_failed_later(mail_scenario):
    lookup(mail_scenario, "mail.contoso.test")
    smtplib.SMTP(mail_scenario.address_of("mail.contoso.test"), mail_scenario.port, timeout=2).quit()
    testimony = witnessed(mail_scenario)
    assert checks(testimony)["dns query"] == (True, True)
    assert checks(testimony)["no connection"] == (True, False)
    assert "opened an SMTP session to mail.contoso.test" in testimony.reason()


@pytest.mark.parametrize("mail_scenario", ["dns-nodata"], indirect=True)
def test_a_fault_on_some_types_is_reached_by_asking_one_of_them(mail_scenario):
    lookup(mail_scenario, "smtp.contoso.test")
    testimony = witnessed(mail_scenario)
    assert testimony.ok, testimony.lines()
    assert "A smtp.contoso.test -> NOERROR" in testimony.evidence[-1].detail


# -- cuts and replies ---------------------------------------------------------------


@pytest.mark.parametrize("mail_scenario", ["close-mid-data"], indirect=True)
def test_a_client_that_never_sent_data_did_not_meet_the_mid_data_cut(mail_scenario):
    with smtplib.SMTP(mail_scenario.address_of("mail.contoso.test"), mail_scenario.port, timeout=2) as smtp:
        smtp.ehlo()
        smtp.mail(mail_scenario.mail_from)
        smtp.rcpt(mail_scenario.rcpt_to[0])
    testimony = witnessed(mail_scenario)
    assert checks(testimony)["reached"] == (True, False)
    assert "never sent DATA and started the message content" in testimony.reason()
    assert "rcpt to:" in testimony.reason().lower()  # its last words


@pytest.mark.parametrize("mail_scenario", ["close-mid-data"], indirect=True)
def test_a_client_cut_in_its_message_content_reached_the_cut(mail_scenario):
    smtp = smtplib.SMTP(mail_scenario.address_of("mail.contoso.test"), mail_scenario.port, timeout=2)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        smtp.sendmail(mail_scenario.mail_from, mail_scenario.rcpt_to, b"Subject: x\r\n\r\n" + b"y" * 200)
    smtp.close()
    assert checks(witnessed(mail_scenario))["reached"] == (True, True)


@pytest.mark.parametrize("mail_scenario", ["close-after-ehlo"], indirect=True)
def test_a_client_that_left_after_the_greeting_never_met_the_cut_after_ehlo(mail_scenario):
    smtplib.SMTP(mail_scenario.address_of("mail.contoso.test"), mail_scenario.port, timeout=2).close()
    testimony = witnessed(mail_scenario)
    assert not testimony.ok
    assert "never sent EHLO on mail.contoso.test" in testimony.reason()


@pytest.mark.parametrize("mail_scenario", ["smtp-rcpt-550-unknown-user"], indirect=True)
def test_a_recipient_refusal_needs_a_rcpt(mail_scenario):
    with smtplib.SMTP(mail_scenario.address_of("mail.contoso.test"), mail_scenario.port, timeout=2) as smtp:
        smtp.ehlo()
    assert "never sent RCPT" in witnessed(mail_scenario).reason()


# -- connections the fakes cannot see -------------------------------------------------


@pytest.mark.parametrize("mail_scenario", ["tcp-timeout-wrong-ip"], indirect=True)
def test_a_dropped_connection_leaves_nothing_to_see_and_says_so(mail_scenario):
    testimony = witnessed(mail_scenario)
    assert testimony.ok
    assert checks(testimony)["connect"] == (False, None)
    assert "leaves nothing for the fakes to see" in testimony.lines()[1]


@pytest.mark.parametrize("mail_scenario", ["tcp-timeout-wrong-ip"], indirect=True)
def test_a_timeout_reported_after_reaching_a_working_server_is_another_reason(mail_scenario):
    smtplib.SMTP(mail_scenario.address_of("mail.contoso.test"), mail_scenario.port, timeout=2).quit()
    testimony = witnessed(mail_scenario)
    assert checks(testimony)["no session"] == (True, False)
    assert "reached a working server, mail.contoso.test" in testimony.reason()


@pytest.mark.parametrize("mail_scenario", ["baseline-delivered"], indirect=True)
def test_a_delivery_reported_without_a_message_accepted_is_not_one(mail_scenario):
    smtplib.SMTP(mail_scenario.address_of("mail.contoso.test"), mail_scenario.port, timeout=2).quit()
    testimony = witnessed(mail_scenario)
    assert checks(testimony)["delivered"] == (True, False)
    assert "accepted no message" in testimony.reason()


# -- certificates ---------------------------------------------------------------------


@pytest.mark.parametrize("mail_scenario", ["tls-cert-expired"], indirect=True)
def test_an_expired_certificate_refused_by_name_with_sni_is_the_right_reason(mail_scenario):
    starttls(mail_scenario, server_hostname="mail.contoso.test", context=mail_scenario.ssl_context())
    testimony = witnessed(mail_scenario)
    assert testimony.ok, testimony.lines()
    assert checks(testimony) == {
        "not delivered": (True, True),
        "tls handshake": (True, True),
        "sni": (False, True),
        "alert": (False, True),
        "refused the certificate": (True, True),
    }
    assert "certificate_expired" in " ".join(testimony.lines())


@pytest.mark.parametrize("mail_scenario", ["tls-cert-expired"], indirect=True)
def test_an_expired_certificate_refused_by_ip_address_is_the_wrong_reason(mail_scenario):
    starttls(mail_scenario, server_hostname=None, context=mail_scenario.ssl_context())
    testimony = witnessed(mail_scenario)
    assert checks(testimony)["sni"] == (False, None)
    assert checks(testimony)["alert"] == (False, False)
    assert "says bad_certificate" in testimony.reason()
    assert "no SNI" in testimony.reason()


@pytest.mark.parametrize("mail_scenario", ["tls-cert-expired"], indirect=True)
def test_a_client_that_does_not_trust_the_worlds_ca_fails_for_another_reason(mail_scenario):
    untrusting = ssl.create_default_context()  # the system's CAs, not the world's
    starttls(mail_scenario, server_hostname="mail.contoso.test", context=untrusting)
    testimony = witnessed(mail_scenario)
    assert checks(testimony)["alert"] == (False, False)
    assert "says unknown_ca" in testimony.reason()


@pytest.mark.parametrize("mail_scenario", ["tls-cert-wrong-host"], indirect=True)
def test_a_client_that_asks_for_another_name_checks_another_host(mail_scenario):
    starttls(mail_scenario, server_hostname="relay.fabrikam.test", context=mail_scenario.ssl_context())
    testimony = witnessed(mail_scenario)
    assert checks(testimony)["sni"] == (False, False)
    assert "asked for relay.fabrikam.test (SNI), not mail.contoso.test" in testimony.reason()


@pytest.mark.parametrize("mail_scenario", ["tls-cert-self-signed"], indirect=True)
def test_a_client_that_never_started_tls_never_saw_the_certificate(mail_scenario):
    with smtplib.SMTP(mail_scenario.address_of("mail.contoso.test"), mail_scenario.port, timeout=2) as smtp:
        smtp.ehlo()
    testimony = witnessed(mail_scenario)
    assert checks(testimony)["tls handshake"] == (True, False)
    assert "never opened the TLS handshake" in testimony.reason()


@pytest.mark.parametrize("mail_scenario", ["tls-cert-untrusted-ca"], indirect=True)
def test_a_client_that_went_on_after_the_handshake_accepted_the_certificate(mail_scenario):
    blind = ssl._create_unverified_context()
    starttls(mail_scenario, server_hostname="mail.contoso.test", context=blind, mail=True)
    testimony = witnessed(mail_scenario)
    assert checks(testimony)["refused the certificate"] == (True, False)
    assert "went on with 'mail from:" in testimony.reason().lower()


# -- what real TLS clients send, measured against these fakes -------------------------

CERT_SCENARIOS = [s for s in scenarios.load_catalogue() if s.startswith("tls-cert-")]
# OpenSSL's alert for each X509 verification error (ssl/statem: ssl_x509err2alert), as measured
# with openssl s_client 3.0 and Python's ssl: a specific alert per fault.
OPENSSL_ALERT = {
    "tls-cert-expired": "certificate_expired",
    "tls-cert-not-yet-valid": "bad_certificate",
    "tls-cert-wrong-host": "bad_certificate",
    "tls-cert-untrusted-ca": "unknown_ca",
    "tls-cert-self-signed": "unknown_ca",
    "tls-cert-missing-intermediate": "unknown_ca",
    "tls-cert-revoked": "certificate_revoked",
}


def crl_options(mail_scenario, flag: str, *check: str) -> list[str]:
    """The CRL the world hands (a revoked certificate's scenario), as the client's own options."""
    return [flag, mail_scenario.crl_file, *check] if mail_scenario.crl_file else []


def run_tls_client(argv: list[str]) -> None:
    subprocess.run(argv, input="", capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize("mail_scenario", CERT_SCENARIOS, indirect=True)
def test_openssl_s_client_by_name_passes_the_witness(mail_scenario):
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed (Debian package openssl)")
    name, address = mail_scenario.smart_host, mail_scenario.address_of(mail_scenario.smart_host)
    run_tls_client(
        [
            *("openssl", "s_client", "-starttls", "smtp", "-connect", f"{address}:{mail_scenario.port}"),
            *("-CAfile", mail_scenario.ca_file, "-verify_return_error", "-servername", name),
            *("-verify_hostname", name),
            *crl_options(mail_scenario, "-CRL", "-crl_check"),
        ]
    )
    testimony = witnessed(mail_scenario)
    assert testimony.ok, testimony.lines()
    [session] = mail_scenario.transcript
    assert (session.sni, alert_of(session.tls_error)) == (name, OPENSSL_ALERT[mail_scenario.id])


@pytest.mark.parametrize("mail_scenario", CERT_SCENARIOS, indirect=True)
def test_gnutls_cli_by_name_passes_the_witness_with_its_one_generic_alert(mail_scenario):
    if not shutil.which("gnutls-cli"):
        pytest.skip("gnutls-cli is not installed (Debian package gnutls-bin)")
    name, address = mail_scenario.smart_host, mail_scenario.address_of(mail_scenario.smart_host)
    run_tls_client(
        [
            *("gnutls-cli", "--starttls-proto=smtp", "--port", str(mail_scenario.port)),
            *("--x509cafile", mail_scenario.ca_file, "--sni-hostname", name, "--verify-hostname", name),
            *crl_options(mail_scenario, "--x509crlfile"),
            address,
        ]
    )
    testimony = witnessed(mail_scenario)
    assert testimony.ok, testimony.lines()
    [session] = mail_scenario.transcript
    assert (session.sni, alert_of(session.tls_error)) == (name, "bad_certificate")


# -- TLS policy: a DANE or MTA-STS verdict needs the lookups and the session that policy makes ----


@pytest.mark.parametrize("mail_scenario", ["dane-tlsa-mismatch"], indirect=True)
def test_a_dane_failure_reported_without_a_tlsa_lookup_is_another_reason(mail_scenario):
    # A client that never applies DANE connects, takes the certificate and gives up for its own reasons.
    mail_scenario.deliver(timeout=0.5, dane=False, require_tls=True)
    found = checks(witnessed(mail_scenario))
    assert found["TLSA lookup"] == (True, False)
    mail_scenario.world.reset()
    mail_scenario.deliver(timeout=0.5)  # the reference connector: TLSA looked up, handshake, refusal
    found = checks(witnessed(mail_scenario))
    assert found["TLSA lookup"] == (True, True) and found["TLS handshake"] == (True, True)


@pytest.mark.parametrize("mail_scenario", ["dane-dnssec-invalid"], indirect=True)
def test_a_bogus_tlsa_needs_only_the_lookup(mail_scenario):
    report = mail_scenario.deliver(timeout=0.5)
    assert report.code == "4.7.324"
    testimony = witnessed(mail_scenario)
    assert testimony.ok, testimony.lines()
    # No session with the MX (the host is not usable); only the TLS report went to the sender's MX.
    assert [t.host for t in mail_scenario.transcript] == ["mx.fabrikam.test"]


@pytest.mark.parametrize(
    "mail_scenario", ["mta-sts-policy-unreachable", "mta-sts-baseline-enforce"], indirect=True
)
def test_a_delivery_by_a_client_that_ignores_mta_sts_proves_nothing(mail_scenario):
    report = mail_scenario.deliver(timeout=0.5, mta_sts=False)
    assert report.delivered
    testimony = witnessed(mail_scenario)
    assert not testimony.ok and checks(testimony)["MTA-STS record"] == (True, False), testimony.lines()
    mail_scenario.world.reset()
    assert mail_scenario.deliver(timeout=0.5).delivered
    testimony = witnessed(mail_scenario)
    assert testimony.ok, testimony.lines()
    assert checks(testimony)["policy fetch"] == (False, True)


@pytest.mark.parametrize("mail_scenario", ["mta-sts-cert-invalid"], indirect=True)
def test_an_mta_sts_certificate_failure_needs_the_handshake(mail_scenario):
    # Looking up the record and giving up before any session is not meeting the certificate.
    import dns.resolver

    r = dns.resolver.Resolver(configure=False)
    r.nameservers, r.port = [mail_scenario.dns_host], mail_scenario.dns_port
    r.resolve("_mta-sts.contoso.test", "TXT")
    found = checks(witnessed(mail_scenario))
    assert found["MTA-STS record"] == (True, True) and found["TLS handshake"] == (True, False)
