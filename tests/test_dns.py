"""FakeDNS through real sockets on loopback, queried by dnspython and raw dnslib packets.

The server runs on an asyncio loop in a background thread; the tests are
plain synchronous clients. Every wait is bounded (a socket timeout, or a
bounded wait for an event the fake records), and no test measures elapsed
time: a delay is proven by the order in which answers arrive and by the fake's
own record of the delay, silence by a later answer arriving first.
(benchmarks/bench_dns.py prints the timings.)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from dnslib import DNSRecord
from mailfakes import World
from mailfakes.dns import MAX_TCP_MESSAGE, DnsQuery, FakeDNS
from mailfakes.events import Event, EventLog
from mailfakes.spec import WorldSpec, parse_world

T = TypeVar("T")
HOST = "127.0.0.1"
ZONE = "contoso.test"
ADDRS = {"mx1.contoso.test": "127.0.0.2", "mx2.contoso.test": "127.0.0.3", "noaddr.contoso.test": "127.0.0.4"}
RECORDS: list[dict[str, Any]] = [
    {"name": "contoso.test", "type": "MX", "value": "mx2.contoso.test", "priority": 20},
    {"name": "contoso.test", "type": "MX", "value": "mx1.contoso.test", "priority": 10},
    {"name": "contoso.test", "type": "TXT", "value": "v=spf1 -all"},
    {"name": "nullmx.contoso.test", "type": "MX", "value": ".", "priority": 0},
    {"name": "www.contoso.test", "type": "CNAME", "value": "alias.contoso.test"},
    {"name": "alias.contoso.test", "type": "CNAME", "value": "mx1.contoso.test"},
    {"name": "dangling.contoso.test", "type": "CNAME", "value": "missing.contoso.test"},
    {"name": "out.contoso.test", "type": "CNAME", "value": "mail.example.org"},
    {"name": "v6.contoso.test", "type": "AAAA", "value": "::1"},
    {"name": "fixed.contoso.test", "type": "A", "value": "127.0.0.9"},
    {"name": "hostref.contoso.test", "type": "A", "value": "mx2.contoso.test"},
    {"name": "a.b.deep.contoso.test", "type": "A", "value": "127.0.0.10"},
    {"name": "big.contoso.test", "type": "TXT", "value": "x" * 700},
]


def world(*faults: dict[str, Any], records: list[dict[str, Any]] | None = None) -> WorldSpec:
    return parse_world(
        {
            "zone": ZONE,
            "hosts": {
                "mx1.contoso.test": {},
                "mx2.contoso.test": {},
                "noaddr.contoso.test": {"a_record": False},
            },
            "records": RECORDS if records is None else records,
            "dns_faults": list(faults),
        }
    )


class LoopThread:
    """An asyncio loop in a daemon thread; ``run`` waits for a coroutine, bounded."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 5.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


Serve = Callable[..., FakeDNS]


@pytest.fixture
def serve(loop_thread: LoopThread) -> Iterator[Serve]:
    started: list[FakeDNS] = []

    def make(spec: WorldSpec | None = None, **kw: Any) -> FakeDNS:
        kw.setdefault("address_of", ADDRS.__getitem__)
        server = FakeDNS(spec or world(), **kw)
        loop_thread.run(server.start())
        started.append(server)
        return server

    yield make
    for server in started:
        loop_thread.run(server.stop())


def ask(
    server: FakeDNS, name: str, rdtype: str = "A", *, tcp: bool = False, timeout: float = 1.0
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(query, HOST, port=server.port, timeout=timeout)
    return dns.query.udp(query, HOST, port=server.port, timeout=timeout)


def rdata(resp: dns.message.Message, rdtype: str = "A") -> list[str]:
    want = dns.rdatatype.from_text(rdtype)
    return [r.to_text() for rrset in resp.answer if rrset.rdtype == want for r in rrset]


def soa_owner(resp: dns.message.Message) -> list[str]:
    return [rrset.name.to_text() for rrset in resp.authority if rrset.rdtype == dns.rdatatype.SOA]


def tcp_frame(payload: bytes) -> bytes:
    return struct.pack("!H", len(payload)) + payload


def recv_frame(sock: socket.socket) -> bytes:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    (length,) = struct.unpack("!H", exactly(2))
    return exactly(length)


def raw_query(name: str, qtype: str = "A", qid: int = 4242) -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.id = qid
    packed: bytes = q.pack()
    return packed


def wait_for(events: EventLog, predicate: Callable[[Event], bool], timeout: float = 2.0) -> Event:
    """The first event, recorded already or later, that satisfies ``predicate``; fails after ``timeout``."""
    found: list[Event] = []
    hit = threading.Event()

    def check(event: Event) -> None:
        if not found and predicate(event):
            found.append(event)
            hit.set()

    unsubscribe = events.subscribe(check)
    try:
        for event in events.events():
            if predicate(event):
                return event
        assert hit.wait(timeout), f"no such event within {timeout} s; seen: {events.events()}"
        return found[0]
    finally:
        unsubscribe()


def query_seen(name: str, rcode: str | None = None) -> Callable[[Event], bool]:
    return lambda e: e.kind == "dns" and e.host == name and (rcode is None or e.data["rcode"] == rcode)


def delay_applied(name: str) -> Callable[[Event], bool]:
    return lambda e: e.kind == "fault" and e.host == name and "sent after" in e.text


def reply_id(data: bytes) -> int:
    return int(struct.unpack("!H", data[:2])[0])


# ----------------------------------------------------------------------
# Records


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_records_via_address_of_and_literal(serve: Serve, tcp: bool) -> None:
    server = serve()
    resp = ask(server, "mx1.contoso.test", tcp=tcp)
    assert resp.rcode() == dns.rcode.NOERROR
    assert resp.flags & dns.flags.AA
    assert not resp.flags & dns.flags.RA
    assert rdata(resp) == ["127.0.0.2"]
    assert rdata(ask(server, "hostref.contoso.test", tcp=tcp)) == ["127.0.0.3"]
    assert rdata(ask(server, "fixed.contoso.test", tcp=tcp)) == ["127.0.0.9"]
    assert rdata(ask(server, "MX1.Contoso.TEST.", tcp=tcp)) == ["127.0.0.2"]


def test_address_of_is_called_at_query_time(serve: Serve) -> None:
    addrs = dict(ADDRS)
    server = serve(address_of=addrs.__getitem__)
    assert rdata(ask(server, "mx1.contoso.test")) == ["127.0.0.2"]
    addrs["mx1.contoso.test"] = "127.0.0.77"
    assert rdata(ask(server, "mx1.contoso.test")) == ["127.0.0.77"]


def test_missing_address_is_servfail_and_an_error_event(serve: Serve) -> None:
    events = EventLog()
    server = serve(address_of=lambda name: {}[name], events=events)
    assert ask(server, "mx1.contoso.test").rcode() == dns.rcode.SERVFAIL
    assert [e.host for e in events.errors()] == ["mx1.contoso.test"]
    # records that need no host address are unaffected
    assert rdata(ask(server, "fixed.contoso.test")) == ["127.0.0.9"]


def test_mx_ordered_by_preference_and_null_mx(serve: Serve) -> None:
    server = serve()
    resp = ask(server, ZONE, "MX")
    assert rdata(resp, "MX") == ["10 mx1.contoso.test.", "20 mx2.contoso.test."]
    assert resp.flags & dns.flags.AA
    null = ask(server, "nullmx.contoso.test", "MX")
    assert null.rcode() == dns.rcode.NOERROR
    assert rdata(null, "MX") == ["0 ."]
    assert server.queries[-1].answers == ("MX 0 .",)


def test_cname_chain_is_followed_inside_the_zone(serve: Serve) -> None:
    server = serve()
    resp = ask(server, "www.contoso.test")
    chain = [(rrset.name.to_text(), r.to_text()) for rrset in resp.answer for r in rrset]
    assert chain == [
        ("www.contoso.test.", "alias.contoso.test."),
        ("alias.contoso.test.", "mx1.contoso.test."),
        ("mx1.contoso.test.", "127.0.0.2"),
    ]
    assert server.queries[-1].answers == (
        "CNAME alias.contoso.test",
        "CNAME mx1.contoso.test",
        "A 127.0.0.2",
    )
    only = ask(server, "www.contoso.test", "CNAME")
    assert rdata(only, "CNAME") == ["alias.contoso.test."]
    assert len(only.answer) == 1


def test_cname_to_a_missing_name_and_out_of_zone(serve: Serve) -> None:
    server = serve()
    dangling = ask(server, "dangling.contoso.test")
    assert dangling.rcode() == dns.rcode.NXDOMAIN
    assert rdata(dangling, "CNAME") == ["missing.contoso.test."]
    assert soa_owner(dangling) == ["contoso.test."]
    out = ask(server, "out.contoso.test")
    assert out.rcode() == dns.rcode.NOERROR
    assert rdata(out, "CNAME") == ["mail.example.org."]
    assert rdata(out) == []
    assert out.authority == []


def test_cname_loop_ends(serve: Serve) -> None:
    records = [
        {"name": "x.contoso.test", "type": "CNAME", "value": "y.contoso.test"},
        {"name": "y.contoso.test", "type": "CNAME", "value": "x.contoso.test"},
    ]
    server = serve(world(records=records))
    resp = ask(server, "x.contoso.test")
    assert resp.rcode() == dns.rcode.NOERROR
    assert len(rdata(resp, "CNAME")) == 2


def test_txt_and_long_txt(serve: Serve) -> None:
    server = serve()
    assert rdata(ask(server, ZONE, "TXT"), "TXT") == ['"v=spf1 -all"']
    # 700 bytes: split in 255-byte strings; too big for plain UDP, so TC there
    udp = ask(server, "big.contoso.test", "TXT")
    assert udp.flags & dns.flags.TC
    assert udp.answer == []
    full = ask(server, "big.contoso.test", "TXT", tcp=True)
    (txt,) = full.answer[0]
    assert b"".join(txt.strings) == b"x" * 700


def test_aaaa_loopback(serve: Serve) -> None:
    server = serve()
    assert rdata(ask(server, "v6.contoso.test", "AAAA"), "AAAA") == ["::1"]


def test_nxdomain_carries_the_soa(serve: Serve) -> None:
    server = serve()
    resp = ask(server, "nothere.contoso.test")
    assert resp.rcode() == dns.rcode.NXDOMAIN
    assert resp.flags & dns.flags.AA
    assert resp.answer == []
    assert soa_owner(resp) == ["contoso.test."]
    # a host without an A record and no other record does not exist in DNS
    assert ask(server, "noaddr.contoso.test").rcode() == dns.rcode.NXDOMAIN


def test_nodata_and_empty_non_terminal(serve: Serve) -> None:
    server = serve()
    for name, rdtype in [
        ("mx1.contoso.test", "AAAA"),
        ("mx1.contoso.test", "MX"),
        ("b.deep.contoso.test", "A"),
        ("v6.contoso.test", "A"),
    ]:
        resp = ask(server, name, rdtype)
        assert resp.rcode() == dns.rcode.NOERROR, name
        assert resp.answer == [], name
        assert soa_owner(resp) == ["contoso.test."], name
    assert server.queries[-1].rcode == "NOERROR"
    assert server.queries[-1].answers == ()


def test_apex_soa_ns_and_any(serve: Serve) -> None:
    server = serve()
    soa = ask(server, ZONE, "SOA")
    assert soa.rcode() == dns.rcode.NOERROR
    assert [rrset.rdtype for rrset in soa.answer] == [dns.rdatatype.SOA]
    assert rdata(ask(server, ZONE, "NS"), "NS") == ["ns.contoso.test."]
    any_types = {rrset.rdtype for rrset in ask(server, ZONE, "ANY", tcp=True).answer}
    assert {dns.rdatatype.SOA, dns.rdatatype.NS, dns.rdatatype.MX, dns.rdatatype.TXT} <= any_types
    # other types below the apex: NODATA or NXDOMAIN by name
    assert ask(server, "mx1.contoso.test", "SOA").rcode() == dns.rcode.NOERROR
    assert ask(server, "nope.contoso.test", "PTR").rcode() == dns.rcode.NXDOMAIN


def test_refused_outside_the_zone(serve: Serve) -> None:
    server = serve()
    for name in ["example.com", "notcontoso.test", "test", "."]:
        for tcp in (False, True):
            resp = ask(server, name, tcp=tcp)
            assert resp.rcode() == dns.rcode.REFUSED, name
            assert not resp.flags & dns.flags.AA
            assert resp.answer == []


def test_non_internet_class_is_refused(serve: Serve) -> None:
    server = serve()
    query = dns.message.make_query("mx1.contoso.test", "A", "CH")
    resp = dns.query.udp(query, HOST, port=server.port, timeout=1.0)
    assert resp.rcode() == dns.rcode.REFUSED


def test_edns_query_gets_an_opt_record(serve: Serve) -> None:
    server = serve()
    query = dns.message.make_query("big.contoso.test", "TXT", use_edns=0, payload=4096)
    resp = dns.query.udp(query, HOST, port=server.port, timeout=1.0)
    assert resp.edns == 0
    assert not resp.flags & dns.flags.TC  # 700 bytes fit in 1232
    assert len(resp.answer) == 1


# ----------------------------------------------------------------------
# Faults


@pytest.mark.parametrize(
    ("fault", "rcode", "has_soa"),
    [
        ("nxdomain", dns.rcode.NXDOMAIN, True),
        ("servfail", dns.rcode.SERVFAIL, False),
        ("refused", dns.rcode.REFUSED, False),
        ("nodata", dns.rcode.NOERROR, True),
    ],
)
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_rcode_faults(serve: Serve, fault: str, rcode: dns.rcode.Rcode, has_soa: bool, tcp: bool) -> None:
    server = serve(world({"name": "mx1.contoso.test", "fault": fault}))
    resp = ask(server, "mx1.contoso.test", tcp=tcp)
    assert resp.rcode() == rcode
    assert resp.answer == []
    assert bool(soa_owner(resp)) == has_soa
    q = server.queries[-1]
    assert (q.name, q.qtype, q.fault, q.transport) == (
        "mx1.contoso.test",
        "A",
        fault,
        "tcp" if tcp else "udp",
    )
    assert q.rcode == dns.rcode.to_text(rcode)
    # the fault is on that exact name only
    assert rdata(ask(server, "mx2.contoso.test", tcp=tcp)) == ["127.0.0.3"]
    assert rdata(ask(server, "hostref.contoso.test", tcp=tcp)) == ["127.0.0.3"]


def test_drop_over_udp_sends_nothing(serve: Serve) -> None:
    events = EventLog()
    server = serve(world({"name": "mx1.contoso.test", "fault": "drop"}), events=events)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        sock.sendto(raw_query("mx1.contoso.test", qid=1), (HOST, server.port))
        wait_for(events, query_seen("mx1.contoso.test", "DROPPED"))
        # One socket, served in order: an answer to the dropped query would come first.
        sock.sendto(raw_query("mx2.contoso.test", qid=2), (HOST, server.port))
        answer = DNSRecord.parse(sock.recv(512))
        assert answer.header.id == 2
        assert [str(rr.rdata) for rr in answer.rr] == ["127.0.0.3"]
    assert [(q.name, q.rcode) for q in server.queries] == [
        ("mx1.contoso.test", "DROPPED"),
        ("mx2.contoso.test", "NOERROR"),
    ]
    # and a real client gives up on it within its own bound
    with pytest.raises(dns.exception.Timeout):
        ask(server, "mx1.contoso.test", timeout=0.3)


def test_drop_over_tcp_keeps_the_connection_silent_until_stop(serve: Serve, loop_thread: LoopThread) -> None:
    events = EventLog()
    server = serve(world({"name": "mx1.contoso.test", "fault": "drop"}), events=events)
    with socket.create_connection((HOST, server.port), timeout=2.0) as sock:
        sock.sendall(tcp_frame(raw_query("mx1.contoso.test", qid=1)))
        wait_for(events, query_seen("mx1.contoso.test", "DROPPED"))
        # The connection is neither reset nor closed: a later query on it is
        # answered, and that answer is the first thing the client reads.
        sock.sendall(tcp_frame(raw_query("mx2.contoso.test", qid=2)))
        answer = DNSRecord.parse(recv_frame(sock))
        assert answer.header.id == 2
        assert [str(rr.rdata) for rr in answer.rr] == ["127.0.0.3"]
        loop_thread.run(server.stop())
        assert sock.recv(512) == b""  # closed by stop(), with a FIN


def test_truncate_sets_tc_over_udp_and_answers_over_tcp(serve: Serve) -> None:
    server = serve(world({"name": ZONE, "fault": "truncate"}))
    udp = ask(server, ZONE, "MX")
    assert udp.flags & dns.flags.TC
    assert udp.answer == []
    assert udp.rcode() == dns.rcode.NOERROR
    tcp = ask(server, ZONE, "MX", tcp=True)
    assert not tcp.flags & dns.flags.TC
    assert rdata(tcp, "MX") == ["10 mx1.contoso.test.", "20 mx2.contoso.test."]
    resp, used_tcp = dns.query.udp_with_fallback(
        dns.message.make_query(ZONE, "MX"), HOST, port=server.port, timeout=1.0
    )
    assert used_tcp
    assert len(rdata(resp, "MX")) == 2
    assert [(q.transport, q.fault) for q in server.queries] == [("udp", "truncate"), ("tcp", "truncate")] * 2


@pytest.mark.parametrize(
    ("fallback", "rcode"),
    [("servfail", dns.rcode.SERVFAIL), ("nxdomain", dns.rcode.NXDOMAIN), ("refused", dns.rcode.REFUSED)],
)
def test_truncate_with_failing_tcp_retry(serve: Serve, fallback: str, rcode: dns.rcode.Rcode) -> None:
    server = serve(world({"name": ZONE, "fault": "truncate", "tcp": fallback}))
    assert ask(server, ZONE, "MX").flags & dns.flags.TC
    assert ask(server, ZONE, "MX", tcp=True).rcode() == rcode


def test_truncate_with_dropped_tcp_retry(serve: Serve) -> None:
    events = EventLog()
    server = serve(world({"name": ZONE, "fault": "truncate", "tcp": "drop"}), events=events)
    assert ask(server, ZONE, "MX").flags & dns.flags.TC
    with socket.create_connection((HOST, server.port), timeout=2.0) as sock:
        sock.sendall(tcp_frame(raw_query(ZONE, "MX", qid=1)))
        wait_for(events, lambda e: e.kind == "dns" and e.data["transport"] == "tcp")
        sock.sendall(tcp_frame(raw_query("mx2.contoso.test", qid=2)))
        assert DNSRecord.parse(recv_frame(sock)).header.id == 2  # nothing came for the retry
    assert [(q.transport, q.rcode) for q in server.queries] == [
        ("udp", "NOERROR"),
        ("tcp", "DROPPED"),
        ("tcp", "NOERROR"),
    ]


class Client:
    """One UDP socket or one TCP connection to the server, sending and reading whole messages.

    Every read is bounded by the socket timeout.
    """

    def __init__(self, port: int, tcp: bool, *, host: str = HOST) -> None:
        self.tcp = tcp
        if tcp:
            self.sock = socket.create_connection((host, port), timeout=2.0)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.settimeout(2.0)
            self.sock.connect((host, port))

    def send(self, packet: bytes) -> None:
        if self.tcp:
            self.sock.sendall(tcp_frame(packet))
        else:
            self.sock.send(packet)

    def recv(self) -> bytes:
        return recv_frame(self.sock) if self.tcp else self.sock.recv(65535)

    def close(self) -> None:
        self.sock.close()


def delayed_then_fast(server: FakeDNS, events: EventLog, tcp: bool, delayed: str) -> tuple[DNSRecord, Event]:
    """Ask ``delayed`` then mx2 on one socket: returns the late answer and the fake's record of the delay.

    The fast answer must arrive first and the late one only after the fake
    recorded sending it: the delay held that answer back and nothing else.
    """
    client = Client(server.port, tcp)
    try:
        client.send(raw_query(delayed, qid=1))
        received = wait_for(events, query_seen(delayed))  # recorded on arrival, before any answer
        assert not [e for e in events.events("fault") if e.host == delayed]
        client.send(raw_query("mx2.contoso.test", qid=2))
        fast = DNSRecord.parse(client.recv())
        assert fast.header.id == 2, "the delayed answer must not come first"
        assert [str(rr.rdata) for rr in fast.rr] == ["127.0.0.3"]
        late = DNSRecord.parse(client.recv())
        assert late.header.id == 1
        applied = [e for e in events.events("fault") if e.host == delayed]
        assert len(applied) == 1, "the late answer arrived before the fake recorded the delay"
        order = events.events()
        assert order.index(received) < order.index(applied[0])
        return late, applied[0]
    finally:
        client.close()


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_delay_answers_late_without_blocking_others(serve: Serve, tcp: bool) -> None:
    events = EventLog()
    server = serve(world({"name": "mx1.contoso.test", "fault": "delay", "delay_ms": 200}), events=events)
    late, applied = delayed_then_fast(server, events, tcp, "mx1.contoso.test")
    assert [str(rr.rdata) for rr in late.rr] == ["127.0.0.2"]
    assert applied.data["delay_ms"] == 200
    assert applied.data["transport"] == ("tcp" if tcp else "udp")
    delayed = [q for q in server.queries if q.name == "mx1.contoso.test"]
    assert [(q.fault, q.delay_ms) for q in delayed] == [("delay", 200)]
    # the answer itself is the normal one, as a real client sees it
    assert rdata(ask(server, "mx1.contoso.test", tcp=tcp, timeout=2.0)) == ["127.0.0.2"]


def test_delay_applies_to_other_faults(serve: Serve) -> None:
    events = EventLog()
    server = serve(world({"name": "mx1.contoso.test", "fault": "servfail", "delay_ms": 100}), events=events)
    late, applied = delayed_then_fast(server, events, False, "mx1.contoso.test")
    assert late.header.rcode == dns.rcode.SERVFAIL
    assert (applied.data["rcode"], applied.data["delay_ms"]) == ("SERVFAIL", 100)


def test_undelayed_answers_record_no_delay(serve: Serve) -> None:
    events = EventLog()
    server = serve(world({"name": "mx1.contoso.test", "fault": "servfail"}), events=events)
    assert ask(server, "mx1.contoso.test", timeout=2.0).rcode() == dns.rcode.SERVFAIL
    assert rdata(ask(server, "mx2.contoso.test", timeout=2.0)) == ["127.0.0.3"]
    assert events.events("fault") == []
    assert [q.delay_ms for q in server.queries] == [0, 0]


def test_per_type_faults(serve: Serve) -> None:
    server = serve(
        world(
            {"name": "mx1.contoso.test", "fault": "nxdomain", "types": ["AAAA"]},
            {"name": ZONE, "fault": "servfail", "types": ["MX"]},
        )
    )
    assert rdata(ask(server, "mx1.contoso.test")) == ["127.0.0.2"]
    assert ask(server, "mx1.contoso.test", "AAAA").rcode() == dns.rcode.NXDOMAIN
    assert ask(server, ZONE, "MX").rcode() == dns.rcode.SERVFAIL
    assert rdata(ask(server, ZONE, "TXT"), "TXT") == ['"v=spf1 -all"']
    assert [q.fault for q in server.queries] == [None, "nxdomain", "servfail", None]


# ----------------------------------------------------------------------
# Malformed input and TCP framing


def test_malformed_udp_is_ignored_or_formerr(serve: Serve) -> None:
    events = EventLog()
    server = serve(events=events)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        sock.sendto(b"\x01\x02\x03", (HOST, server.port))  # shorter than a header: silence
        with pytest.raises(TimeoutError):
            sock.recv(512)
        # a header that parses, then a question that does not: FORMERR, same id
        sock.sendto(struct.pack("!HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0) + b"\x07abc", (HOST, server.port))
        reply = sock.recv(512)
        qid, flags = struct.unpack("!HH", reply[:4])
        assert qid == 0xBEEF
        assert flags & 0x8000
        assert flags & 0xF == dns.rcode.FORMERR
        # a response (QR set) is never answered
        sock.sendto(struct.pack("!HHHHHH", 1, 0x8000, 0, 0, 0, 0), (HOST, server.port))
        with pytest.raises(TimeoutError):
            sock.recv(512)
    assert rdata(ask(server, "mx1.contoso.test")) == ["127.0.0.2"]
    assert [q.rcode for q in server.queries] == ["MALFORMED"] * 3 + ["NOERROR"]
    assert events.errors() == []
    assert [e.data["rcode"] for e in events.events("dns")][:3] == ["MALFORMED"] * 3


def test_tcp_garbage_message_then_good_query_on_the_same_connection(serve: Serve) -> None:
    server = serve()
    with socket.create_connection((HOST, server.port), timeout=1.0) as sock:
        sock.sendall(tcp_frame(struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\xff"))
        formerr = recv_frame(sock)
        assert struct.unpack("!H", formerr[:2])[0] == 7
        assert formerr[3] & 0xF == dns.rcode.FORMERR
        sock.sendall(tcp_frame(b"\x00"))  # too short for a header: ignored, connection kept
        sock.sendall(tcp_frame(raw_query("mx1.contoso.test", qid=8)))
        answer = DNSRecord.parse(recv_frame(sock))
        assert answer.header.id == 8
        assert [str(rr.rdata) for rr in answer.rr] == ["127.0.0.2"]
    assert [q.rcode for q in server.queries] == ["MALFORMED", "MALFORMED", "NOERROR"]


@pytest.mark.parametrize("length", [0, MAX_TCP_MESSAGE + 1, 65535])
def test_tcp_bad_framing_closes_the_connection(serve: Serve, length: int) -> None:
    server = serve()
    with socket.create_connection((HOST, server.port), timeout=1.0) as sock:
        sock.sendall(struct.pack("!H", length) + b"\x00" * 16)
        with contextlib.suppress(ConnectionResetError):  # RST if our close found unread bytes
            assert sock.recv(512) == b""
    assert server.queries[-1].rcode == "MALFORMED"
    assert rdata(ask(server, "mx1.contoso.test", tcp=True)) == ["127.0.0.2"]


def test_tcp_pipelined_and_split_queries(serve: Serve) -> None:
    server = serve()
    with socket.create_connection((HOST, server.port), timeout=1.0) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(
            tcp_frame(raw_query("mx1.contoso.test", qid=1))
            + tcp_frame(raw_query("v6.contoso.test", "AAAA", qid=2))
        )
        got = {DNSRecord.parse(recv_frame(sock)).header.id for _ in range(2)}
        assert got == {1, 2}
        frame = tcp_frame(raw_query("fixed.contoso.test", qid=3))
        for i in range(len(frame)):  # one byte per write: partial reads on the server
            sock.sendall(frame[i : i + 1])
        answer = DNSRecord.parse(recv_frame(sock))
        assert answer.header.id == 3
        assert [str(rr.rdata) for rr in answer.rr] == ["127.0.0.9"]


def test_tcp_answer_after_client_half_close(serve: Serve) -> None:
    server = serve(world({"name": "mx1.contoso.test", "fault": "delay", "delay_ms": 50}))
    with socket.create_connection((HOST, server.port), timeout=1.0) as sock:
        sock.sendall(tcp_frame(raw_query("mx1.contoso.test", qid=9)))
        sock.shutdown(socket.SHUT_WR)
        assert DNSRecord.parse(recv_frame(sock)).header.id == 9
        assert sock.recv(512) == b""


# ----------------------------------------------------------------------
# Protocol edges, from packets built byte by byte and sent to a world's DNS
#
# Each answer is read from the raw header (id, flags, counts) and, where its
# sections matter, with dnspython, which shares nothing with the fake. None of
# these inputs may raise inside the fake: the world records no error event.

EDGE_WORLD: dict[str, Any] = {
    "zone": "test",
    "hosts": {"mail.contoso.test": {}, "down.contoso.test": {}},
    "dns_faults": [{"name": "down.contoso.test", "fault": "servfail"}],
}
QR, AA, RD = 0x8000, 0x0400, 0x0100
TRANSPORTS = pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])


def wire_name(labels: tuple[bytes, ...]) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def header(qid: int, flags: int = RD, qd: int = 1, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, 0, 0, ar)


def packet(qid: int, labels: tuple[bytes, ...], qtype: int = 1, *, opts: tuple[bytes, ...] = ()) -> bytes:
    return header(qid, ar=len(opts)) + wire_name(labels) + struct.pack("!HH", qtype, 1) + b"".join(opts)


def opt_rr(version: int, payload: int = 1232) -> bytes:
    """An OPT pseudo-record (RFC 6891 6.1.2): root owner, type 41, class = payload, ttl = ext-rcode|version|flags."""
    return b"\x00" + struct.pack("!HHIH", 41, payload, version << 16, 0)


class Header:
    def __init__(self, data: bytes) -> None:
        assert len(data) >= 12, data
        self.id, self.flags, self.qd, self.an, self.ns, self.ar = struct.unpack("!6H", data[:12])
        self.rcode = self.flags & 0xF
        self.opcode = (self.flags >> 11) & 0xF


def exchange(w: World, data: bytes, tcp: bool) -> bytes:
    """Send one message on a new socket and read one answer (bounded)."""
    client = Client(w.dns_port, tcp, host=w.dns_host)
    try:
        client.send(data)
        return client.recv()
    finally:
        client.close()


MAIL = (b"mail", b"contoso", b"test")
LONG_256 = (b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 49, b"contoso", b"test")
LONG_255 = (b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 48, b"contoso", b"test")
LONG_270 = (b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 63, b"contoso", b"test")


@TRANSPORTS
@pytest.mark.parametrize("labels", [LONG_256, LONG_270], ids=["256", "270"])
def test_a_query_name_longer_than_255_octets_gets_formerr(
    make_world: Callable[..., World], tcp: bool, labels: tuple[bytes, ...]
) -> None:
    assert len(wire_name(labels)) in (256, 270)  # the test builds what it claims
    w = make_world(EDGE_WORLD)
    reply = Header(exchange(w, packet(0xABCD, labels), tcp))
    assert (reply.id, reply.rcode, reply.opcode) == (0xABCD, dns.rcode.FORMERR, 0)
    assert reply.flags & QR and reply.flags & RD and not reply.flags & AA
    assert w.events.errors() == []
    (record,) = w.dns_queries
    assert record.rcode == "MALFORMED" and "FORMERR sent" in (record.fault or "")
    # the server keeps answering
    assert Header(exchange(w, packet(7, MAIL), tcp)).rcode == dns.rcode.NOERROR


@TRANSPORTS
def test_a_query_name_of_exactly_255_octets_is_answered(make_world: Callable[..., World], tcp: bool) -> None:
    assert len(wire_name(LONG_255)) == 255
    w = make_world(EDGE_WORLD)
    data = exchange(w, packet(0x1255, LONG_255), tcp)
    resp = dns.message.from_wire(data)
    assert resp.id == 0x1255
    assert resp.rcode() == dns.rcode.NXDOMAIN  # in the zone, no such name
    assert resp.question[0].name.to_wire() == wire_name(LONG_255)
    assert w.events.errors() == []


NO_QUESTION = header(0x0101)  # qdcount 1, nothing follows
RESERVED_LABEL = header(0x0102) + b"\x40abc\x00" + struct.pack("!HH", 1, 1)  # label type 01 (RFC 6891 5)
POINTER_LOOP = header(0x0103) + b"\xc0\x0c" + struct.pack("!HH", 1, 1)  # the name points at itself
CUT_IN_TYPE = header(0x0104) + wire_name(MAIL) + b"\x00"
LABEL_PAST_END = header(0x0105) + b"\x3fabc"
TWO_OPTS = packet(0x0106, MAIL, opts=(opt_rr(0), opt_rr(0)))  # RFC 6891 6.1.1: FORMERR


@TRANSPORTS
@pytest.mark.parametrize(
    "data",
    [NO_QUESTION, RESERVED_LABEL, POINTER_LOOP, CUT_IN_TYPE, LABEL_PAST_END, TWO_OPTS],
    ids=["no-question", "reserved-label-type", "pointer-loop", "cut-in-type", "label-past-end", "two-opt"],
)
def test_an_undecodable_query_with_a_header_gets_formerr_with_its_id(
    make_world: Callable[..., World], tcp: bool, data: bytes
) -> None:
    w = make_world(EDGE_WORLD)
    reply = Header(exchange(w, data, tcp))
    assert reply.id == struct.unpack("!H", data[:2])[0]
    assert reply.rcode == dns.rcode.FORMERR
    assert reply.flags & QR and reply.flags & RD
    assert w.events.errors() == []
    assert [q.rcode for q in w.dns_queries] == ["MALFORMED"]


@TRANSPORTS
@pytest.mark.parametrize(
    "data",
    [
        b"\x01\x02\x03",
        header(0x0201)[:11],
        header(0x0202, flags=QR | RD) + wire_name(MAIL) + b"\x00\x01\x00\x01",
    ],
    ids=["3-bytes", "11-bytes", "a-response"],
)
def test_a_packet_without_a_query_header_is_dropped(
    make_world: Callable[..., World], tcp: bool, data: bytes
) -> None:
    w = make_world(EDGE_WORLD)
    client = Client(w.dns_port, tcp, host=w.dns_host)
    try:
        client.send(data)
        wait_for(w.events, lambda e: e.kind == "dns" and e.data["rcode"] == "MALFORMED")
        # Served in order on one socket: anything sent for the dropped packet would be read first.
        client.send(packet(0x5151, MAIL))
        assert Header(client.recv()).id == 0x5151
    finally:
        client.close()
    assert w.events.errors() == []
    assert [q.rcode for q in w.dns_queries] == ["MALFORMED", "NOERROR"]
    assert "dropped" in (w.dns_queries[0].fault or "")


def mutations(seed: int, count: int) -> list[bytes]:
    """Valid queries (some with EDNS) with random bytes flipped, cut, added or inserted."""
    rng = random.Random(seed)
    names = ["mail.contoso.test", "down.contoso.test", "contoso.test", "nope.contoso.test", "example.org"]
    seeds = [
        packet(i, tuple(n.encode().split(b".")), t) for i, n in enumerate(names) for t in (1, 15, 28, 255)
    ]
    seeds += [
        packet(100 + i, tuple(n.encode().split(b".")), opts=(opt_rr(0, 4096),)) for i, n in enumerate(names)
    ]
    out = []
    for _ in range(count):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            if op < 0.5 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op < 0.7:
                del data[rng.randrange(len(data) + 1) :]
            elif op < 0.85:
                data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
            else:
                at = rng.randrange(len(data) + 1)
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 5)))
        if data:  # an empty datagram is fine, but an empty TCP frame is bad framing: tested elsewhere
            out.append(bytes(data))
    return out


@TRANSPORTS
def test_random_damage_never_raises_inside_the_fake(make_world: Callable[..., World], tcp: bool) -> None:
    w = make_world(EDGE_WORLD)
    client = Client(w.dns_port, tcp, host=w.dns_host)
    sent = mutations(8 if tcp else 9, 300)
    answered = 0
    try:
        for data in sent:
            client.send(data)
            # A query (full header, QR clear) is always answered, with its id; anything else never.
            if len(data) >= 12 and not data[2] & 0x80:
                reply = client.recv()
                assert reply_id(reply) == reply_id(data)
                assert Header(reply).flags & QR
                answered += 1
        client.send(packet(0x5151, MAIL))
        assert reply_id(client.recv()) == 0x5151  # nothing unexpected was queued before it
    finally:
        client.close()
    assert answered > 100  # the damage left most packets queries
    assert w.events.errors() == []
    assert len(w.dns_queries) == len(sent) + 1


@TRANSPORTS
def test_edns_version_above_0_gets_badvers(make_world: Callable[..., World], tcp: bool) -> None:
    w = make_world(EDGE_WORLD)
    data = exchange(w, packet(0xED51, MAIL, opts=(opt_rr(1),)), tcp)
    raw = Header(data)
    assert (raw.id, raw.ar) == (0xED51, 1)
    assert raw.flags & QR
    assert raw.rcode == 0  # BADVERS is 16: its low 4 bits, in the header, are 0 ...
    resp = dns.message.from_wire(data)
    assert (resp.ednsflags >> 24) & 0xFF == 1  # ... and its upper 8 bits are in the OPT ttl
    assert resp.rcode() == dns.rcode.BADVERS
    assert resp.edns == 0  # the version we do speak
    assert resp.answer == []
    assert [q.rcode for q in w.dns_queries] == ["BADVERS"]
    # the same query at version 0 is answered
    ok = dns.message.from_wire(exchange(w, packet(0xED50, MAIL, opts=(opt_rr(0),)), tcp))
    assert ok.rcode() == dns.rcode.NOERROR and ok.edns == 0
    assert [rd.address for rrset in ok.answer for rd in rrset] == [w.address_of("mail.contoso.test")]
    assert w.events.errors() == []


@TRANSPORTS
def test_edns_version_255_gets_badvers_even_for_a_faulty_name(
    make_world: Callable[..., World], tcp: bool
) -> None:
    w = make_world(EDGE_WORLD)
    resp = dns.message.from_wire(
        exchange(w, packet(1, (b"down", b"contoso", b"test"), opts=(opt_rr(255),)), tcp)
    )
    assert resp.rcode() == dns.rcode.BADVERS
    assert w.events.errors() == []


@TRANSPORTS
def test_a_label_holding_a_dot_is_not_two_labels(make_world: Callable[..., World], tcp: bool) -> None:
    w = make_world(EDGE_WORLD)
    dotted = (b"mail.contoso", b"test")  # two labels; dnslib shows them as "mail.contoso.test"
    resp = dns.message.from_wire(exchange(w, packet(0xD07, dotted), tcp))
    assert resp.rcode() == dns.rcode.NXDOMAIN  # in the zone "test", and no such name there
    assert resp.answer == []
    assert resp.question[0].name.to_wire() == wire_name(dotted)
    # the record says which name it was, unambiguously
    assert [q.name for q in w.dns_queries] == ["mail\\.contoso.test"]
    # the two-label name it resembles is a different name
    real = dns.message.from_wire(exchange(w, packet(0xD08, MAIL), tcp))
    assert [rd.address for rrset in real.answer for rd in rrset] == [w.address_of("mail.contoso.test")]
    # case folds as DNS says (ASCII only), label by label
    upper = dns.message.from_wire(exchange(w, packet(0xD09, (b"MAIL", b"Contoso", b"TEST")), tcp))
    assert [rd.address for rrset in upper.answer for rd in rrset] == [w.address_of("mail.contoso.test")]
    assert w.events.errors() == []


@TRANSPORTS
def test_a_fault_matches_labels_not_dotted_text(make_world: Callable[..., World], tcp: bool) -> None:
    w = make_world(EDGE_WORLD)
    for labels in [(b"down.contoso", b"test"), (b"down", b"contoso.test"), (b"down.contoso.test",)]:
        resp = dns.message.from_wire(exchange(w, packet(1, labels), tcp))
        assert resp.rcode() != dns.rcode.SERVFAIL, labels
        assert [q.fault for q in w.dns_queries] == [None], labels
        w.reset()
    assert dns.message.from_wire(exchange(w, packet(2, (b"down", b"contoso", b"test")), tcp)).rcode() == (
        dns.rcode.SERVFAIL
    )
    assert w.events.errors() == []


@TRANSPORTS
def test_zone_membership_is_by_labels(make_world: Callable[..., World], tcp: bool) -> None:
    w = make_world({**EDGE_WORLD, "zone": "contoso.test"})
    for labels in [(b"mail", b"contoso.test"), (b"mail.contoso.test",), (b"contoso.test",)]:
        resp = dns.message.from_wire(exchange(w, packet(3, labels), tcp))
        assert resp.rcode() == dns.rcode.REFUSED, labels  # not in contoso.test: we are not its server
        assert not resp.flags & dns.flags.AA
    inside = dns.message.from_wire(exchange(w, packet(4, MAIL), tcp))
    assert inside.rcode() == dns.rcode.NOERROR and inside.flags & dns.flags.AA
    assert w.events.errors() == []


# ----------------------------------------------------------------------
# Records of queries, life cycle, binding


def test_queries_and_events_are_recorded(serve: Serve) -> None:
    events = EventLog()
    server = serve(events=events)
    ask(server, "mx1.contoso.test")
    ask(server, ZONE, "MX", tcp=True)
    ask(server, "example.com")
    assert [(q.name, q.qtype, q.transport, q.rcode) for q in server.queries] == [
        ("mx1.contoso.test", "A", "udp", "NOERROR"),
        ("contoso.test", "MX", "tcp", "NOERROR"),
        ("example.com", "A", "udp", "REFUSED"),
    ]
    first = server.queries[0]
    assert isinstance(first, DnsQuery)
    assert first.answers == ("A 127.0.0.2",)
    assert first.fault is None
    assert first.peer.startswith("127.0.0.1:")
    dns_events = events.events("dns")
    assert [e.host for e in dns_events] == ["mx1.contoso.test", "contoso.test", "example.com"]
    assert dns_events[0].text == "A mx1.contoso.test -> NOERROR [A 127.0.0.2]"
    assert dns_events[1].data["answers"] == ("MX 10 mx1.contoso.test", "MX 20 mx2.contoso.test")
    assert dns_events[1].data["transport"] == "tcp"
    server.reset()
    assert list(server.queries) == []


def test_set_spec_swaps_the_world(serve: Serve) -> None:
    server = serve()
    assert rdata(ask(server, "mx1.contoso.test")) == ["127.0.0.2"]
    server.set_spec(world({"name": "mx1.contoso.test", "fault": "servfail"}))
    assert ask(server, "mx1.contoso.test").rcode() == dns.rcode.SERVFAIL


def test_stop_is_idempotent_and_frees_the_port(loop_thread: LoopThread) -> None:
    server = FakeDNS(world(), address_of=ADDRS.__getitem__)
    loop_thread.run(server.stop())  # before start: nothing to do
    loop_thread.run(server.start())
    port = server.port
    assert port > 0
    assert rdata(ask(server, "mx1.contoso.test")) == ["127.0.0.2"]
    with socket.create_connection((HOST, port), timeout=1.0) as idle:
        loop_thread.run(server.stop())
        loop_thread.run(server.stop())
        idle.settimeout(1.0)
        with contextlib.suppress(ConnectionResetError):  # reset if stop() beat the accept
            assert idle.recv(16) == b""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
        u.bind((HOST, port))
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind((HOST, port))
        t.listen(1)
    # and the same server starts again, on the explicit port it had
    loop_thread.run(server.start())
    try:
        assert server.port == port
        assert rdata(ask(server, "fixed.contoso.test", tcp=True)) == ["127.0.0.9"]
    finally:
        loop_thread.run(server.stop())


def test_stop_cancels_delayed_answers(loop_thread: LoopThread) -> None:
    events = EventLog()
    seen = threading.Event()
    events.subscribe(lambda e: seen.set() if e.host == "mx1.contoso.test" else None)
    server = FakeDNS(world({"name": "mx1.contoso.test", "fault": "delay", "delay_ms": 150}), events=events)
    loop_thread.run(server.start())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(raw_query("mx1.contoso.test", qid=2), (HOST, server.port))
        assert seen.wait(1.0)  # received and scheduled
        loop_thread.run(server.stop())
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(512)

    async def pending_tasks() -> set[asyncio.Task[Any]]:
        return asyncio.all_tasks() - {asyncio.current_task()}

    assert loop_thread.run(pending_tasks()) == set()


def test_start_picks_a_port_free_on_udp_and_tcp(serve: Serve) -> None:
    servers = [serve() for _ in range(5)]
    ports = {s.port for s in servers}
    assert len(ports) == 5
    for s in servers:
        assert rdata(ask(s, "fixed.contoso.test", tcp=True)) == ["127.0.0.9"]
        assert rdata(ask(s, "fixed.contoso.test")) == ["127.0.0.9"]


def test_port_in_use_is_an_error(serve: Serve, loop_thread: LoopThread) -> None:
    first = serve()
    second = FakeDNS(world(), port=first.port)
    with pytest.raises(OSError):
        loop_thread.run(second.start())
    assert not second.running


@pytest.mark.parametrize("host", ["0.0.0.0", "8.8.8.8", "::", "localhost"])
def test_non_loopback_bind_is_refused(loop_thread: LoopThread, host: str) -> None:
    server = FakeDNS(world(), host=host)
    with pytest.raises(ValueError, match="loopback"):
        loop_thread.run(server.start())
    assert not server.running


def test_other_loopback_addresses_work(serve: Serve) -> None:
    server = serve(host="127.0.0.53")
    query = dns.message.make_query("mx1.contoso.test", "A")
    resp = dns.query.udp(query, "127.0.0.53", port=server.port, timeout=1.0)
    assert rdata(resp) == ["127.0.0.2"]


def test_truncate_with_a_tcp_reset_cuts_the_retry() -> None:
    import dns.query

    spec = parse_world(
        {
            "hosts": {"mx.contoso.test": {}},
            "dns_faults": [{"name": "mx.contoso.test", "fault": "truncate", "tcp": "reset"}],
        }
    )

    async def scenario() -> None:
        server = FakeDNS(spec, address_of=lambda name: "127.0.0.2")
        await server.start()
        try:
            loop = asyncio.get_running_loop()
            q = dns.message.make_query("mx.contoso.test", "A")
            udp = await loop.run_in_executor(
                None, lambda: dns.query.udp(q, "127.0.0.1", port=server.port, timeout=1)
            )
            assert udp.flags & dns.flags.TC
            with pytest.raises((ConnectionError, EOFError)):
                await loop.run_in_executor(
                    None, lambda: dns.query.tcp(q, "127.0.0.1", port=server.port, timeout=1)
                )
            assert [qq.rcode for qq in server.queries] == ["NOERROR", "RESET"]
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_an_idle_tcp_connection_is_closed_but_not_while_an_answer_is_due():
    from mailfakes.dns import FakeDNS
    from mailfakes.spec import parse_world

    spec = parse_world(
        {
            "hosts": {"mail.contoso.test": {}},
            "dns_faults": [{"name": "slow.contoso.test", "fault": "delay", "delay_ms": 600}],
        }
    )
    query = dns.message.make_query("slow.contoso.test", "A").to_wire()

    async def main() -> tuple[bytes, bytes, bytes]:
        server = FakeDNS(spec, host="127.0.0.1", tcp_idle_timeout=0.2)
        await server.start()
        try:
            idle, _ = await asyncio.open_connection("127.0.0.1", server.port)
            busy_r, busy_w = await asyncio.open_connection("127.0.0.1", server.port)
            busy_w.write(struct.pack("!H", len(query)) + query)
            # Nothing asked: a FIN after the idle timeout (bounded wait).
            idle_end = await asyncio.wait_for(idle.read(1), 5)
            # An answer due later than the idle timeout still comes, then that one goes idle too.
            length = await asyncio.wait_for(busy_r.readexactly(2), 5)
            await busy_r.readexactly(struct.unpack("!H", length)[0])
            busy_end = await asyncio.wait_for(busy_r.read(1), 5)
            return idle_end, length, busy_end
        finally:
            await server.stop()

    idle_end, length, busy_end = asyncio.run(main())
    assert idle_end == b"" and len(length) == 2 and busy_end == b""
