"""Postfix as the delivery client: a private instance relays through the fakes.

recipes/postfix-relay.sh runs a throwaway Postfix inside the mailfakes
namespace (its own /etc/postfix and queue, bind-mounted there only), relays
one message to the scenario's smart host with TLS required and verified, and
prints its log line; the postfix reader takes the ``dsn=`` code, compared
under the ``postfix`` profile. Slow (a Postfix start per scenario), run by CI.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from prerequisites import require

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "postfix-relay.sh"

# At least: NXDOMAIN, refused, blackhole, 421 greeting, no STARTTLS, expired
# certificate, abrupt close (issue 4); a few more while Postfix is up anyway.
SCENARIOS = [
    "dns-nxdomain",
    "dns-servfail",
    "tcp-refused-firewall",
    "tcp-timeout-server-down",
    "smtp-421-greeting",
    "tls-starttls-missing",
    "tls-cert-expired",
    "tls-cert-wrong-host",
    "close-after-ehlo",
    "smtp-rcpt-550-unknown-user",
    "baseline-delivered",
]


@pytest.mark.slow
def test_postfix_defers_with_the_code_each_scenario_expects(tmp_path):
    require(
        {"postfix": "postfix", "sendmail": "postfix"},
        root="a private Postfix instance needs root (its queue belongs to the postfix user)",
    )
    junit = tmp_path / "junit.xml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fakes",
            "check",
            *SCENARIOS,
            "--netns",
            "--reader",
            "postfix",
            "--profile",
            "postfix",
            "--timeout",
            "2",
            "--command-timeout",
            "60",
            "--junit",
            str(junit),
            "--",
            str(RECIPE),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert list(cases) == SCENARIOS
    # The reader saw Postfix's own log line, e.g. "dsn=4.4.1, status=deferred (connect to ...)".
    assert "status=deferred" in (cases["tcp-refused-firewall"].findtext("system-out") or "")
    assert "status=sent" in (cases["baseline-delivered"].findtext("system-out") or "")
