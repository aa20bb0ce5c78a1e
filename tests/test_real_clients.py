"""Real third-party clients (curl, swaks, msmtp) graded by mailfakes check --netns.

Postfix has its own file, tests/test_postfix.py (it needs root and a Postfix start per scenario).

Each runs through the system resolver inside a private network namespace,
against every scenario it can express. A missing client or namespace skips
with the reason, except in CI (MAILFAKES_REQUIRE_REAL_CLIENTS=1), where it
fails: CI installs them, so these tests must run there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from mailfakes import catalogue as scenarios
from prerequisites import require

RECIPES = Path(__file__).resolve().parent.parent / "recipes"

# Scenarios a client cannot express, each for a behaviour its own manual states (the README's
# recipes table says the same). Postfix expresses every scenario (tests/test_postfix.py).
MX_LOOKUP = {s.id for s in scenarios.load_catalogue().values() if s.target.smart_host is None}
CANNOT = {
    "curl": dict.fromkeys(
        MX_LOOKUP, "curl(1): the smtp:// URL names the one server curl talks to; curl does no MX lookup"
    ),
    # tls-legacy-protocol needs no exemption: the recipes ask for TLS 1.2 at least
    # (RFC 8996), which Debian's TLS libraries do not by default.
    "msmtp": dict.fromkeys(
        MX_LOOKUP, "msmtp(1): 'host' is the one SMTP server msmtp sends to; msmtp does no MX lookup"
    ),
    "swaks": {
        **dict.fromkeys(
            MX_LOOKUP,
            "swaks(1) --server: without it swaks finds the MX through Net::DNS (libnet-dns-perl), "
            "which CI does not install, so the recipe names the server",
        ),
        "tls-cert-wrong-host": "swaks(1) 20201014 --tls-verify checks the chain against the CA, "
        "not the host name",
        "tls-cert-revoked": "swaks(1) 20201014 has no option to load a CRL, so it cannot see a revocation",
    },
}
# The recipes send the one recipient MAILFAKES_RCPT_TO: a limit of recipients per message is
# never met, and the scenario's grading (each of its three recipients delivered once) cannot pass.
ONE_RECIPIENT = "limits-recipients-452-delivered"
CANNOT["curl"][ONE_RECIPIENT] = (
    "curl(1) --mail-rcpt-allowfails: curl aborts the conversation when one RCPT TO fails (with the "
    "option it drops that recipient), it never sends one again in another transaction; the recipe "
    "sends one recipient"
)
CANNOT["swaks"][ONE_RECIPIENT] = (
    "swaks(1) sends one transaction; the recipe's --to names the one recipient MAILFAKES_RCPT_TO"
)
CANNOT["msmtp"][ONE_RECIPIENT] = (
    "msmtp(1) sends one mail to the recipients on its command line in one transaction; the recipe "
    "names the one recipient MAILFAKES_RCPT_TO"
)
# After the connection phase curl has no timeout of its own: curl(1) --connect-timeout "only limits
# the connection phase" (for smtp:// it ends after the greeting), --speed-time "will not affect slow
# connects" and does not run while curl waits for a reply, and --max-time bounds the whole transfer
# (the recipe's 30 s, so that a slow but live transfer is not cut). A stall in DATA and a late reply
# to the final dot are waits curl cannot bound by the scenario's timeout.
CANNOT["curl"].update(
    dict.fromkeys(
        ("slow-stall-mid-data", "slow-final-dot-late"),
        "curl(1): no read timeout after the connection phase (--connect-timeout only limits that "
        "phase, --max-time the whole transfer)",
    )
)
# msmtp 1.8.23 sets --timeout as SO_RCVTIMEO/SO_SNDTIMEO (seen with strace), but after STARTTLS its
# GnuTLS reads retry a read that timed out (EAGAIN once a second), so no timeout ever fires over TLS;
# msmtp(1) promises only "a network timeout". The greeting comes before TLS, and times out.
CANNOT["msmtp"].update(
    dict.fromkeys(
        ("slow-stall-mid-data", "slow-final-dot-late"),
        "msmtp(1) --timeout: a network timeout that, after STARTTLS, never fires (GnuTLS retries the "
        "timed-out read)",
    )
)
PACKAGES = {"curl": "curl", "swaks": "swaks", "msmtp": "msmtp"}


def need(client: str) -> None:
    require({client: PACKAGES[client]})


@pytest.mark.parametrize("client", ["curl", "swaks", "msmtp"])
def test_real_client_reports_every_scenario_it_can_express(client, tmp_path):
    need(client)
    skipped = CANNOT[client]
    ids = [sid for sid in scenarios.load_catalogue() if sid not in skipped]
    junit = tmp_path / "junit.xml"
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailfakes",
            "check",
            *ids,
            "--netns",
            "--reader",
            client,
            "--timeout",
            "1",
            "--command-timeout",
            "30",
            "--junit",
            str(junit),
            "--",
            str(RECIPES / f"{client}.sh"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    assert [c.get("name") for c in cases] == ids
    assert all(c.find("failure") is None for c in cases)
    assert f"{len(ids)} passed, 0 failed" in result.stdout
    print(f"{client}: {len(ids)} scenarios in {elapsed:.1f} s; not expressible: {sorted(skipped)}")


def test_the_namespace_leaves_the_host_resolver_alone():
    need("curl")
    before = Path("/etc/resolv.conf").read_bytes()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailfakes",
            "serve",
            "baseline-delivered",
            "--netns",
            "--",
            "sh",
            "-c",
            "grep -c '^nameserver 127.0.0.1$' /etc/resolv.conf; getent hosts {smart_host}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert lines[0] == "1" and lines[1].startswith("127.") and lines[2] == "mail.contoso.test"
    assert Path("/etc/resolv.conf").read_bytes() == before


def test_curl_meets_the_refused_ipv6_address_and_falls_back_to_ipv4(tmp_path):
    need("curl")
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailfakes",
            "check",
            "ipv6-aaaa-refused-a-works",
            "ipv6-mx-aaaa-only-delivered",
            "--no-control",
            "--netns",
            "--reader",
            "curl",
            "--timeout",
            "1",
            "--json",
            str(report),
            "--",
            "sh",
            "-c",
            "curl -sv --ssl-reqd --cacert {ca_file} smtp://mail.contoso.test:{port} --mail-from {mail_from} "
            "--mail-rcpt {rcpt_to} -T - --crlf < " + str(RECIPES / "message.eml") + "; "
            "getent ahostsv6 mx6.contoso.test",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    run = json.loads(report.read_text())["results"][0]
    text = run["stderr"] + run["stdout"] + result.stderr
    # Inside the namespace the host has its own address of the harness's prefix; curl tries it,
    # is refused (RST), and delivers over the A address.
    assert "connect to fd6d:6169:6c66:" in text and "Connection refused" in text, text[-3000:]
    assert "Connected to mail.contoso.test (127." in text, text[-3000:]


@pytest.mark.parametrize("client", ["curl", "swaks", "msmtp"])
def test_a_password_with_quote_and_backslash_reaches_the_server_as_it_is(client, tmp_path):
    """The recipes hand the account over unchanged: curl's config file quotes it (a '"' or '\\' left
    raw there cut the password short, and curl logged in with the wrong one)."""
    need(client)
    text = (RECIPES.parent / "scenarios" / "auth-login-only-delivered.toml").read_text()
    odd = text.replace('id = "auth-login-only-delivered"', 'id = "auth-odd-password-delivered"')
    odd = odd.replace('password = "Relay-Passw0rd"', "password = 'Pa\\ss\"w0rd'")
    assert odd.count("auth-odd-password-delivered") == 1 and "'Pa\\ss\"w0rd'" in odd
    case = tmp_path / "auth-odd-password-delivered.toml"
    case.write_text(odd)
    result = subprocess.run(
        [sys.executable, "-m", "mailfakes", "check", str(case), "--netns", "--reader", client,
         "--timeout", "1", "--", str(RECIPES / f"{client}.sh")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0 and "1 passed, 0 failed" in result.stdout, result.stdout[-3000:]
