"""What a world records: each thing once, bounded, and the same through every reader.

A session's lines and events live in its transcript, a query in the DNS
query log; the event log shows them (``events()``) and tells subscribers
live. These tests drive real worlds over loopback sockets and read every
view of the same record.
"""

from __future__ import annotations

import smtplib
import socket

import dns.message
from mailfakes import Limits
from mailfakes.events import Event

PLAIN = {"hosts": {"mail.contoso.test": {"tls": "none"}}}
STARTTLS = {"hosts": {"mail.contoso.test": {}}}


def dialogue(ip: str, port: int, messages: int = 1) -> list[bytes]:
    """One session: EHLO, then ``messages`` messages, then QUIT; returns the final replies."""
    finals = []
    with socket.create_connection((ip, port), timeout=5) as s:
        f = s.makefile("rwb")
        f.readline()
        f.write(b"EHLO client.test\r\n")
        f.flush()
        while f.readline()[3:4] == b"-":
            pass
        for n in range(messages):
            for line in (b"MAIL FROM:<app@fabrikam.test>", b"RCPT TO:<ops@contoso.test>", b"DATA"):
                f.write(line + b"\r\n")
                f.flush()
                f.readline()
            f.write(b"Subject: %d\r\n\r\nhello\r\n.\r\n" % n)
            f.flush()
            finals.append(f.readline())
        f.write(b"QUIT\r\n")
        f.flush()
        finals.append(f.readline())
    return finals


def test_a_line_is_kept_once_and_the_log_reads_it_from_the_transcript(make_world):
    world = make_world(PLAIN)
    live: list[Event] = []
    unsubscribe = world.events.subscribe(live.append)
    finals = dialogue(world.address_of("mail.contoso.test"), world.port)
    assert finals[0].startswith(b"250 ") and finals[1].startswith(b"221 ")
    assert world.wait_until(lambda: any(e.kind == "close" for e in live), 5)
    unsubscribe()
    (t,) = world.sessions

    assert t.client_lines() == [
        "EHLO client.test",
        "MAIL FROM:<app@fabrikam.test>",
        "RCPT TO:<ops@contoso.test>",
        "DATA",
        "<message content, 21 bytes>",  # "Subject: 0", a blank line, "hello"
        "QUIT",
    ]
    assert t.server_lines()[0] == "220 mail.contoso.test ESMTP mailfakes"
    assert t.server_lines()[-1].startswith("221 ")
    # The log's lines are the transcript's, with the line's own time and session.
    client = world.events.events("smtp_in")
    assert [e.text for e in client] == t.client_lines()
    assert [e.time for e in client] == [ln.time for ln in t.lines if ln.direction == "C"]
    assert {e.data["session"] for e in client} == {t.session_id}
    assert [e.text for e in world.events.events("smtp_out")] == t.server_lines()
    # The session's other events are in its transcript too, in order.
    assert [e.kind for e in t.events() if e.kind not in ("smtp_in", "smtp_out")] == [
        "connect",
        "message",
        "close",
    ]
    assert [e.text for e in world.events.events("close")] == ["connection closed (client)"]
    everything = world.events.events()
    assert everything == sorted(everything, key=lambda e: e.time)
    assert everything[0].kind == "connect" and everything[-1].kind == "close"
    # Subscribers saw each of them live: the same events (the content summary
    # is the fake's own line, written once the final dot came).
    assert live == [e for e in everything if not e.text.startswith("<message content")]


def test_a_session_keeps_as_many_events_as_lines_and_counts_the_others(make_world):
    world = make_world(PLAIN, limits=Limits(lines_per_session=4))
    finals = dialogue(world.address_of("mail.contoso.test"), world.port, messages=5)
    assert [f[:3] for f in finals] == [b"250"] * 5 + [b"221"]
    assert world.wait_until(lambda: world.sessions and world.sessions[0].closed, 5)
    (t,) = world.sessions
    # Five messages accepted and kept (the message limit is another one) ...
    assert len(world.messages) == 5
    # ... but the transcript kept four events: connect and three message events.
    assert [e.kind for e in t.events() if e.kind not in ("smtp_in", "smtp_out")] == [
        "connect",
        "message",
        "message",
        "message",
    ]
    assert len(world.events.events("message")) == 3
    assert t.events_dropped == 3  # two messages and the close
    assert len(t.lines) == 4 and t.lines_dropped > 0
    assert world.dropped["events"] == 3 and world.dropped["lines"] == t.lines_dropped


def test_a_forgotten_session_takes_its_events_along_and_is_counted(make_world):
    world = make_world(PLAIN, limits=Limits(sessions=2))
    ip, port = world.address_of("mail.contoso.test"), world.port
    for _ in range(3):
        dialogue(ip, port)
    assert world.wait_until(lambda: len(world.sessions) == 2 and all(t.closed for t in world.sessions), 5)
    kept = [t.session_id for t in world.sessions]
    assert kept == [2, 3]
    for kind in ("connect", "smtp_in", "smtp_out", "message", "close"):
        assert {e.data["session"] for e in world.events.events(kind)} == {2, 3}, kind
    assert world.dropped == {"sessions": 1}
    world.reset()
    assert world.events.events() == [] and world.dropped == {}


def test_a_dns_query_is_kept_once_and_seen_live_and_in_the_log(make_world):
    world = make_world(PLAIN, limits=Limits(dns_queries=3))
    live: list[Event] = []
    unsubscribe = world.events.subscribe(live.append)
    for name in ("mail.contoso.test", "nowhere.contoso.test") * 2:
        query = dns.message.make_query(name, "A").to_wire()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(5)
            u.sendto(query, (world.dns_host, world.dns_port))
            u.recv(512)
    unsubscribe()
    assert [(q.name, q.rcode) for q in world.dns_queries] == [
        ("nowhere.contoso.test", "NXDOMAIN"),
        ("mail.contoso.test", "NOERROR"),
        ("nowhere.contoso.test", "NXDOMAIN"),
    ]
    logged = world.events.events("dns")
    assert [e.data["rcode"] for e in logged] == ["NXDOMAIN", "NOERROR", "NXDOMAIN"]
    assert logged[1].text == f"A mail.contoso.test -> NOERROR [A {world.address_of('mail.contoso.test')}]"
    assert [e.time for e in logged] == [q.time for q in world.dns_queries]
    assert live[1:] == logged  # the first went out of the log: it is counted
    assert world.dropped == {"dns_queries": 1}
    # Equal queries share their texts: the log holds one copy of each.
    first, _, third = world.dns_queries
    assert first.peer != third.peer and first.name == third.name and first.name is third.name


def test_wait_until_listens_only_while_it_waits(make_world):
    world = make_world(PLAIN)
    assert not world.events.listening  # a world nobody waits on makes no live events
    seen: list[bool] = []

    def predicate() -> bool:  # false twice: wait_until has to wait
        seen.append(world.events.listening)
        return len(seen) == 3

    assert world.wait_until(predicate, 5)
    assert seen == [False, True, True]  # the first check is before it subscribes
    assert not world.events.listening
    dialogue(world.address_of("mail.contoso.test"), world.port)
    assert world.wait_until(lambda: world.sessions and world.sessions[0].closed, 5)
    assert not world.events.listening


def test_a_tls_session_keeps_its_tls_event_and_where_tls_began(make_world):
    world = make_world(STARTTLS)
    ctx = world.client_context()
    ctx.check_hostname = False  # smtplib is given the IP
    with smtplib.SMTP(world.address_of("mail.contoso.test"), world.port, timeout=5) as client:
        client.starttls(context=ctx)
        client.ehlo("client.test")
    assert world.wait_until(lambda: world.sessions and world.sessions[0].closed, 5)
    (t,) = world.sessions
    assert t.tls_version and t.tls_from is not None
    assert t.lines[t.tls_from - 1].text.startswith("TLS established")
    assert t.lines[t.tls_from].text == "ehlo client.test"
    (tls,) = world.events.events("tls")
    assert tls.text == f"TLS established ({t.tls_version})" and tls.data == {"session": t.session_id}
