"""FakeDNS through real sockets on loopback, queried by dnspython and raw dnslib packets.

The server runs on an asyncio loop in a background thread; the tests are
plain synchronous clients. Every wait is bounded by a socket timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from dnslib import DNSRecord

from fakes.dns import MAX_TCP_MESSAGE, DnsQuery, FakeDNS
from fakes.events import EventLog
from fakes.spec import WorldSpec, parse_world

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


def test_drop_over_udp_times_out(serve: Serve) -> None:
    server = serve(world({"name": "mx1.contoso.test", "fault": "drop"}))
    start = time.monotonic()
    with pytest.raises(dns.exception.Timeout):
        ask(server, "mx1.contoso.test", timeout=0.3)
    assert time.monotonic() - start < 1.0
    assert server.queries[-1].rcode == "DROPPED"
    assert rdata(ask(server, "mx2.contoso.test")) == ["127.0.0.3"]


def test_drop_over_tcp_keeps_the_connection_silent_until_stop(serve: Serve, loop_thread: LoopThread) -> None:
    server = serve(world({"name": "mx1.contoso.test", "fault": "drop"}))
    with pytest.raises(dns.exception.Timeout):
        ask(server, "mx1.contoso.test", tcp=True, timeout=0.3)
    with socket.create_connection((HOST, server.port), timeout=1.0) as sock:
        sock.sendall(tcp_frame(raw_query("mx1.contoso.test")))
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(512)
        loop_thread.run(server.stop())
        sock.settimeout(1.0)
        assert sock.recv(512) == b""  # closed by stop()


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
    server = serve(world({"name": ZONE, "fault": "truncate", "tcp": "drop"}))
    assert ask(server, ZONE, "MX").flags & dns.flags.TC
    with pytest.raises(dns.exception.Timeout):
        ask(server, ZONE, "MX", tcp=True, timeout=0.3)
    assert server.queries[-1].rcode == "DROPPED"


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_delay_answers_late_without_blocking_others(serve: Serve, tcp: bool) -> None:
    server = serve(world({"name": "mx1.contoso.test", "fault": "delay", "delay_ms": 200}))
    with ThreadPoolExecutor(1) as pool:
        start = time.monotonic()
        slow = pool.submit(ask, server, "mx1.contoso.test", tcp=tcp, timeout=2.0)
        fast = ask(server, "mx2.contoso.test", tcp=tcp, timeout=2.0)
        fast_elapsed = time.monotonic() - start
        assert rdata(fast) == ["127.0.0.3"]
        assert fast_elapsed < 0.15
        assert not slow.done()
        resp = slow.result(timeout=2.0)
        slow_elapsed = time.monotonic() - start
    assert rdata(resp) == ["127.0.0.2"]
    assert slow_elapsed >= 0.2
    delayed = [q for q in server.queries if q.name == "mx1.contoso.test"]
    assert [(q.fault, q.delay_ms) for q in delayed] == [("delay", 200)]


def test_delay_applies_to_other_faults(serve: Serve) -> None:
    server = serve(world({"name": "mx1.contoso.test", "fault": "servfail", "delay_ms": 100}))
    start = time.monotonic()
    assert ask(server, "mx1.contoso.test", timeout=2.0).rcode() == dns.rcode.SERVFAIL
    assert time.monotonic() - start >= 0.1


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
    assert server.queries == []


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
