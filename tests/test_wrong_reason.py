"""A user's client that fails every certificate check for the wrong reason, and is told so.

The client is written the way a hurried application would: it resolves the
smart host itself and hands smtplib the address, so smtplib checks the
certificate against 127.x.y.z. It trusts the world's CA, so a chain fault
is found first (OpenSSL checks the chain before the name: "unable to get
local issuer certificate", "self-signed certificate"), and every other
certificate, even the healthy one, fails with "IP address mismatch".

What the user is told, scenario by scenario:

- tls-cert-expired: wrong reason, from the wire alone. The certificate is
  valid for mail.contoso.test, the client named no host (no SNI) and sent
  bad_certificate, not certificate_expired.
- the other five: void. Their alerts (bad_certificate, unknown_ca) are the
  ones a correct OpenSSL client sends too, so one handshake cannot show the
  wrong reason. The control can: the client also rejects the healthy
  baseline's certificate.
- tls-cert-wrong-host is not an exception. A mismatch against the wrong name
  (an IP address) is not the scenario's reason, "a certificate for another
  host": this client would reject the right host's certificate as well. A
  user wants to hear that, and the control says it.

The same client, connecting by address but naming the host for TLS (SNI and
the check), passes all six and the baseline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

from test_plugin import counts, run_pytest

CERT_IDS = [
    "tls-cert-expired",
    "tls-cert-not-yet-valid",
    "tls-cert-wrong-host",
    "tls-cert-untrusted-ca",
    "tls-cert-self-signed",
    "tls-cert-missing-intermediate",
]
VOID_BY_CONTROL = CERT_IDS[1:]

CLIENT = """
    import smtplib
    import socket

    import dns.resolver


    class Connector(smtplib.SMTP):
        def __init__(self, address, host, port):
            self.address = address
            super().__init__(host, port, timeout=2, local_hostname="app.fabrikam.test")

        def _get_socket(self, host, port, timeout):
            return socket.create_connection((self.address, port), timeout)


    def deliver(context, smart_host, port, dns_host, dns_port, mail_from, rcpt_to, by_name):
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port, resolver.lifetime = [dns_host], dns_port, 2
        address = str(resolver.resolve(smart_host, "A")[0])
        # The bug under test: the certificate is checked against what smtplib was given.
        with Connector(address, smart_host if by_name else address, port) as smtp:
            smtp.starttls(context=context)
            smtp.sendmail(mail_from, rcpt_to, b"Subject: disk full\\r\\n\\r\\n/var is 97% full.\\r\\n")
        return "250 2.0.0 delivered"
"""

PLUGIN_TEST = (
    CLIENT
    + """

    import pytest

    BY_NAME = {by_name}


    @pytest.mark.mail_scenarios({ids}{control})
    def test_certificate_failures_are_reported(mail_scenario):
        s = mail_scenario
        try:
            report = deliver(s.ssl_context(), s.smart_host, s.port, s.dns_host, s.dns_port, s.mail_from,
                             s.rcpt_to, BY_NAME)
        except Exception as exc:
            report = exc
        s.assert_reported(report)
"""
)


def failures(output: str) -> dict[str, str]:
    """The assertion text of each failed test, by scenario id."""
    out: dict[str, str] = {}
    for block in output.split("_ test_certificate_failures_are_reported[")[1:]:
        sid, _, text = block.partition("]")
        out[sid] = text
    return out


def test_the_ip_address_client_is_told_every_certificate_verdict_is_wrong_or_void(tmp_path):
    result = run_pytest(
        tmp_path, PLUGIN_TEST.format(ids=", ".join(repr(i) for i in CERT_IDS), by_name=False, control="")
    )
    assert result.returncode == 1
    assert counts(result.stdout) == {"failed": 7}
    told = failures(result.stdout)
    assert sorted(told) == sorted([*CERT_IDS, "baseline-delivered"])
    assert (
        "found 4.7.320" in told["baseline-delivered"] and "IP address mismatch" in told["baseline-delivered"]
    )

    expired = told["tls-cert-expired"]
    assert "the client reported 4.7.320, the expected code, but for the wrong reason" in expired
    assert "says bad_certificate, where the certificate is expired and otherwise valid" in expired
    assert "asked for no server name (no SNI)" in expired
    for sid in CERT_IDS:
        text = told[sid]
        assert "the client reported 4.7.320, the expected code, but the verdict is void" in text, sid
        assert "the client also fails the healthy baseline" in text, sid
        assert "test_certificate_failures_are_reported[baseline-delivered]" in text, sid
        assert "IP address mismatch" in text, sid  # the evidence: what it said on the healthy server
        assert "[--] sni (best evidence): the client asked for no server name (no SNI)" in text, sid


def test_without_the_control_only_the_expired_certificate_shows_the_wrong_reason(tmp_path):
    result = run_pytest(
        tmp_path,
        PLUGIN_TEST.format(
            ids=", ".join(repr(i) for i in CERT_IDS), by_name=False, control=", control=False"
        ),
    )
    assert result.returncode == 1
    assert counts(result.stdout) == {"failed": 1, "passed": 5}
    assert "FAILED test_user.py::test_certificate_failures_are_reported[tls-cert-expired]" in result.stdout
    assert "baseline-delivered" not in result.stdout


def test_the_client_that_names_the_host_passes_all_six_and_the_baseline(tmp_path):
    result = run_pytest(
        tmp_path, PLUGIN_TEST.format(ids=", ".join(repr(i) for i in CERT_IDS), by_name=True, control="")
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert counts(result.stdout) == {"passed": 7}


CHECK_CLIENT = (
    CLIENT.replace("\n    ", "\n")
    + """
import os, sys, ssl
e = os.environ
print(deliver(ssl.create_default_context(cafile=e["MAILFAKES_CA_FILE"]), e["MAILFAKES_SMART_HOST"],
              int(e["MAILFAKES_PORT"]), e["MAILFAKES_DNS_HOST"], int(e["MAILFAKES_DNS_PORT"]),
              e["MAILFAKES_MAIL_FROM"], [e["MAILFAKES_RCPT_TO"]], sys.argv[1] == "by-name"))
"""
)


def check(tmp_path, how: str) -> tuple[subprocess.CompletedProcess[str], dict, ET.Element]:
    script = tmp_path / "client.py"
    script.write_text(CHECK_CLIENT)
    junit, report = tmp_path / "junit.xml", tmp_path / "report.json"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "mailfakes", "check", *CERT_IDS, "--reader", "python", "--timeout", "1"),
            *("--junit", str(junit), "--json", str(report), "--", sys.executable, str(script), how),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result, json.loads(report.read_text()), ET.parse(junit).getroot()


def test_check_tells_the_ip_address_client_its_verdicts_are_wrong_or_void(tmp_path):
    result, report, suite = check(tmp_path, "by-address")
    assert result.returncode == 1
    rows = {
        line.split()[0]: line.split()[1:4]
        for line in result.stdout.splitlines()
        if line.startswith(("tls-", "base"))
    }
    assert rows["tls-cert-expired"] == ["4.7.320", "4.7.320", "FAIL"]
    for sid in VOID_BY_CONTROL:
        assert rows[sid] == ["4.7.320", "4.7.320", "VOID"], sid
    assert rows["baseline-delivered"] == ["2.0.0", "4.7.320", "FAIL"]
    assert "0 passed, 2 failed, 5 void" in result.stdout
    assert "tls-cert-expired: expected 4.7.320, reported 4.7.320" in result.stdout
    assert "right code, wrong reason: the client's TLS alert says bad_certificate" in result.stdout

    assert (report["passed"], report["failed"], report["void"]) == (0, 2, 5)
    by_id = {r["scenario"]: r for r in report["results"]}
    assert by_id["tls-cert-expired"]["verdict"] == "fail"
    assert "no SNI" in by_id["tls-cert-expired"]["reason"]
    assert {c["check"]: c["ok"] for c in by_id["tls-cert-expired"]["witness"]}["alert"] is False
    for sid in VOID_BY_CONTROL:
        assert by_id[sid]["verdict"] == "void"
        assert by_id[sid]["reason"].startswith("the client also fails the healthy baseline")
        assert "reported 4.7.320 where 2.0.0 was expected" in by_id[sid]["reason"]

    assert (suite.get("failures"), suite.get("errors")) == ("2", "5")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["tls-cert-expired"].find("failure").get("type") == "WrongReason"
    assert cases["baseline-delivered"].find("failure").get("type") == "WrongCode"
    for sid in VOID_BY_CONTROL:
        assert cases[sid].find("failure") is None
        assert cases[sid].find("error").get("type") == "VoidVerdict"


def test_check_passes_the_client_that_names_the_host(tmp_path):
    result, report, suite = check(tmp_path, "by-name")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "7 passed, 0 failed" in result.stdout
    assert (report["passed"], report["failed"], report["void"]) == (7, 0, 0)
    assert (suite.get("failures"), suite.get("errors")) == ("0", "0")
