"""mailfakes check, graded against a client we control: the reference client."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

SEND = (
    f"{sys.executable} -m mailfakes send --smart-host {{smart_host}} --mail-domain {{mail_domain}} --port {{port}} "
    "--dns-host {dns_host} --dns-port {dns_port} --ca-file {ca_file} --crl-file={crl_file} --timeout {timeout}"
)


def check(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailfakes", "check", *args], capture_output=True, text=True, timeout=timeout
    )


def test_a_client_that_reports_the_right_codes_passes(tmp_path):
    junit, report = tmp_path / "junit.xml", tmp_path / "report.json"
    ids = [
        "dns-nxdomain",
        "tcp-refused-firewall",
        "smtp-421-greeting",
        "close-mid-data",
        "tls-cert-expired",
        "baseline-delivered",
    ]
    result = check(
        *ids, "--timeout", "0.5", "--junit", str(junit), "--json", str(report), "--", *SEND.split()
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed, 0 failed" in result.stdout
    assert "[6/6] baseline-delivered: ok" in result.stderr  # progress goes to stderr
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == "6" and suite.get("failures") == "0"
    assert [c.get("name") for c in suite.iter("testcase")] == ids
    data = json.loads(report.read_text())
    assert data["passed"] == 6 and data["failed"] == 0
    assert {r["scenario"]: r["reported"] for r in data["results"]}["tls-cert-expired"] == "4.7.320"


def test_a_client_wrong_for_one_scenario_fails_and_the_matrix_names_it(tmp_path):
    # The same client, but it reports certificate failures as 4.4.317 (as recent EOP traces do).
    lying = (
        SEND + ' | if [ "$MAILFAKES_SCENARIO" = tls-cert-expired ]; then sed s/4.7.320/4.4.317/; else cat; fi'
    )
    junit = tmp_path / "junit.xml"
    result = check(
        "tls-cert-expired",
        "tls-cert-wrong-host",
        "tcp-refused-firewall",
        "--timeout",
        "0.5",
        "--junit",
        str(junit),
        "--",
        "sh",
        "-c",
        lying,
    )
    assert result.returncode == 1
    rows = {
        line.split()[0]: line.split()
        for line in result.stdout.splitlines()
        if line.startswith(("tls-", "tcp-", "baseline-"))
    }
    assert rows["tls-cert-expired"][1:4] == ["4.7.320", "4.4.317", "FAIL"]
    assert rows["tls-cert-wrong-host"][3] == "PASS"
    assert rows["tcp-refused-firewall"][3] == "PASS"
    assert rows["baseline-delivered"][3] == "PASS"  # the control, added to the selection
    assert "3 passed, 1 failed" in result.stdout
    assert "tls-cert-expired: expected 4.7.320, reported 4.4.317" in result.stdout
    failures = [
        c.get("name") for c in ET.parse(junit).getroot().iter("testcase") if c.find("failure") is not None
    ]
    assert failures == ["tls-cert-expired"]


def test_the_same_client_passes_under_the_profile_it_follows():
    lying = SEND + " | sed s/4.7.320/4.4.317/"
    result = check("tls-cert-*", "--profile", "eop-observed", "--timeout", "0.5", "--", "sh", "-c", lying)
    assert result.returncode == 0, result.stdout
    assert "8 passed, 0 failed" in result.stdout  # and the control


def test_code_regex_and_environment_variables():
    script = 'echo "status=$MAILFAKES_SCENARIO code<$( [ $MAILFAKES_PORT -gt 0 ] && echo 4.4.316 )>"'
    result = check(
        "tcp-refused-firewall", "--no-control", "--code-regex", r"code<([\d.]+)>", "--", "sh", "-c", script
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_command_that_runs_too_long_is_killed_and_fails():
    result = check("tcp-refused-firewall", "--command-timeout", "0.5", "--", "sleep", "30", timeout=30)
    assert result.returncode == 1
    assert "ran over 0.5 s and was killed" in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["tls-cert-expired"], "needs the client command after '--'"),
        (["no-such-thing", "--", "true"], "unknown scenario"),
        (["tls-cert-expired", "--code-regex", "(", "--", "true"], "bad --code-regex"),
        (["tls-cert-expired", "--reader", "outlook", "--", "true"], "invalid choice: 'outlook'"),
        (
            ["tls-cert-expired", "--reader", "curl", "--code-regex", "x", "--", "true"],
            "not allowed with argument",
        ),
        (["tls-cert-expired", "--", "/nonexistent/client"], "command not found: /nonexistent/client"),
        (
            ["tls-cert-expired", "--junit", "/nonexistent/dir/j.xml", "--", "true"],
            "cannot write /nonexistent/dir/j.xml",
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line(args, needle):
    result = check(*args, timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


PYTHON_CLIENT = """
import os, sys
from email.message import EmailMessage
sys.path.insert(0, os.environ["EXAMPLES"])
from delivery import deliver
m = EmailMessage()
m["From"], m["To"] = os.environ["MAILFAKES_MAIL_FROM"], os.environ["MAILFAKES_RCPT_TO"]
m.set_content("hello")
print(deliver(m, smart_host=os.environ["MAILFAKES_SMART_HOST"], port=int(os.environ["MAILFAKES_PORT"]),
              cafile=os.environ["MAILFAKES_CA_FILE"], timeout=float(os.environ["MAILFAKES_TIMEOUT"]),
              nameserver=(os.environ["MAILFAKES_DNS_HOST"], int(os.environ["MAILFAKES_DNS_PORT"]))))
"""


def test_the_python_reader_grades_a_client_that_lets_its_exception_out(monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("EXAMPLES", str(Path(__file__).resolve().parent.parent / "examples"))
    ids = [
        "dns-nxdomain",
        "tcp-refused-firewall",
        "smtp-421-greeting",
        "tls-starttls-missing",
        "tls-cert-wrong-host",
        "close-after-ehlo",
        "smtp-rcpt-550-unknown-user",
        "baseline-delivered",
    ]
    result = check(*ids, "--reader", "python", "--timeout", "0.5", "--", sys.executable, "-c", PYTHON_CLIENT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"{len(ids)} passed, 0 failed" in result.stdout


def test_netns_without_unshare_is_a_clear_usage_error(tmp_path):
    # A PATH where python is found but unshare is not.
    (tmp_path / "python").symlink_to(sys.executable)
    result = subprocess.run(
        [sys.executable, "-m", "mailfakes", "check", "tls-cert-expired", "--netns", "--", "true"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": str(tmp_path)},
    )
    assert result.returncode == 2
    assert "--netns needs the 'unshare' command" in result.stderr


def test_reports_survive_what_clients_print(tmp_path):
    junit = tmp_path / "j.xml"
    colourful = "printf '\\033[31m450 4.4.316 refused\\033[0m \\001\\n'"
    result = check("tcp-refused-firewall", "--no-control", "--junit", str(junit), "--", "sh", "-c", colourful)
    assert result.returncode == 0, result.stdout
    ET.parse(junit)  # still well-formed XML
    empty_group = check("tcp-refused-firewall", "--code-regex", "code=(x*)", "--", "echo", "code=")
    assert empty_group.returncode == 1 and "group captured nothing" in empty_group.stdout


def test_scenario_values_cannot_smuggle_shell_code(tmp_path):
    from mailfakes import catalogue as scenarios

    text = Path(scenarios.get("tcp-refused-firewall").path).read_text()
    evil = tmp_path / "evil.toml"
    evil.write_text(
        text.replace('id = "tcp-refused-firewall"', 'id = "evil"').replace(
            "[target]\n", '[target]\nmail_from = "x;touch${IFS}/tmp/pwned;@contoso.test"\n'
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "mailfakes", "validate", str(evil)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1 and "target.mail_from" in result.stdout


def test_send_takes_an_ip_smart_host_without_dns():
    result = check("tcp-timeout-wrong-ip", "--timeout", "0.3", "--", *SEND.split())
    assert result.returncode == 0, result.stdout


def test_inside_netns_is_refused_outside_a_namespace_mailfakes_made():
    result = check("dns-nxdomain", "--inside-netns", "--", "true")
    assert result.returncode == 2
    assert "--inside-netns is for mailfakes itself" in result.stderr


def test_a_client_that_prints_the_right_code_without_trying_fails_for_the_wrong_reason(tmp_path):
    report = tmp_path / "report.json"
    result = check(
        "tls-cert-expired", "dns-nxdomain", "--no-control", "--json", str(report), "--", "echo", "4.7.320"
    )
    assert result.returncode == 1
    assert "baseline-delivered" not in result.stdout  # --no-control
    assert "0 passed, 2 failed" in result.stdout
    assert "right code, wrong reason: the client never connected on mail.contoso.test" in result.stdout
    results = {r["scenario"]: r for r in json.loads(report.read_text())["results"]}
    assert results["tls-cert-expired"]["reported"] == "4.7.320"
    assert results["tls-cert-expired"]["verdict"] == "fail"
    assert {c["check"]: (c["strict"], c["ok"]) for c in results["tls-cert-expired"]["witness"]} == {
        "not delivered": (True, True),
        "tls handshake": (True, False),
    }


def test_a_client_that_trusts_the_wrong_ca_has_its_passes_voided_by_the_control(tmp_path):
    # Without --ca-file the reference client trusts the system's CAs, not the world's.
    untrusting = SEND.replace(" --ca-file {ca_file}", "")
    junit, report = tmp_path / "junit.xml", tmp_path / "report.json"
    result = check(
        "tls-cert-untrusted-ca",
        "tls-cert-expired",
        "--timeout",
        "0.5",
        "--junit",
        str(junit),
        "--json",
        str(report),
        "--",
        *untrusting.split(),
    )
    assert result.returncode == 1
    rows = {
        line.split()[0]: line.split()[1:4]
        for line in result.stdout.splitlines()
        if line[:4] in ("tls-", "base")
    }
    # Its unknown_ca fits an untrusted CA, but it sends the same alert to the healthy server.
    assert rows["tls-cert-untrusted-ca"] == ["4.7.320", "4.7.320", "VOID"]
    assert rows["tls-cert-expired"] == ["4.7.320", "4.7.320", "FAIL"]  # unknown_ca for an expired certificate
    assert rows["baseline-delivered"][2] == "FAIL"
    assert "0 passed, 2 failed, 1 void" in result.stdout
    assert "VOID: expected 4.7.320, reported 4.7.320" in result.stdout
    assert "the client also fails the healthy baseline, so its failure reports prove nothing" in result.stdout
    assert "the client fails the healthy baseline" in result.stderr
    data = json.loads(report.read_text())
    assert (data["passed"], data["failed"], data["void"]) == (0, 2, 1)
    suite = ET.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "2", "1")
    [void] = [c for c in suite.iter("testcase") if c.find("error") is not None]
    assert void.get("name") == "tls-cert-untrusted-ca"
    assert void.find("error").get("type") == "VoidVerdict"


# Connects and lets the refusal out as it comes (ConnectionRefusedError).
HONEST_CONNECT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)  # refused: nothing listens
"""


def test_a_timeout_reported_where_a_refusal_is_expected_fails_though_both_are_4_4_1(tmp_path):
    client = tmp_path / "client.py"
    client.write_text("import sys\nraise TimeoutError('timed out')  # without even trying\n")
    # First, honestly: the client connects and gets refused (ConnectionRefusedError): 4.4.1, right class.
    honest = check(
        "tcp-refused-firewall",
        "--no-control",
        "--profile",
        "postfix",
        "--reader",
        "python",
        "--",
        sys.executable,
        "-c",
        HONEST_CONNECT,
        "{ip}",
        "{port}",
    )
    assert honest.returncode == 0, honest.stdout + honest.stderr
    # Then a client that reports a timeout: the code is 4.4.1 under this profile too, the class is not.
    wrong = check(
        "tcp-refused-firewall",
        "--no-control",
        "--profile",
        "postfix",
        "--reader",
        "python",
        "--",
        sys.executable,
        str(client),
    )
    assert wrong.returncode == 1
    assert "right code, wrong failure: the client's report reads as 4.4.315, not 4.4.316" in wrong.stdout
