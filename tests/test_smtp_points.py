"""The points of an SMTP session: which reply answers what, as aiosmtpd dispatched it.

A reply's enhanced code, delay and replacement follow the point the reply
answers. These tests pipeline commands in one write, as PIPELINING clients
do, and check each reply against the command it answers; the last ones stop
a world while clients keep connecting and look for server sockets left open.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
import threading

import pytest
from mailfakes import World
from mailfakes import spec as spec_module
from mailfakes.smtp import (
    ANY,
    COMMAND_POINTS,
    CONTENT,
    CUT_POINTS,
    DATA_END,
    GREETING,
    POINTS,
    STARTTLS_AGAIN,
    STARTTLS_REFUSED,
    STARTTLS_UNKNOWN,
    TLS_UP,
    decide,
)
from mailfakes.spec import CloseAt, Reply, SmtpPlan
from probe import RawSMTP, client_context

H = "mail.contoso.test"
MAIL = b"MAIL FROM:<alerts@fabrikam.test>\r\n"
RCPT = b"RCPT TO:<user@contoso.test>\r\n"


def session(world) -> RawSMTP:
    c = RawSMTP.connect(world.address_of(H), world.port)
    assert c.reply().code == 220
    assert c.cmd("EHLO client.test").code == 250
    return c


def firsts(c: RawSMTP, n: int) -> list[str]:
    """The code and enhanced code of the next ``n`` replies (the 354 has none)."""
    return [" ".join(c.reply().lines[0].split(" ")[:2]) for _ in range(n)]


def noted(world, text: str) -> bool:
    return world.wait_until(lambda: any(text in ln.text for t in world.sessions for ln in t.lines), 3)


# -- the point a reply answers comes from the dispatch ---------------------------


def test_pipelined_mail_rcpt_data_get_each_its_own_enhanced_code(make_world):
    world = make_world({"hosts": {H: {"tls": "none"}}})
    c = session(world)
    c.sock.sendall(MAIL + RCPT + b"DATA\r\n")
    assert firsts(c, 3) == ["250 2.1.0", "250 2.1.5", "354 End"]
    c.sock.sendall(b"Subject: x\r\n\r\nhello\r\n.\r\nNOOP\r\nQUIT\r\n")
    assert firsts(c, 3) == ["250 2.0.0", "250 2.0.0", "221 2.0.0"]
    assert world.wait_until(lambda: world.sessions[0].closed, 3)
    [msg] = world.messages
    assert msg.content == b"Subject: x\r\n\r\nhello\r\n"


def test_an_unknown_command_and_an_empty_line_in_a_pipeline_shift_no_later_code(make_world):
    world = make_world({"hosts": {H: {"tls": "none"}}})
    c = session(world)
    c.sock.sendall(MAIL + b"FOO bar\r\n" + RCPT + b"\r\n" + b"NOOP\r\n")
    assert firsts(c, 5) == ["250 2.1.0", "500 5.5.2", "250 2.1.5", "500 5.5.2", "250 2.0.0"]
    assert world.sessions[0].client_lines()[-5:] == [
        "MAIL FROM:<alerts@fabrikam.test>",
        "FOO bar",
        "RCPT TO:<user@contoso.test>",
        "",
        "NOOP",
    ]


def test_a_line_too_long_counts_once_in_the_transcript_and_the_replies(make_world):
    world = make_world({"hosts": {H: {"tls": "none"}}})
    c = session(world)
    c.sock.sendall(b"X" * 5000)  # no end of line yet
    assert noted(world, "(line too long)")
    c.sock.sendall(b"\r\n" + MAIL + RCPT)
    assert firsts(c, 3) == ["500 5.5.2", "250 2.1.0", "250 2.1.5"]
    lines = world.sessions[0].client_lines()
    assert lines[-3].endswith("... (line too long)") and lines[-3].startswith("X")
    assert lines[-2:] == ["MAIL FROM:<alerts@fabrikam.test>", "RCPT TO:<user@contoso.test>"]


def test_commands_pipelined_before_the_tls_handshake_answer_nothing_later(make_world):
    # A client (or an attacker on the path) that sends plaintext after
    # STARTTLS: aiosmtpd forgets it once TLS is up (RFC 3207 4.2), so it
    # gets no reply, and the replies inside TLS still answer their own commands.
    world = make_world({"hosts": {H: {}}})
    c = session(world)
    c.sock.sendall(b"STARTTLS\r\nNOOP\r\nRSET\r\n")
    assert c.reply().code == 220
    c.starttls(client_context(str(world.ca_file)), H)
    assert c.cmd("EHLO client.test").code == 250
    c.sock.sendall(MAIL + RCPT)
    assert firsts(c, 2) == ["250 2.1.0", "250 2.1.5"]
    assert c.cmd("QUIT").lines == ["221 2.0.0 Bye"]
    t = world.sessions[0]
    assert t.client_lines()[:5] == ["EHLO client.test", "STARTTLS", "NOOP", "RSET", "EHLO client.test"]
    assert not world.events.errors()


def test_a_delay_holds_the_reply_of_its_command_inside_a_pipeline(make_world):
    world = make_world({"hosts": {H: {"tls": "none", "delays_ms": {"RCPT": 600_000}}}})
    c = session(world)
    c.sock.sendall(MAIL + RCPT + b"NOOP\r\n")
    assert firsts(c, 1) == ["250 2.1.0"]
    assert noted(world, "fault: reply delayed by 600000 ms")
    c.sock.setblocking(False)
    with pytest.raises(BlockingIOError):  # RCPT's reply, and NOOP's behind it, wait
        c.sock.recv(1)
    c.close()


def test_a_reply_override_answers_its_own_command_inside_a_pipeline(make_world):
    refusal = {"code": 452, "enhanced": "4.5.3", "text": "Too many recipients"}
    world = make_world({"hosts": {H: {"tls": "none", "replies": {"RCPT": refusal}}}})
    c = session(world)
    c.sock.sendall(MAIL + RCPT + b"FOO\r\n" + b"RSET\r\n")
    assert [c.reply().lines[0] for _ in range(4)] == [
        "250 2.1.0 OK",
        "452 4.5.3 Too many recipients",
        '500 5.5.2 Error: command "FOO" not recognized',
        "250 2.0.0 OK",
    ]


def test_the_ehlo_reply_goes_out_in_one_piece(make_world):
    world = make_world({"hosts": {H: {"tls": "none"}}})
    c = RawSMTP.connect(world.address_of(H), world.port)
    c.reply()
    c.sock.sendall(b"EHLO client.test\r\n")
    data = b""
    while not data.endswith(b"250 SMTPUTF8\r\n"):
        chunk = c.sock.recv(65536)
        assert chunk, "closed before the end of the EHLO reply"
        data += chunk
    lines = data.decode().split("\r\n")[:-1]
    assert lines[0] == f"250-{H}" and len(lines) == 6
    assert all(line.startswith("250-") for line in lines[:-1])


# -- one decision, one order ------------------------------------------------------


def test_every_point_a_plan_can_name_is_a_point_of_the_session():
    assert set(CUT_POINTS) == set(spec_module.CLOSE_POINTS)
    assert {p for points in CUT_POINTS.values() for p in points} <= set(POINTS)
    assert set(spec_module.DELAY_KEYS) <= set(POINTS)
    assert set(spec_module.COMMANDS) <= set(POINTS)
    assert set(COMMAND_POINTS) <= set(spec_module.COMMANDS)


def test_a_cut_wins_over_a_reply_at_the_same_point():
    plan = SmtpPlan(replies={"MAIL": Reply(550, "no")}, close_at=CloseAt("after_mail", "rst"))
    act = decide(plan, "MAIL")
    assert (act.cut, act.reply) == ("rst", None)
    assert decide(plan, "RCPT").cut is None


def test_a_reply_override_wins_over_the_tls_modes_answer():
    override = Reply(530, "not now", "5.7.0")
    for tls, state in (("none", "off"), ("starttls_refused", "offered"), ("starttls", "active")):
        act = decide(SmtpPlan(tls=tls, replies={"STARTTLS": override}), "STARTTLS", tls=state)
        assert act.reply == override and act.alone


def test_the_tls_modes_answer_to_starttls_follows_the_session_state():
    assert decide(SmtpPlan(tls="none"), "STARTTLS", tls="off").reply == STARTTLS_UNKNOWN
    assert decide(SmtpPlan(tls="starttls_refused"), "STARTTLS").reply == STARTTLS_REFUSED
    assert decide(SmtpPlan(), "STARTTLS", tls="active").reply == STARTTLS_AGAIN
    assert decide(SmtpPlan(), "STARTTLS").reply is None  # aiosmtpd starts TLS
    assert decide(SmtpPlan(tls="none"), "STARTTLS", tls="off", bare=False).reply is None  # its 501


def test_a_delay_goes_with_whatever_reply_is_sent_at_its_point():
    plan = SmtpPlan(delays_ms={"*": 30, "STARTTLS": 10, "DATA_END": 20}, tls="starttls_refused")
    assert decide(plan, "STARTTLS").delay == 0.01 and decide(plan, "STARTTLS").reply == STARTTLS_REFUSED
    assert decide(plan, DATA_END).delay == 0.02
    assert decide(plan, ANY).delay == decide(plan, "NOOP").delay == 0.03
    assert decide(plan, CONTENT).delay == decide(plan, TLS_UP).delay == 0  # nothing is answered there


def test_a_refusing_override_leaves_aiosmtpd_out_and_an_accepting_one_keeps_its_state():
    plan = SmtpPlan(replies={"MAIL": Reply(550, "no"), "RCPT": Reply(250, "fine"), "DATA": Reply(354, "go")})
    assert decide(plan, "MAIL").alone
    assert not decide(plan, "RCPT").alone and not decide(plan, "DATA").alone
    assert decide(plan, "MAIL").note == "fault: reply to MAIL replaced"


def test_a_421_greeting_closes_after_it_is_sent():
    assert decide(SmtpPlan(greeting=Reply(421, "busy", "4.3.2")), GREETING).close == "fin"
    assert decide(SmtpPlan(greeting=Reply(220, "hi")), GREETING).close is None
    assert decide(SmtpPlan(greeting=Reply(554, "no", close="rst")), GREETING).close == "rst"


def test_a_cut_in_the_content_waits_for_its_bytes_or_the_final_dot():
    plan = SmtpPlan(close_at=CloseAt("in_data", "fin", after_bytes=100))
    assert decide(plan, CONTENT, content=99).cut is None
    assert decide(plan, CONTENT, content=100).cut == "fin"
    assert decide(plan, CONTENT, content=10, complete=True).cut == "fin"
    assert decide(SmtpPlan(close_at=CloseAt("in_data")), CONTENT, content=0).cut is None
    assert decide(SmtpPlan(close_at=CloseAt("in_data")), CONTENT, content=1).cut == "fin"


# -- stopping --------------------------------------------------------------------


MAX_CLIENTS = 300  # client sockets open at once: far below the descriptor limit


def _server_sockets(ip: str, port: int) -> int:
    """This process's TCP sockets whose local end is (ip, port): a listener or a served connection."""
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own fd)
            continue
        if target.startswith("socket:["):
            ours.add(target[8:-1])
    wanted = f"{struct.unpack('<I', socket.inet_aton(ip))[0]:08X}:{port:04X}"
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for row in table:
            fields = row.split()
            if fields[1] == wanted and fields[9] in ours:
                count += 1
    return count


def _keep_connecting(
    ip: str, port: int, done: threading.Event, clients: collections.deque[socket.socket]
) -> None:
    while not done.is_set():
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((ip, port))
        clients.append(s)
        if len(clients) > MAX_CLIENTS:  # keep connecting, with a bounded number open
            clients.popleft().close()


# Each session closes after its greeting: each leaves a drainer reading its last bytes.
CLOSES_WITH_FIN = {"greeting": {"code": 421, "enhanced": "4.3.2", "text": "busy"}}


@pytest.mark.parametrize("plan", [{"tls": "none"}, {}, {"tls": "implicit"}, CLOSES_WITH_FIN])
def test_a_world_stopped_while_clients_keep_connecting_leaves_no_server_socket_open(plan):
    for _ in range(5):
        world = World({"hosts": {H: plan}}).start()
        ip, port = world.address_of(H), world.port
        assert _server_sockets(ip, port) == 1  # the listener: the count sees our sockets
        done = threading.Event()
        clients: collections.deque[socket.socket] = collections.deque()

        connector = threading.Thread(target=_keep_connecting, args=(ip, port, done, clients))
        connector.start()
        try:
            assert world.wait_until(lambda w=world: len(w.sessions) >= 20, 5)
            world.stop()  # the connector is still at it
            assert _server_sockets(ip, port) == 0
        finally:
            done.set()
            connector.join(10)
            for s in clients:
                s.close()
        assert all(t.ended_by is not None for t in world.sessions)
        assert not world.events.errors()


# A world out of file descriptors: it fills every one it may have, then frees
# them once its listener has said it cannot accept.
OUT_OF_DESCRIPTORS = textwrap.dedent(
    """
    import json, os, sys
    from mailfakes import World
    w = World({"hosts": {"mx.contoso.test": {"tls": "none"}}}).start()
    print(json.dumps([w.address_of("mx.contoso.test"), w.port]), flush=True)
    fill = []
    try:
        while True:
            fill.append(os.dup(0))
    except OSError:
        pass
    print("full", flush=True)
    said = w.wait_until(lambda: any("cannot accept" in e.text for e in w.events.errors()), 10)
    for fd in fill:
        os.close(fd)
    greeted = w.wait_until(lambda: any(t.server_lines() for t in w.sessions), 10)
    print(json.dumps({"said": said, "greeted": greeted, "errors": [e.text for e in w.events.errors()]}), flush=True)
    sys.stdin.readline()
    w.stop()
    """
)


def test_a_host_out_of_descriptors_says_so_and_accepts_again_once_it_has_some():
    server = subprocess.Popen(
        [sys.executable, "-c", OUT_OF_DESCRIPTORS],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        ip, port = json.loads(server.stdout.readline())
        assert server.stdout.readline() == "full\n"
        # The kernel completes the handshake; the world cannot accept it yet.
        c = RawSMTP.connect(ip, port, timeout=10)
        report = json.loads(server.stdout.readline())
        assert report["said"] and report["greeted"]
        assert all("cannot accept a connection" in e and "Too many open files" in e for e in report["errors"])
        assert c.reply().code == 220  # accepted once the listener tried again
        c.close()
        server.stdin.write("\n")
        server.stdin.flush()
        assert server.wait(10) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


# -- replies as a real server writes them (found in review) ---------------------


def test_a_reply_written_without_text_keeps_a_space_before_its_enhanced_code(make_world):
    world = make_world({"hosts": {H: {"tls": "none", "replies": {"MAIL": {"code": 550}}}}})
    c = RawSMTP.connect(world.address_of(H), world.port)
    c.reply()
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<a@fabrikam.test>").lines == ["550 5.1.0"]


def test_after_a_refusing_greeting_every_command_but_quit_gets_503(make_world):
    world = make_world(
        {"hosts": {H: {"tls": "none", "greeting": {"code": 554, "enhanced": "5.7.1", "text": "go away"}}}}
    )
    c = RawSMTP.connect(world.address_of(H), world.port)
    assert c.reply().lines == ["554 5.7.1 go away"]
    codes = [
        c.cmd(line).code
        for line in ("EHLO client.test", "MAIL FROM:<a@fabrikam.test>", "RCPT TO:<u@contoso.test>", "DATA")
    ]
    assert codes == [503, 503, 503, 503]
    assert c.cmd("QUIT").code == 221
    assert world.wait_until(lambda: world.sessions and world.sessions[0].closed, 3)
    assert world.messages == []


def test_a_250_to_ehlo_with_its_own_text_keeps_the_extensions(make_world):
    world = make_world({"hosts": {H: {"replies": {"EHLO": {"code": 250, "text": "hello there"}}}}})
    c = RawSMTP.connect(world.address_of(H), world.port)
    c.reply()
    lines = c.cmd("EHLO client.test").lines
    assert lines[0] == "250-hello there"
    assert lines[-1] == "250 STARTTLS"
    assert "250-PIPELINING" in lines


# -- sessions set up without aiosmtpd's introspection ------------------------------


def test_auth_and_help_answer_through_the_methods_found_once_per_class(make_world):
    # HELP reads the smtp_* methods and AUTH the auth_* ones that SMTP.__init__
    # would find for each connection; the fake finds them once per class.
    world = make_world({"hosts": {H: {}}})
    for _ in range(2):  # the class's first session and a later one
        c = session(world)
        assert c.cmd("HELP").lines == [
            "250 2.0.0 Supported commands: AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET STARTTLS VRFY"
        ]
        assert c.cmd("HELP MAIL").lines == ["250 2.0.0 Syntax: MAIL FROM: <address> [SP <mail-parameters>]"]
        # A host without an auth table answers AUTH as Postfix without SASL does (mailfakes.auth).
        assert c.cmd("AUTH PLAIN").lines == ["503 5.5.1 Error: authentication not enabled"]
        assert c.cmd("STARTTLS").code == 220
        c.starttls(client_context(str(world.ca_file)), H)
        assert c.cmd("EHLO client.test").code == 250
        assert c.cmd("AUTH PLAIN AHVzZXIAcGFzc3dvcmQ=").lines == [
            "503 5.5.1 Error: authentication not enabled"
        ]
        assert c.cmd("QUIT").code == 221
    assert not world.events.errors()


def test_a_session_has_the_attributes_aiosmtpd_would_give_it():
    # Against another aiosmtpd version whose SMTP.__init__ sets other things,
    # this fails (the fake then lets aiosmtpd set every session up, slower).
    import asyncio

    from aiosmtpd.smtp import SMTP
    from mailfakes import smtp
    from mailfakes.spec import parse_world

    async def both() -> tuple[dict, dict, object, object]:
        world = World(parse_world({"hosts": {H: {}}}))
        await world.astart()
        try:
            host = world._servers[0]
            t = host.recorder.open_session(H, "127.0.0.1", "?", True)
            ctx = host._context(host.spec.smtp)
            ours = smtp.FaultySMTP(host, host.spec.smtp, t, tls_context=ctx)
            handler = smtp._Handler(ours)
            theirs = SMTP(
                handler,
                hostname=H,
                ident=smtp.IDENT,
                tls_context=ctx,
                require_starttls=False,
                timeout=host.idle_timeout,
                data_size_limit=smtp.DATA_SIZE_LIMIT,
                enable_SMTPUTF8=True,
                loop=asyncio.get_running_loop(),
            )
            return vars(ours), vars(theirs), ours, theirs
        finally:
            await world.astop()

    ours, theirs, o, t = asyncio.run(both())
    assert smtp.aiosmtpd_setup_matches()
    assert set(theirs) <= set(ours)
    for key, value in theirs.items():
        mine = ours[key]
        assert type(mine) is type(value), key
        if key == "_smtp_methods":
            assert list(mine) == list(value)
            assert all(
                m.__self__ is o and m.__func__ is getattr(type(o), f"smtp_{k}") for k, m in mine.items()
            )
        elif key == "_auth_methods":
            assert list(mine) == list(value) == ["LOGIN", "PLAIN"]
            assert all(m.method.__self__ is o and m.is_builtin for m in mine.values())
            assert [m.method.__func__ for m in mine.values()] == [m.method.__func__ for m in value.values()]
        elif key == "_handle_hooks":
            assert sorted(mine) == sorted(value) == ["DATA", "MAIL", "RCPT", "STARTTLS", "exception"]
        elif key in ("_client_connected_cb",):
            assert mine.__self__ is o and value.__self__ is t
        elif isinstance(value, (str, int, float, type(None))) or key in ("tls_context", "loop", "_loop"):
            assert mine == value, key


def test_a_setup_that_differs_from_aiosmtpds_lets_aiosmtpd_set_sessions_up(make_world, monkeypatch):
    # As with an aiosmtpd whose SMTP.__init__ sets one more attribute than the fake knows.
    from mailfakes import smtp

    apply = smtp._Setup.apply

    def apply_less(self, session, *args, **kw):
        apply(self, session, *args, **kw)
        del session.__dict__["_enforce_call_limit"]

    monkeypatch.setattr(smtp, "_SETUPS", {})
    monkeypatch.setattr(smtp._Setup, "apply", apply_less)
    world = make_world({"hosts": {H: {"tls": "none"}}})
    for _ in range(2):
        c = session(world)
        c.sock.sendall(MAIL + RCPT + b"DATA\r\n")
        assert firsts(c, 3) == ["250 2.1.0", "250 2.1.5", "354 End"]
        c.sock.sendall(b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        assert firsts(c, 2) == ["250 2.0.0", "221 2.0.0"]
    assert not smtp.aiosmtpd_setup_matches()
    assert len(world.messages) == 2
    assert not world.events.errors()


# -- what a server that did not offer an extension answers to its use (issue 12, point 3) --------


def _replies(make_world, extensions_off, lines, *, helo=False):
    """A raw client: EHLO (or HELO), then each line with a RSET after it; the server's replies."""
    import socket as _socket

    w = make_world({"hosts": {"mail.contoso.test": {"tls": "none", "extensions_off": extensions_off}}})
    with _socket.create_connection((w.address_of("mail.contoso.test"), w.port), timeout=5) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"HELO c.test\r\n" if helo else b"EHLO c.test\r\n")
        while f.readline()[3:4] != b" ":
            pass
        out = []
        for line in lines:
            s.sendall(line.encode() + b"\r\nRSET\r\n")
            out.append(f.readline().decode().rstrip("\r\n"))
            f.readline()
    return out


UTF8_FROM = "MAIL FROM:<jos\u00e9@fabrikam.test>"


def test_without_smtputf8_a_utf8_address_gets_553_and_the_parameter_555(make_world):
    off = _replies(
        make_world, ["SMTPUTF8"], [UTF8_FROM, UTF8_FROM + " SMTPUTF8", "MAIL FROM:<a@fabrikam.test>"]
    )
    assert off == [
        "553 5.6.7 Non-ASCII address not permitted: SMTPUTF8 is not offered",
        "555 5.5.4 Unsupported option: SMTPUTF8",
        "250 2.1.0 OK",
    ]
    # Offered, a UTF-8 address must be declared with the SMTPUTF8 parameter (RFC 6531 3.4).
    on = _replies(make_world, [], [UTF8_FROM, UTF8_FROM + " SMTPUTF8"])
    assert on == ["553 5.6.7 Must declare SMTPUTF8 to send a non-ASCII address", "250 2.1.0 OK"]


def test_body_and_size_parameters_need_their_extensions(make_world):
    lines = ["MAIL FROM:<a@fabrikam.test> BODY=8BITMIME", "MAIL FROM:<a@fabrikam.test> SIZE=1000"]
    assert _replies(make_world, ["8BITMIME", "SIZE"], lines) == [
        "555 5.5.4 Unsupported option: BODY",
        "555 5.5.4 Unsupported option: SIZE",
    ]
    assert _replies(make_world, [], lines) == ["250 2.1.0 OK", "250 2.1.0 OK"]
    # After HELO nothing was offered, and replies carry no enhanced code.
    assert _replies(make_world, [], lines[:1], helo=True) == ["555 Unsupported option: BODY"]


def test_a_recipient_limit_refuses_the_rest_with_452_and_keeps_the_message_for_the_first(make_world):
    import smtplib

    w = make_world({"hosts": {"mail.contoso.test": {"tls": "none", "max_recipients": 2}}})
    rcpts = ["a@contoso.test", "b@contoso.test", "c@contoso.test"]
    with smtplib.SMTP(w.address_of("mail.contoso.test"), w.port, timeout=5) as smtp:
        refused = smtp.sendmail("s@fabrikam.test", rcpts, b"Subject: x\r\n\r\nhello\r\n")
        assert refused == {"c@contoso.test": (452, b"4.5.3 Too many recipients")}
        # The limit counts per transaction: the one refused goes in the next.
        assert smtp.sendmail("s@fabrikam.test", ["c@contoso.test"], b"Subject: y\r\n\r\nagain\r\n") == {}
    assert w.wait_until(lambda: len(w.messages) == 2, 5)
    assert [list(m.rcpt_tos) for m in w.messages] == [rcpts[:2], rcpts[2:]]


def test_a_recipient_limit_where_no_rcpt_is_answered_is_refused():
    from mailfakes.spec import SpecError, parse_world

    with pytest.raises(
        SpecError, match=r"max_recipients: 2 is not valid; expected no recipient limit beside replies\.RCPT"
    ):
        parse_world({"hosts": {"m.test": {"max_recipients": 2, "replies": {"RCPT": {"code": 550}}}}})
    with pytest.raises(SpecError, match=r"max_recipients: 0 is not valid; expected an integer from 1"):
        parse_world({"hosts": {"m.test": {"max_recipients": 0}}})


def test_a_size_limit_is_advertised_and_refuses_both_a_declared_and_a_grown_message(make_world):
    import socket as _socket

    w = make_world({"hosts": {"mail.contoso.test": {"tls": "none", "max_size": 1000}}})
    with _socket.create_connection((w.address_of("mail.contoso.test"), w.port), timeout=5) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO c.test\r\n")
        ehlo = []
        while not ehlo or ehlo[-1][3:4] != b" ":
            ehlo.append(f.readline())
        assert b"250-SIZE 1000\r\n" in ehlo
        s.sendall(b"MAIL FROM:<a@fabrikam.test> SIZE=5000\r\n")
        assert f.readline().startswith(b"552 5.3.4 ")
        s.sendall(b"MAIL FROM:<a@fabrikam.test> SIZE=500\r\nRCPT TO:<u@contoso.test>\r\nDATA\r\n")
        assert [f.readline()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        s.sendall(b"Subject: x\r\n\r\n" + (b"y" * 98 + b"\r\n") * 30 + b".\r\n")  # 3 kB: past the limit
        assert f.readline().startswith(b"552 5.3.4 ")
        s.sendall(b"NOOP\r\n")
        assert f.readline().startswith(b"250")  # the session goes on
    assert w.messages == []  # nothing kept


def test_a_size_limit_needs_the_size_extension():
    from mailfakes.spec import SpecError, parse_world

    with pytest.raises(
        SpecError, match=r"max_size: 1000 is not valid; expected no max_size with SIZE in extensions_off"
    ):
        parse_world({"hosts": {"m.test": {"max_size": 1000, "extensions_off": ["SIZE"]}}})


def test_the_reference_connector_falls_back_to_helo_when_ehlo_is_refused(make_world):
    from mailfakes.client import deliver

    w = make_world(
        {
            "hosts": {
                "mail.contoso.test": {
                    "tls": "none",
                    "replies": {"EHLO": {"code": 502, "text": "Command not implemented"}},
                }
            }
        }
    )

    def send(require_tls: bool):
        return deliver(
            dns_host=w.dns_host,
            dns_port=w.dns_port,
            port=w.port,
            smart_host="mail.contoso.test",
            mail_domain="contoso.test",
            require_tls=require_tls,
            rcpt_to=["u@contoso.test"],
        )

    report = send(require_tls=False)
    assert report.delivered, report.dialogue
    [session] = w.sessions
    said = session.client_lines()
    assert said[:2] == ["EHLO mailfakes-client.test", "HELO mailfakes-client.test"]
    # Without EHLO there is no STARTTLS: a connector that requires TLS reports it cannot (4.4.317).
    assert send(require_tls=True).code == "4.4.317"


def test_a_utf8_recipient_needs_a_mail_that_declared_smtputf8(make_world):
    import socket as _socket

    w = make_world({"hosts": {"mail.contoso.test": {"tls": "none"}}})
    with _socket.create_connection((w.address_of("mail.contoso.test"), w.port), timeout=5) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO c.test\r\n")
        while f.readline()[3:4] != b" ":
            pass
        said = []
        for mail in ("MAIL FROM:<a@fabrikam.test>", "MAIL FROM:<a@fabrikam.test> SMTPUTF8"):
            s.sendall(f"{mail}\r\nRCPT TO:<\u00fc@contoso.test>\r\nRSET\r\n".encode())
            said.append([f.readline().decode().rstrip("\r\n") for _ in range(3)][1])
    assert said == ["553 5.6.7 Must declare SMTPUTF8 to send a non-ASCII address", "250 2.1.5 OK"]
