"""A small stub resolver for the reference client: one server, bounded waits.

It asks one DNS server (the world's) on a given port, over UDP, and again
over TCP when the answer is truncated, the way a system stub resolver does.
It reports what happened (``NOERROR``, ``NXDOMAIN``, ``SERVFAIL``,
``REFUSED``, ``TIMEOUT``, ...) instead of raising, so the client can tell the
causes of a failed lookup apart.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from dnslib import QTYPE, RCODE, DNSRecord

_RANDOM = random.SystemRandom()


@dataclass(frozen=True)
class Answer:
    name: str
    qtype: str
    rcode: str  # NOERROR, NXDOMAIN, SERVFAIL, REFUSED, FORMERR, TIMEOUT, CLOSED
    records: tuple[tuple[str, str], ...] = ()  # (type, value) in answer order
    transport: str = "udp"
    truncated_udp: bool = False
    cnames: tuple[str, ...] = field(default_factory=tuple)
    ad: bool = False  # the server vouched that the answer validated (DNSSEC, RFC 4035 3.2.3)

    @property
    def ok(self) -> bool:
        return self.rcode == "NOERROR"

    def values(self, qtype: str) -> list[str]:
        return [v for t, v in self.records if t == qtype]

    def describe(self) -> str:
        how = (
            "over TCP after a truncated UDP answer"
            if self.truncated_udp
            else f"over {self.transport.upper()}"
        )
        if self.rcode == "NOERROR" and not self.records:
            return f"{self.qtype} {self.name}: no record (NODATA) {how}"
        if self.rcode == "TIMEOUT":
            return f"{self.qtype} {self.name}: no answer (timeout) {how}"
        return f"{self.qtype} {self.name}: {self.rcode}{' (secure)' if self.ad else ''} {how}"


class StubResolver:
    """Ask ``server:port``; every query waits at most ``timeout`` seconds per transport."""

    def __init__(self, server: str, port: int = 53, *, timeout: float = 1.0) -> None:
        self.server = server
        self.port = port
        self.timeout = timeout
        self.log: list[Answer] = []
        self.observer: Callable[[Answer], None] | None = None

    def query(self, name: str, qtype: str, *, dnssec: bool = False) -> Answer:
        """``dnssec``: set the AD bit in the query, asking the server to say whether the answer
        validated (RFC 6840 5.7), as a stub that trusts its validating resolver does."""
        name = name.rstrip(".").lower()
        request = DNSRecord.question(name, qtype)
        request.header.id = _RANDOM.randrange(1, 65536)
        request.header.rd = 1
        if dnssec:
            request.header.ad = 1
        answer = self._udp(request, name, qtype)
        if answer is None:
            answer = self._tcp(request, name, qtype, truncated=True)
        self.log.append(answer)
        if self.observer is not None:
            self.observer(answer)
        return answer

    def _parse(self, data: bytes, name: str, qtype: str, transport: str, truncated: bool) -> Answer:
        reply = DNSRecord.parse(data)
        rcode = RCODE.get(reply.header.rcode)
        records = []
        cnames = []
        for rr in reply.rr:
            rtype = QTYPE.get(rr.rtype)
            if rtype == "MX":
                value = f"{rr.rdata.preference} {str(rr.rdata.label).rstrip('.')}"
            elif rtype == "TXT":
                value = b"".join(rr.rdata.data).decode("utf-8", "replace")
            elif rtype == "TLSA":
                d = rr.rdata
                value = f"{d.cert_usage} {d.selector} {d.matching_type} {d.cert_data.hex()}"
            else:
                value = str(rr.rdata).rstrip(".")
            if rtype == "CNAME":
                cnames.append(value.lower())
            records.append((rtype, value))
        return Answer(
            name, qtype, rcode, tuple(records), transport, truncated, tuple(cnames), bool(reply.header.ad)
        )

    def _udp(self, request: DNSRecord, name: str, qtype: str) -> Answer | None:
        with socket.socket(socket.AF_INET6 if ":" in self.server else socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(self.timeout)
            try:
                s.sendto(request.pack(), (self.server, self.port))
                while True:
                    data, _ = s.recvfrom(65535)
                    if len(data) >= 2 and struct.unpack("!H", data[:2])[0] == request.header.id:
                        break
            except TimeoutError:
                return Answer(name, qtype, "TIMEOUT", transport="udp")
            except ConnectionRefusedError:  # ICMP port unreachable: nothing listens
                return Answer(name, qtype, "REFUSED_PORT", transport="udp")
        reply = DNSRecord.parse(data)
        if reply.header.tc:
            return None  # truncated: ask again over TCP
        return self._parse(data, name, qtype, "udp", False)

    def _tcp(self, request: DNSRecord, name: str, qtype: str, *, truncated: bool) -> Answer:
        packet = request.pack()
        try:
            with socket.create_connection((self.server, self.port), timeout=self.timeout) as s:
                s.sendall(struct.pack("!H", len(packet)) + packet)
                size = struct.unpack("!H", _read_exactly(s, 2))[0]
                data = _read_exactly(s, size)
        except TimeoutError:
            return Answer(name, qtype, "TIMEOUT", transport="tcp", truncated_udp=truncated)
        except (ConnectionError, EOFError):
            return Answer(name, qtype, "CLOSED", transport="tcp", truncated_udp=truncated)
        return self._parse(data, name, qtype, "tcp", truncated)


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("the DNS server closed the TCP connection")
        buf += chunk
    return buf
