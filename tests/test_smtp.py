"""The fake SMTP host, seen by a raw client on loopback."""

from __future__ import annotations

import socket
import ssl

import pytest
from probe import Closed, RawSMTP, client_context

H = "mail.contoso.test"


def one_host(make_world, **plan):
    world = make_world({"hosts": {H: plan}})
    return world, world.address_of(H), world.port


def greet_ehlo(world, **plan) -> RawSMTP:
    c = RawSMTP.connect(world.address_of(H), world.port)
    assert c.reply().code == 220
    assert c.cmd("EHLO client.test").code == 250
    return c


def tls_session(world) -> RawSMTP:
    c = greet_ehlo(world)
    assert c.cmd("STARTTLS").code == 220
    c.starttls(client_context(str(world.ca_file)), H)
    assert c.cmd("EHLO client.test").code == 250
    return c


def send_mail(c: RawSMTP, body: str = "Subject: test\r\n\r\nhello\r\n") -> None:
    assert c.cmd("MAIL FROM:<alerts@fabrikam.test>").code == 250
    assert c.cmd("RCPT TO:<user@contoso.test>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(body + ".")


def ended(world, n: int = 1) -> None:
    assert world.wait_until(lambda: len(world.sessions) >= n and all(s.ended_by for s in world.sessions), 3)


def test_default_host_accepts_and_keeps_the_message_with_its_envelope(make_world):
    world, _, _ = one_host(make_world)
    c = tls_session(world)
    send_mail(c)
    final = c.reply()
    assert final.code == 250 and " 2.0.0 " in final.lines[0]
    assert c.cmd("QUIT").code == 221
    c.close()
    ended(world)
    [msg] = world.messages
    assert msg.mail_from == "alerts@fabrikam.test"
    assert msg.rcpt_tos == ("user@contoso.test",)
    assert msg.content == b"Subject: test\r\n\r\nhello\r\n"
    assert msg.tls_version == "TLSv1.3" and msg.replied
    [t] = world.sessions
    assert t.tls_version == "TLSv1.3"
    assert "STARTTLS" in t.client_lines() and "221 2.0.0 Bye" in t.server_lines()
    assert t.client_verified is None  # a good certificate says nothing about the client


def test_421_greeting_is_followed_by_close(make_world):
    world, ip, port = one_host(
        make_world, greeting={"code": 421, "enhanced": "4.3.2", "text": "Service not available"}
    )
    c = RawSMTP.connect(ip, port)
    assert c.reply().lines == ["421 4.3.2 Service not available"]
    assert c.wait_closed() == "fin"
    ended(world)
    assert world.sessions[0].ended_by == "server-close"


def test_greeting_with_any_code_and_text_keeps_the_session_open(make_world):
    _world, ip, port = one_host(make_world, greeting={"code": 220, "text": "*****************"})
    c = RawSMTP.connect(ip, port)
    assert c.reply().lines == ["220 *****************"]
    assert c.cmd("EHLO client.test").code == 250


@pytest.mark.parametrize("command", ["EHLO", "MAIL", "RCPT", "DATA", "DATA_END", "RSET", "QUIT"])
def test_reply_override_for_each_command(make_world, command):
    reply = {"code": 554, "enhanced": "5.7.1", "text": f"no {command} for you"}
    world, ip, port = one_host(make_world, tls="none", replies={command: reply})
    c = RawSMTP.connect(ip, port)
    c.reply()
    script = [
        ("EHLO", "EHLO client.test"),
        ("RSET", "RSET"),
        ("MAIL", "MAIL FROM:<a@fabrikam.test>"),
        ("RCPT", "RCPT TO:<user@contoso.test>"),
        ("DATA", "DATA"),
        ("DATA_END", "Subject: x\r\n\r\nbody\r\n."),
        ("QUIT", "QUIT"),
    ]
    for name, line in script:
        r = c.cmd(line)
        if name == command:
            assert r.lines == [f"554 5.7.1 no {command} for you"]
            break
        assert r.code in (250, 354, 221)
    if command == "DATA_END":
        assert world.messages == []  # a refused message is not kept


def test_reply_override_then_close_with_rst(make_world):
    _world, ip, port = one_host(
        make_world, replies={"EHLO": {"code": 421, "enhanced": "4.7.0", "text": "go away", "close": "rst"}}
    )
    c = RawSMTP.connect(ip, port)
    c.reply()
    c.send("EHLO client.test")
    try:
        assert c.reply().code == 421
        how = c.wait_closed()
    except Closed as closed:  # the reset may overtake the reply
        how = closed.how
    assert how == "rst"


def test_starttls_not_advertised(make_world):
    world, _, _ = one_host(make_world, tls="none")
    c = RawSMTP.connect(world.address_of(H), world.port)
    c.reply()
    ehlo = c.cmd("EHLO client.test")
    assert not any("STARTTLS" in line for line in ehlo.lines)
    # A server without TLS does not know the command (Postfix's answer), unlike a 454 refusal.
    assert c.cmd("STARTTLS").lines == ["502 5.5.1 Error: command not implemented"]


def test_starttls_advertised_but_refused_with_454(make_world):
    world, _, _ = one_host(make_world, tls="starttls_refused")
    c = greet_ehlo(world)
    assert c.cmd("STARTTLS").lines[0].startswith("454 4.7.0")


def test_starttls_handshake_fails_for_lack_of_a_shared_protocol(make_world):
    world, _, _ = one_host(make_world, tls="starttls_broken")
    c = greet_ehlo(world)
    assert c.cmd("STARTTLS").code == 220
    with pytest.raises(ssl.SSLError) as err:
        c.starttls(client_context(str(world.ca_file)), H)
    assert not isinstance(err.value, ssl.SSLCertVerificationError)
    ended(world)
    assert world.sessions[0].tls_error


def test_implicit_tls(make_world):
    world, ip, port = one_host(make_world, tls="implicit")
    raw = socket.create_connection((ip, port), timeout=2)
    c = RawSMTP(client_context(str(world.ca_file)).wrap_socket(raw, server_hostname=H))
    assert c.reply().code == 220
    ehlo = c.cmd("EHLO client.test")
    assert not any("STARTTLS" in line for line in ehlo.lines)
    send_mail(c)
    assert c.reply().code == 250
    assert world.messages[0].tls_version == "TLSv1.3"


def test_implicit_tls_with_an_expired_certificate_is_recorded_as_verified(make_world):
    world, ip, port = one_host(make_world, tls="implicit", cert="expired")
    raw = socket.create_connection((ip, port), timeout=2)
    with pytest.raises(ssl.SSLCertVerificationError) as err:
        client_context(str(world.ca_file)).wrap_socket(raw, server_hostname=H)
    assert err.value.verify_code == 10
    ended(world)
    t = world.sessions[0]
    assert t.client_verified is True and "EXPIRED" in (t.tls_error or "")


def test_a_client_that_does_not_verify_is_recorded(make_world):
    world, _, _ = one_host(make_world, cert="self_signed")
    c = greet_ehlo(world)
    c.cmd("STARTTLS")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c.starttls(ctx, H)
    assert c.cmd("EHLO client.test").code == 250
    assert world.wait_until(lambda: world.sessions[0].tls_version is not None, 2)
    assert world.sessions[0].client_verified is False


CLOSE_POINTS = {
    "before_greeting": [],
    "after_greeting": [],
    "after_ehlo": ["EHLO client.test"],
    "after_mail": ["EHLO client.test", "MAIL FROM:<a@fabrikam.test>"],
    "after_rcpt": ["EHLO client.test", "MAIL FROM:<a@fabrikam.test>", "RCPT TO:<user@contoso.test>"],
}


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("point", list(CLOSE_POINTS))
def test_abrupt_close_at_each_point(make_world, point, how):
    world, ip, port = one_host(make_world, tls="none", close_at={"point": point, "how": how})
    commands = CLOSE_POINTS[point]
    try:
        try:
            c = RawSMTP.connect(ip, port)
        except ConnectionResetError:  # the reset can beat connect() itself
            raise Closed("rst", "connecting") from None
        if point != "before_greeting":
            assert c.reply().code == 220
        for line in commands[:-1]:
            assert c.cmd(line).code == 250
        if commands:
            c.send(commands[-1])
        seen = c.wait_closed()
    except Closed as closed:
        seen = closed.how
    assert seen == how
    ended(world)
    t = world.sessions[0]
    assert t.ended_by == f"server-{how}"
    # The server said nothing after the named point.
    finals = [line for line in t.server_lines() if line[3:4] != "-"]
    replies_after = finals[1:] if point != "before_greeting" else finals
    assert len(replies_after) == max(len(commands) - 1, 0)


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_abrupt_close_after_starttls(make_world, how):
    world, _, _ = one_host(make_world, close_at={"point": "after_starttls", "how": how})
    c = greet_ehlo(world)
    assert c.cmd("STARTTLS").code == 220
    c.starttls(client_context(str(world.ca_file)), H)
    with pytest.raises(Closed):
        c.cmd("EHLO client.test")
    ended(world)
    assert world.sessions[0].ended_by == f"server-{how}"


def test_close_in_the_middle_of_data_after_n_bytes(make_world):
    world, ip, port = one_host(
        make_world, tls="none", close_at={"point": "in_data", "after_bytes": 100, "how": "rst"}
    )
    c = RawSMTP.connect(ip, port)
    c.reply()
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@fabrikam.test>")
    c.cmd("RCPT TO:<user@contoso.test>")
    assert c.cmd("DATA").code == 354
    c.send("Subject: part one\r\n\r\n" + "x" * 20)  # under 100 bytes: still open
    with pytest.raises(Closed) as closed:
        for _ in range(50):
            c.send("y" * 78)
        c.send(".")
        c.reply()
    assert closed.value.how == "rst"
    ended(world)
    assert world.messages == []


def test_close_after_the_final_dot_keeps_the_message_unreplied(make_world):
    world, ip, port = one_host(make_world, tls="none", close_at={"point": "after_final_dot"})
    c = RawSMTP.connect(ip, port)
    c.reply()
    c.cmd("EHLO client.test")
    send_mail(c)
    with pytest.raises(Closed) as closed:
        c.reply()
    assert closed.value.how == "fin"
    ended(world)
    [msg] = world.messages
    assert msg.replied is False  # the client never heard: it will send it again


def noted(world, text: str) -> bool:
    """Wait (bounded) until the fake notes ``text`` in a transcript."""
    return world.wait_until(lambda: any(text in ln.text for t in world.sessions for ln in t.lines), 3)


def nothing_to_read(c: RawSMTP) -> bool:
    c.sock.setblocking(False)
    try:
        return c.sock.recv(1, socket.MSG_PEEK) == b"never"
    except BlockingIOError:
        return True
    finally:
        c.sock.setblocking(True)


def test_delay_holds_back_that_reply_only(make_world):
    world, ip, port = one_host(make_world, tls="none", delays_ms={"EHLO": 600_000})
    slow = RawSMTP.connect(ip, port)
    slow.reply()
    slow.send("EHLO client.test")
    assert noted(world, "fault: reply delayed by 600000 ms")
    assert nothing_to_read(slow)  # the reply waits behind the delay
    # Other replies, and other sessions, are not held back.
    fast = RawSMTP.connect(ip, port)
    assert fast.reply().code == 220
    assert fast.cmd("HELO client.test").code == 250
    assert fast.cmd("NOOP").code == 250
    slow.close()
    fast.close()


def test_a_delayed_reply_comes_after_its_delay(make_world):
    world, ip, port = one_host(make_world, tls="none", delays_ms={"EHLO": 50})
    c = RawSMTP.connect(ip, port)
    c.reply()
    assert c.cmd("EHLO client.test").code == 250
    assert noted(world, "fault: reply delayed by 50 ms")
    assert c.cmd("NOOP").code == 250


def test_delay_before_the_greeting_makes_a_short_client_time_out(make_world):
    _world, ip, port = one_host(make_world, delay_ms=2000)
    c = RawSMTP.connect(ip, port, timeout=0.2)
    with pytest.raises(TimeoutError):
        c.reply()


def test_schedule_fails_the_first_sessions_then_behaves(make_world):
    world, ip, port = one_host(
        make_world, greeting={"code": 421, "enhanced": "4.3.2", "text": "busy"}, schedule={"fail_first": 2}
    )
    codes = []
    for _ in range(3):
        c = RawSMTP.connect(ip, port)
        codes.append(c.reply().code)
        c.close()
    assert codes == [421, 421, 220]
    assert [t.faulted for t in world.sessions] == [True, True, False]
    world.reset()
    c = RawSMTP.connect(ip, port)
    assert c.reply().code == 421  # reset starts the count again


def test_garbage_on_the_socket_gets_an_error_and_the_host_keeps_serving(make_world):
    _world, ip, port = one_host(make_world, tls="none")
    c = RawSMTP.connect(ip, port)
    c.reply()
    c.sock.sendall(b"\x00\xff\xfe garbage \x80\r\n")
    assert c.reply().code == 500
    c.sock.sendall(b"X" * 5000 + b"\r\n")
    assert c.reply().code == 500
    assert c.cmd("EHLO client.test").code == 250
    c2 = RawSMTP.connect(ip, port)
    assert c2.reply().code == 220


def test_transcript_records_both_directions_in_order(make_world):
    world, ip, port = one_host(
        make_world, tls="none", replies={"RCPT": {"code": 550, "enhanced": "5.1.1", "text": "unknown"}}
    )
    c = RawSMTP.connect(ip, port)
    c.reply()
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@fabrikam.test>")
    c.cmd("RCPT TO:<nobody@contoso.test>")
    c.cmd("QUIT")
    ended(world)
    lines = [str(line) for line in world.sessions[0].lines if line.direction != "*"]
    assert lines[0].startswith("S: 220 ")
    assert lines[1] == "C: EHLO client.test"
    assert "C: RCPT TO:<nobody@contoso.test>" in lines
    assert lines[lines.index("C: RCPT TO:<nobody@contoso.test>") + 1] == "S: 550 5.1.1 unknown"
    assert lines[-1] == "S: 221 2.0.0 Bye"


def test_a_stalled_starttls_handshake_times_out(make_world):
    world = make_world({"hosts": {H: {}}}, handshake_timeout=0.3)
    c = greet_ehlo(world)
    assert c.cmd("STARTTLS").code == 220
    # Never send a ClientHello: the server gives up after its handshake timeout.
    assert c.wait_closed() in ("fin", "rst")
    ended(world)
    assert world.sessions[0].ended_by == "timeout"


def test_a_421_greeting_over_implicit_tls_closes_promptly(make_world):
    world, ip, port = one_host(make_world, tls="implicit", greeting={"code": 421, "text": "busy"})
    raw = socket.create_connection((ip, port), timeout=2)
    tcp = raw.dup()  # to watch the TCP connection under the TLS one
    c = RawSMTP(client_context(str(world.ca_file)).wrap_socket(raw, server_hostname=H))
    assert c.reply().code == 421
    c.wait_closed()  # the server's close_notify; the client does not answer it
    tcp.settimeout(2)  # far below the 30 s a TLS close would wait for the client's close_notify
    assert tcp.recv(1) == b""  # the FIN follows without waiting for the client's close_notify
    tcp.close()


def test_lines_pipelined_after_the_final_dot_are_in_the_transcript(make_world):
    world, ip, port = one_host(make_world, tls="none")
    c = RawSMTP.connect(ip, port)
    c.reply()
    c.cmd("EHLO client.test")
    c.cmd("MAIL FROM:<a@fabrikam.test>")
    c.cmd("RCPT TO:<user@contoso.test>")
    c.cmd("DATA")
    c.sock.sendall(b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert c.reply().code == 250
    assert c.reply().code == 221
    ended(world)
    lines = world.sessions[0].client_lines()
    assert lines[-2:] == ["<message content, 20 bytes>", "QUIT"]


def test_the_delay_for_every_reply_covers_commands_the_fake_does_not_know(make_world):
    world, ip, port = one_host(make_world, tls="none", delays_ms={"*": 600_000, "GREETING": 0})
    c = RawSMTP.connect(ip, port)
    c.reply()
    c.send("FOO bar")
    assert noted(world, "fault: reply delayed by 600000 ms")
    assert nothing_to_read(c)
    c.close()


def test_stop_while_clients_keep_connecting_leaves_nothing_open():
    import gc
    import os
    import threading

    from mailfakes import World

    gc.collect()
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        world = World({"hosts": {H: {"tls": "none"}}}).start()
        ip, port = world.address_of(H), world.port
        socks: list[socket.socket] = []
        for _ in range(40):  # a burst in the accept queue when stop() comes
            socks.append(socket.create_connection((ip, port), timeout=1))
        stopper = threading.Thread(target=world.stop)
        stopper.start()
        stopper.join(10)
        for s in socks:
            s.close()
        assert all(t.ended_by is not None for t in world.sessions)
        assert not world.events.errors()
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= fds  # fewer is fine: earlier tests' garbage went


def test_stop_during_an_implicit_tls_handshake_ends_the_session_cleanly(make_world):
    world, ip, port = one_host(make_world, tls="implicit")
    s = socket.create_connection((ip, port), timeout=2)  # never sends a ClientHello
    assert world.wait_until(lambda: bool(world.sessions) and world.sessions[0].peer != "?", 2)
    world.stop()
    s.close()
    assert world.sessions[0].ended_by == "stop"
