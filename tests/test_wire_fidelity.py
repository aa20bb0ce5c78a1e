"""Each fault looks to a client like the real failure it names, seen from the client's side.

TLS refusals are checked with three independent TLS stacks (OpenSSL's
s_client, GnuTLS's gnutls-cli, Python's ssl) and with the raw bytes of the
alert record; STARTTLS, EHLO and enhanced codes are checked line by line
against what Postfix sends; the listen backlog with a thousand clients at
once; the blackhole with ``tcp_abort_on_overflow=1`` in a namespace of our own.
"""

from __future__ import annotations

import os
import random
import selectors
import smtplib
import socket
import ssl
import subprocess
import sys
import textwrap
import warnings

import pytest
from prerequisites import require
from probe import RawSMTP, client_context

H = "mail.contoso.test"
# TLS alert descriptions (RFC 8446 6.2; RFC 5246 7.2).
HANDSHAKE_FAILURE = 40
PROTOCOL_VERSION = 70


def one_host(make_world, **plan):
    world = make_world({"hosts": {H: plan}})
    return world, world.address_of(H), world.port


def to_starttls(ip: str, port: int) -> socket.socket:
    """A plain socket that has said EHLO and STARTTLS and got 220: the next bytes are TLS."""
    c = RawSMTP.connect(ip, port, timeout=3)
    assert c.reply().code == 220
    assert c.cmd("EHLO client.test").code == 250
    assert c.cmd("STARTTLS").code == 220
    return c.sock


def client_hello(ip: str, port: int, *, versions: tuple[ssl.TLSVersion, ssl.TLSVersion]) -> bytes:
    """Send a real ClientHello (Python's ssl, through memory BIOs) and return every byte the server sent back."""
    sock = to_starttls(ip, port)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version, ctx.maximum_version = versions
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=H)
    with pytest.raises(ssl.SSLWantReadError):
        conn.do_handshake()
    sock.sendall(outgoing.read())
    got = b""
    while True:
        data = sock.recv(65536)
        if not data:
            break  # FIN: a reset would raise ConnectionResetError here
        got += data
    sock.close()
    return got


def alert_of(record: bytes) -> tuple[int, int]:
    """(level, description) of the first record, which must be a TLS alert."""
    assert len(record) >= 7 and record[0] == 21, f"not a TLS alert record: {record[:16]!r}"
    return record[5], record[6]


@pytest.mark.parametrize(
    ("tls", "versions", "alert"),
    [
        ("starttls_broken", (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3), HANDSHAKE_FAILURE),
        ("starttls_legacy", (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3), PROTOCOL_VERSION),
        ("starttls_legacy", (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3), PROTOCOL_VERSION),
    ],
)
def test_a_server_with_nothing_in_common_sends_its_fatal_alert_then_fin(make_world, tls, versions, alert):
    world, ip, port = one_host(make_world, tls=tls)
    for _ in range(20):
        got = client_hello(ip, port, versions=versions)
        assert alert_of(got) == (2, alert)  # fatal, then FIN (no RST, no bare EOF)
        assert len(got) == 7  # the alert and nothing else: no certificate was sent
    [t, *_] = world.sessions
    assert t.tls_attempted and t.sni == H


def test_openssl_s_client_receives_the_handshake_failure_alert(make_world):
    require({"openssl": "openssl"}, netns=False)
    _world, ip, port = one_host(make_world, tls="starttls_broken")
    out = s_client(ip, port)
    assert "<<< TLS 1.2, Alert [length 0002], fatal handshake_failure" in out or (
        "<<< TLS 1.3, Alert [length 0002], fatal handshake_failure" in out
    )
    assert "decode_error" not in out and "unexpected eof" not in out.lower()


def test_openssl_s_client_gets_protocol_version_from_a_tls_1_1_server(make_world):
    require({"openssl": "openssl"}, netns=False)
    _world, ip, port = one_host(make_world, tls="starttls_legacy")
    # Offering TLS 1.3 only: the server has no version in common and says so.
    assert "<<< TLS 1.3, Alert [length 0002], fatal protocol_version" in s_client(ip, port, "-tls1_3")
    # Offering TLS 1.2 only: the server answers TLS 1.1, and the client refuses it itself.
    assert ">>> TLS 1.2, Alert [length 0002], fatal protocol_version" in s_client(ip, port, "-tls1_2")


def s_client(ip: str, port: int, *extra: str) -> str:
    r = subprocess.run(
        [
            "openssl",
            "s_client",
            "-starttls",
            "smtp",
            "-connect",
            f"{ip}:{port}",
            "-servername",
            H,
            "-msg",
            *extra,
        ],
        input=b"",
        capture_output=True,
        timeout=20,
    )
    assert r.returncode != 0
    return (r.stdout + r.stderr).decode("utf-8", "replace")


@pytest.mark.parametrize(
    ("tls", "priority", "alert"),
    [
        ("starttls_broken", "NORMAL", "Received alert [40]"),
        ("starttls_legacy", "NORMAL:-VERS-TLS1.1:-VERS-TLS1.0", "Received alert [70]"),
    ],
)
def test_gnutls_cli_receives_the_alert(make_world, tls, priority, alert):
    require({"gnutls-cli": "gnutls-bin"}, netns=False)
    _world, ip, port = one_host(make_world, tls=tls)
    r = subprocess.run(
        [
            "gnutls-cli",
            "--starttls-proto=smtp",
            "--port",
            str(port),
            "--insecure",
            "--priority",
            priority,
            ip,
        ],
        input=b"",
        capture_output=True,
        timeout=20,
    )
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert r.returncode != 0 and alert in out, out


def test_a_gnutls_client_that_still_speaks_tls_1_1_gets_a_session(make_world):
    # GnuTLS's NORMAL priority on Debian 12 still enables TLS 1.1: against a real
    # TLS-1.1-only server such a client carries on, and so it does here.
    require({"gnutls-cli": "gnutls-bin"}, netns=False)
    world, ip, port = one_host(make_world, tls="starttls_legacy")
    r = subprocess.run(
        [
            "gnutls-cli",
            "--starttls-proto=smtp",
            "--port",
            str(port),
            "--insecure",
            "--priority",
            "NORMAL",
            ip,
        ],
        input=b"",
        capture_output=True,
        timeout=20,
    )
    if r.returncode != 0:
        pytest.skip("this GnuTLS no longer enables TLS 1.1 by default")
    assert world.wait_until(lambda: any(t.tls_version == "TLSv1.1" for t in world.sessions), 3)


@pytest.mark.parametrize(
    ("tls", "reason"), [("starttls_broken", "HANDSHAKE_FAILURE"), ("starttls_legacy", "PROTOCOL_VERSION")]
)
def test_python_ssl_reports_the_alert_not_an_eof(make_world, tls, reason):
    world, ip, port = one_host(make_world, tls=tls)
    s = smtplib.SMTP(ip, port, timeout=3)
    with pytest.raises(ssl.SSLError) as err:
        s.starttls(context=world.client_context())
    assert not isinstance(err.value, ssl.SSLEOFError)
    assert reason in (err.value.reason or "")
    s.close()


def test_an_implicit_tls_server_with_nothing_in_common_sends_handshake_failure(make_world):
    world, ip, port = one_host(make_world, tls="implicit_broken")
    ctx = client_context(str(world.ca_file))
    for _ in range(10):
        raw = socket.create_connection((ip, port), timeout=3)
        with pytest.raises(ssl.SSLError) as err:
            ctx.wrap_socket(raw, server_hostname=H)
        assert "HANDSHAKE_FAILURE" in (err.value.reason or "")
        raw.close()


# -- STARTTLS edges ---------------------------------------------------------


def test_starttls_to_a_server_without_tls_is_an_unknown_command(make_world):
    _world, ip, port = one_host(make_world, tls="none")
    c = RawSMTP.connect(ip, port)
    c.reply()
    assert not any("STARTTLS" in ln for ln in c.cmd("EHLO client.test").lines)
    assert c.cmd("STARTTLS").lines == ["502 5.5.1 Error: command not implemented"]
    assert c.cmd("NOOP").code == 250  # the session goes on in clear, as with Postfix


def test_starttls_with_an_argument_is_a_syntax_error_and_arms_no_handshake_timer(make_world):
    world = make_world({"hosts": {H: {}}}, handshake_timeout=0.05)
    ip, port = world.address_of(H), world.port
    c = RawSMTP.connect(ip, port)
    c.reply()
    c.cmd("EHLO client.test")
    reply = c.cmd("STARTTLS now")
    assert reply.code == 501 and reply.lines[0].startswith("501 5.5.4 ")
    # The session is still in clear, and no handshake timer ends it.
    assert not world.wait_until(lambda: any(t.ended_by for t in world.sessions), 0.5)
    assert c.cmd("NOOP").code == 250
    # Control: a real STARTTLS without a handshake does time out.
    assert c.cmd("STARTTLS").code == 220
    assert world.wait_until(lambda: world.sessions[0].ended_by == "timeout", 3)
    assert not world.events.errors()


def test_a_second_starttls_inside_tls_is_refused_not_nested(make_world):
    world, ip, port = one_host(make_world)
    c = RawSMTP.connect(ip, port)
    c.reply()
    c.cmd("EHLO client.test")
    assert c.cmd("STARTTLS").code == 220
    c.starttls(client_context(str(world.ca_file)), H)
    assert not any("STARTTLS" in ln for ln in c.cmd("EHLO client.test").lines)
    assert c.cmd("STARTTLS").lines == ["554 5.5.1 Error: TLS already active"]
    assert c.cmd("NOOP").code == 250  # still the same TLS session
    assert c.cmd("QUIT").code == 221
    assert world.wait_until(lambda: world.sessions[0].closed, 3)
    assert not world.events.errors()


def test_starttls_refused_with_454_differs_from_starttls_missing(make_world):
    world = make_world(
        {"hosts": {"a.contoso.test": {"tls": "starttls_refused"}, "b.contoso.test": {"tls": "none"}}}
    )
    answers = []
    for host in ("a.contoso.test", "b.contoso.test"):
        c = RawSMTP.connect(world.address_of(host), world.port)
        c.reply()
        ehlo = c.cmd("EHLO client.test").lines
        answers.append((any("STARTTLS" in ln for ln in ehlo), c.cmd("STARTTLS").lines[0][:9]))
        c.close()
    assert answers == [(True, "454 4.7.0"), (False, "502 5.5.1")]


# -- EHLO and enhanced status codes -------------------------------------------


def ehlo(ip: str, port: int) -> tuple[RawSMTP, list[str]]:
    c = RawSMTP.connect(ip, port)
    c.reply()
    return c, [ln[4:] for ln in c.cmd("EHLO client.test").lines]


def test_ehlo_advertises_what_a_current_mta_does(make_world):
    _world, ip, port = one_host(make_world)
    _c, lines = ehlo(ip, port)
    assert lines[0] == H
    assert set(lines[1:]) == {
        "PIPELINING",
        "SIZE 33554432",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "STARTTLS",
    }
    assert "AUTH" not in " ".join(lines)


@pytest.mark.parametrize("off", ["PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"])
def test_each_extension_can_be_switched_off(make_world, off):
    _world, ip, port = one_host(make_world, extensions_off=[off])
    _c, lines = ehlo(ip, port)
    assert not any(ln.split(" ")[0] == off for ln in lines)
    assert len(lines) == 6  # the host name and the five others


def test_replies_carry_enhanced_codes_when_advertised(make_world):
    _world, ip, port = one_host(make_world, tls="none")
    c, _ = ehlo(ip, port)
    replies = [
        c.cmd("MAIL FROM:<a@fabrikam.test>"),
        c.cmd("RCPT TO:<user@contoso.test>"),
        c.cmd("RSET"),
        c.cmd("NOOP"),
        c.cmd("FOO"),
        c.cmd("MAIL"),
        c.cmd("QUIT"),
    ]
    firsts = [r.lines[0].split(" ")[:2] for r in replies]
    assert firsts == [
        ["250", "2.1.0"],
        ["250", "2.1.5"],
        ["250", "2.0.0"],
        ["250", "2.0.0"],
        ["500", "5.5.2"],
        ["501", "5.5.4"],
        ["221", "2.0.0"],
    ]


@pytest.mark.parametrize("how", ["HELO", "extension off"])
def test_no_enhanced_codes_when_not_advertised(make_world, how):
    plan = {"tls": "none", "replies": {"RCPT": {"code": 550, "enhanced": "5.1.1", "text": "unknown user"}}}
    if how != "HELO":
        # Validation refuses an enhanced code written for a host that never advertises them
        # (tests/test_faults.py); the fake adds none of its own there either.
        plan = {
            "tls": "none",
            "extensions_off": ["ENHANCEDSTATUSCODES"],
            "replies": {"RCPT": {"code": 550, "text": "unknown user"}},
        }
    _world, ip, port = one_host(make_world, **plan)
    c = RawSMTP.connect(ip, port)
    c.reply()
    assert c.cmd(f"{'HELO' if how == 'HELO' else 'EHLO'} client.test").code == 250
    lines = [c.cmd("MAIL FROM:<a@fabrikam.test>").lines[0], c.cmd("RCPT TO:<x@contoso.test>").lines[0]]
    lines.append(c.cmd("QUIT").lines[0])
    assert lines == ["250 OK", "550 unknown user", "221 Bye"]


# -- recording ------------------------------------------------------------


def test_content_pipelined_right_after_data_is_recorded_as_content(make_world):
    world, ip, port = one_host(make_world, tls="none")
    c = RawSMTP.connect(ip, port)
    c.reply()
    c.cmd("EHLO client.test")
    c.sock.sendall(
        b"MAIL FROM:<a@fabrikam.test>\r\nRCPT TO:<user@contoso.test>\r\nDATA\r\nSubject: x\r\n\r\nRCPT TO:<no@x>\r\n.\r\nQUIT\r\n"
    )
    assert [c.reply().code for _ in range(5)] == [250, 250, 354, 250, 221]
    assert world.wait_until(lambda: world.sessions[0].closed, 3)
    lines = world.sessions[0].client_lines()
    assert lines[-3:] == ["DATA", "<message content, 30 bytes>", "QUIT"]
    [msg] = world.messages
    assert b"RCPT TO:<no@x>" in msg.content


def test_lines_after_a_refused_data_are_commands(make_world):
    world, ip, port = one_host(make_world, tls="none")
    c = RawSMTP.connect(ip, port)
    c.reply()
    c.cmd("EHLO client.test")
    c.sock.sendall(b"DATA\r\nNOOP\r\n")  # no recipients: DATA is refused, NOOP is a command
    assert [c.reply().code for _ in range(2)] == [503, 250]
    assert world.sessions[0].client_lines()[-2:] == ["DATA", "NOOP"]


def test_mid_data_cut_meets_even_a_one_line_message(make_world):
    world, ip, port = one_host(make_world, tls="none", close_at={"point": "in_data", "how": "rst"})
    for _ in range(20):
        c = RawSMTP.connect(ip, port)
        c.reply()
        c.cmd("EHLO client.test")
        c.cmd("MAIL FROM:<a@fabrikam.test>")
        c.cmd("RCPT TO:<user@contoso.test>")
        assert c.cmd("DATA").code == 354
        c.sock.sendall(b"Subject: x\r\n\r\nhi\r\n.\r\n")
        with pytest.raises(ConnectionResetError):
            while c.sock.recv(4096):
                pass
        c.close()
    assert world.messages == []


# -- the listener -----------------------------------------------------------


def test_a_thousand_clients_connecting_at_once_are_all_greeted(make_world):
    world, ip, port = one_host(make_world, tls="none")
    n = 1000
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((ip, port))
        socks.append(s)
        sel.register(s, selectors.EVENT_READ)
    greeted = 0
    while greeted < n:
        ready = sel.select(timeout=10)
        assert ready, f"only {greeted} of {n} clients greeted"
        for key, _ in ready:
            data = key.fileobj.recv(512)
            assert data.startswith(b"220 "), data
            sel.unregister(key.fileobj)
            greeted += 1
    for s in socks:
        s.close()
    sel.close()
    assert world.wait_until(lambda: sum(t.closed for t in world.sessions) == n, 20)


BLACKHOLE_IN_NAMESPACE = textwrap.dedent(
    """
    import socket, subprocess, sys
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with open("/proc/sys/net/ipv4/tcp_abort_on_overflow", "w") as f:
        f.write("1")
    from mailfakes import World
    with World({"hosts": {"mx.contoso.test": {"kind": "blackhole"}}}) as w:
        for _ in range(3):
            s = socket.socket()
            s.settimeout(0.3)
            try:
                s.connect((w.address_of("mx.contoso.test"), w.port))
                print("connected")
            except TimeoutError:
                print("timeout")
            except ConnectionRefusedError:
                print("refused")
            s.close()
    """
)


def test_blackhole_times_out_even_with_tcp_abort_on_overflow(tmp_path):
    # The setting is per network namespace: set it in one of our own.
    require({"ip": "iproute2", "unshare": "util-linux"}, root="writing a sysctl in a namespace needs root")
    r = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", BLACKHOLE_IN_NAMESPACE],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=os.getcwd(),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["timeout", "timeout", "timeout"]


def test_garbage_on_the_socket_raises_nothing_inside_the_fakes(make_world):
    rnd = random.Random(7)  # seeded: the same damage every run

    def noise(n: int) -> bytes:
        return bytes(rnd.randrange(256) for _ in range(n))

    payloads = [noise(rnd.randrange(1, 3000)) for _ in range(30)]
    payloads += [b"EHLO x\r\nSTARTTLS\r\n" + noise(500) for _ in range(10)]  # no TLS after STARTTLS
    payloads += [
        b"EHLO x\r\nSTARTTLS\r\n\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00",  # a ClientHello cut short
        b"EHLO x\r\nSTARTTLS\r\n\x16\x03\x01\xff\xff" + b"A" * 70000,  # a record that never ends
        b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@contoso.test>\r\nDATA\r\n" + noise(5000),
        b"A" * 100000 + b"\r\n",
        b"EHLO " + "é".encode() * 100 + b"\r\n",
        b"\x00\xff\r\n" * 50,
    ]
    broken = make_world({"hosts": {H: {"tls": "starttls_broken"}}})
    plain = make_world({"hosts": {H: {}}})
    for target in (broken, plain):
        for p in payloads:
            s = socket.create_connection((target.address_of(H), target.port), timeout=3)
            try:
                s.recv(1000)
                s.sendall(p)
                s.shutdown(socket.SHUT_WR)  # then the client's EOF: the fake closes too
                while s.recv(65536):
                    pass
            except OSError:  # the fake may reset or time out a client that sends garbage
                pass
            s.close()
        assert target.wait_until(lambda t=target: all(s.closed for s in t.sessions), 10)
        assert target.events.errors() == []


def test_a_client_that_still_accepts_tls_1_1_gets_a_session_from_the_legacy_server(make_world):
    # As from a real server of that age (an RSA key, AES-SHA suites): no SHA-1
    # signature is needed, so OpenSSL 3 at its default security level goes ahead.
    world, ip, port = one_host(make_world, tls="starttls_legacy")
    ctx = client_context(str(world.ca_file))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("DEFAULT")  # OpenSSL's defaults (Python's own keep forward-secret suites only)
    c = RawSMTP.connect(ip, port)
    c.reply()
    c.cmd("EHLO client.test")
    assert c.cmd("STARTTLS").code == 220
    tls = c.starttls(ctx, H)
    assert tls.version() == "TLSv1.1"
    assert c.cmd("EHLO client.test").code == 250
    assert c.cmd("QUIT").code == 221
