"""An independent raw client for the tests: sockets, ssl and dnspython only.

It shares no code with ``fakes``: what it reports is what the wire did.
Every operation has a timeout.
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

TIMEOUT = 2.0


class Closed(Exception):
    """The server closed the connection: ``how`` is 'fin' (EOF) or 'rst' (reset)."""

    def __init__(self, how: str, where: str) -> None:
        super().__init__(f"connection closed by the server ({how}) {where}")
        self.how = how
        self.where = where


@dataclass
class Reply:
    code: int
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class RawSMTP:
    """A line-level SMTP client over a plain or TLS socket."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket) -> None:
        self.sock = sock
        self.buf = b""
        self.log: list[str] = []

    @classmethod
    def connect(cls, ip: str, port: int, timeout: float = TIMEOUT) -> RawSMTP:
        sock = socket.create_connection((ip, port), timeout=timeout)
        return cls(sock)

    def _recv(self, where: str) -> bytes:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            raise Closed("rst", where) from None
        except ssl.SSLZeroReturnError:
            raise Closed("fin", where) from None
        except ssl.SSLError as exc:
            if "EOF" in str(exc) or "UNEXPECTED_EOF" in str(exc):
                raise Closed("fin", where) from None
            raise
        if not data:
            raise Closed("fin", where)
        return data

    def reply(self, where: str = "waiting for a reply") -> Reply:
        lines: list[str] = []
        while True:
            while b"\r\n" not in self.buf:
                self.buf += self._recv(where)
            raw, _, self.buf = self.buf.partition(b"\r\n")
            line = raw.decode("utf-8", "replace")
            self.log.append("S: " + line)
            lines.append(line)
            if line[3:4] != "-":
                return Reply(int(line[:3]), lines)

    def send(self, line: str) -> None:
        self.log.append("C: " + line)
        try:
            self.sock.sendall(line.encode() + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            raise Closed("rst", f"sending {line.split()[0]}") from None
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            raise Closed("fin", f"sending {line.split()[0]}") from None

    def cmd(self, line: str) -> Reply:
        self.send(line)
        return self.reply(f"after {line.split()[0]}")

    def starttls(self, context: ssl.SSLContext, server_hostname: str) -> ssl.SSLSocket:
        tls = context.wrap_socket(self.sock, server_hostname=server_hostname)
        self.sock = tls
        self.buf = b""
        return tls

    def wait_closed(self, where: str = "waiting for the server to close") -> str:
        """Read until the server closes; returns 'fin' or 'rst'."""
        try:
            while True:
                self._recv(where)
        except Closed as c:
            return c.how

    def close(self) -> None:
        self.sock.close()


def open_connection(ip: str, port: int, timeout: float = 0.5) -> tuple[socket.socket | None, str]:
    """A TCP connect: (socket, 'connected'), or (None, 'refused' | 'timeout' | 'reset')."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((ip, port))
        return sock, "connected"
    except ConnectionRefusedError:
        outcome = "refused"
    except TimeoutError:
        outcome = "timeout"
    except ConnectionResetError:  # accepted, then reset before connect() returned
        outcome = "reset"
    except OSError as exc:
        sock.close()
        if exc.errno == errno.ECONNREFUSED:
            return None, "refused"
        raise
    sock.close()
    return None, outcome


def connect_outcome(ip: str, port: int, timeout: float = 0.5) -> str:
    """'connected', 'refused', 'timeout' or 'reset' for a bare TCP connect."""
    sock, outcome = open_connection(ip, port, timeout)
    if sock is not None:
        sock.close()
    return outcome


def dns_query(
    server: str, port: int, name: str, rdtype: str = "A", *, tcp: bool = False, timeout: float = 0.5
) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(q, server, port=port, timeout=timeout)
    return dns.query.udp(q, server, port=port, timeout=timeout, ignore_trailing=True)


@dataclass
class Resolution:
    rcode: str  # NOERROR, NXDOMAIN, SERVFAIL, REFUSED, TIMEOUT, TRUNCATED
    addresses: list[str] = field(default_factory=list)


def resolve_a(server: str, port: int, name: str, timeout: float = 0.5) -> Resolution:
    """Resolve A like a stub resolver: UDP, then TCP if truncated."""
    try:
        resp = dns_query(server, port, name, "A", timeout=timeout)
        if resp.flags & dns.flags.TC:
            resp = dns_query(server, port, name, "A", tcp=True, timeout=timeout)
    except (dns.exception.Timeout, TimeoutError):
        return Resolution("TIMEOUT")
    except (EOFError, ConnectionError):
        return Resolution("TIMEOUT")
    rcode = dns.rcode.to_text(resp.rcode())
    addrs = [rd.address for rrset in resp.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset]
    return Resolution(rcode, addrs)


def resolve_mx(
    server: str, port: int, domain: str, timeout: float = 0.5
) -> tuple[str, list[tuple[int, str]]]:
    try:
        resp = dns_query(server, port, domain, "MX", timeout=timeout)
    except dns.exception.Timeout:
        return "TIMEOUT", []
    mx = [
        (rd.preference, rd.exchange.to_text().rstrip("."))
        for rrset in resp.answer
        if rrset.rdtype == dns.rdatatype.MX
        for rd in rrset
    ]
    return dns.rcode.to_text(resp.rcode()), sorted(mx)


def client_context(cafile: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)
