"""Postfix under TLS policy: DANE (RFC 7672) and MTA-STS (RFC 8461), graded by mailfakes check --netns.

recipes/postfix-dane.sh runs a throwaway Postfix with
``smtp_tls_security_level = dane`` and DNSSEC lookups, trusting the AD bit of
the world's DNS; recipes/postfix-mta-sts.sh runs one whose TLS policy comes
from postfix-mta-sts-resolver (``mta-sts-daemon``, a socketmap on
127.0.0.1:8461) inside the namespace. Both deliver by MX lookup. Each family
of the catalogue (``dane-*``, ``mta-sts-*``) goes through one check run; the
dsn Postfix logged is held against the scenario's ``postfix`` code, and
Postfix's own words for each kind of outcome are checked, written here by
hand from what Postfix 3.7 logs.

mta-sts-daemon is not a Debian package: it is installed with pip into a
virtual environment of its own, outside the project
(``$XDG_CACHE_HOME/mailfakes/mta-sts-resolver``, ``~/.cache`` when unset),
the first time it is needed; ``MAILFAKES_MTA_STS_DAEMON`` names another one.

Slow (a Postfix start per scenario), run by CI.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from mailfakes import catalogue as scenarios
from prerequisites import REQUIRED, require

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
CATALOGUE = scenarios.load_catalogue()
DANE = sorted(sid for sid in CATALOGUE if sid.startswith("dane-"))
MTA_STS = sorted(sid for sid in CATALOGUE if sid.startswith("mta-sts-"))
# The resolver's release these recipes were written against (its YAML keys and answers).
RESOLVER = "postfix-mta-sts-resolver==1.5.1"

# The dsn and state of the message's status line, read here with a pattern of our own.
STATUS = re.compile(r" dsn=(\d\.\d\.\d{1,3}), status=(sent|deferred|bounced) \((.*)\)$", re.M)


def need_postfix() -> None:
    require(
        {"postfix": "postfix", "sendmail": "postfix"},
        root="a private Postfix instance needs root (its queue belongs to the postfix user)",
    )


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(reason + " (required in CI: .ci/run installs it)")
    pytest.skip(reason)


def resolver_home() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "mailfakes" / "mta-sts-resolver"


def mta_sts_daemon() -> str:
    """The mta-sts-daemon to run: ``$MAILFAKES_MTA_STS_DAEMON``, on PATH, or installed in its own venv.

    The install (``python3 -m venv`` and ``pip install``, once, under a lock
    for the xdist workers) needs the package index; when it fails the test
    skips with pip's reason (fails in CI).
    """
    named = os.environ.get("MAILFAKES_MTA_STS_DAEMON") or shutil.which("mta-sts-daemon")
    if named:
        return named
    home = resolver_home()
    daemon = home / "bin" / "mta-sts-daemon"
    home.parent.mkdir(parents=True, exist_ok=True)
    with open(home.parent / "mta-sts-resolver.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if daemon.exists():
            return str(daemon)
        python = shutil.which("python3") or sys.executable
        steps = {
            f"python3 -m venv {home}": [python, "-m", "venv", "--clear", str(home)],
            f"pip install {RESOLVER}": [
                str(home / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                RESOLVER,
            ],
        }
        for label, step in steps.items():
            try:
                done = subprocess.run(step, capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.TimeoutExpired) as exc:
                ok, why = False, str(exc)
            else:
                ok, why = done.returncode == 0, (done.stderr.strip().splitlines() or ["no output"])[-1]
            if not ok:
                with contextlib.suppress(OSError):
                    shutil.rmtree(home)
                _unavailable(f"mta-sts-daemon is not installed, and '{label}' failed: {why}")
    if not daemon.exists():
        _unavailable(f"pip installed {RESOLVER} but {daemon} is missing")
    return str(daemon)


def check(ids: list[str], recipe: str, tmp_path: Path, *, env: dict[str, str] | None = None) -> dict:
    report = tmp_path / f"{recipe}.json"
    junit = tmp_path / f"{recipe}.xml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailfakes",
            "check",
            *ids,
            "--netns",
            "--reader",
            "postfix",
            "--profile",
            "eop",  # the DANE and MTA-STS classes (4.7.321-4.7.325, 4.4.8) must be read, not only 4.7.5
            "--timeout",
            "2",
            "--command-timeout",
            "60",
            "--json",
            str(report),
            "--junit",
            str(junit),
            # The control, baseline-delivered, names a smart host, which these MX-only recipes
            # refuse: each family's own healthy scenario is the control here (checked below).
            "--no-control",
            "--",
            str(RECIPES / recipe),
        ],
        capture_output=True,
        text=True,
        timeout=60 + 12 * len(ids),
        env={**os.environ, **(env or {})},
    )
    assert [c.get("name") for c in ET.parse(junit).getroot().iter("testcase")] == ids, result.stderr[-3000:]
    data: dict = json.loads(report.read_text())
    data["returncode"] = result.returncode
    data["output"] = result.stdout[-6000:] + result.stderr[-2000:]
    return data


def status_of(stdout: str) -> tuple[str, str, str]:
    found = STATUS.search(stdout)
    assert found is not None, stdout
    return found.group(1), found.group(2), found.group(3)


# What Postfix 3.7 logs for each catalogue scenario, by hand: the state of the status line, and
# lines (or parts of lines) of its log before it. Postfix says "Verified" only for a certificate
# it authenticated (DANE, or a CA and a matching name), "Trusted" for a chain it could verify
# when nothing required it, "Untrusted" before refusing one.
DANE_WORDS: dict[str, tuple[str, list[str]]] = {
    "dane-baseline-delivered": (
        "sent",
        [
            "DNSSEC-signed TLSA record: _25._tcp.mx1.contoso.test: 3 1 1 ",
            "Verified TLS connection established to mx1.contoso.test[",
        ],
    ),
    # DANE-EE checks the key only: an expired certificate with a matching key is authenticated.
    "dane-ee-ignores-expiry": (
        "sent",
        [
            "DNSSEC-signed TLSA record: _25._tcp.mx1.contoso.test: 3 1 1 ",
            "Verified TLS connection established to mx1.contoso.test[",
        ],
    ),
    "dane-starttls-missing": (
        "deferred",
        [
            "DNSSEC-signed TLSA record: _25._tcp.mx1.contoso.test: 3 1 1 ",
            "status=deferred (TLS is required, but was not offered by host mx1.contoso.test[",
        ],
    ),
    "dane-tlsa-mismatch": (
        "deferred",
        [
            "server certificate verification failed for mx1.contoso.test[",
            ": num=65:no matching DANE TLSA records",
            "Untrusted TLS connection established to mx1.contoso.test[",
            "status=deferred (Server certificate not verified)",
        ],
    ),
    # DANE-TA checks the chain to the matched CA, its dates and the MX host's name.
    "dane-cert-expired": (
        "deferred",
        [
            "DNSSEC-signed TLSA record: _25._tcp.mx1.contoso.test: 2 1 1 ",
            "server certificate verification failed for mx1.contoso.test[",
            "]:25: certificate has expired",
            "status=deferred (Server certificate not verified)",
        ],
    ),
    "dane-host-mismatch": (
        "deferred",
        [
            "DNSSEC-signed TLSA record: _25._tcp.mx1.contoso.test: 2 1 1 ",
            "]:25: num=62:hostname mismatch",
            "status=deferred (Server certificate not verified)",
        ],
    ),
    # The validating resolver's SERVFAIL on the bogus TLSA RRset: no connection at all.
    "dane-dnssec-invalid": (
        "deferred",
        [
            "warning: DANE TLSA lookup problem: Host or domain name not found. Name service error "
            "for name=_25._tcp.mx1.contoso.test type=TLSA: Host not found, try again",
            "warning: TLS policy lookup for contoso.test/mx1.contoso.test: "
            "TLSA lookup error for mx1.contoso.test:25",
            "relay=none, ",
            "status=deferred (TLSA lookup error for mx1.contoso.test:25)",
        ],
    ),
}

ENFORCED = "postfix-mta-sts: mta-sts-daemon answered OK secure match=mx1.contoso.test servername=hostname"
NO_POLICY = "postfix-mta-sts: mta-sts-daemon answered NOTFOUND for contoso.test"
# The same for MTA-STS, and what the daemon's log (stderr) says of the policy it fetched or not.
MTA_STS_WORDS: dict[str, tuple[str, list[str], list[str]]] = {
    "mta-sts-baseline-enforce": (
        "sent",
        [ENFORCED, "Verified TLS connection established to mx1.contoso.test["],
        ["'mode': 'enforce'"],
    ),
    "mta-sts-starttls-missing": (
        "deferred",
        [ENFORCED, "status=deferred (TLS is required, but was not offered by host mx1.contoso.test["],
        [],
    ),
    "mta-sts-cert-invalid": (
        "deferred",
        [
            ENFORCED,
            "server certificate verification failed for mx1.contoso.test[",
            "]:25: certificate has expired",
            "status=deferred (Server certificate not verified)",
        ],
        [],
    ),
    # The policy names mx9 only: Postfix matches the certificate of mx1 against that name.
    "mta-sts-mx-mismatch": (
        "deferred",
        [
            "postfix-mta-sts: mta-sts-daemon answered OK secure match=mx9.contoso.test servername=hostname",
            "]:25: num=62:hostname mismatch",
            "status=deferred (Server certificate not verified)",
        ],
        [],
    ),
    # testing mode: the daemon fetched the policy and gives Postfix none (its strict_testing is
    # off), so the faults it would have refused go through with opportunistic TLS.
    "mta-sts-testing-mx-mismatch": (
        "sent",
        [NO_POLICY, "Trusted TLS connection established to mx1.contoso.test["],
        ["'mode': 'testing'"],
    ),
    "mta-sts-testing-cert-invalid": (
        "sent",
        [NO_POLICY, "Untrusted TLS connection established to mx1.contoso.test["],
        ["'mode': 'testing'"],
    ),
    "mta-sts-testing-starttls-missing": (
        "sent",
        [NO_POLICY, "relay=mx1.contoso.test["],
        ["'mode': 'testing'"],
    ),
    # No policy to be had: Postfix's own default, opportunistic TLS (the world's CA is trusted).
    "mta-sts-policy-unreachable": (
        "sent",
        [NO_POLICY, "Trusted TLS connection established to mx1.contoso.test["],
        ["failed with error: Cannot connect to host mta-sts.contoso.test:443 ", "Connect call failed"],
    ),
    "mta-sts-policy-missing": (
        "sent",
        [NO_POLICY, "Trusted TLS connection established to mx1.contoso.test["],
        ["STS policy fetch for domain 'contoso.test' failed with error: \n"],
    ),
    "mta-sts-policy-malformed": (
        "sent",
        [NO_POLICY, "Trusted TLS connection established to mx1.contoso.test["],
        ["Parsed policy for domain contoso.test: {'mx': ['*'], '<html><body>mta-sts policy': ''"],
    ),
    "mta-sts-policy-cert-invalid": (
        "sent",
        [NO_POLICY, "Trusted TLS connection established to mx1.contoso.test["],
        ["failed with error: Cannot connect to host mta-sts.contoso.test:443 ", "certificate has expired"],
    ),
}


def assert_postfix_said(results: list[dict], words: dict[str, tuple]) -> None:
    assert set(words) <= {r["scenario"] for r in results}, "a scenario written about here left the catalogue"
    for r in results:
        sid = r["scenario"]
        expected = CATALOGUE[sid].code_for("postfix")
        dsn, state, _ = status_of(r["stdout"])
        # Postfix's own code, read from its log by our pattern, is the scenario's postfix code.
        assert dsn == expected, (sid, r["stdout"])
        assert (state == "sent") == expected.startswith("2."), (sid, r["stdout"])
        if sid not in words:
            continue
        want_state, lines, *daemon = words[sid]
        assert state == want_state, (sid, r["stdout"])
        for line in lines:
            assert line in r["stdout"], (sid, line, r["stdout"])
        for line in daemon[0] if daemon else []:
            assert line in r["stderr"], (sid, line, r["stderr"])
    by_id = {r["scenario"]: r["stdout"] for r in results}
    if "mta-sts-testing-starttls-missing" in by_id:  # no STARTTLS, no policy: sent in plaintext
        assert "TLS connection established" not in by_id["mta-sts-testing-starttls-missing"]


def assert_graded(data: dict) -> None:
    wrong = {r["scenario"]: r["reason"] or r["how"] for r in data["results"] if r["verdict"] != "pass"}
    assert not wrong, (wrong, data["output"])
    assert data["returncode"] == 0, data["output"]


@pytest.mark.slow
def test_postfix_with_dane_over_the_dane_scenarios(tmp_path):
    need_postfix()
    if not DANE:
        pytest.skip("the catalogue has no dane-* scenario")
    data = check(DANE, "postfix-dane.sh", tmp_path)
    results = data["results"]
    assert_postfix_said(results, DANE_WORDS)
    # Each cell went through DANE: the TLSA records were used, or their lookup failed; where the
    # zone is insecure they were not used, and the TLS session
    # is not "Verified" (Postfix fell back to opportunistic TLS: "Trusted" or "Untrusted").
    downgraded = {"dane-insecure-delegation"}
    for r in results:
        if r["scenario"] in downgraded:
            assert "DNSSEC-signed TLSA record" not in r["stdout"], r
            assert "Verified TLS connection" not in r["stdout"], r
            assert "TLS connection established to mx1.contoso.test" in r["stdout"], r
            continue
        assert "DNSSEC-signed TLSA record: _25._tcp." in r["stdout"] or "TLSA lookup error" in r["stdout"], r
    assert_graded(data)


@pytest.mark.slow
def test_postfix_with_mta_sts_over_the_mta_sts_scenarios(tmp_path):
    need_postfix()
    if not MTA_STS:
        pytest.skip("the catalogue has no mta-sts-* scenario")
    daemon = mta_sts_daemon()
    data = check(MTA_STS, "postfix-mta-sts.sh", tmp_path, env={"MAILFAKES_MTA_STS_DAEMON": daemon})
    results = data["results"]
    assert_postfix_said(results, MTA_STS_WORDS)
    for r in results:
        assert "postfix-mta-sts: mta-sts-daemon answered " in r["stdout"], r
    assert_graded(data)
