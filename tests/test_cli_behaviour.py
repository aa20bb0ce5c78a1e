"""What every mailfakes command does alike, run as a real process.

A cheap start (``list`` and ``show`` load no server stack), ``--version``,
Ctrl-C and SIGTERM with the shell's exit statuses and nothing left running,
file flags checked as usage errors, and error messages in the CLI's words.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from mailfakes import World, WorldError
from mailfakes import catalogue as scenarios
from probe import connect_outcome

CMD = [sys.executable, "-m", "mailfakes"]
SERVER_STACK = ("aiosmtpd", "dnslib", "trustme", "cryptography", "ssl", "_ssl")
# A client for check and serve -- COMMAND: it tells the test its pid and the
# world's DNS address, then blocks until it is killed.
CLIENT = (
    "import os, socket, sys; s = socket.create_connection(('127.0.0.1', int(sys.argv[1])));"
    "s.sendall(f'{os.getpid()} {sys.argv[2]} {sys.argv[3]}'.encode()); s.recv(1)"
)


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def started() -> Iterator:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*CMD, *args], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback TCP listener that accepts and never speaks."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    yield sock
    sock.close()


def wait_for_output(proc: subprocess.Popen[str], needle: str, timeout: float) -> str:
    """Read proc's stdout until a whole line holds ``needle``; fail after ``timeout`` s.

    Raw reads from the pipe: a buffered reader could hold the awaited line
    while select() says the pipe is empty.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    seen = b""
    while needle.encode() not in seen or not seen.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(0.0, left))
        assert ready, f"{needle!r} not printed within {timeout} s; got {seen!r}"
        chunk = os.read(fd, 65536)
        assert chunk, f"stdout closed before {needle!r}; got {seen!r}"
        seen += chunk
    return seen.decode()


def accept_client(sock: socket.socket, timeout: float) -> tuple[socket.socket, list[str]]:
    sock.settimeout(timeout)
    conn, _ = sock.accept()
    conn.settimeout(timeout)
    words = b""
    while len(words.split()) < 3:
        chunk = conn.recv(100)
        assert chunk, "the client closed before saying who it is"
        words += chunk
    return conn, words.decode().split()


def is_gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status  # exited, waiting for a reaper: nothing runs


def assert_closed_by_peer(conn: socket.socket) -> None:
    """The other end of conn is closed (its process is dead), seen within a bound."""
    conn.settimeout(10)
    try:
        assert conn.recv(1) == b""
    except ConnectionResetError:
        pass
    finally:
        conn.close()


# -- a cheap start ---------------------------------------------------------------


@pytest.mark.parametrize("command", [["list"], ["show", "tls-cert-expired"], ["--version"]])
def test_list_and_show_do_not_import_the_server_stack(command):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mailfakes", *command],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "mailfakes" in imported  # the trace is read, not empty
    assert sorted(imported & set(SERVER_STACK)) == []


def test_in_process_list_and_show_leave_the_server_stack_unloaded():
    probe = (
        "import contextlib, io, json, sys\n"
        "from mailfakes.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    codes = [main(['list']), main(['show', 'dns-nxdomain'])]\n"
        "print(json.dumps([codes, len(out.getvalue()), sorted(sys.modules)]))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    codes, printed, modules = json.loads(result.stdout)
    assert codes == [0, 0] and printed > 0
    assert sorted({m.split(".")[0] for m in modules} & set(SERVER_STACK)) == []


def test_version_prints_the_distribution_version_and_exits_0():
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout == f"mailfakes {metadata.version('mailfakes')}\n"
    assert result.stdout == "mailfakes 0.2.0\n"


# -- Ctrl-C and SIGTERM ------------------------------------------------------------


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_send_stops_at_once_on_a_signal(started, listener, sig, status):
    port = listener.getsockname()[1]
    proc = started(
        "send",
        "--smart-host",
        "127.0.0.1",
        "--mail-domain",
        "contoso.test",
        "--port",
        str(port),
        "--timeout",
        "600",
    )
    listener.settimeout(20)
    conn, _ = listener.accept()  # the client is connected and waits for a greeting
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == status, err
    assert "Traceback" not in err
    assert_closed_by_peer(conn)


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_serve_stops_on_a_signal_and_closes_its_listeners(started, sig, status):
    proc = started("serve", "baseline-delivered", "--json")
    info = json.loads(wait_for_output(proc, "{", 20).splitlines()[0])
    ip = info["hosts"][info["smart_host"]]
    assert connect_outcome(ip, info["port"]) == "connected"
    proc.send_signal(sig)
    proc.communicate(timeout=10)
    assert proc.returncode == status
    assert connect_outcome(ip, info["port"]) == "refused"
    assert connect_outcome(info["dns_host"], info["dns_port"]) == "refused"


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_serve_with_a_command_stops_it_too(started, listener, sig, status):
    port = listener.getsockname()[1]
    proc = started(
        "serve",
        "baseline-delivered",
        "--",
        sys.executable,
        "-c",
        CLIENT,
        str(port),
        "{dns_host}",
        "{dns_port}",
    )
    conn, (pid, dns_host, dns_port) = accept_client(listener, 20)
    proc.send_signal(sig)
    proc.communicate(timeout=15)
    assert proc.returncode == status
    assert_closed_by_peer(conn)
    assert is_gone(int(pid))
    assert connect_outcome(dns_host, int(dns_port)) == "refused"


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_check_says_interrupted_and_kills_the_client(started, listener, sig, status):
    port = listener.getsockname()[1]
    proc = started(
        "check",
        "baseline-delivered",
        "dns-nxdomain",
        "--code-regex",
        r"(\d\.\d\.\d+)",
        "--",
        sys.executable,
        "-c",
        CLIENT,
        str(port),
        "{dns_host}",
        "{dns_port}",
    )
    conn, (pid, dns_host, dns_port) = accept_client(listener, 30)  # the control runs first
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == status, err
    assert "interrupted" in err
    assert "exit None" not in out + err
    assert "Traceback" not in err
    assert_closed_by_peer(conn)
    assert is_gone(int(pid))
    assert connect_outcome(dns_host, int(dns_port)) == "refused"
    listener.setblocking(False)
    with pytest.raises(BlockingIOError):  # the next scenario's client never started
        listener.accept()


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_demo_step_stops_at_the_prompt(started, sig, status):
    # stdin is a pipe that stays open and silent: the demo waits for Enter.
    proc = started("demo", "baseline-delivered", "dns-nxdomain", "--step", stdin=subprocess.PIPE)
    wait_for_output(proc, "Press Enter", 30)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == status
    assert "dns-nxdomain" not in out  # the second scenario was not played


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_deliver_stops_at_once_inside_a_scenario(started, sig, status):
    # dns-timeout's DNS server never answers: with --timeout 600 the client
    # would wait ten minutes for it.
    proc = started("deliver", "baseline-delivered", "dns-timeout", "--timeout", "600")
    wait_for_output(proc, "baseline-delivered", 30)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == status, err
    assert "dns-timeout" not in out
    assert "Traceback" not in err


# -- file flags and the words of errors --------------------------------------------


def _ca_cases(tmp: Path) -> list[tuple[str, str]]:
    not_pem = tmp / "not-a-ca.pem"
    not_pem.write_text("hello\n")
    return [
        (str(tmp / "missing.pem"), "No such file"),
        (str(tmp), "Is a directory"),
        (str(not_pem), "no PEM"),
    ]


@pytest.mark.parametrize("case", [0, 1, 2], ids=["missing", "directory", "not-pem"])
def test_a_bad_ca_file_is_a_usage_error_before_any_connection(tmp_path, listener, case):
    path, why = _ca_cases(tmp_path)[case]
    port = listener.getsockname()[1]
    result = run(
        "send",
        "--smart-host",
        "127.0.0.1",
        "--mail-domain",
        "contoso.test",
        "--port",
        str(port),
        "--ca-file",
        path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--ca-file" in lines[0] and path in lines[0] and why in lines[0]
    assert "4.4.318" not in result.stdout + result.stderr
    listener.setblocking(False)
    with pytest.raises(BlockingIOError):  # the process is gone and never connected
        listener.accept()


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--subnet", "100.64.7"], "--subnet"), (["--dns-host", "100.64.7.1"], "--dns-host")],
)
def test_errors_name_the_cli_flag_not_the_python_keyword(flags, named):
    result = run("serve", "baseline-delivered", *flags)
    assert result.returncode == 2
    line = result.stderr.strip()
    assert line.startswith(f"mailfakes serve: error: {named} ")
    assert "--allow-non-loopback" in line
    assert "allow_non_loopback" not in line and "dns_host" not in line


def test_the_library_still_names_its_keyword():
    spec = scenarios.get("baseline-delivered").world
    with pytest.raises(WorldError, match=r"allow_non_loopback=True") as caught:
        World(spec, subnet="100.64.7")  # refused in the constructor, before any socket
    assert str(caught.value).startswith("subnet ")
