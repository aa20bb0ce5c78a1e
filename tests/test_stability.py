"""Every cut and every connect-time fault of the catalogue, 200 times: the wire never changes.

A raw client written here (plain sockets; ssl only to produce a ClientHello)
runs each faulty host of the catalogue 200 times, 50 connections at a time so
that the scheduling is really stressed, and names what it saw: for a connect,
refused, timeout or established; for a cut, the step of the dialogue it was at
and whether the connection ended with a FIN (recv gives b"") or a RST
(ECONNRESET); for a TLS refusal, the records that came back, parsed from the
raw bytes, and how the connection ended. All 200 must be the same class, and
that class must be the one the scenario's TOML configures (host kind, close_at
point and how, the reply's close, the TLS mode), never what the fakes recorded.
"""

from __future__ import annotations

import errno
import select
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from mailfakes import World
from mailfakes import catalogue as scenarios
from mailfakes.spec import HostSpec, Reply, parse_world
from probe import end_by_state, raw_handshake

REPEAT = 200
CONCURRENCY = 50
CONNECT_BOUND = 0.3  # a blackholed connect is a timeout after this long
SILENCE = 0.4  # a silent server has said nothing after this long
REPLY_BOUND = 5.0  # a reply or a close that must come; only reached when the wire is wrong
SHORT_MESSAGE = b"Subject: x\r\n\r\nhi\r\n.\r\n"

# The fatal alert a server sends when it finds nothing in common with a
# current client (RFC 8446 6, AlertDescription), by the scenario's TLS mode.
ALERT_DESCRIPTION = {"handshake_failure": 40, "protocol_version": 70}
REFUSING_TLS_MODES = {"starttls_broken": "handshake_failure", "starttls_legacy": "protocol_version"}
FATAL = 2  # AlertLevel.fatal

# The steps of the dialogue, named by what the client waits for there.
STEP_OF_POINT = {
    "before_greeting": "greeting",
    "after_greeting": "EHLO",  # the client speaks after the greeting, the cut meets its EHLO
    "after_ehlo": "EHLO",
    "after_mail": "MAIL",
    "after_rcpt": "RCPT",
    # The short message goes in one write: the whole of it is in the server's
    # hands before the cut, which then comes instead of the final dot's reply.
    "in_data": "final dot",
    "after_final_dot": "final dot",
}
DIALOGUE = ("greeting", "EHLO", "MAIL", "RCPT", "DATA", "final dot")
COMMAND_OF_STEP = {"EHLO": "EHLO", "MAIL": "MAIL", "RCPT": "RCPT", "DATA": "DATA", "final dot": "DATA_END"}


# ----------------------------------------------------------------------
# What the TOML configures


def _closing(reply: Reply | None) -> str | None:
    """How the server ends the connection after ``reply``: its close, or FIN after a 421 (RFC 5321 3.8)."""
    if reply is None:
        return None
    if reply.close is not None:
        return reply.close
    return "fin" if reply.code == 421 else None


def expected_class(host: HostSpec) -> str | None:
    """The one wire class the host's configuration promises, or None if it has no cut."""
    if host.kind == "refuse":
        return "connect: refused"
    if host.kind == "blackhole":
        return "connect: timeout"
    if host.kind == "silent":
        return "greeting: silent"
    if host.kind == "close_on_accept":
        return f"greeting: {host.close}"
    plan = host.smtp
    if plan.implicit_tls:
        return None  # the raw client speaks STARTTLS only (no implicit-TLS scenario to cover yet)
    ca = plan.close_at
    cut_step = STEP_OF_POINT.get(ca.point) if ca is not None else None
    assert ca is None or cut_step is not None, f"{host.name}: no raw client step for {ca.point}"
    for step in DIALOGUE:
        if ca is not None and cut_step == step:
            return f"{step}: {ca.how}"
        reply = plan.greeting if step == "greeting" else plan.replies.get(COMMAND_OF_STEP[step])
        how = _closing(reply)
        if reply is not None and how is not None:
            return f"after {step} {reply.code}: {how}"
        if step == "EHLO" and plan.tls in REFUSING_TLS_MODES:
            description = ALERT_DESCRIPTION[REFUSING_TLS_MODES[plan.tls]]
            return f"TLS: alert {FATAL}/{description}, then fin"
    return None


@dataclass(frozen=True)
class Case:
    scenario: str
    host: str
    expected: str
    tls: bool  # the client opens TLS (the server's refusal is the fault)
    silent: bool  # the server is expected to say nothing: wait only SILENCE for it


def catalogue_cases() -> list[Case]:
    cases = []
    for sid, s in scenarios.load_catalogue().items():
        for host in s.world.hosts:
            expected = expected_class(host)
            if expected is None or host.schedule is not None:
                continue  # a scheduled fault applies to some sessions only: not a single class
            tls = host.kind == "smtp" and host.smtp.tls in REFUSING_TLS_MODES
            cases.append(Case(sid, host.name, expected, tls, host.kind == "silent"))
    return cases


CASES = catalogue_cases()


def test_every_kind_of_cut_and_connect_fault_is_covered():
    """The list is made from the catalogue: it must hold each fault family it has today."""
    seen = {c.expected.split(", ")[0] for c in CASES}
    assert {"connect: refused", "connect: timeout", "greeting: rst", "greeting: fin"} <= seen
    assert {"EHLO: fin", "EHLO: rst", "final dot: fin", "final dot: rst"} <= seen
    assert {"after greeting 421: fin", "after EHLO 421: fin", "TLS: alert 2/40", "TLS: alert 2/70"} <= seen


# ----------------------------------------------------------------------
# The raw client


class Ended(Exception):
    def __init__(self, how: str) -> None:
        super().__init__(how)
        self.how = how


class Line:
    """Reads SMTP replies off a plain socket; a FIN, RST or silence ends the walk."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket | ssl.SSLSocket = sock
        self.buf = b""

    def recv(self, bound: float) -> bytes:
        self.sock.settimeout(bound)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            raise Ended("rst") from None
        except TimeoutError:
            raise Ended("silent") from None
        if not data:
            # b"" is a FIN only if the kernel agrees (CLOSE_WAIT); after a reset whose
            # error an earlier call took, it would say CLOSE.
            raise Ended(end_by_state(self.sock))
        return data

    def reply(self, bound: float = REPLY_BOUND) -> int:
        while True:
            while b"\r\n" not in self.buf:
                self.buf += self.recv(bound)
            line, _, self.buf = self.buf.partition(b"\r\n")
            if line[3:4] != b"-":
                return int(line[:3])

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except ConnectionResetError:
            raise Ended("rst") from None
        except BrokenPipeError:
            raise Ended("epipe") from None
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            # CPython's ssl reports a reset under TLS as an EOF too: ask the kernel.
            raise Ended(end_by_state(self.sock)) from None

    def end(self) -> str:
        """Wait, without a word, for the server to close."""
        try:
            while True:
                self.recv(REPLY_BOUND)
        except Ended as e:
            return e.how


def connect(ip: str, port: int, mode: str) -> tuple[socket.socket | None, str]:
    """A TCP connect: 'established', 'refused', 'timeout' or 'reset' (ECONNRESET at connect)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if mode == "nonblocking":
            sock.setblocking(False)
            err = sock.connect_ex((ip, port))
            if err == errno.EINPROGRESS:
                poller = select.poll()
                poller.register(sock, select.POLLOUT)
                if not poller.poll(CONNECT_BOUND * 1000):
                    sock.close()
                    return None, "timeout"
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            sock.setblocking(True)
        elif mode == "blocking":
            sock.settimeout(None)  # a real blocking connect(); loopback answers at once
            err = sock.connect_ex((ip, port))
        else:
            sock.settimeout(CONNECT_BOUND)
            try:
                sock.connect((ip, port))
                err = 0
            except TimeoutError:
                err = errno.ETIMEDOUT
            except OSError as exc:
                err = exc.errno or -1
    except BaseException:
        sock.close()
        raise
    if err == 0:
        return sock, "established"
    sock.close()
    names = {errno.ECONNREFUSED: "refused", errno.ETIMEDOUT: "timeout", errno.ECONNRESET: "reset"}
    return None, names.get(err, errno.errorcode.get(err, str(err)))


def walk(
    world: World, case: Case, tls_context: ssl.SSLContext, mode: str = "timeout", *, inside_tls: bool = False
) -> str:
    """One raw session against the case's host; returns the class of what the wire did.

    ``inside_tls``: STARTTLS first, as a client that requires TLS does, so
    the later steps (and the cut) happen inside TLS.
    """
    sock, outcome = connect(world.address_of(case.host), world.port, mode)
    if sock is None:
        return f"connect: {outcome}"
    c = Line(sock)
    step = "greeting"
    try:
        code = c.reply(SILENCE if case.silent else REPLY_BOUND)
        if code != 220:
            return f"after greeting {code}: {c.end()}"
        step = "EHLO"
        c.send(b"EHLO stability.test\r\n")
        if (code := c.reply()) != 250:
            return f"after EHLO {code}: {c.end()}"
        if case.tls:
            step = "STARTTLS"
            c.send(b"STARTTLS\r\n")
            if (code := c.reply()) != 220:
                return f"after STARTTLS {code}: {c.end()}"
            return "TLS: " + raw_handshake(sock, tls_context, case.host, REPLY_BOUND).describe()
        if inside_tls:
            step = "STARTTLS"
            c.send(b"STARTTLS\r\n")
            if (code := c.reply()) != 220:
                return f"after STARTTLS {code}: {c.end()}"
            sock.settimeout(REPLY_BOUND)
            c.sock = tls_context.wrap_socket(sock, server_hostname=case.host)
            step = "EHLO inside TLS"
            c.send(b"EHLO stability.test\r\n")
            if (code := c.reply()) != 250:
                return f"after EHLO inside TLS {code}: {c.end()}"
        for step, line in (("MAIL", b"MAIL FROM:<a@fabrikam.test>"), ("RCPT", b"RCPT TO:<b@contoso.test>")):
            c.send(line + b"\r\n")
            if (code := c.reply()) >= 400:
                return f"after {step} {code}: {c.end()}"
        step = "DATA"
        c.send(b"DATA\r\n")
        if (code := c.reply()) != 354:
            return f"after DATA {code}: {c.end()}"
        step = "final dot"
        c.send(SHORT_MESSAGE)
        return f"final dot: reply {c.reply()}"
    except Ended as e:
        return f"{step}: {e.how}"
    finally:
        c.sock.close()


def repeat(run: Callable[[], str]) -> Counter[str]:
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        return Counter(pool.map(lambda _: run(), range(REPEAT)))


def tls_client() -> ssl.SSLContext:
    """A current client: TLS 1.2 and 1.3 only, default ciphers (certificates are not the point here)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def assert_stable(case: Case, counts: Counter[str], how: str = "") -> None:
    label = f"{case.scenario} ({case.host}){how}"
    assert len(counts) == 1, f"{label}: the wire changed between runs: {dict(counts)}"
    assert counts == Counter({case.expected: REPEAT}), (
        f"{label}: saw {dict(counts)}, configured {case.expected!r}"
    )


# ----------------------------------------------------------------------
# The tests


@pytest.mark.parametrize("case", CASES, ids=[f"{c.scenario}:{c.host}" for c in CASES])
def test_the_wire_is_the_same_200_times(case, make_world):
    world = make_world(scenarios.get(case.scenario).world)
    ctx = tls_client()
    counts = repeat(lambda: walk(world, case, ctx))
    assert_stable(case, counts)
    assert_messages_kept(world, case)


def assert_messages_kept(world: World, case: Case) -> None:
    """A cut in the message keeps none of them; a cut after the final dot keeps each, unanswered."""
    ca = scenarios.get(case.scenario).world.host(case.host).smtp.close_at
    if ca is not None and ca.point == "in_data":
        assert world.wait_until(lambda: sum(s.closed for s in world.sessions) >= REPEAT, REPLY_BOUND)
        assert world.messages == []
    elif ca is not None and ca.point == "after_final_dot":
        assert world.wait_until(lambda: len(world.messages) == REPEAT, REPLY_BOUND)
        assert not any(m.replied for m in world.messages)


LOAD_BALANCER = next(c for c in CASES if c.scenario == "close-load-balancer")


@pytest.mark.parametrize("mode", ["nonblocking", "blocking"])
def test_a_reset_on_accept_always_comes_after_an_established_connect(mode, make_world):
    """Whether the client polls a non-blocking connect or blocks in connect(), it is established first."""
    world = make_world(scenarios.get(LOAD_BALANCER.scenario).world)
    ctx = tls_client()
    counts = repeat(lambda: walk(world, LOAD_BALANCER, ctx, mode))
    assert LOAD_BALANCER.expected == "greeting: rst"
    assert_stable(LOAD_BALANCER, counts, f", {mode} connect")


AFTER_EHLO_STEPS = ("MAIL", "RCPT", "DATA", "final dot")
INSIDE_TLS = [
    c
    for c in CASES
    if not c.tls
    and scenarios.get(c.scenario).target.require_tls
    and any(c.expected.startswith((f"{step}:", f"after {step} ")) for step in AFTER_EHLO_STEPS)
]


@pytest.mark.parametrize("case", INSIDE_TLS, ids=[c.scenario for c in INSIDE_TLS])
def test_a_cut_inside_tls_is_the_same_200_times(case, make_world):
    """The scenario's client requires TLS: the cut then meets it inside TLS, and is the same event."""
    world = make_world(scenarios.get(case.scenario).world)
    ctx = tls_client()
    assert_stable(case, repeat(lambda: walk(world, case, ctx, inside_tls=True)), ", inside TLS")
    assert_messages_kept(world, case)


def test_cuts_inside_tls_are_covered():
    assert {c.scenario for c in INSIDE_TLS} >= {"close-mid-data", "close-after-final-dot"}


SILENT = Case("(inline world)", "mail.contoso.test", "greeting: silent", tls=False, silent=True)


def test_a_silent_host_is_established_and_silent_200_times(make_world):
    """The catalogue has no silent host today; the kind is a connect-time fault all the same."""
    spec = {"zone": "test", "hosts": {SILENT.host: {"kind": "silent"}}}
    host = parse_world(spec).host(SILENT.host)
    assert expected_class(host) == SILENT.expected
    world = make_world(spec)
    assert_stable(SILENT, repeat(lambda: walk(world, SILENT, tls_client())))
