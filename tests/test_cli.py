"""The mailfakes command, run as a real process."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from mailfakes import catalogue as scenarios
from mailfakes.cli import COMMANDS
from probe import RawSMTP, connect_outcome

CMD = [sys.executable, "-m", "mailfakes"]


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=timeout)


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no line on stdout within {timeout} s"
    return proc.stdout.readline()


@pytest.fixture
def serve() -> Iterator:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*CMD, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_list_human_and_json():
    human = run("list")
    assert human.returncode == 0
    ids = list(scenarios.load_catalogue())
    assert all(i in human.stdout for i in ids)
    listed = run("list", "--json")
    assert listed.returncode == 0
    rows = json.loads(listed.stdout)
    assert {r["id"] for r in rows} == set(ids)
    assert all({"id", "code", "title"} <= set(r) for r in rows)


def test_list_by_code():
    listed = run("list", "--json", "--code", "4.7.320")
    assert listed.returncode == 0
    rows = json.loads(listed.stdout)
    assert len(rows) >= 5 and all(r["code"] == "4.7.320" for r in rows)


def test_show_in_both_languages():
    s = scenarios.get("tls-cert-expired")
    en = run("show", s.id)
    fr = run("show", s.id, "--lang", "fr")
    assert en.returncode == fr.returncode == 0
    assert s.title["en"] in en.stdout and s.title["fr"] in fr.stdout
    assert "4.7.320" in en.stdout and "eop-observed" in en.stdout
    assert "expired certificate" in en.stdout


def test_serve_json_prints_one_line_once_ready_then_stops_on_sigterm(serve):
    proc = serve("tls-cert-expired", "--json")
    info = json.loads(read_line(proc, 15))
    for key in (
        "scenario",
        "code",
        "smart_host",
        "mail_domain",
        "port",
        "dns_host",
        "dns_port",
        "ca_file",
        "hosts",
        "require_tls",
        "mail_from",
        "rcpt_to",
    ):
        assert key in info
    assert info["scenario"] == "tls-cert-expired" and info["code"] == "4.7.320"
    assert os.path.exists(info["ca_file"])
    ip = info["hosts"][info["smart_host"]]
    c = RawSMTP.connect(ip, info["port"])
    assert c.reply().code == 220
    c.close()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 143  # 128 + SIGTERM, as in every command
    assert out == ""  # nothing after the one JSON line
    assert "serving tls-cert-expired" in err  # human output went to stderr
    assert not os.path.exists(info["ca_file"])
    assert connect_outcome(ip, info["port"]) == "refused"


def test_serve_codes_for_success_and_other_scenarios(serve):
    success = next(s for s in scenarios.load_catalogue().values() if s.code == "success")
    other = next(s for s in scenarios.load_catalogue().values() if s.code == "other")
    for s in (success, other):
        proc = serve(s.id, "--json")
        info = json.loads(read_line(proc, 15))
        assert info["code"] == s.server_code
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
        assert proc.returncode == 130  # 128 + SIGINT


def test_serve_mx_scenario_has_no_smart_host(serve):
    s = next(s for s in scenarios.load_catalogue().values() if s.target.smart_host is None)
    proc = serve(s.id, "--json")
    info = json.loads(read_line(proc, 15))
    assert info["smart_host"] is None and info["mail_domain"] == s.target.mail_domain
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["serve", "no-such-scenario"], "unknown scenario"),
        (["show", "tls-cert-expird"], "tls-cert-expired"),  # suggests the close match
        (["serve", "baseline-delivered", "--port", "notaport"], "invalid port"),
        (["serve", "baseline-delivered", "--bogus"], "unrecognized arguments: --bogus"),
        (["list", "--code", "5.9.9"], "no scenario has code"),
        (["list", "--code", "bogus"], "unknown code 'bogus'"),
        (["serve", "baseline-delivered", "--subnet", "192.168.7"], "not a loopback address"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_errors_are_one_line_and_exit_2(args, needle):
    result = run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]
    assert result.stdout == ""


def test_port_in_use_exits_2_and_leaves_nothing_running():
    blocker = socket.socket()
    blocker.bind(("127.88.3.2", 0))  # where the first host of --subnet 127.88.3 goes
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        result = run("serve", "baseline-delivered", "--port", str(port), "--subnet", "127.88.3", "--json")
    finally:
        blocker.close()
    assert result.returncode == 2
    assert f"port {port} is already in use" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_help_describes_every_command():
    top = run("--help")
    assert top.returncode == 0
    for command in ("list", "show", "serve"):
        assert command in top.stdout
    assert "--json" in run("serve", "--help").stdout


def test_deliver_reports_in_the_exchange_trace_style_and_exits_by_verdict():
    ok = run("deliver", "tcp-refused-firewall", "tls-cert-expired", "--timeout", "0.5")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    assert len(lines) == 2
    assert "450 4.4.316 Connection refused" in lines[0] and "[LastAttemptedIP=127." in lines[0]
    assert "450 4.7.320 Certificate validation failed [Message=CertificateExpired]" in lines[1]
    # Under another profile the same failure carries that profile's code, still the expected one...
    observed = run("deliver", "tls-cert-expired", "--profile", "eop-observed", "--json", "--timeout", "0.5")
    row = json.loads(observed.stdout)
    assert observed.returncode == 0 and row["code"] == "4.4.317" and row["ok"]
    # ...and an opportunistic client delivers in plaintext where TLS is missing: DIFF, exit status 1.
    plain = run("deliver", "tls-starttls-missing", "--opportunistic", "--json", "--timeout", "0.5")
    row = json.loads(plain.stdout)
    assert plain.returncode == 1 and row["code"] == "2.0.0" and row["expected"] == "4.4.317" and not row["ok"]


def test_a_double_dash_does_not_swallow_ids_of_other_commands():
    result = run("deliver", "--timeout", "0.5", "--", "baseline-delivered")
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 1 and "baseline-delivered" in result.stdout


def _parser_output(parser, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[object, str, str]:
    """What parsing argv does: (exit status or the parsed namespace, stdout, stderr)."""
    try:
        result: object = vars(parser.parse_args(argv))
    except SystemExit as exc:
        result = exc.code
    out, err = capsys.readouterr()
    return result, out, err


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        [],
        ["frobnicate"],
        ["--bogus", "list", "--code", "4.4.317"],
        *[[command, "--help"] for command in COMMANDS],
        ["list", "--lang", "de"],
        ["list", "--json", "--code", "success", "--lang", "fr"],
        ["show"],
        ["show", "x", "y"],
        ["faults", "tls", "--json"],
        ["serve", "x", "--port", "65536"],
        ["serve", "x", "--json", "--dns-port", "53", "--subnet", "127.1.2", "--follow"],
        ["serve", "x", "--netns", "--inside-netns"],
        ["deliver", "a*", "--timeout", "0"],
        ["deliver", "--profile", "nope"],
        ["check", "--reader", "nope"],
        ["check", "--reader", "curl", "--code-regex", "x"],
        ["check", "a", "--reader", "curl", "--junit", "j.xml", "--no-control", "--inside-netns"],
        ["demo", "--pace", "11"],
        ["demo", "a", "b", "--step", "--html", "x.html"],
        ["validate"],
        ["send", "--rcpt-to", "a@b.test", "--rcpt-to", "c@b.test", "--port", "x"],
        ["list", "extra"],
    ],
)
def test_the_parser_of_one_command_says_what_the_whole_parser_says(argv, capsys, monkeypatch):
    # `mailfakes COMMAND ...` builds only COMMAND's parser: its help, its errors
    # and what it parses must be the ones of the parser of every command.
    from mailfakes.cli import build_parser

    monkeypatch.setenv("COLUMNS", "100")
    whole = _parser_output(build_parser(), argv, capsys)
    one = _parser_output(build_parser(argv[0] if argv else None), argv, capsys)
    assert one == whole
    assert whole[1] or whole[2] or isinstance(whole[0], dict)  # it said or parsed something


def test_help_has_the_terminal_width():
    # The fixed width of argparse's own metavar check (see cli._Parser) is not the help's.
    narrow = subprocess.run(
        [*CMD, "serve", "--help"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "50"}
    )
    wide = subprocess.run(
        [*CMD, "serve", "--help"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "150"}
    )
    assert narrow.returncode == wide.returncode == 0
    assert max(map(len, narrow.stdout.splitlines())) <= 50 < max(map(len, wide.stdout.splitlines()))
