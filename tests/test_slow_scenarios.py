"""The slow-* scenarios grade the wait, not just the code: a client must have waited where the
server holds back (a delayed greeting, a stalled DATA, a late reply to the final dot) and left
from there. Raw clients that say "timed out" without having waited are caught by the witness; a
raw client that waits its timeout out passes. Each client runs three times on one world."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from mailfakes import World, catalogue
from mailfakes.witness import observe

H = "mail.contoso.test"
REPEAT = 3
Client = Callable[[World, float], None]


def _connect(w: World, timeout: float) -> socket.socket:
    return socket.create_connection((w.address_of(H), w.port), timeout=timeout)


def _reply(f: object) -> bytes:
    while (line := f.readline())[3:4] == b"-":  # type: ignore[attr-defined]
        pass
    return line


def _until_data(s: socket.socket) -> object:
    f = s.makefile("rb")
    assert _reply(f).startswith(b"220")
    for c in (b"EHLO client.fabrikam.test", b"MAIL FROM:<a@fabrikam.test>", b"RCPT TO:<user@contoso.test>"):
        s.sendall(c + b"\r\n")
        assert _reply(f).startswith(b"250")
    s.sendall(b"DATA\r\n")
    assert _reply(f).startswith(b"354")
    return f


def leaves_at_once(w: World, timeout: float) -> None:
    """Connects and gives up before any wait began (a timeout set near zero, or a bug)."""
    _connect(w, timeout).close()


def waits_for_the_greeting(w: World, timeout: float) -> None:
    with _connect(w, timeout) as s, pytest.raises(TimeoutError):
        s.recv(100)


def quits_before_data(w: World, timeout: float) -> None:
    """Stops after EHLO: it never sent content, so it cannot have met a stall or a late dot."""
    with _connect(w, timeout) as s:
        s.settimeout(5 * timeout)  # the greeting is not held in these worlds
        f = s.makefile("rb")
        assert _reply(f).startswith(b"220")
        s.sendall(b"EHLO client.fabrikam.test\r\n")
        assert _reply(f).startswith(b"250")


def sends_the_message_and_waits(w: World, timeout: float) -> None:
    with _connect(w, 5 * timeout) as s:
        f = _until_data(s)
        s.settimeout(timeout)
        s.sendall(b"Subject: x\r\n\r\n" + b"A line of body text.\r\n" * 20 + b".\r\n")
        with pytest.raises(TimeoutError):
            f.readline()  # type: ignore[attr-defined]


CASES = [
    ("slow-greeting-timeout", leaves_at_once, False),
    ("slow-greeting-timeout", waits_for_the_greeting, True),
    ("slow-stall-mid-data", quits_before_data, False),
    ("slow-stall-mid-data", sends_the_message_and_waits, True),
    ("slow-final-dot-late", quits_before_data, False),
    ("slow-final-dot-late", sends_the_message_and_waits, True),
]


@pytest.mark.parametrize(("sid", "client", "right"), CASES, ids=[f"{c[0]}-{c[1].__name__}" for c in CASES])
def test_the_witness_asks_a_timeout_verdict_for_the_wait(sid: str, client: Client, right: bool) -> None:
    s = catalogue.get(sid)
    assert s.target.timeout is not None
    for _ in range(REPEAT):
        with World(s.world) as w:
            client(w, s.target.timeout)
            testimony = observe(s, w, settle=3)
        assert testimony.ok is right, testimony.reason() or testimony.lines()
        if not right:
            assert "waited" in testimony.reason(), testimony.reason()


@pytest.mark.parametrize("mail_scenario", ["slow-greeting-timeout"], indirect=True)
def test_the_plugin_gives_the_reference_connector_the_scenarios_timeout(mail_scenario) -> None:
    assert mail_scenario.timeout == 1.0
    report = mail_scenario.deliver(timeout=30)  # a slow scenario's own timeout wins
    assert "in 1 s" in report.failure.message
    mail_scenario.assert_reported(report)
