"""Capabilities a client must cope with (issue 12, point 3): a host without an extension, on the wire.

Each behaviour is proven from the client's side with a raw socket, three
sessions each, counting what arrives; the scenarios of the catalogue that
use them are graded in tests/test_conformance*.py and here.
"""

from __future__ import annotations

import socket

import pytest
from probe import RawSMTP

H = "mail.contoso.test"
MAIL = "MAIL FROM:<alerts@fabrikam.test>"
RCPT = "RCPT TO:<user@contoso.test>"
OUT_OF_STEP = "554 5.5.0 Error: SMTP protocol synchronization"


@pytest.fixture(scope="module")
def lockstep(request):
    """One world: a host without PIPELINING (and without TLS, to talk plainly)."""
    from mailfakes import World

    w = World({"hosts": {H: {"tls": "none", "extensions_off": ["PIPELINING"]}}}).start()
    request.addfinalizer(w.stop)
    return w


def _session(w) -> RawSMTP:
    c = RawSMTP.connect(w.address_of(H), w.port)
    assert c.reply().code == 220
    ehlo = c.cmd("EHLO client.test")
    assert ehlo.code == 250 and not any("PIPELINING" in ln for ln in ehlo.lines)
    return c


def test_without_pipelining_a_pipelined_group_gets_554_and_the_connection_closes(lockstep):
    for _ in range(3):
        c = _session(lockstep)
        c.sock.sendall(f"{MAIL}\r\n{RCPT}\r\nDATA\r\n".encode())
        lines, how = c.replies_until_closed()
        assert lines == [OUT_OF_STEP] and how == "fin"
    assert not lockstep.messages
    refused = [t for t in lockstep.sessions if t.out_of_step is not None]
    assert len(refused) == 3 and all(t.out_of_step.startswith("RCPT TO:") for t in refused)


def test_without_pipelining_content_sent_before_the_354_is_refused(lockstep):
    for _ in range(3):
        c = _session(lockstep)
        assert c.cmd(MAIL).code == 250 and c.cmd(RCPT).code == 250
        c.sock.sendall(b"DATA\r\nSubject: early\r\n\r\nhi\r\n.\r\n")
        lines, how = c.replies_until_closed()
        assert lines == [OUT_OF_STEP] and how == "fin"
    assert not lockstep.messages


def test_without_pipelining_quit_right_after_the_final_dot_is_refused_but_the_dot_was_read(make_world):
    w = make_world({"hosts": {H: {"tls": "none", "extensions_off": ["PIPELINING"]}}})
    for _ in range(3):
        c = _session(w)
        assert c.cmd(MAIL).code == 250 and c.cmd(RCPT).code == 250 and c.cmd("DATA").code == 354
        c.sock.sendall(b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
        lines, how = c.replies_until_closed()
        assert lines == [OUT_OF_STEP] and how == "fin"
    # The final dot came before the early QUIT: the message was read, but never answered with 250.
    assert w.wait_until(lambda: len(w.sessions) == 3 and all(t.closed for t in w.sessions), 3)
    assert not [m for m in w.messages if m.replied]


def test_without_pipelining_a_client_in_step_delivers_every_time(lockstep):
    before = len([m for m in lockstep.messages if m.replied])
    for _ in range(3):
        c = _session(lockstep)
        assert c.cmd(MAIL).code == 250 and c.cmd(RCPT).code == 250 and c.cmd("DATA").code == 354
        c.sock.sendall(b"Subject: x\r\n\r\nhi\r\n.\r\n")
        assert c.reply().code == 250
        assert c.cmd("QUIT").code == 221
    assert lockstep.wait_until(lambda: len([m for m in lockstep.messages if m.replied]) == before + 3, 3)


def test_with_pipelining_offered_the_same_group_is_answered_in_order(make_world):
    w = make_world({"hosts": {H: {"tls": "none"}}})
    for _ in range(3):
        c = RawSMTP.connect(w.address_of(H), w.port)
        c.reply()
        assert any("PIPELINING" in ln for ln in c.cmd("EHLO client.test").lines)
        c.sock.sendall(f"{MAIL}\r\n{RCPT}\r\nDATA\r\n".encode())
        assert [c.reply().code for _ in range(3)] == [250, 250, 354]
        c.sock.close()
    assert all(t.out_of_step is None for t in w.sessions)


def test_garbage_pipelined_to_a_lockstep_host_is_refused_the_same_way(lockstep):
    for _ in range(3):
        c = _session(lockstep)
        c.sock.sendall(b"\xff\xfe garbage\r\n\x00\x01\r\n")
        lines, how = c.replies_until_closed()
        assert lines == [OUT_OF_STEP] and how == "fin"
    with socket.create_connection((lockstep.address_of(H), lockstep.port), timeout=5) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"220")  # the host is still serving
    assert not lockstep.events.errors()
