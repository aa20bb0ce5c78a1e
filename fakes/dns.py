"""A fake authoritative DNS server for one world, on loopback UDP and TCP.

:class:`FakeDNS` answers for the world's zone only (AA set, never recursing or
forwarding; any other name gets REFUSED) from the records of a
:class:`~mailfakes.spec.WorldSpec`, plus an A record for every host, and applies
the spec's per-name :class:`~mailfakes.spec.DnsFault` values: NXDOMAIN, SERVFAIL,
REFUSED, NODATA, silence, a truncated UDP answer and delays. Every query is
recorded once, in :attr:`FakeDNS.queries`; subscribers of the event log see
it as a ``dns`` event when it arrives, and the log's ``events("dns")`` reads
the query log. An answer held back by a delay is also announced, as a
``fault`` event (kept by the log), at the moment it is sent.

A signed world (``spec.dnssec``) is answered as a validating resolver would
answer a stub client, the fake being authoritative for every zone in it: the
world's zone and its signed sub-zones each have a key (ECDSA P-256, made at
first use and kept by the server; see :mod:`mailfakes.dnssec`) and a DNSKEY
at their apex, each sub-zone its DS at the parent. A query with the DO bit
gets the RRSIGs and, when negative, the NSEC proofs; DNSKEY, DS, NSEC and
RRSIG queries get their records without it. AD is set on secure answers to a
query with DO or AD; bogus answers (``bad_signature``, ``expired_signature``,
in the RRset or above it in the chain) are SERVFAIL with an Extended DNS
Error unless the query sets CD; below a ``missing_ds`` sub-zone answers are
insecure. :meth:`FakeDNS.trust_anchor` gives the world's key to clients.

Names are compared as sequences of wire labels (bytes, ASCII case folded),
never as dotted text: the single label ``mail.contoso`` followed by ``test``
is not the name ``mail.contoso.test``, for zone membership, records and faults
alike. Recorded names use the presentation format, so that label reads
``mail\\.contoso.test``.

Malformed input never raises inside the server and never makes an ``error``
event. A datagram or TCP message that has a full 12-byte header and is a
query (QR clear) but does not decode, or whose query name is longer than 255
octets on the wire (RFC 1035 2.3.4), or that carries more than one OPT record
(RFC 6891 6.1.1), is answered FORMERR with the same id; one shorter than a
header (no id and flags to answer with), or a packet with QR set (never
answer an answer), is dropped, as BIND and Unbound do. These are recorded
with rcode ``MALFORMED``. A query whose OPT record asks for an EDNS version
above 0 gets BADVERS (RFC 6891 6.1.3): an OPT record of version 0 whose
extended rcode carries the upper bits of 16. A TCP connection with bad framing
(a zero length, or a length above :data:`MAX_TCP_MESSAGE`) is closed.

The sockets are served with the loop's ``add_reader``/``add_writer`` (a
selector loop, the default on Linux) rather than asyncio transports, so that
``stop()`` closes every socket synchronously and leaves no accept task, timer
or half-made connection behind.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import ipaddress
import os
import re
import socket
import struct
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, Literal

from .events import Event, EventKind, EventLog, shared
from .spec import NAME_RULE, DnsFault, Record, WorldSpec, name_ok, normalize_name
from .values import frozen

if TYPE_CHECKING:
    from dnslib import (
        AAAA,
        CNAME,
        EDNS0,
        MX,
        NS,
        QTYPE,
        RCODE,
        RD,
        RR,
        SOA,
        TLSA,
        TXT,
        A,
        DNSBuffer,
        DNSHeader,
        DNSLabel,
        DNSRecord,
        EDNSOption,
    )

    from .dnssec import NsecChain, ZoneKey

__all__ = ["MAX_TCP_MESSAGE", "DnsQuery", "FakeDNS", "Transport", "prepare"]

Transport = Literal["udp", "tcp"]

MAX_TCP_MESSAGE: Final = 4096  # largest query accepted over TCP; a bigger frame closes the connection
MAX_TCP_OUTBOX: Final = 1 << 20  # unsent answer bytes kept for a client that does not read
TCP_BACKLOG: Final = 128
# A TCP connection with nothing asked and nothing due is closed after this
# long, as BIND's and Unbound's idle timeouts (30 s) do (RFC 7766 6.2.3).
TCP_IDLE_TIMEOUT: Final = 30.0
READ_BATCH: Final = 64  # datagrams or accepts handled per readiness callback
MAX_CNAME_CHAIN: Final = 16  # CNAME hops followed inside the zone before giving up
PORT_ATTEMPTS: Final = 32  # tries at finding a port free on both UDP and TCP
UDP_PLAIN_LIMIT: Final = 512  # UDP answer size without EDNS (RFC 1035)
UDP_EDNS_LIMIT: Final = 1232  # what we advertise and use at most with EDNS
SOA_TTL: Final = 0  # negative answers are not cached: a world's faults change between tests
MAX_NAME_OCTETS: Final = 255  # a name's length on the wire, length octets and root included
EDNS_VERSION: Final = 0  # the only EDNS version this server implements
RCODE_BADVERS: Final = 16  # extended rcode: header gets the low 4 bits, the OPT ttl the upper 8

DNSSEC_TTL: Final = 0  # DNSKEY and DS served uncached, as the SOA: a world's faults change between tests
TRUST_ANCHOR_TTL: Final = 3600  # the TTL written in trust_anchor() (a trust anchor's TTL is not used)
RESIGN_AFTER: Final = 86400.0  # a cached signature is made again after a day (it is valid for 30)
MAX_SIGNATURES: Final = 10_000  # cached RRSIGs; the cache starts again beyond this

_HEADER = struct.Struct("!HH")  # id, flags: the start of every DNS header
_DO_BIT: Final = 0x8000  # DNSSEC OK, in the OPT record's TTL (RFC 3225)
_EDE_OPTION: Final = 15  # Extended DNS Error (RFC 8914)
_EDE_BOGUS: Final = 6  # "DNSSEC Bogus"
_EDE_EXPIRED: Final = 7  # "Signature Expired"
_SIGNATURE_FAULTS: Final = ("bad_signature", "expired_signature")
_RANK: Final = {"secure": 0, "insecure": 1, "bogus": 2}
_SERVED_TYPES: Final = ("A", "AAAA", "MX", "CNAME", "TXT", "TLSA")
_TLSA_VALUE: Final = r"[0-9]{1,3} [0-9]{1,3} [0-9]{1,3} (?:[0-9a-fA-F]{2})+"  # compiled by re at first use
_QR_BIT: Final = 0x8000
_OPCODE_QUERY: Final = 0
_CLASS_IN: Final = 1
_PRINTABLE: Final = frozenset(range(33, 127)) - {ord("."), ord("\\")}

Name = tuple[bytes, ...]
"""A domain name as its wire labels, lower-cased (ASCII only, as DNS compares); () is the root."""


class DnsQuery:
    """One query the server received and what it did with it.

    ``rcode`` is the rcode sent (``NOERROR``, ``NXDOMAIN``, ...), ``RESET`` (TCP cut), ``DROPPED``
    when nothing was sent, or ``MALFORMED`` for a packet that was not a valid
    query. ``answers`` holds the answer section as short text such as
    ``"A 127.0.0.2"``, ``"MX 10 mx.contoso.test"`` or ``"CNAME www.test"``.
    Immutable, and small: the query log is the one record of a query (its
    ``dns`` event is made from it, see :meth:`event`); equal texts are shared.
    Two queries are equal when all but their times are.

    The DNSSEC view: ``flags`` are the query's ``DO`` (EDNS), ``AD`` and ``CD``
    bits that were set, in that order; ``dnssec`` is the validation outcome
    the fake, as a validating resolver, gave the answer in a signed world
    (``secure``, ``insecure``, ``bogus``, or ``indeterminate`` when nothing
    was validated: a refusal, a fault without data, a truncated answer), None
    in an unsigned world; ``ad`` whether the answer carried the AD bit.
    """

    __slots__ = (
        "ad",
        "answers",
        "delay_ms",
        "dnssec",
        "fault",
        "flags",
        "name",
        "peer",
        "qtype",
        "rcode",
        "time",
        "transport",
    )

    name: str
    qtype: str
    transport: Transport
    rcode: str
    answers: tuple[str, ...]
    fault: str | None
    peer: str
    delay_ms: int
    flags: tuple[str, ...]
    dnssec: str | None
    ad: bool
    time: float

    def __init__(
        self,
        name: str,
        qtype: str,
        transport: Transport,
        rcode: str,
        answers: tuple[str, ...] = (),
        fault: str | None = None,
        peer: str = "",
        delay_ms: int = 0,
        time: float | None = None,
        flags: tuple[str, ...] = (),
        dnssec: str | None = None,
        ad: bool = False,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "name", shared(name))
        set_(self, "qtype", shared(qtype))
        set_(self, "transport", transport)
        set_(self, "rcode", shared(rcode))
        set_(self, "answers", tuple(shared(a) for a in answers) if answers else ())
        set_(self, "fault", None if fault is None else shared(fault))
        set_(self, "peer", peer)
        set_(self, "delay_ms", delay_ms)
        set_(self, "flags", tuple(shared(f) for f in flags) if flags else ())
        set_(self, "dnssec", None if dnssec is None else shared(dnssec))
        set_(self, "ad", ad)
        set_(self, "time", _monotonic() if time is None else time)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"DnsQuery is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"DnsQuery is immutable: cannot delete {name!r}")

    def _key(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in _QUERY_FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not DnsQuery:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in (*_QUERY_FIELDS, "time"))
        return f"DnsQuery({fields})"

    def event(self) -> Event:
        """This query as the world's event log shows it (a ``dns`` event)."""
        text = f"{self.qtype} {self.name} -> {self.rcode} [{', '.join(self.answers)}]"
        if self.fault:
            text += f" (fault: {self.fault})"
        if self.delay_ms:
            text += f" after {self.delay_ms} ms"
        data: dict[str, object] = {
            "transport": self.transport,
            "qtype": self.qtype,
            "rcode": self.rcode,
            "answers": self.answers,
            "fault": self.fault,
            "peer": self.peer,
            "delay_ms": self.delay_ms,
        }
        if self.dnssec is not None:  # a signed world's view; an unsigned world's events are as before
            asked = "+".join(self.flags) or "no DO/AD/CD"
            text += f" [dnssec {self.dnssec}{', AD' if self.ad else ''}; asked {asked}]"
            data.update(flags=self.flags, dnssec=self.dnssec, ad=self.ad)
        return Event("dns", self.name or "-", text, self.time, data)


_QUERY_FIELDS = (
    "name",
    "qtype",
    "transport",
    "rcode",
    "answers",
    "fault",
    "peer",
    "delay_ms",
    "flags",
    "dnssec",
    "ad",
)
_monotonic = time.monotonic

# dnslib (about 3 ms to import) decodes queries and packs answers: it is
# imported by the first packet, or by prepare(), not with this module, so that
# a world is served (``serve --json`` ready) without waiting for it. Starting
# a server needs none of it.
_dnslib_ready = False


def prepare() -> None:
    """Import what answering needs now, so that the first query does not wait for it.

    ``mailfakes serve`` calls it once its ready line is out; any packet calls it.
    """
    global _dnslib_ready, AAAA, CNAME, EDNS0, MX, NS, QTYPE, RCODE, RD, RR, SOA, TLSA, TXT, A
    global DNSBuffer, DNSHeader, DNSLabel, DNSRecord, EDNSOption
    if _dnslib_ready:
        return
    from dnslib import (
        AAAA,
        CNAME,
        EDNS0,
        MX,
        NS,
        QTYPE,
        RCODE,
        RD,
        RR,
        SOA,
        TLSA,
        TXT,
        A,
        DNSBuffer,
        DNSHeader,
        DNSLabel,
        DNSRecord,
        EDNSOption,
    )

    _dnslib_ready = True


class _WorldError(Exception):
    """The world is wired wrong (e.g. no address for a host): a bug, answered SERVFAIL."""


@frozen
class _Entry:
    rtype: str
    value: str
    priority: int
    ttl: int
    host_ref: bool  # an A record whose value is a host's name, resolved by address_of


class _Outcome:
    """What to send for one query (``reply`` None: send nothing)."""

    __slots__ = ("delay", "error", "record", "reply", "reset")

    def __init__(
        self,
        reply: bytes | None,
        record: DnsQuery,
        delay: float = 0.0,
        error: str | None = None,
        reset: bool = False,  # TCP only: cut the connection with RST instead of answering
    ) -> None:
        self.reply = reply
        self.record = record
        self.delay = delay
        self.error = error
        self.reset = reset


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _peer_text(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(addr)


def _label_text(label: Any) -> str:
    text = str(label)
    return "." if text == "." else text.rstrip(".")


_DECIMAL_ESCAPE: Final = r"\\(\d{3})"  # \DDD, as in a zone file (compiled, by re, at first use)


def _name_of(text: str) -> Name:
    """A spec name as labels, IDNA-encoded as dnslib packs it (so a client asking it matches).

    As dnslib's DNSLabel reads text, without importing dnslib: ``\\DDD`` is the
    character of that code, then the name is IDNA-encoded and split at dots.
    """
    text = normalize_name(text)
    if not text:
        return ()
    unescaped = re.sub(_DECIMAL_ESCAPE, lambda m: chr(int(m[1])), text) if "\\" in text else text
    try:
        labels = unescaped.encode("idna").rstrip(b".").split(b".")
    except UnicodeError:  # not IDNA-encodable: keep its UTF-8, which no well-formed query matches
        labels = text.encode().split(b".")
    return tuple(label.lower() for label in labels)


def _wire_name(qname: Any) -> Name:
    """The labels of a name decoded from a packet."""
    return tuple(bytes(label).lower() for label in qname.label)


def _wire_length(name: Name) -> int:
    return sum(len(label) + 1 for label in name) + 1


def _name_text(name: Name) -> str:
    """Presentation format without the final dot: a dot or backslash inside a label is escaped."""
    out = []
    for label in name:
        chars = []
        for c in label:
            if c in _PRINTABLE:
                chars.append(chr(c))
            elif c in (0x2E, 0x5C):
                chars.append("\\" + chr(c))
            else:
                chars.append(f"\\{c:03d}")
        out.append("".join(chars))
    return ".".join(out)


def _under(name: Name, apex: Name) -> bool:
    """``name`` is ``apex`` or below it, label by label."""
    return len(name) >= len(apex) and name[len(name) - len(apex) :] == apex


def _rcode_text(rcode: int) -> str:
    if rcode == RCODE_BADVERS:
        return "BADVERS"
    return str(RCODE[rcode])


def _txt_chunks(value: str) -> list[bytes]:
    data = value.encode()
    return [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]


class _Zone:
    """The spec's records indexed by name, with the synthesized apex records.

    In a signed world (``spec.dnssec``) it also knows the signed zones: the
    world's zone and its sub-zones (``apexes``), which name falls in which,
    and each zone's NSEC chain.
    """

    def __init__(self, spec: WorldSpec, extra: tuple[Record, ...] = ()) -> None:
        self.apex_text = normalize_name(spec.zone)
        self.apex: Name = _name_of(spec.zone)
        self.records: dict[Name, list[_Entry]] = {}
        for r in (*spec.records, *extra) if extra else spec.records:
            value = r.value.strip()
            if r.type in ("MX", "CNAME") and value != ".":
                value = normalize_name(value)
            host_ref = r.type == "A" and not _is_ip(value)
            if host_ref:
                value = normalize_name(value)
            self._add(_name_of(r.name), _Entry(r.type, value, r.priority, r.ttl, host_ref))
        for h in spec.hosts:
            if h.a_record:
                name = normalize_name(h.name)
                self._add(_name_of(name), _Entry("A", name, 0, 300, True))
            if h.ipv6 != "none":  # its IPv6 address, as the world bound it (address6_of)
                name = normalize_name(h.name)
                self._add(_name_of(name), _Entry("AAAA", name, 0, 300, True))
        for web in spec.web_hosts:  # HTTPS hosts of the world (MTA-STS, TLS-RPT): an A record each
            name = normalize_name(web)
            self._add(_name_of(name), _Entry("A", name, 0, 300, True))
        self.faults: dict[Name, list[DnsFault]] = {}
        for f in spec.dns_faults:
            self.faults.setdefault(_name_of(f.name), []).append(f)
        self.signed = spec.dnssec is not None
        # The signed sub-zones' apexes (each has its SOA, NS and DNSKEY, so it exists).
        self.sub_apexes: tuple[Name, ...] = (
            tuple(_name_of(z) for z in spec.dnssec.zones) if spec.dnssec is not None else ()
        )
        # Names that own no record but have descendants that do ("empty
        # non-terminals") exist: they answer NODATA, not NXDOMAIN (RFC 8020).
        self.empty_non_terminals: set[Name] = set()
        for owner in (*self.records, *self.sub_apexes) if self.sub_apexes else self.records:
            for i in range(1, len(owner)):
                parent = owner[i:]
                if not _under(parent, self.apex) or parent == self.apex:
                    break
                self.empty_non_terminals.add(parent)
        apex = self.apex_text
        self.ns_name = f"ns.{apex}" if apex else "ns"
        self._soa: SOA | None = None  # made by the first answer that needs it (dnslib then loaded)
        self._sub_soa: dict[Name, SOA] = {}
        self._chains: dict[tuple[Name, frozenset[Name]], NsecChain] = {}

    def _add(self, name: Name, entry: _Entry) -> None:
        entries = self.records.setdefault(name, [])
        if entry not in entries:
            entries.append(entry)

    def contains(self, name: Name) -> bool:
        return _under(name, self.apex)

    def exists(self, name: Name) -> bool:
        return (
            name == self.apex
            or name in self.records
            or name in self.empty_non_terminals
            or name in self.sub_apexes
        )

    def is_apex(self, name: Name) -> bool:
        """``name`` is the apex of a zone the fake serves (the world's, or a signed sub-zone)."""
        return name == self.apex or name in self.sub_apexes

    def zone_of(self, name: Name) -> Name:
        """The apex of the zone ``name`` falls in: a signed sub-zone's, or the world's."""
        for sub in self.sub_apexes:
            if _under(name, sub):
                return sub
        return self.apex

    def fault_for(self, name: Name, qtype: str, now: Callable[[], float] | None = None) -> DnsFault | None:
        """The fault on answers for ``name``/``qtype`` at world time ``now()`` (see mailfakes.clock)."""
        for f in self.faults.get(name, ()):
            if f.applies_to(qtype) and (now is None or not f.timed or f.active(now())):
                return f
        return None

    @property
    def soa(self) -> SOA:
        if self._soa is None:
            apex = self.apex_text
            self._soa = SOA(
                mname=self.ns_name + ".",
                rname=(f"hostmaster.{apex}" if apex else "hostmaster") + ".",
                times=(1, 3600, 600, 86400, SOA_TTL),
            )
        return self._soa

    def soa_rr(self) -> RR:
        return RR(DNSLabel(self.apex), QTYPE.SOA, rdata=self.soa, ttl=SOA_TTL)

    def soa_of(self, apex: Name) -> SOA:
        """The SOA of the zone at ``apex`` (the world's, or a sub-zone's)."""
        if apex == self.apex:
            return self.soa
        soa = self._sub_soa.get(apex)
        if soa is None:
            text = _name_text(apex)
            soa = SOA(mname=f"ns.{text}.", rname=f"hostmaster.{text}.", times=(1, 3600, 600, 86400, SOA_TTL))
            self._sub_soa[apex] = soa
        return soa

    def ns_name_of(self, apex: Name) -> str:
        return self.ns_name if apex == self.apex else f"ns.{_name_text(apex)}"

    def chain(self, apex: Name, missing_ds: frozenset[Name]) -> NsecChain:
        """The NSEC chain of the signed zone at ``apex``, with the DS of ``missing_ds`` withdrawn."""
        key = (apex, missing_ds if apex == self.apex else frozenset())
        chain = self._chains.get(key)
        if chain is None:
            from .dnssec import TYPE_CODES, NsecChain

            types: dict[Name, set[int]] = {apex: {QTYPE.SOA, QTYPE.NS, QTYPE.DNSKEY}}
            for owner, entries in self.records.items():
                if self.zone_of(owner) == apex:
                    types.setdefault(owner, set()).update(TYPE_CODES[e.rtype] for e in entries)
            if apex == self.apex:
                for sub in self.sub_apexes:  # the delegation points, on the parent's side
                    types[sub] = {QTYPE.NS} if sub in missing_ds else {QTYPE.NS, QTYPE.DS}
            chain = NsecChain(apex, types)
            self._chains[key] = chain
        return chain


class _Answer:
    """The sections of a normal (fault-free) answer."""

    def __init__(self) -> None:
        self.rcode: int = RCODE.NOERROR
        self.rrs: list[RR] = []
        self.texts: list[str] = []
        self.authority: list[RR] = []


class _Set:
    """One RRset of a signed answer: its records and texts, its zone, and the name whose faults judge it."""

    __slots__ = ("apex", "judge", "label", "owner", "rrs", "rtype", "texts", "ttl")

    def __init__(
        self, owner: Name, label: Any, rtype: int, rrs: list[Any], texts: list[str], apex: Name, judge: Name
    ) -> None:
        self.owner = owner
        self.label = label
        self.rtype = rtype
        self.rrs = rrs
        self.texts = texts
        self.apex = apex
        self.judge = judge
        self.ttl = min(int(rr.ttl) for rr in rrs)


class _SignedAnswer:
    """The RRsets of an answer in a signed world (the authority: SOA and the NSEC proofs)."""

    def __init__(self) -> None:
        self.rcode: int = RCODE.NOERROR
        self.answer: list[_Set] = []
        self.authority: list[_Set] = []


def _type_text(code: int) -> str:
    return str(QTYPE[code])


def _canonical_rdata(rr: Any) -> bytes:
    """An RR's rdata in canonical form (RFC 4034 6.2): names uncompressed and lower-cased."""
    rdata = rr.rdata
    if type(rdata) is RD:
        return bytes(rdata.data)
    buffer = DNSBuffer()

    def encode_name(name: Any) -> None:
        lowered = DNSLabel(tuple(label.lower() for label in DNSLabel(name).label))
        DNSBuffer.encode_name_nocompress(buffer, lowered)

    buffer.encode_name = encode_name
    rdata.pack(buffer)
    return bytes(buffer.data)


class FakeDNS:
    """An authoritative DNS server for ``spec.zone`` on loopback UDP and TCP.

    ``address_of(host_name)`` gives the loopback IPv4 address of a world host;
    it is called at query time for every A record whose value is a host name
    and for the automatic A record of each host with ``a_record=True``. Without
    it such a query is a wiring bug: it is answered SERVFAIL and an ``error``
    event is emitted.

    ``start()`` and ``stop()`` run on the server's event loop; ``queries`` and
    ``reset()`` may be used from any thread.
    """

    def __init__(
        self,
        spec: WorldSpec,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        address_of: Callable[[str], str] | None = None,
        address6_of: Callable[[str], str] | None = None,
        events: EventLog | None = None,
        allow_non_loopback: bool = False,
        tcp_idle_timeout: float = TCP_IDLE_TIMEOUT,
        max_queries: int = 10_000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.host = host
        self.clock = clock  # world time, for faults with a window (from, until)
        self.tcp_idle_timeout = tcp_idle_timeout
        self.port = port
        self.address_of = address_of
        self.address6_of = address6_of  # the same for the AAAA record of each host with ipv6 set
        self.events = events
        self.allow_non_loopback = allow_non_loopback
        # The newest queries are kept; ``dropped_queries`` counts the others.
        self.queries: collections.deque[DnsQuery] = collections.deque(maxlen=max_queries)
        self.dropped_queries = 0
        if events is not None:
            events.add_source(self._query_events)
        self._spec = spec
        self._zone = _Zone(spec)
        self._keys: dict[Name, ZoneKey] = {}  # one per signed zone, made at first use, kept
        self._signatures: dict[tuple[object, ...], tuple[bytes, float]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._conns: set[_TcpConn] = set()
        self._timers: set[asyncio.TimerHandle] = set()

    # ------------------------------------------------------------------
    # Life cycle

    @property
    def spec(self) -> WorldSpec:
        return self._spec

    def set_spec(self, spec: WorldSpec) -> None:
        """Serve another world from now on (same sockets); cheap, for per-test worlds.

        Records given to :meth:`add_records` are forgotten; zone keys are kept.
        """
        zone = _Zone(spec)
        self._spec, self._zone = spec, zone

    @property
    def running(self) -> bool:
        return self._udp is not None

    def reset(self) -> None:
        """Forget the recorded queries (between tests)."""
        self.queries.clear()
        self.dropped_queries = 0

    def close_connections(self) -> None:
        """Close every TCP connection (between tests, on the server's loop)."""
        for conn in list(self._conns):
            conn.close()

    async def start(self, *, allow_non_loopback: bool | None = None) -> None:
        """Bind UDP and TCP on ``(host, port)``; port 0 picks one free on both.

        Raises ValueError for a host that is not a loopback IP literal, unless
        ``allow_non_loopback`` (here or in the constructor) is True.
        """
        if self._udp is not None:
            raise RuntimeError("FakeDNS is already running")
        allow = self.allow_non_loopback if allow_non_loopback is None else allow_non_loopback
        try:
            ip = ipaddress.ip_address(self.host)
        except ValueError:
            raise ValueError(
                f"FakeDNS host {self.host!r} is not an IP address; give a loopback literal such as "
                "127.0.0.1 or ::1 (the fake does no name lookups)"
            ) from None
        if not ip.is_loopback and not allow:
            raise ValueError(
                f"refusing to bind FakeDNS on {self.host}: it is not a loopback address, so DNS "
                "traffic would leave the machine; use 127.0.0.0/8 or ::1, or pass "
                "allow_non_loopback=True if you really mean it"
            )
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        udp_sock, tcp_sock = self._bind_pair(family)
        loop = asyncio.get_running_loop()
        try:
            loop.add_reader(udp_sock.fileno(), self._udp_readable)
            loop.add_reader(tcp_sock.fileno(), self._accept)
        except BaseException:
            loop.remove_reader(udp_sock.fileno())
            loop.remove_reader(tcp_sock.fileno())
            udp_sock.close()
            tcp_sock.close()
            raise
        self._loop, self._udp, self._tcp = loop, udp_sock, tcp_sock

    def _bind_pair(self, family: socket.AddressFamily) -> tuple[socket.socket, socket.socket]:
        attempts = PORT_ATTEMPTS if self.port == 0 else 1
        for attempt in range(attempts):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                udp.setblocking(False)
                udp.bind((self.host, self.port))
                port = int(udp.getsockname()[1])
            except BaseException:
                udp.close()
                raise
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                tcp.setblocking(False)
                # Lets a restarted server rebind while old connections sit in
                # TIME_WAIT; Linux still refuses a port another socket listens on.
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((self.host, port))
                tcp.listen(TCP_BACKLOG)
            except OSError as exc:
                tcp.close()
                udp.close()
                if exc.errno == errno.EADDRINUSE and attempt + 1 < attempts:
                    continue
                raise
            except BaseException:
                tcp.close()
                udp.close()
                raise
            self.port = port
            return udp, tcp
        raise OSError(errno.EADDRINUSE, "no port free on both UDP and TCP")  # pragma: no cover

    async def stop(self) -> None:
        """Close every socket and connection and cancel delayed answers; idempotent.

        Everything is closed before this returns: no callback or task is left.
        """
        self.close()

    def close(self) -> None:
        """Synchronous :meth:`stop`; call it on the server's loop thread."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for conn in list(self._conns):
            conn.close()
        loop = self._loop
        for sock in (self._udp, self._tcp):
            if sock is not None:
                if loop is not None and sock.fileno() >= 0:
                    loop.remove_reader(sock.fileno())
                sock.close()
        self._udp = self._tcp = None
        self._loop = None

    async def __aenter__(self) -> FakeDNS:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------
    # Receiving and sending

    def _schedule(self, delay: float, fn: Callable[[], None]) -> None:
        if delay <= 0:
            fn()
            return
        assert self._loop is not None
        holder: list[asyncio.TimerHandle] = []

        def fire() -> None:
            self._timers.discard(holder[0])
            fn()

        handle = self._loop.call_later(delay, fire)
        holder.append(handle)
        self._timers.add(handle)

    def _udp_readable(self) -> None:
        sock = self._udp
        for _ in range(READ_BATCH):
            if sock is None or sock is not self._udp:
                return
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # e.g. a queued ICMP error; the next datagram is fine
            self._on_udp(data, addr, sock)

    def _on_udp(self, data: bytes, addr: Any, sock: socket.socket) -> None:
        outcome = self._process(data, "udp", addr)
        reply = outcome.reply
        if reply is None:
            return

        def send() -> None:
            if sock is self._udp:
                if outcome.delay > 0:
                    self._delay_applied(outcome.record)
                with contextlib.suppress(OSError):  # a full buffer loses a datagram, as UDP may
                    sock.sendto(reply, addr)

        self._schedule(outcome.delay, send)

    def _accept(self) -> None:
        listener, loop = self._tcp, self._loop
        for _ in range(READ_BATCH):
            if listener is None or loop is None or listener is not self._tcp:
                return
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # the client reset before we accepted (ECONNABORTED) and the like
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _TcpConn(self, loop, sock, addr)
            self._conns.add(conn)
            loop.add_reader(sock.fileno(), conn.readable)

    def _on_tcp(self, data: bytes, conn: _TcpConn) -> None:
        outcome = self._process(data, "tcp", conn.peer)
        reply = outcome.reply
        if outcome.reset:
            conn.reset()
            return
        if reply is None:
            return
        conn.pending += 1
        conn.touch()  # an answer is due: not idle

        def send() -> None:
            conn.pending -= 1
            if outcome.delay > 0 and not conn.closed:
                self._delay_applied(outcome.record)
            conn.send(reply)

        self._schedule(outcome.delay, send)

    # ------------------------------------------------------------------
    # Deciding the answer

    def _process(self, data: bytes, transport: Transport, addr: Any) -> _Outcome:
        prepare()
        peer = _peer_text(addr)
        try:
            outcome = self._decide(data, transport, peer)
        except Exception as exc:  # a bug in the fake: say so, answer SERVFAIL if we can
            outcome = self._failure(data, transport, peer, f"{type(exc).__name__}: {exc}")
        self._record(outcome)
        return outcome

    def _record(self, outcome: _Outcome) -> None:
        q = outcome.record
        if len(self.queries) == self.queries.maxlen:
            self.dropped_queries += 1
        self.queries.append(q)  # its one record: the event log reads its "dns" event from here
        if self.events is None:
            return
        if outcome.error is not None:
            self.events.emit("error", q.name or "-", f"FakeDNS: {outcome.error}", transport=q.transport)
        if self.events.listening:
            self.events.publish(q.event())

    def _query_events(self, kind: EventKind | None) -> list[Event]:
        """The event log's view of the query log (any thread)."""
        if kind not in (None, "dns"):
            return []
        return [q.event() for q in list(self.queries)]

    def _delay_applied(self, q: DnsQuery) -> None:
        # Emitted just before the late answer is sent, so a client that has it
        # knows the fake held that answer back for the whole delay.
        if self.events is not None:
            self.events.emit(
                "fault",
                q.name or "-",
                f"DNS answer to {q.qtype} {q.name} ({q.rcode}) sent after {q.delay_ms} ms",
                transport=q.transport,
                qtype=q.qtype,
                rcode=q.rcode,
                delay_ms=q.delay_ms,
                peer=q.peer,
            )

    def _malformed(self, data: bytes, transport: Transport, peer: str, why: str) -> _Outcome:
        reply: bytes | None = None
        if len(data) >= 12:
            qid, flags = _HEADER.unpack_from(data)
            if not flags & _QR_BIT:
                # Header only: id, opcode and RD echoed, QR set, rcode FORMERR.
                out_flags = _QR_BIT | (flags & 0x7800) | (flags & 0x0100) | RCODE.FORMERR
                reply = struct.pack("!HHHHHH", qid, out_flags, 0, 0, 0, 0)
        record = DnsQuery(
            name="",
            qtype="",
            transport=transport,
            rcode="MALFORMED",
            fault=f"{why}; {'FORMERR sent' if reply else 'dropped'}",
            peer=peer,
        )
        return _Outcome(reply=reply, record=record)

    def _failure(self, data: bytes, transport: Transport, peer: str, error: str) -> _Outcome:
        reply: bytes | None = None
        name, qtype = "", ""
        try:
            request = DNSRecord.parse(data)
            if request.questions:
                name = _name_text(_wire_name(request.questions[0].qname))
                qtype = str(QTYPE[request.questions[0].qtype])
            response = self._response(request, RCODE.SERVFAIL, aa=False)
            reply = response.pack()
        except Exception:
            reply = None
        record = DnsQuery(
            name=name,
            qtype=qtype,
            transport=transport,
            rcode="SERVFAIL" if reply else "DROPPED",
            peer=peer,
        )
        return _Outcome(reply=reply, record=record, error=error)

    def _response(self, request: Any, rcode: int, *, aa: bool) -> Any:
        header = DNSHeader(
            id=request.header.id,
            bitmap=0,
            qr=1,
            opcode=request.header.opcode,
            aa=1 if aa else 0,
            rd=request.header.rd,
            ra=0,
            cd=request.header.cd,
            rcode=rcode & 0xF,
        )
        return DNSRecord(header, questions=list(request.questions[:1]))

    def _decide(self, data: bytes, transport: Transport, peer: str) -> _Outcome:
        try:
            request = DNSRecord.parse(data)
        except Exception as exc:
            return self._malformed(data, transport, peer, f"undecodable: {exc}")
        if request.header.qr:
            return self._malformed(data, transport, peer, "a response, not a query")
        for q in request.questions:
            # dnslib decodes such a name but cannot pack it back: refuse it here.
            length = _wire_length(_wire_name(q.qname))
            if length > MAX_NAME_OCTETS:
                why = f"query name of {length} octets (at most {MAX_NAME_OCTETS})"
                return self._malformed(data, transport, peer, why)
        opts = [rr for rr in request.ar if rr.rtype == QTYPE.OPT]
        if len(opts) > 1:
            return self._malformed(data, transport, peer, f"{len(opts)} OPT records (at most 1)")
        edns = opts[0] if opts else None
        zone = self._zone
        signed = zone.signed
        do = edns is not None and bool(int(edns.ttl) & _DO_BIT)
        cd = bool(request.header.cd)
        ad_asked = bool(request.header.ad)
        flags = tuple(f for f, on in (("DO", do), ("AD", ad_asked), ("CD", cd)) if on)
        unjudged = "indeterminate" if signed else None

        def finish(
            response: Any,
            name: str,
            qtype: str,
            texts: list[str],
            fault: DnsFault | None,
            rcode: int | None = None,
            *,
            dnssec: str | None = unjudged,
            ede: int | None = None,
        ) -> _Outcome:
            full_rcode = response.header.rcode if rcode is None else rcode
            if edns is not None:
                options = [EDNSOption(_EDE_OPTION, struct.pack("!H", ede))] if ede is not None else None
                response.add_ar(
                    EDNS0(
                        udp_len=UDP_EDNS_LIMIT,
                        ext_rcode=full_rcode >> 4,
                        version=EDNS_VERSION,
                        flags="do" if do and signed else "",  # echoed (RFC 3225 3) where DNSSEC is served
                        opts=options,
                    )
                )
            packed = response.pack()
            if transport == "tcp":
                limit = 65535
            elif edns is None:
                limit = UDP_PLAIN_LIMIT
            else:
                limit = max(UDP_PLAIN_LIMIT, min(int(edns.rclass), UDP_EDNS_LIMIT))
            ad = bool(response.header.ad)
            if len(packed) > limit:
                packed = self._truncated(
                    request,
                    response.header.rcode,
                    aa=bool(response.header.aa),
                    edns=edns is not None,
                    do=do and signed,
                )
                texts = []
                ad = False
                dnssec = unjudged
            record = DnsQuery(
                name=name,
                qtype=qtype,
                transport=transport,
                rcode=_rcode_text(full_rcode),
                answers=tuple(texts),
                fault=fault.fault if fault else None,
                peer=peer,
                delay_ms=fault.delay_ms if fault else 0,
                flags=flags,
                dnssec=dnssec,
                ad=ad,
            )
            return _Outcome(reply=packed, record=record, delay=record.delay_ms / 1000.0)

        first = request.questions[0] if request.questions else None
        qname: Name = _wire_name(first.qname) if first is not None else ()
        name = _name_text(qname) if first is not None else ""
        qtype = str(QTYPE[first.qtype]) if first is not None else ""
        if edns is not None and (int(edns.ttl) >> 16) & 0xFF > EDNS_VERSION:
            response = self._response(request, RCODE_BADVERS, aa=False)
            return finish(response, name, qtype, [], None, rcode=RCODE_BADVERS)
        if request.header.opcode != _OPCODE_QUERY:
            return finish(self._response(request, RCODE.NOTIMP, aa=False), name, "", [], None)
        if len(request.questions) != 1 or first is None:
            return finish(self._response(request, RCODE.FORMERR, aa=False), "", "", [], None)
        if first.qclass != _CLASS_IN or not zone.contains(qname):
            return finish(self._response(request, RCODE.REFUSED, aa=False), name, qtype, [], None)

        fault = zone.fault_for(qname, qtype, self.clock)
        kind: str | None = fault.fault if fault else None
        if kind == "truncate" and fault is not None:
            if transport == "udp":
                packed = self._truncated(
                    request, RCODE.NOERROR, aa=True, edns=edns is not None, do=do and signed
                )
                record = DnsQuery(
                    name=name,
                    qtype=qtype,
                    transport=transport,
                    rcode="NOERROR",
                    fault="truncate",
                    peer=peer,
                    delay_ms=fault.delay_ms,
                    flags=flags,
                    dnssec=unjudged,
                )
                return _Outcome(reply=packed, record=record, delay=fault.delay_ms / 1000.0)
            kind = None if fault.tcp == "answer" else fault.tcp
        if kind in ("reset", "drop") and fault is not None:
            # No answer at all: "drop" leaves the client waiting; "reset" (TCP
            # only) cuts the retry with RST, as a middlebox rejecting DNS over TCP.
            record = DnsQuery(
                name=name,
                qtype=qtype,
                transport=transport,
                rcode="RESET" if kind == "reset" else "DROPPED",
                fault=fault.fault,
                peer=peer,
                delay_ms=fault.delay_ms,
                flags=flags,
                dnssec=unjudged,
            )
            return _Outcome(reply=None, record=record, reset=kind == "reset")
        if kind == "servfail":
            return finish(self._response(request, RCODE.SERVFAIL, aa=False), name, qtype, [], fault)
        if kind == "refused":
            return finish(self._response(request, RCODE.REFUSED, aa=False), name, qtype, [], fault)
        if signed:
            return self._decide_signed(
                request, first, qname, name, qtype, fault, kind, finish, do, ad_asked, cd
            )
        if kind in ("nxdomain", "nodata"):
            rcode = RCODE.NXDOMAIN if kind == "nxdomain" else RCODE.NOERROR
            response = self._response(request, rcode, aa=True)
            response.add_auth(zone.soa_rr())
            return finish(response, name, qtype, [], fault)

        # No fault, a delay, or a TCP retry of a truncated answer: the real answer.
        try:
            answer = self._answer(first.qname, qname, first.qtype)
        except _WorldError as exc:
            outcome = finish(self._response(request, RCODE.SERVFAIL, aa=False), name, qtype, [], fault)
            outcome.error = str(exc)
            return outcome
        response = self._response(request, answer.rcode, aa=True)
        for rr in answer.rrs:
            response.add_answer(rr)
        for rr in answer.authority:
            response.add_auth(rr)
        return finish(response, name, qtype, answer.texts, fault)

    def _truncated(self, request: Any, rcode: int, *, aa: bool, edns: bool, do: bool = False) -> bytes:
        response = self._response(request, rcode, aa=aa)
        response.header.tc = 1
        if edns:
            response.add_ar(EDNS0(udp_len=UDP_EDNS_LIMIT, version=EDNS_VERSION, flags="do" if do else ""))
        packed: bytes = response.pack()
        return packed

    def _answer(self, qlabel: Any, name: Name, qtype: int) -> _Answer:
        """The authoritative answer for ``name``, following CNAMEs inside the zone."""
        zone = self._zone
        out = _Answer()
        label, current = qlabel, name
        seen: set[Name] = set()
        for _ in range(MAX_CNAME_CHAIN):
            if not zone.contains(current) or current in seen:
                return out  # the client chases an outside target itself; a loop ends here
            seen.add(current)
            if not zone.exists(current):
                out.rcode = RCODE.NXDOMAIN
                out.authority.append(zone.soa_rr())
                return out
            entries = zone.records.get(current, [])
            matched = self._rrset(label, current, entries, qtype)
            if matched:
                for rr, text in matched:
                    out.rrs.append(rr)
                    out.texts.append(text)
                return out
            cname = next((e for e in entries if e.rtype == "CNAME"), None)
            if cname is None or qtype == QTYPE.CNAME:
                out.authority.append(zone.soa_rr())  # NODATA
                return out
            out.rrs.append(RR(label, QTYPE.CNAME, rdata=CNAME(cname.value + "."), ttl=cname.ttl))
            out.texts.append(f"CNAME {cname.value}")
            label, current = DNSLabel(cname.value), _name_of(cname.value)
        return out

    def _rrset(self, label: Any, name: Name, entries: list[_Entry], qtype: int) -> list[tuple[RR, str]]:
        zone = self._zone
        want_any = qtype == QTYPE.ANY
        out: list[tuple[RR, str]] = []
        if zone.is_apex(name):
            if want_any or qtype == QTYPE.SOA:
                soa = zone.soa_of(name)
                out.append((RR(label, QTYPE.SOA, rdata=soa, ttl=SOA_TTL), f"SOA {soa}"))
            if want_any or qtype == QTYPE.NS:
                ns_name = zone.ns_name_of(name)
                ns = RR(label, QTYPE.NS, rdata=NS(ns_name + "."), ttl=SOA_TTL)
                out.append((ns, f"NS {ns_name}"))
        selected = [e for e in entries if want_any or QTYPE[qtype] == e.rtype]
        # MX by preference (then name); everything else keeps the spec's order.
        selected.sort(key=lambda e: (e.priority, e.value) if e.rtype == "MX" else (-1, ""))
        for e in selected:
            out.append(self._rr(label, e))
        return out

    def _rr(self, label: Any, e: _Entry) -> tuple[RR, str]:
        if e.rtype == "A":
            addr = self._address(e.value, 4) if e.host_ref else e.value
            return RR(label, QTYPE.A, rdata=A(addr), ttl=e.ttl), f"A {addr}"
        if e.rtype == "AAAA":
            addr = self._address(e.value, 6) if e.host_ref else e.value
            return RR(label, QTYPE.AAAA, rdata=AAAA(addr), ttl=e.ttl), f"AAAA {addr}"
        if e.rtype == "MX":
            target = "." if e.value == "." else e.value + "."
            rr = RR(label, QTYPE.MX, rdata=MX(target, e.priority), ttl=e.ttl)
            return rr, f"MX {e.priority} {_label_text(target)}"
        if e.rtype == "CNAME":
            return RR(label, QTYPE.CNAME, rdata=CNAME(e.value + "."), ttl=e.ttl), f"CNAME {e.value}"
        if e.rtype == "TXT":
            return RR(label, QTYPE.TXT, rdata=TXT(_txt_chunks(e.value)), ttl=e.ttl), f"TXT {e.value}"
        if e.rtype == "TLSA":
            usage, selector, matching, data = e.value.split()
            rdata = TLSA(int(usage), int(selector), int(matching), bytes.fromhex(data))
            return RR(label, QTYPE.TLSA, rdata=rdata, ttl=e.ttl), f"TLSA {e.value}"
        raise _WorldError(f"record type {e.rtype!r} is not supported")

    def _address(self, host_name: str, version: int) -> str:
        lookup = self.address_of if version == 4 else self.address6_of
        what = "address_of" if version == 4 else "address6_of"
        if lookup is None:
            rtype = "A" if version == 4 else "AAAA"
            raise _WorldError(f"{rtype} record for host {host_name!r} but FakeDNS has no {what}")
        try:
            addr = lookup(host_name)
        except Exception as exc:
            raise _WorldError(f"{what}({host_name!r}) failed: {exc!r}") from exc
        try:
            ok = ipaddress.ip_address(addr).version == version
        except ValueError:
            ok = False
        if not ok:
            raise _WorldError(f"{what}({host_name!r}) gave {addr!r}, not an IPv{version} address")
        return addr

    # ------------------------------------------------------------------
    # DNSSEC: a signed world, answered as a validating resolver would

    def _decide_signed(
        self,
        request: Any,
        first: Any,
        qname: Name,
        name: str,
        qtype: str,
        fault: DnsFault | None,
        kind: str | None,
        finish: Callable[..., _Outcome],
        do: bool,
        ad_asked: bool,
        cd: bool,
    ) -> _Outcome:
        """The answer in a signed world: judged, signed, SERVFAIL if bogus unless CD is set."""
        try:
            if kind in ("nxdomain", "nodata"):
                answer = self._signed_negative(qname, first.qtype, kind == "nxdomain")
            else:
                answer = self._signed_answer(first.qname, qname, first.qtype, do)
        except _WorldError as exc:
            outcome = finish(self._response(request, RCODE.SERVFAIL, aa=False), name, qtype, [], fault)
            outcome.error = str(exc)
            return outcome
        status, reason, no_ad = "secure", None, False
        judged: list[tuple[_Set, str | None]] = []
        for section in (answer.answer, answer.authority):
            for rrset in section:
                verdict, why, sig_fault, unauthenticated = self._judge(rrset, qtype)
                judged.append((rrset, sig_fault))
                if _RANK[verdict] > _RANK[status]:
                    status, reason = verdict, why
                no_ad = no_ad or unauthenticated
        if not judged:
            status, reason = self._zone_status(self._zone.zone_of(qname))
        if status == "bogus" and not cd:
            # As a validating resolver: nothing of what failed, SERVFAIL and why (RFC 8914).
            ede = _EDE_EXPIRED if reason == "expired_signature" else _EDE_BOGUS
            response = self._response(request, RCODE.SERVFAIL, aa=False)
            return finish(response, name, qtype, [], fault, dnssec=status, ede=ede)
        response = self._response(request, answer.rcode, aa=True)
        faults = dict(judged)
        texts: list[str] = []
        for rrset in answer.answer:
            for rr, text in zip(rrset.rrs, rrset.texts, strict=True):
                response.add_answer(rr)
                texts.append(text)
            if do and rrset.rtype != QTYPE.RRSIG:
                rr, text = self._rrsig(rrset, faults[rrset])
                response.add_answer(rr)
                texts.append(text)
        for rrset in answer.authority:
            if rrset.rtype == QTYPE.NSEC and not do:
                continue  # denial proofs only to a client that asked for DNSSEC records
            for rr in rrset.rrs:
                response.add_auth(rr)
            if do:
                response.add_auth(self._rrsig(rrset, faults[rrset])[0])
        if status == "secure" and (do or ad_asked) and not no_ad:
            response.header.ad = 1
        return finish(response, name, qtype, texts, fault, dnssec=status)

    def _signed_answer(self, qlabel: Any, name: Name, qtype: int, do: bool) -> _SignedAnswer:
        """The RRsets answering ``name``/``qtype``, following CNAMEs, or the denial of it."""
        zone = self._zone
        out = _SignedAnswer()
        label, current = qlabel, name
        seen: set[Name] = set()
        for _ in range(MAX_CNAME_CHAIN):
            if not zone.contains(current) or current in seen:
                return out
            seen.add(current)
            apex = zone.zone_of(current)
            if qtype == QTYPE.DS and current in zone.sub_apexes:
                apex = zone.apex  # a DS lives on the parent's side of the delegation
            chain = self._chain(apex)
            if not chain.exists(current):
                out.rcode = RCODE.NXDOMAIN
                self._deny(out, apex, current, chain, chain.nxdomain_proof(current))
                return out
            matched = self._signed_sets(label, current, apex, qtype, do)
            if matched:
                out.answer += matched
                return out
            entries = zone.records.get(current, []) if apex == zone.zone_of(current) else []
            cname = next((e for e in entries if e.rtype == "CNAME"), None)
            if cname is None or qtype == QTYPE.CNAME:
                self._deny(out, apex, current, chain, chain.nodata_proof(current))
                return out
            rr = RR(label, QTYPE.CNAME, rdata=CNAME(cname.value + "."), ttl=cname.ttl)
            out.answer.append(
                _Set(current, label, QTYPE.CNAME, [rr], [f"CNAME {cname.value}"], apex, current)
            )
            label, current = DNSLabel(cname.value), _name_of(cname.value)
        return out

    def _signed_negative(self, name: Name, qtype: int, nxdomain: bool) -> _SignedAnswer:
        """An ``nxdomain`` or ``nodata`` fault, proven as if the zone held no such name or type."""
        zone = self._zone
        out = _SignedAnswer()
        apex = zone.zone_of(name)
        if name in zone.sub_apexes and (nxdomain or qtype == QTYPE.DS):
            apex = zone.apex  # the parent denies a delegated zone, and holds its DS
        chain = self._chain(apex)
        if nxdomain:
            out.rcode = RCODE.NXDOMAIN
            if name != apex:  # a zone's apex cannot be denied by its own chain: no proof
                pretend = chain.without(name)
                self._deny(out, apex, name, pretend, pretend.nxdomain_proof(name))
            else:
                self._deny(out, apex, name, chain, [])
        else:
            pretend = chain.with_types(name, chain.types.get(name, frozenset()) - {qtype})
            self._deny(out, apex, name, pretend, pretend.nodata_proof(name))
        return out

    def _deny(self, out: _SignedAnswer, apex: Name, name: Name, chain: NsecChain, owners: list[Name]) -> None:
        """The authority section of a negative answer: the zone's SOA and the NSECs of ``owners``."""
        from .dnssec import nsec_text

        label = DNSLabel(apex)
        soa = self._zone.soa_of(apex)
        soa_rr = RR(label, QTYPE.SOA, rdata=soa, ttl=SOA_TTL)
        out.authority.append(_Set(apex, label, QTYPE.SOA, [soa_rr], [f"SOA {soa}"], apex, name))
        for owner in owners:
            rdata = chain.rdata(owner)
            rr = RR(DNSLabel(owner), QTYPE.NSEC, rdata=RD(rdata), ttl=SOA_TTL)
            rrset = _Set(owner, rr.rname, QTYPE.NSEC, [rr], [f"NSEC {nsec_text(rdata)}"], apex, name)
            out.authority.append(rrset)

    def _signed_sets(self, label: Any, name: Name, apex: Name, qtype: int, do: bool) -> list[_Set]:
        """The RRsets at ``name`` in the zone at ``apex`` that answer ``qtype`` (DNSSEC types too)."""
        from .dnssec import dnskey_text, ds_text, nsec_text

        zone = self._zone
        if apex != zone.zone_of(name):  # the parent's side of a delegation: only its DS is data here
            if name in self._missing_ds():
                return []
            ds = self._key(name).ds()
            rr = RR(label, QTYPE.DS, rdata=RD(ds), ttl=DNSSEC_TTL)
            return [_Set(name, label, QTYPE.DS, [rr], [f"DS {ds_text(ds)}"], apex, name)]
        if qtype == QTYPE.RRSIG:
            return self._rrsig_sets(label, name, apex)
        want_any = qtype == QTYPE.ANY
        sets: dict[int, _Set] = {}
        for rr, text in self._rrset(label, name, zone.records.get(name, []), qtype):
            rrset = sets.get(rr.rtype)
            if rrset is None:
                sets[rr.rtype] = _Set(name, label, rr.rtype, [rr], [text], apex, name)
            else:
                rrset.rrs.append(rr)
                rrset.texts.append(text)
        out = list(sets.values())
        if name == apex and (qtype == QTYPE.DNSKEY or (want_any and do)):
            key = self._key(apex).dnskey
            rr = RR(label, QTYPE.DNSKEY, rdata=RD(key), ttl=DNSSEC_TTL)
            out.append(_Set(name, label, QTYPE.DNSKEY, [rr], [f"DNSKEY {dnskey_text(key)}"], apex, name))
        if qtype == QTYPE.NSEC or (want_any and do):
            chain = self._chain(apex)
            if name in chain.types:
                rdata = chain.rdata(name)
                rr = RR(label, QTYPE.NSEC, rdata=RD(rdata), ttl=SOA_TTL)
                out.append(_Set(name, label, QTYPE.NSEC, [rr], [f"NSEC {nsec_text(rdata)}"], apex, name))
        return out

    def _rrsig_sets(self, label: Any, name: Name, apex: Name) -> list[_Set]:
        """An RRSIG query: the signatures of every RRset at ``name`` (and of its DS, at a sub-zone)."""
        zone = self._zone
        signed = self._signed_sets(label, name, apex, QTYPE.ANY, True)
        if name in zone.sub_apexes:
            signed += self._signed_sets(label, name, zone.apex, QTYPE.DS, True)
        rrs: list[Any] = []
        texts: list[str] = []
        for rrset in signed:
            rr, text = self._rrsig(rrset, self._judge(rrset, "RRSIG")[2])
            rrs.append(rr)
            texts.append(text)
        return [_Set(name, label, QTYPE.RRSIG, rrs, texts, apex, name)] if rrs else []

    def _judge(self, rrset: _Set, qtype: str) -> tuple[str, str | None, str | None, bool]:
        """``(status, why, signature fault, no_ad)`` of one RRset of an answer to ``qtype``.

        The status is the zone's (insecure below a missing DS, bogus below a
        broken key or DS) or, in a secure zone, bogus when the fault on the
        RRset's name for the query's type breaks its signature. For ANY and
        RRSIG queries the RRset's own type is the one judged.
        """
        judged = _type_text(rrset.rtype) if qtype in ("ANY", "RRSIG") else qtype
        found = self._zone.fault_for(rrset.judge, judged, self.clock)
        kind = found.fault if found else None
        sig_fault = kind if kind in _SIGNATURE_FAULTS else None
        status, why = self._zone_status(rrset.apex)
        if rrset.rtype == QTYPE.RRSIG:
            sig_fault = None  # signatures are not signed; each was made as its own RRset's fault says
        elif status == "secure" and sig_fault is not None:
            status, why = "bogus", sig_fault
        return status, why, sig_fault, kind == "no_ad"

    def _zone_status(self, apex: Name) -> tuple[str, str | None]:
        """Whether the zone at ``apex`` is secure from the world's key down, and why not."""
        zone = self._zone
        broken = self._signature_fault(zone.apex, "DNSKEY")
        if broken is not None:
            return "bogus", broken
        if apex == zone.apex:
            return "secure", None
        found = zone.fault_for(apex, "DS", self.clock)
        if found is not None and found.fault == "missing_ds":
            return "insecure", None
        broken = self._signature_fault(apex, "DS") or self._signature_fault(apex, "DNSKEY")
        if broken is not None:
            return "bogus", broken
        return "secure", None

    def _signature_fault(self, name: Name, qtype: str) -> str | None:
        found = self._zone.fault_for(name, qtype, self.clock)
        return found.fault if found is not None and found.fault in _SIGNATURE_FAULTS else None

    def _missing_ds(self) -> frozenset[Name]:
        """The sub-zones whose DS the parent does not publish now (``missing_ds``)."""
        zone = self._zone
        missing = []
        for sub in zone.sub_apexes:
            found = zone.fault_for(sub, "DS", self.clock)
            if found is not None and found.fault == "missing_ds":
                missing.append(sub)
        return frozenset(missing)

    def _chain(self, apex: Name) -> NsecChain:
        return self._zone.chain(apex, self._missing_ds() if apex == self._zone.apex else frozenset())

    def _key(self, apex: Name) -> ZoneKey:
        """The signing key of the zone at ``apex``, made at first use and kept by this server."""
        key = self._keys.get(apex)
        if key is None:
            from .dnssec import ZoneKey

            # setdefault: a trust_anchor() call on another thread and a query
            # racing here end up with the same key, whichever made it first.
            key = self._keys.setdefault(apex, ZoneKey(apex))
        return key

    def _rrsig(self, rrset: _Set, sig_fault: str | None) -> tuple[Any, str]:
        """The RRSIG over ``rrset`` (cached per RRset), broken or expired as ``sig_fault`` says."""
        from .dnssec import corrupt, rrsig_rdata, rrsig_text, validity

        expired = sig_fault == "expired_signature"
        rdatas = tuple(sorted({_canonical_rdata(rr) for rr in rrset.rrs}))
        cache_key = (rrset.apex, rrset.owner, rrset.rtype, rrset.ttl, rdatas, expired)
        now = time.time()
        hit = self._signatures.get(cache_key)
        if hit is None or now - hit[1] > RESIGN_AFTER:
            if len(self._signatures) >= MAX_SIGNATURES:
                self._signatures.clear()
            inception, expiration = validity(now, expired=expired)
            sig = rrsig_rdata(
                self._key(rrset.apex), rrset.owner, rrset.rtype, rrset.ttl, rdatas, inception, expiration
            )
            hit = self._signatures[cache_key] = (sig, now)
        sig = hit[0]
        if sig_fault == "bad_signature":
            sig = corrupt(sig)
        rr = RR(rrset.label, QTYPE.RRSIG, rdata=RD(sig), ttl=rrset.ttl)
        return rr, "RRSIG " + rrsig_text(sig, signature=False).rstrip(".")

    # ------------------------------------------------------------------
    # Records the world adds, and the trust anchor

    def add_records(self, records: Iterable[Record]) -> None:
        """Serve these records besides the spec's (e.g. TLSA made from the world's certificates).

        Each call replaces the records of the previous one; :meth:`set_spec`
        forgets them. Callable before :meth:`start` and while serving. Raises
        ValueError for a record outside the zone, of a type the fake does not
        serve, or with a value it cannot encode.
        """
        extra = tuple(records)
        apex = _name_of(self._spec.zone)
        for r in extra:
            if not isinstance(r, Record):
                raise ValueError(f"add_records takes mailfakes.spec.Record values, not {r!r}")
            if r.type not in _SERVED_TYPES:
                raise ValueError(
                    f"record {r.name} {r.type}: type not served (one of {', '.join(_SERVED_TYPES)})"
                )
            if not name_ok(normalize_name(r.name)):
                raise ValueError(f"record {r.name!r} {r.type}: the name is not {NAME_RULE}")
            if not _under(_name_of(r.name), apex):
                raise ValueError(f"record {r.name} {r.type}: not in the world's zone {self._spec.zone!r}")
            target = normalize_name(r.value)
            if r.type in ("MX", "CNAME") and target != "." and not name_ok(target):
                raise ValueError(f"record {r.name} {r.type}: the value {r.value!r} is not {NAME_RULE}")
            if r.type == "A" and not _is_ip(r.value.strip()) and not name_ok(target):
                raise ValueError(f"record {r.name} A: {r.value!r} is neither an address nor a host's name")
            if r.type == "TLSA" and not re.fullmatch(_TLSA_VALUE, " ".join(r.value.split())):
                raise ValueError(
                    f"record {r.name} TLSA: value {r.value!r} is not 'usage selector matching hex' (RFC 6698)"
                )
            if r.type == "TLSA" and any(int(v) > 255 for v in r.value.split()[:3]):
                raise ValueError(f"record {r.name} TLSA: usage, selector and matching are 0 to 255")
            if r.type in ("A", "AAAA") and _is_ip(r.value.strip()):
                version = ipaddress.ip_address(r.value.strip()).version
                if version != (4 if r.type == "A" else 6):
                    raise ValueError(f"record {r.name} {r.type}: {r.value!r} is not an IPv{version} address")
        normalized = tuple(
            Record(r.name, r.type, " ".join(r.value.lower().split()), r.priority, r.ttl)
            if r.type == "TLSA"
            else r
            for r in extra
        )
        self._zone = _Zone(self._spec, normalized)

    def trust_anchor(self) -> str:
        """The world's trust anchor as zone-file lines: the DS of its zone and its DNSKEY.

        For example ``test. 3600 IN DS 12345 13 2 <hex>`` then
        ``test. 3600 IN DNSKEY 257 3 13 <base64>``, as Unbound's
        ``trust-anchor-file`` or dnspython read them. The key is made once per
        server and kept across :meth:`reset` and :meth:`set_spec`. Raises
        ValueError in an unsigned world.
        """
        from .dnssec import dnskey_text, ds_text, name_text

        if self._spec.dnssec is None:
            raise ValueError("the world is not signed (no [world.dnssec]): it has no trust anchor")
        apex = _name_of(self._spec.zone)
        key = self._key(apex)
        owner = name_text(apex)
        return (
            f"{owner} {TRUST_ANCHOR_TTL} IN DS {ds_text(key.ds())}\n"
            f"{owner} {TRUST_ANCHOR_TTL} IN DNSKEY {dnskey_text(key.dnskey)}\n"
        )

    def write_trust_anchor(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`trust_anchor` to ``path``."""
        with open(path, "w", encoding="ascii") as f:
            f.write(self.trust_anchor())


class _TcpConn:
    """One TCP client: 2-byte length-prefixed messages, any number, split anyhow."""

    def __init__(
        self, server: FakeDNS, loop: asyncio.AbstractEventLoop, sock: socket.socket, peer: Any
    ) -> None:
        self.server = server
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.writing = False
        self.pending = 0  # answers scheduled but not sent yet
        self.eof = False
        self.closed = False
        self.idle: asyncio.TimerHandle | None = None
        self.touch()

    def touch(self) -> None:
        """Something happened: the idle timeout starts again (while nothing is due)."""
        if self.idle is not None:
            self.idle.cancel()
        self.idle = None
        if not self.closed and self.pending == 0 and not self.outbox:
            self.idle = self.loop.call_later(self.server.tcp_idle_timeout, self.close)

    def readable(self) -> None:
        if self.closed:
            return
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if not data:
            # The client is done sending: answers still due are sent, then we close.
            self.eof = True
            self.loop.remove_reader(self.fd)
            self.maybe_finish()
            return
        self.inbox += data
        self.touch()
        while len(self.inbox) >= 2 and not self.closed:
            (length,) = struct.unpack_from("!H", self.inbox)
            if length == 0 or length > MAX_TCP_MESSAGE:
                self.bad_framing(length)
                return
            if len(self.inbox) < 2 + length:
                return
            message = bytes(self.inbox[2 : 2 + length])
            del self.inbox[: 2 + length]
            self.server._on_tcp(message, self)

    def bad_framing(self, length: int) -> None:
        why = f"bad TCP framing: length {length} (allowed 1 to {MAX_TCP_MESSAGE}); connection closed"
        record = DnsQuery(
            name="", qtype="", transport="tcp", rcode="MALFORMED", fault=why, peer=_peer_text(self.peer)
        )
        self.server._record(_Outcome(reply=None, record=record))
        self.close()

    def send(self, reply: bytes) -> None:
        if self.closed:
            return
        self.outbox += struct.pack("!H", len(reply)) + reply
        if len(self.outbox) > MAX_TCP_OUTBOX:
            self.close()  # the client does not read its answers
            return
        self.flush()

    def flush(self) -> None:
        if self.closed:
            return
        try:
            sent = self.sock.send(self.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()
            return
        del self.outbox[:sent]
        if self.outbox and not self.writing:
            self.loop.add_writer(self.fd, self.flush)
            self.writing = True
        elif not self.outbox and self.writing:
            self.loop.remove_writer(self.fd)
            self.writing = False
        self.maybe_finish()

    def maybe_finish(self) -> None:
        if self.eof and self.pending == 0 and not self.outbox:
            self.close()
        else:
            self.touch()

    def reset(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.idle is not None:
            self.idle.cancel()
        if not self.eof:
            self.loop.remove_reader(self.fd)
        if self.writing:
            self.loop.remove_writer(self.fd)
        self.sock.close()
        self.inbox.clear()
        self.outbox.clear()
        self.server._conns.discard(self)
