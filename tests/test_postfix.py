"""Postfix as the delivery client, over the whole catalogue, graded by mailfakes check --netns.

recipes/postfix.sh runs a throwaway Postfix inside the mailfakes namespace
(its own /etc/postfix and queue, bind-mounted there only) and prints its
mail log up to the message's status line. It relays through the smart host
when the scenario names one, and otherwise looks up the MX hosts of the
recipient's domain itself (recipes/postfix-mx.sh forces that route). The
postfix reader classifies the status text; it keeps Postfix's dsn.

Postfix expresses every scenario of the catalogue but one (ONE_SHOT below). Slow (a
Postfix start per scenario), run by CI.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from mailfakes import catalogue as scenarios
from mailfakes.codes import code_for
from mailfakes.readers import read_postfix
from prerequisites import require

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def tls_policy(s: scenarios.Scenario) -> bool:
    """DANE and MTA-STS scenarios need Postfix set up for them (tests/test_postfix_tls_policy.py);
    revocation is not checked by Postfix's SMTP client at all (it loads no CRL)."""
    return s.world.tls_policy


MX_SCENARIOS = sorted(
    s.id for s in scenarios.load_catalogue().values() if s.target.smart_host is None and not tls_policy(s)
)


def need_postfix() -> None:
    require(
        {"postfix": "postfix", "sendmail": "postfix"},
        root="a private Postfix instance needs root (its queue belongs to the postfix user)",
    )


def check(
    ids: list[str], recipe: str, profile: str, tmp_path: Path, *, budget: float, control: bool = True
) -> dict:
    report = tmp_path / f"{recipe}-{profile}.json"
    junit = tmp_path / f"{recipe}-{profile}.xml"
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
            profile,
            "--timeout",
            "2",
            "--command-timeout",
            "60",
            "--json",
            str(report),
            "--junit",
            str(junit),
            *([] if control else ["--no-control"]),
            "--",
            str(RECIPES / recipe),
        ],
        capture_output=True,
        text=True,
        timeout=budget,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert [c.get("name") for c in ET.parse(junit).getroot().iter("testcase")] == ids
    data: dict = json.loads(report.read_text())
    return data


def test_the_mx_scenarios_are_the_three_without_a_smart_host():
    assert MX_SCENARIOS == [
        "baseline-mx-fallback",
        "dns-mx-no-address",
        "ipv6-mx-aaaa-only-delivered",
        "tcp-refused-decommissioned",
    ]


@pytest.mark.slow
def test_postfix_looks_up_the_mx_hosts_itself(tmp_path):
    need_postfix()
    # The MX route cannot run baseline-delivered (a smart host); baseline-mx-fallback, a healthy
    # delivery by MX, is the control here.
    data = check(MX_SCENARIOS, "postfix-mx.sh", "postfix", tmp_path, budget=300, control=False)
    out = {r["scenario"]: r["stdout"] for r in data["results"]}
    assert data["failed"] == 0
    # Postfix's own log says it went through the MX list: mx1 refused, mx2 took the message.
    fallback = out["baseline-mx-fallback"]
    assert "connect to mx1.contoso.test[" in fallback and "Connection refused" in fallback
    assert "relay=mx2.contoso.test[" in fallback and "status=sent" in fallback
    assert "warning: no MX host for contoso.test has a valid address record" in out["dns-mx-no-address"]
    assert "connect to mail2.contoso.test[" in out["tcp-refused-decommissioned"]


# Scenarios the one-shot recipe (one recipient, the first attempt's status line) cannot show.
ONE_SHOT: dict[str, str] = {
    "limits-recipients-452-delivered": (
        "Postfix sends the recipients taken before the 452 and defers the others to a later delivery "
        "attempt of its queue (observed with three recipients: user1 and user2 status=sent, user3 "
        "dsn=4.5.3 status=deferred), so one attempt shows no full delivery; the recipe also sends "
        "the one recipient MAILFAKES_RCPT_TO"
    ),
}


def _one_attempt(sid: str, s: scenarios.Scenario) -> bool:
    return sid != CONTROL_ID and not tls_policy(s) and sid not in ONE_SHOT


# The catalogue in CHUNKS runs of check (a Postfix start per scenario, a few seconds each), so
# that pytest-xdist spreads them over its workers; each holds the healthy baseline, the control.
CHUNKS = 3
CONTROL_ID = "baseline-delivered"


def chunk(i: int) -> list[str]:
    ids = [sid for sid, s in scenarios.load_catalogue().items() if _one_attempt(sid, s)]
    return [CONTROL_ID, *ids[i::CHUNKS]]


def test_the_chunks_cover_the_catalogue_once():
    runs = [chunk(i) for i in range(CHUNKS)]
    assert sorted(sid for run in runs for sid in run if sid != CONTROL_ID) == sorted(
        sid for sid, s in scenarios.load_catalogue().items() if _one_attempt(sid, s)
    )
    assert set(ONE_SHOT) <= set(scenarios.load_catalogue())
    assert all(run[0] == CONTROL_ID and run.count(CONTROL_ID) == 1 for run in runs)


@pytest.mark.slow
@pytest.mark.parametrize("part", range(CHUNKS))
def test_postfix_reports_every_scenario_for_the_right_reason(part, tmp_path):
    """Graded under eop, whose codes are the failure classes; Postfix's own codes checked per cell."""
    need_postfix()
    catalogue = scenarios.load_catalogue()
    ids = chunk(part)
    data = check(ids, "postfix.sh", "eop", tmp_path, budget=900)
    assert data["passed"] == len(ids) and data["failed"] == 0
    for r in data["results"]:
        failure = read_postfix(r["exit_status"], r["stdout"], r["stderr"])
        assert failure is not None, r
        # Under --profile postfix the same cell gives the code Postfix itself logged (dsn=).
        assert code_for(failure, "postfix") == catalogue[r["scenario"]].code_for("postfix"), r
        assert f"dsn={code_for(failure, 'postfix')}," in r["stdout"], r
    by_id = {r["scenario"]: r for r in data["results"]}
    assert "status=sent" in by_id["baseline-delivered"]["stdout"]
    if "tcp-refused-firewall" in by_id:
        assert "status=deferred (connect to" in by_id["tcp-refused-firewall"]["stdout"]
    if "tcp-timeout-server-down" not in by_id:
        return

    # A timeout where a refusal is expected fails the cell, although Postfix says 4.4.1 for both.
    timed_out = tmp_path / "timed-out.log"
    timed_out.write_text(by_id["tcp-timeout-server-down"]["stdout"])
    assert "Connection timed out" in timed_out.read_text()
    argv = [sys.executable, "-m", "mailfakes", "check", "tcp-refused-firewall", "--reader", "postfix"]
    wrong = subprocess.run(
        [*argv, "--", "cat", str(timed_out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode == 1, wrong.stdout
    assert "postfix reader: timeout/connect" in wrong.stdout
