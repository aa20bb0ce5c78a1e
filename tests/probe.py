"""An independent raw client for the tests: sockets, ssl and dnspython only.

It shares no code with ``mailfakes``: what it reports is what the wire did.
Every operation has a timeout.
"""

from __future__ import annotations

import errno
import os
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
        self.reads = 0  # recv() calls that returned bytes: a trickled reply takes many

    @classmethod
    def connect(cls, ip: str, port: int, timeout: float = TIMEOUT) -> RawSMTP:
        sock = socket.create_connection((ip, port), timeout=timeout)
        return cls(sock)

    def _ended(self) -> str:
        # CPython's ssl reports a reset under TLS as an EOF, as it does a FIN
        # without close_notify: the kernel's TCP state tells them apart.
        # The close_notify may come a moment before the FIN: wait (bounded) for the TCP end.
        return tcp_end(self.sock) if isinstance(self.sock, ssl.SSLSocket) else "fin"

    def _recv(self, where: str) -> bytes:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            raise Closed("rst", where) from None
        except ssl.SSLZeroReturnError:
            raise Closed(self._ended(), where) from None
        except ssl.SSLError as exc:
            if "EOF" in str(exc) or "UNEXPECTED_EOF" in str(exc):
                raise Closed(self._ended(), where) from None
            raise
        if not data:
            raise Closed(self._ended(), where)
        self.reads += 1
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
            raise Closed(self._ended(), f"sending {line.split()[0]}") from None

    def cmd(self, line: str) -> Reply:
        self.send(line)
        return self.reply(f"after {line.split()[0]}")

    def starttls(self, context: ssl.SSLContext, server_hostname: str) -> ssl.SSLSocket:
        tls = context.wrap_socket(self.sock, server_hostname=server_hostname)
        self.sock = tls
        self.buf = b""
        return tls

    def starttls_keep_socket(self, context: ssl.SSLContext, server_hostname: str) -> ssl.SSLSocket:
        """Like starttls, but a failed handshake leaves the socket open, so that
        tcp_end() can still read how the server ended the connection."""
        tls = context.wrap_socket(self.sock, server_hostname=server_hostname, do_handshake_on_connect=False)
        self.sock = tls
        self.buf = b""
        tls.do_handshake()
        return tls

    def wait_closed(self, where: str = "waiting for the server to close") -> str:
        """Read until the server closes; returns 'fin' or 'rst'."""
        try:
            while True:
                self._recv(where)
        except Closed as c:
            return c.how

    def replies_until_closed(self) -> tuple[list[str], str]:
        """Every reply line until the server closes, and how it closed ('fin' or 'rst')."""
        lines: list[str] = []
        try:
            while True:
                lines += self.reply().lines
        except Closed as closed:
            return lines, closed.how

    def close(self) -> None:
        self.sock.close()


def open_connection(ip: str, port: int, timeout: float = 0.5) -> tuple[socket.socket | None, str]:
    """A TCP connect: (socket, 'connected'), or (None, 'refused' | 'timeout' | 'reset')."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
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


def resolve_a(server: str, port: int, name: str, timeout: float = 0.5, rdtype: str = "A") -> Resolution:
    """Resolve A (or AAAA) like a stub resolver: UDP, then TCP if truncated."""
    try:
        resp = dns_query(server, port, name, rdtype, timeout=timeout)
        if resp.flags & dns.flags.TC:
            resp = dns_query(server, port, name, rdtype, tcp=True, timeout=timeout)
    except (dns.exception.Timeout, TimeoutError):
        return Resolution("TIMEOUT")
    except (EOFError, ConnectionError):
        return Resolution("TIMEOUT")
    rcode = dns.rcode.to_text(resp.rcode())
    wanted = dns.rdatatype.from_text(rdtype)
    addrs = [rd.address for rrset in resp.answer if rrset.rdtype == wanted for rd in rrset]
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


# ----------------------------------------------------------------------
# TLS at the record level: what the server sent, byte for byte
#
# ssl's own sockets turn a server's alert into an exception and hide what
# followed it. These helpers run the client handshake through memory BIOs
# over a plain socket, keep every byte the server sent, split it into TLS
# records (RFC 8446 5.1) and say how the TCP connection ended.

TLS_ALERT = 21  # ContentType.alert (RFC 8446 5.1)
TLS_HANDSHAKE = 22


@dataclass(frozen=True)
class TlsRecord:
    content_type: int
    version: int
    fragment: bytes

    @property
    def alert(self) -> tuple[int, int] | None:
        """(level, description) when this is a clear-text alert record, else None."""
        if self.content_type == TLS_ALERT and len(self.fragment) == 2:
            return self.fragment[0], self.fragment[1]
        return None

    def describe(self) -> str:
        if self.alert is not None:
            return f"alert {self.alert[0]}/{self.alert[1]}"
        return {TLS_HANDSHAKE: "handshake", 20: "change_cipher_spec", 23: "application_data"}.get(
            self.content_type, f"record type {self.content_type}"
        )


def tls_records(data: bytes) -> tuple[list[TlsRecord], bytes]:
    """Split raw bytes into records; returns the records and any incomplete tail."""
    records: list[TlsRecord] = []
    while len(data) >= 5:
        ctype, version, length = data[0], int.from_bytes(data[1:3], "big"), int.from_bytes(data[3:5], "big")
        if len(data) < 5 + length:
            break
        records.append(TlsRecord(ctype, version, data[5 : 5 + length]))
        data = data[5 + length :]
    return records, data


@dataclass
class RawHandshake:
    """A client handshake seen at the record level."""

    received: bytes  # everything the server sent, as it came off the wire
    end: str  # how the connection ended: fin, rst, timeout, or open (handshake done)
    error: ssl.SSLError | None  # what OpenSSL made of it (None if the handshake completed)

    @property
    def records(self) -> list[TlsRecord]:
        return tls_records(self.received)[0]

    def describe(self) -> str:
        """For example 'alert 2/40, then fin'."""
        records, tail = tls_records(self.received)
        parts = [r.describe() for r in records]
        if tail:
            parts.append(f"{len(tail)} stray bytes")
        return ", ".join(parts or ["nothing"]) + f", then {self.end}"


def raw_handshake(
    sock: socket.socket, context: ssl.SSLContext, server_hostname: str, bound: float = TIMEOUT
) -> RawHandshake:
    """Open TLS on a connected plain socket and read on until the server ends the connection."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    sock.settimeout(bound)
    received = b""
    error: ssl.SSLError | None = None
    while True:
        if error is None:
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                error = exc
            else:
                sock.sendall(outgoing.read())
                return RawHandshake(received, "open", None)
        out = outgoing.read()
        try:
            if out:
                sock.sendall(out)
            data = sock.recv(65536)
        except ConnectionResetError:
            return RawHandshake(received, "rst", error)
        except BrokenPipeError:
            return RawHandshake(received, "epipe", error)
        except TimeoutError:
            return RawHandshake(received, "timeout", error)
        if not data:
            if error is None:
                incoming.write_eof()
                try:
                    tls.do_handshake()
                except ssl.SSLError as exc:
                    error = exc
            return RawHandshake(received, end_by_state(sock), error)
        received += data
        if error is None:
            incoming.write(data)


# include/net/tcp_states.h: the kernel's word on how the peer ended the connection.
TCP_CLOSE = 7  # the peer reset it (or both sides are done)
TCP_CLOSE_WAIT = 8  # the peer sent its FIN, our side is still open


def tcp_state(sock: socket.socket | ssl.SSLSocket) -> int:
    """The connection's TCP state (tcpi_state, the first byte of TCP_INFO)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


def end_by_state(sock: socket.socket | ssl.SSLSocket) -> str:
    """After an EOF: 'fin' if the peer sent a FIN, 'rst' if it reset (its error already read)."""
    state = tcp_state(sock)
    return {TCP_CLOSE_WAIT: "fin", TCP_CLOSE: "rst"}.get(state, f"tcp state {state}")


def tcp_end(sock: socket.socket | ssl.SSLSocket, bound: float = TIMEOUT) -> str:
    """How the peer ends the TCP connection, read below any TLS layer: fin, rst, open or data."""
    raw = socket.socket(fileno=os.dup(sock.fileno()))
    try:
        raw.settimeout(bound)
        data = raw.recv(65536)
    except ConnectionResetError:
        return "rst"
    except TimeoutError:
        return "open"
    finally:
        raw.close()
    return end_by_state(sock) if not data else "data"
