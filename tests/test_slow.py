"""Slow servers on the wire, seen by a raw client: a greeting held back, replies that trickle,
a server that stops reading in the middle of DATA. Timing is proven by events (no byte
before the client's own timeout, bytes one by one), never by elapsed time."""

from __future__ import annotations

import socket

from mailfakes import World

H = "mail.contoso.test"


def _lines_until_data(s: socket.socket) -> None:
    f = s.makefile("rb")
    assert f.readline().startswith(b"220")
    for c in (
        b"EHLO client.test\r\n",
        b"MAIL FROM:<a@fabrikam.test>\r\n",
        b"RCPT TO:<user@contoso.test>\r\n",
        b"DATA\r\n",
    ):
        s.sendall(c)
        while (line := f.readline())[3:4] == b"-":
            pass
    assert line.startswith(b"354")


def test_held_greeting_sends_no_byte_and_the_client_leaving_is_recorded() -> None:
    with World({"hosts": {H: {"delays_ms": {"GREETING": 600000}}}}) as w:
        for _ in range(3):
            s = socket.create_connection((w.address_of(H), w.port), timeout=0.3)
            try:
                got = s.recv(10)
            except TimeoutError:
                got = None
            s.close()
            assert got is None, "a byte of the held greeting arrived"
        assert w.wait_until(lambda: len(w.sessions) == 3 and all(t.closed for t in w.sessions), 3)
        assert all(t.waited_at == "GREETING" and t.ended_by == "client" for t in w.sessions)


def test_trickled_greeting_arrives_byte_by_byte() -> None:
    with World({"hosts": {H: {"trickle_bps": 200}}}) as w:
        for _ in range(3):
            s = socket.create_connection((w.address_of(H), w.port), timeout=2)
            reads: list[bytes] = []
            while not b"".join(reads).endswith(b"\r\n"):
                reads.append(s.recv(100))
            s.close()
            assert b"".join(reads).startswith(b"220 ")
            assert all(len(r) <= 2 for r in reads), reads  # never a whole line in one read


def test_stall_blocks_the_clients_writes_and_world_stop_leaves_nothing() -> None:
    w = World({"hosts": {H: {"tls": "none", "stall_in_data": {"after_bytes": 100}}}})
    w.start()
    try:
        s = socket.create_connection((w.address_of(H), w.port), timeout=0.5)
        _lines_until_data(s)
        sent, blocked = 0, False
        try:
            while sent < 256 * 2**20:
                sent += s.send(b"x" * 65536)
        except TimeoutError:
            blocked = True
        assert blocked and sent < 256 * 2**20
        assert w.wait_until(lambda: w.sessions and w.sessions[0].content_bytes is not None, 3)
    finally:
        w.stop()
    s.close()
    assert all(t.closed for t in w.sessions)
