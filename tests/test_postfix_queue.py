"""Postfix's own queue against a world that stays down, and the bounce it sends back into the world.

recipes/postfix-queue.sh runs a throwaway Postfix inside the mailfakes
namespace with a queue lifetime and backoff of seconds: it retries the
message, gives up (or bounces it at once on a 5xx), and delivers its own
non-delivery report (RFC 3464) by MX lookup to the sender's domain,
fabrikam.test, whose MX is a host of the world (the catalogue's queue
scenarios say ``sender_domain``). `mailfakes check --json` reports what the
world's hosts kept (``received``); the report is read with
:func:`mailfakes.dsn.parse` and held against what Postfix says for that
failure, written here by hand. The "recovers" scenario runs with the world's
hour scaled to 3 seconds (``check --hour 3s``), so its two hours of refusal
end inside Postfix's lifetime of seconds: delivered once, no report. The
healthy path (delivered, no report) also runs over baseline-mx-fallback.

Slow (a Postfix start and a queue lifetime of 3 s per scenario), run by CI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mailfakes import catalogue, dsn
from prerequisites import require

HERE = Path(__file__).resolve().parent
RECIPE = HERE.parent / "recipes" / "postfix-queue.sh"
SENDER = "sender@fabrikam.test"
RECIPIENT = "user@contoso.test"
SENDER_MX = "mx.fabrikam.test"
# Seconds: a handful of attempts, then expiry, well within the test's budget.
QUEUE = {
    "MAILFAKES_QUEUE_LIFETIME": "3",
    "MAILFAKES_BACKOFF_MIN": "1",
    "MAILFAKES_BACKOFF_MAX": "2",
    "MAILFAKES_QUEUE_RUN_DELAY": "1",
    "MAILFAKES_QUEUE_WAIT": "40",
}

# What Postfix's report must say for each scenario, by hand: the status is the
# scenario's `postfix` code, the diagnostic Postfix's own text for that failure.
DOWN = {
    "queue-down-refused": {
        "status": "4.4.1",
        # No SMTP session, so Postfix writes its own diagnostic type.
        "diagnostic": re.compile(
            r"^X-Postfix; connect to mail\.contoso\.test\[127\.[0-9.]+\]:25: Connection refused$"
        ),
        "remote_mta": None,
        "log": "status=deferred (connect to mail.contoso.test[",
    },
    "queue-down-421": {
        "status": "4.3.2",
        "diagnostic": re.compile(r"^smtp; 421 4\.3\.2 Service not available$"),
        "remote_mta": "mail.contoso.test",
        "log": "refused to talk to me: 421 4.3.2 Service not available)",
    },
}


def need_postfix() -> None:
    require(
        {"postfix": "postfix", "sendmail": "postfix"},
        root="a private Postfix instance needs root (its queue belongs to the postfix user)",
    )


def check_queue(scenario: str, tmp_path: Path, *extra: str, queue: dict | None = None) -> tuple[int, dict]:
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailfakes",
            "check",
            scenario,
            "--netns",
            "--reader",
            "postfix",
            "--profile",
            "postfix",
            "--no-control",
            "--timeout",
            "2",
            "--command-timeout",
            "60",
            "--json",
            str(report),
            *extra,
            "--",
            str(RECIPE),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, **(queue or QUEUE)},
    )
    assert result.returncode in (0, 1), result.stdout[-4000:] + result.stderr[-2000:]
    data: dict = json.loads(report.read_text())
    [r] = data["results"]
    return result.returncode, r


def assert_report_home(r: dict, recipient: str, expected: dict) -> None:
    """The world kept one message, Postfix's report on the sender's MX, and it says what Postfix said."""
    log = r["stdout"]
    assert re.search(rf"to=<{SENDER}>, relay={re.escape(SENDER_MX)}\[[0-9.]+\]:25, .*status=sent ", log), log
    # Nothing reached the recipient's side; the report went to the sender's MX, from the null sender.
    [kept] = r["received"]
    assert kept["host"] == SENDER_MX
    assert kept["mail_from"] in ("", "<>")  # the null reverse-path, MAIL FROM:<>
    assert kept["rcpt_tos"] == [SENDER]
    assert kept["replied"] is True and kept["tls_version"] is not None

    [bounce] = dsn.parse(kept["content"].encode("utf-8"))
    assert bounce.action == "failed"
    assert bounce.status == expected["status"]
    assert bounce.final_recipient == recipient
    assert bounce.diagnostic_code is not None
    assert expected["diagnostic"].match(bounce.diagnostic_code), bounce.diagnostic_code
    assert bounce.remote_mta == expected["remote_mta"]
    assert bounce.reporting_mta == "relay.fabrikam.test"
    assert bounce.original_headers["Subject"] == "mailfakes recipe"  # recipes/message.eml
    assert bounce.original_headers["Message-ID"] == "<recipe@fabrikam.test>"

    # The report's own session on the sender's MX is no delivery: the witness leaves it out.
    assert r["verdict"] == "pass", r["witness"]


def graded(scenario_id: str, expected: dict, tmp_path: Path) -> dict:
    # The hand-written status is the scenario's postfix code (and the last error of its queue).
    s = catalogue.get(scenario_id)
    assert s.code_for("postfix") == s.last_error_for("postfix") == expected["status"]
    _, r = check_queue(scenario_id, tmp_path)
    assert r["exit_status"] == 0, r["stdout"] + r["stderr"]
    # Graded on the first attempt's status line, as recipes/postfix.sh is.
    assert r["reported"] == r["expected"] == expected["status"], r["how"]
    return r


@pytest.mark.slow
@pytest.mark.parametrize("scenario_id", sorted(DOWN))
def test_postfix_retries_expires_and_its_bounce_reaches_the_sender(scenario_id, tmp_path):
    need_postfix()
    expected = DOWN[scenario_id]
    r = graded(scenario_id, expected, tmp_path)
    log = r["stdout"]
    # Postfix's own log: retried (more than one attempt), then expired and returned to the sender.
    attempts = [ln for ln in log.splitlines() if f"to=<{RECIPIENT}>" in ln and "status=deferred" in ln]
    assert len(attempts) >= 2, log
    assert all(expected["log"] in ln for ln in attempts), log
    assert f"from=<{SENDER}>, status=expired, returned to sender" in log
    assert_report_home(r, RECIPIENT, expected)


@pytest.mark.slow
def test_postfix_bounces_a_permanent_error_at_once(tmp_path):
    need_postfix()
    expected = {
        "status": "5.1.1",
        "diagnostic": re.compile(r"^smtp; 550 5\.1\.1 User unknown$"),
        "remote_mta": "mail.contoso.test",
    }
    r = graded("queue-permanent-550", expected, tmp_path)
    log = r["stdout"]
    # One attempt, no retry, no expiry: the 5xx ends the message's life.
    [attempt] = [ln for ln in log.splitlines() if f"to=<{RECIPIENT}>" in ln]
    assert "dsn=5.1.1, status=bounced (host mail.contoso.test[" in attempt, log
    assert "said: 550 5.1.1 User unknown (in reply to RCPT TO command))" in attempt
    assert "status=deferred" not in log and "status=expired" not in log
    assert_report_home(r, RECIPIENT, expected)


@pytest.mark.slow
def test_postfix_retries_until_the_server_recovers_and_delivers_once(tmp_path):
    """queue-recovers-after-2h with a world hour of 3 s: refused for 6 s (Postfix starts well inside
    them), then healthy."""
    need_postfix()
    queue = {**QUEUE, "MAILFAKES_QUEUE_LIFETIME": "20"}
    code, r = check_queue("queue-recovers-after-2h", tmp_path, "--hour", "3s", queue=queue)
    assert code == 0 and r["verdict"] == "pass", r
    assert r["reported"] == r["expected"] == "4.4.1"  # its first attempt: refused
    log = r["stdout"]
    deferred = [ln for ln in log.splitlines() if f"to=<{RECIPIENT}>" in ln and "status=deferred" in ln]
    assert deferred and all("Connection refused" in ln for ln in deferred), log
    assert re.search(rf"to=<{RECIPIENT}>, relay=mail\.contoso\.test\[[0-9.]+\]:25, .*status=sent ", log), log
    assert "non-delivery notification" not in log and "status=expired" not in log
    [kept] = r["received"]  # delivered once, and no report came back
    assert kept["host"] == "mail.contoso.test" and kept["mail_from"] == SENDER


@pytest.mark.slow
def test_postfix_delivers_at_once_and_sends_no_bounce(tmp_path):
    """The healthy path of the recipe: the first MX refuses, the second takes the message."""
    need_postfix()
    code, r = check_queue("baseline-mx-fallback", tmp_path)
    assert code == 0 and r["verdict"] == "pass", r
    log = r["stdout"]
    assert re.search(rf"to=<{RECIPIENT}>, relay=mx2\.contoso\.test\[[0-9.]+\]:25, .*status=sent ", log), log
    assert "non-delivery notification" not in log and "status=expired" not in log
    [kept] = r["received"]
    assert kept["host"] == "mx2.contoso.test"
    assert kept["mail_from"] == SENDER and kept["rcpt_tos"] == [RECIPIENT]
    assert dsn.parse(kept["content"].encode("utf-8")) == []


def test_check_reports_what_the_world_received(tmp_path):
    """`check --json` lists the messages the world kept for each scenario (fast: the reference client)."""
    report = tmp_path / "report.json"
    send = [
        sys.executable,
        "-m",
        "mailfakes",
        "send",
        "--smart-host",
        "{smart_host}",
        "--mail-domain",
        "{mail_domain}",
        "--port",
        "{port}",
        "--dns-host",
        "{dns_host}",
        "--dns-port",
        "{dns_port}",
        "--ca-file",
        "{ca_file}",
        "--timeout",
        "{timeout}",
    ]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailfakes",
            "check",
            "tcp-refused-firewall",
            "--timeout",
            "0.5",
            "--json",
            str(report),
            "--",
            *send,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    by_id = {r["scenario"]: r for r in json.loads(report.read_text())["results"]}
    assert by_id["tcp-refused-firewall"]["received"] == []
    [kept] = by_id["baseline-delivered"]["received"]  # the control
    assert kept["host"] == "mail.contoso.test"
    assert kept["mail_from"] == SENDER and kept["rcpt_tos"] == [RECIPIENT]
    assert kept["replied"] is True and kept["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert kept["size"] == len(kept["content"].encode("utf-8"))
    assert "\r\nSubject: mailfakes delivery test\r\n" in kept["content"]
