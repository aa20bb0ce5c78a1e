"""Safety: what mailfakes refuses to do, and what never outlives it.

- The namespace guard rests on facts an environment cannot forge (PID 1 of
  a PID namespace, a network namespace holding only lo); anything else is
  refused before a single mount, and the mounts it does make stay in a
  mount namespace of its own.
- ``send`` talks to loopback addresses only, as the other commands do.
- No name or local part that could pass for an option reaches a client.
- A client started by ``check`` or ``serve -- CMD``, with or without
  ``--netns``, dies with mailfakes even on ``kill -9``; so do its namespaces
  and its temporary directories.
"""

from __future__ import annotations

import hashlib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import QTYPE, RR, A, DNSRecord
from mailfakes import catalogue as scenarios
from mailfakes import netns
from mailfakes.spec import SpecError, parse_world
from prerequisites import require

CMD = [sys.executable, "-m", "mailfakes"]
RESOLV_CONF = Path("/etc/resolv.conf")
FORGED_ENV = {
    # What the old guard trusted, made to look like another namespace.
    "MAILFAKES_OUTER_NAMESPACES": "net:[1] mnt:[2]",
    "MAILFAKES_NETNS": "1",
}


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CMD, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def mounts_of_interest() -> list[str]:
    """The mount points this process sees over the files the namespace replaces."""
    watched = (str(RESOLV_CONF.resolve()), "/etc/nsswitch.conf", str(netns.PRIVATE_TMP))
    return [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4] in watched
    ]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the namespace guard ------------------------------------------------------


def test_a_forged_environment_is_refused_before_any_mount(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in FORGED_ENV.items():
        monkeypatch.setenv(key, value)
    before = (RESOLV_CONF.read_bytes(), mounts_of_interest(), os.readlink("/proc/self/ns/mnt"))
    for step in (netns.enter, netns.private_resolver, netns.private_tmp):
        with pytest.raises(netns.NetnsError) as caught:
            step()
        assert f"not the first process of a new PID namespace (its PID is {os.getpid()})" in str(caught.value)
    assert not netns.in_private_namespace()
    # Same file, no mount over it, and not even a mount namespace of our own was made.
    assert (RESOLV_CONF.read_bytes(), mounts_of_interest(), os.readlink("/proc/self/ns/mnt")) == before


@pytest.mark.parametrize("command", ["serve", "check"])
def test_the_inside_flag_with_a_forged_environment_is_a_usage_error(command: str) -> None:
    before = (RESOLV_CONF.read_bytes(), mounts_of_interest())
    extra = ["--", "true"]
    result = run(command, "baseline-delivered", "--inside-netns", *extra, env=FORGED_ENV)
    assert result.returncode == 2, result.stderr
    assert "--inside-netns is for mailfakes itself, use --netns" in result.stderr
    assert "not the first process of a new PID namespace" in result.stderr
    assert (RESOLV_CONF.read_bytes(), mounts_of_interest()) == before


def sandboxed(script: str) -> subprocess.CompletedProcess[str]:
    """Run a shell script in a private mount namespace of the test's own, so the host's is never at stake."""
    require({"unshare": "util-linux"}, netns=False, root="these tests make namespaces with unshare as root")
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "PY": sys.executable},
    )


def test_pid_1_with_the_hosts_network_is_refused() -> None:
    host_interfaces = sorted(name for _, name in socket.if_nameindex() if name != "lo")
    if not host_interfaces:
        pytest.skip("this machine's network namespace holds only lo: nothing to refuse")
    result = sandboxed(
        'unshare --pid --fork --kill-child "$PY" -m mailfakes serve baseline-delivered --inside-netns -- true\n'
        'echo "status $?"; sha256sum /etc/resolv.conf'
    )
    lines = result.stdout.split("\n")
    assert lines[0] == "status 2", result.stdout + result.stderr
    assert f"interfaces other than lo ({host_interfaces[0]}" in result.stderr
    assert lines[1].split()[0] == sha256(RESOLV_CONF)  # not even in the sandbox


def test_pid_1_started_in_another_mount_namespace_mounts_in_one_of_its_own() -> None:
    # PID 1 of a new PID namespace with only lo passes the guard, but it was
    # not given a mount namespace: its mounts must still not land in the one
    # it was started in (here the sandbox, standing for the host's).
    result = sandboxed(
        "readlink /proc/self/ns/mnt\n"
        'unshare --pid --net --fork --kill-child "$PY" -m mailfakes serve baseline-delivered --inside-netns -- '
        "sh -c 'readlink /proc/self/ns/mnt; grep -c \"^nameserver 127.0.0.1$\" /etc/resolv.conf'\n"
        'echo "status $?"; sha256sum /etc/resolv.conf'
    )
    started_in, inside, replaced, status, after = result.stdout.split("\n")[:5]
    assert status == "status 0", result.stdout + result.stderr
    assert replaced == "1"  # the command saw the private resolv.conf
    assert inside.startswith("mnt:[") and inside != started_in
    assert after.split()[0] == sha256(RESOLV_CONF)  # and the sandbox still has the host's


# -- send stays on loopback -----------------------------------------------------

_TARGET = ["--mail-domain", "contoso.test", "--port", "25"]


@pytest.mark.parametrize(
    ("args", "option", "address"),
    [
        (["--smart-host", "mail.contoso.test", "--dns-host", "8.8.8.8"], "--dns-host", "8.8.8.8"),
        (["--smart-host", "mail.contoso.test", "--dns-host", "2001:4860:4860::8888"], "--dns-host", "2001:"),
        (["--smart-host", "mail.contoso.test", "--dns-host", "dns.google"], "--dns-host", "dns.google"),
        (["--smart-host", "mail.contoso.test", "--smart-host-ip", "1.1.1.1"], "--smart-host-ip", "1.1.1.1"),
        (["--smart-host", "1.1.1.1"], "--smart-host", "1.1.1.1"),
    ],
)
def test_send_refuses_a_non_loopback_address_before_opening_a_socket(
    args: list[str], option: str, address: str
) -> None:
    result = run("send", *args, *_TARGET, "--timeout", "0.5")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"mailfakes send: error: {option} '{address}" in result.stderr
    assert "is not a loopback address" in result.stderr
    assert result.stdout == ""  # no report: no delivery was tried


@pytest.fixture
def lying_dns() -> Iterator[int]:
    """A DNS server on loopback that answers every A query with a public address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    done = threading.Event()

    def answer() -> None:
        while not done.is_set():
            ready, _, _ = select.select([sock], [], [], 0.1)
            if not ready:
                continue
            data, peer = sock.recvfrom(4096)
            query = DNSRecord.parse(data)
            reply = query.reply()
            if query.q.qtype == QTYPE.A:
                reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A("8.8.4.4"), ttl=60))
            sock.sendto(reply.pack(), peer)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    done.set()
    thread.join(5)
    sock.close()


def test_send_refuses_an_address_that_a_loopback_dns_resolves_outside(lying_dns: int) -> None:
    # 127.0.0.53 (systemd-resolved) is a loopback DNS that resolves real names.
    result = run(
        "send", "--smart-host", "mail.contoso.test", "--dns-host", "127.0.0.1", "--dns-port", str(lying_dns),
        *_TARGET, "--timeout", "0.5",
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "mail.contoso.test (resolved through 127.0.0.1:" in result.stderr
    assert "'8.8.4.4' is not a loopback address" in result.stderr
    assert result.stdout == ""


# -- names that could pass for options ------------------------------------------


@pytest.mark.parametrize(
    ("world", "key", "value"),
    [
        ({"zone": "-contoso.test"}, "zone", "-contoso.test"),
        ({"zone": "contoso-.test"}, "zone", "contoso-.test"),
        ({"zone": "a..test"}, "zone", "a..test"),
        ({"zone": "con$oso.test"}, "zone", "con$oso.test"),
        ({"hosts": {"-mail.test": {}}}, 'hosts."-mail.test"', "-mail.test"),
        ({"hosts": {"mail.-x.test": {}}}, 'hosts."mail.-x.test"', "mail.-x.test"),
        ({"records": [{"name": "-x.test", "type": "A", "value": "127.0.0.5"}]}, "records[0].name", "-x.test"),
        (
            {"records": [{"name": "x.test", "type": "MX", "value": "-mx.test"}]},
            "records[0].value",
            "-mx.test",
        ),
        (
            {"records": [{"name": "x.test", "type": "CNAME", "value": "-y.test"}]},
            "records[0].value",
            "-y.test",
        ),
        ({"dns_faults": [{"name": "-x.test", "fault": "servfail"}]}, "dns_faults[0].name", "-x.test"),
    ],
)
def test_names_that_could_pass_for_options_are_rejected(
    world: dict[str, object], key: str, value: str
) -> None:
    with pytest.raises(SpecError) as caught:
        parse_world(world, where="w.toml")
    message = str(caught.value)
    assert message.startswith(f"w.toml: {key}: {value!r} is not valid; expected ")
    assert "none starting or ending with '-'" in message


def test_names_with_inner_hyphens_and_underscores_are_fine() -> None:
    spec = parse_world(
        {
            "zone": "contoso-east.test",
            "hosts": {"mail-1.contoso-east.test": {}},
            "records": [{"name": "_mta-sts.contoso-east.test", "type": "TXT", "value": "v=STSv1; id=1"}],
        }
    )
    assert spec.zone == "contoso-east.test" and spec.hosts[0].name == "mail-1.contoso-east.test"


def scenario_file(tmp_path: Path, old: str, new: str) -> Path:
    text = Path(scenarios.get("tcp-refused-firewall").path).read_text()
    assert old in text
    path = tmp_path / "tcp-refused-firewall.toml"
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('smart_host = "mail.contoso.test"', 'smart_host = "-mail.contoso.test"', "target.smart_host"),
        ('mail_domain = "contoso.test"', 'mail_domain = "-contoso.test"', "target.mail_domain"),
    ],
)
def test_a_scenario_target_that_could_pass_for_an_option_is_invalid(
    tmp_path: Path, old: str, new: str, key: str
) -> None:
    result = run("validate", str(scenario_file(tmp_path, old, new)))
    assert result.returncode == 1
    assert f"{key}: '-" in result.stdout and "none starting or ending with '-'" in result.stdout


@pytest.mark.parametrize(
    ("new", "key"),
    [
        ('mail_from = "-oX@fabrikam.test"', "target.mail_from"),
        ('rcpt_to = ["-x@contoso.test"]', "target.rcpt_to[0]"),
    ],
)
def test_a_scenario_address_whose_local_part_could_pass_for_an_option_is_invalid(
    tmp_path: Path, new: str, key: str
) -> None:
    path = scenario_file(tmp_path, 'mail_domain = "contoso.test"', f'mail_domain = "contoso.test"\n{new}')
    result = run("validate", str(path))
    assert result.returncode == 1 and f"{key}: '-" in result.stdout


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--smart-host", "-oProxyCommand.test"),
        ("--mail-domain", "-contoso.test"),
        ("--mail-from", "-f@fabrikam.test"),
        ("--rcpt-to", "-x@contoso.test"),
    ],
)
def test_send_rejects_names_and_local_parts_that_could_pass_for_options(option: str, value: str) -> None:
    args = {"--smart-host": "mail.contoso.test", "--mail-domain": "contoso.test", option: value}
    result = run("send", *(f"{k}={v}" for k, v in args.items()), "--dns-port", "9", "--timeout", "0.5")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"mailfakes send: error: {option} {value!r} is not valid" in result.stderr
    assert "starting" in result.stderr and result.stdout == ""


def test_recipes_end_options_before_positional_arguments() -> None:
    recipes = Path(scenarios.__file__).resolve().parent.parent / "recipes"
    curl = (recipes / "curl.sh").read_text()
    assert '-- "$scheme://$MAILFAKES_SMART_HOST:$MAILFAKES_PORT"' in curl
    # The scheme is one of two words the recipe sets itself, never a value from the scenario.
    assert re.findall(r"^\s*(?:\[.*\] && )?scheme=(\S+)$", curl, re.M) == ["smtp", "smtps"]
    assert '-- "$MAILFAKES_RCPT_TO"' in (recipes / "msmtp.sh").read_text()


# -- nothing outlives mailfakes -------------------------------------------------


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def wait_for_client(mailfakes: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """The PID of the 'sleep 1000' mailfakes started, once /proc shows it (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert mailfakes.poll() is None, f"mailfakes ended first, status {mailfakes.returncode}"
        for pid in descendants(mailfakes.pid):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x001000\x00":
                    return pid
            except OSError:
                continue
        threading.Event().wait(0.05)  # /proc has no change notification: poll, with a deadline
    raise AssertionError(f"the client did not start within {timeout} s")


def wait_gone(pidfd: int, timeout: float) -> bool:
    """Whether the process behind ``pidfd`` has ended within ``timeout`` (pidfds become readable then)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def processes_in(net_namespace: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "net") == net_namespace:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "baseline-delivered", "--netns", "--json"],
        ["check", "baseline-delivered", "--netns"],
        ["serve", "baseline-delivered", "--json"],
        ["check", "baseline-delivered"],
    ],
    ids=["serve --netns", "check --netns", "serve", "check"],
)
def test_the_client_dies_with_mailfakes_even_on_kill_9(tmp_path: Path, args: list[str]) -> None:
    hermetic = "--netns" in args
    if hermetic:
        require({"unshare": "util-linux"})
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    mailfakes = subprocess.Popen(
        [*CMD, *args, "--", "sleep", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    pidfds: list[int] = []
    try:
        client = wait_for_client(mailfakes)
        chain = [p for p in descendants(mailfakes.pid) if p != client]  # unshare, the inside mailfakes
        pidfds = [os.pidfd_open(pid) for pid in (client, *chain)]
        net = os.readlink(f"/proc/{client}/ns/net")
        ca_file = dict(
            line.split("=", 1)
            for line in Path(f"/proc/{client}/environ").read_text().split("\0")
            if line.startswith("MAILFAKES_CA_FILE=")
        )["MAILFAKES_CA_FILE"]
        if hermetic:
            # The world's CA lives where only the namespace sees it.
            assert Path(f"/proc/{client}/root{ca_file}").is_file()
            assert not Path(ca_file).exists()
            assert not any(tmp.iterdir())
        else:
            assert Path(ca_file).is_file()
        mailfakes.kill()
        mailfakes.wait(10)
        for pid, pidfd in zip((client, *chain), pidfds, strict=True):
            assert wait_gone(pidfd, 10), f"process {pid} outlived mailfakes"
        if hermetic:
            assert processes_in(net) == [], "the network namespace outlived mailfakes"
            assert list(tmp.iterdir()) == []
    finally:
        if mailfakes.poll() is None:
            mailfakes.kill()
            mailfakes.wait(10)
        for pidfd in pidfds:
            if not wait_gone(pidfd, 0):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
        shutil.rmtree(tmp, ignore_errors=True)
