"""The server side of a TLS handshake, seen from below: the ClientHello, and refusals that say so.

Two jobs that asyncio's TLS layer cannot do for us:

- tell what the client opened the handshake with (that a ClientHello came
  at all, and the server name it asked for), read from the record itself, so
  it is known whether the handshake then succeeds or fails;
- refuse a handshake the way a real server does. When the server finds
  nothing in common with the client (no shared cipher, no shared protocol
  version) OpenSSL writes a fatal alert (``handshake_failure``, 40, or
  ``protocol_version``, 70), but asyncio drops it and closes the socket, so
  the client sees a bare EOF. :class:`HandshakeProbe` plays the ClientHello
  to a throwaway server connection of the same context first: if that
  connection refuses, its alert is sent and the connection closed with FIN;
  if it answers, the bytes go to the real TLS layer unchanged, which then
  answers just the same.

:class:`HelloTap` sits between the socket transport and asyncio's TLS
protocol for the first flight only, then steps aside.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass

# A ClientHello larger than this is not waited for (post-quantum key shares
# make them about 1.5 KB; the record limit is 16 KB plus the header).
_HELLO_LIMIT = 64 * 1024

ALERT_NAMES = {
    10: "unexpected_message",
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    50: "decode_error",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    112: "unrecognized_name",
}


@dataclass(frozen=True)
class ClientHello:
    """What the first flight of a client's handshake said."""

    server_name: str | None  # SNI; None when the client sent none (connecting by address)


def parse_client_hello(data: bytes) -> ClientHello | bool | None:
    """Read a ClientHello from the start of a byte stream.

    Returns the hello; ``None`` while more bytes are needed; ``False`` when
    the bytes are no TLS handshake at all (a client that sends plain text
    after STARTTLS).
    """
    if not data:
        return None
    if data[0] != 0x16:  # handshake record
        return False
    body = bytearray()
    pos = 0
    while True:  # a hello may be split over several records
        if len(data) < pos + 5:
            return None
        rtype, _version, length = struct.unpack_from("!BHH", data, pos)
        if rtype != 0x16:
            return False
        if len(data) < pos + 5 + length:
            return None
        body += data[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if len(body) >= 4:
            if body[0] != 0x01:  # client_hello
                return False
            need = int.from_bytes(body[1:4], "big")
            if len(body) >= 4 + need:
                return _read_hello(bytes(body[4 : 4 + need]))


def _read_hello(hello: bytes) -> ClientHello | bool:
    try:
        pos = 2 + 32  # client_version, random
        pos += 1 + hello[pos]  # session id
        pos += 2 + int.from_bytes(hello[pos : pos + 2], "big")  # cipher suites
        pos += 1 + hello[pos]  # compression methods
        if pos >= len(hello):
            return ClientHello(None)  # no extensions at all
        end = pos + 2 + int.from_bytes(hello[pos : pos + 2], "big")
        pos += 2
        while pos + 4 <= end:
            ext, size = struct.unpack_from("!HH", hello, pos)
            pos += 4
            if ext == 0 and hello[pos + 2] == 0:  # server_name: list length, (type 0, length, name)
                n = int.from_bytes(hello[pos + 3 : pos + 5], "big")
                return ClientHello(hello[pos + 5 : pos + 5 + n].decode("ascii", "replace").lower())
            pos += size
        return ClientHello(None)
    except (IndexError, struct.error):
        return False


class HandshakeProbe:
    """Plays the client's first flight to a throwaway server connection of ``context``.

    :meth:`feed` returns ``None`` while it needs more bytes, ``True`` when
    the server would answer (the real handshake may go ahead), or the
    ``(alert bytes, error)`` the server refuses with.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._conn = context.wrap_bio(self._in, self._out, server_side=True)

    def feed(self, data: bytes) -> bool | tuple[bytes, ssl.SSLError] | None:
        self._in.write(data)
        try:
            self._conn.do_handshake()
        except ssl.SSLWantReadError:
            return True if self._out.pending else None
        except ssl.SSLError as exc:
            return self._out.read(), exc
        return True


def alert_name(record: bytes) -> str | None:
    """The name of the alert in a plaintext TLS alert record, if it is one."""
    if len(record) >= 7 and record[0] == 0x15:
        return ALERT_NAMES.get(record[6], f"alert {record[6]}")
    return None


Refusal = Callable[[bytes, ssl.SSLError], None]


class HelloTap(asyncio.Protocol):
    """Between a socket transport and the TLS protocol that will own it, for the first flight.

    Hands every byte on to ``inner`` unchanged (``probe`` given: only once
    the probe says the server would answer), reports the ClientHello to
    ``on_hello``, then gives the transport back to ``inner``. If the probe
    refuses, nothing reaches ``inner``: ``on_refused`` gets the alert to send.
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        inner: asyncio.BaseProtocol,
        *,
        on_hello: Callable[[ClientHello | None], None],
        probe: HandshakeProbe | None = None,
        on_refused: Refusal | None = None,
    ) -> None:
        self.transport = transport
        self.inner = inner
        self.on_hello = on_hello
        self.probe = probe
        self.on_refused = on_refused
        self.seen = b""
        self.hello_done = False
        self.refused = False

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self.seen += data
        if not self.hello_done:
            hello = parse_client_hello(self.seen)
            if hello is not None or len(self.seen) > _HELLO_LIMIT:
                self.hello_done = True
                self.on_hello(hello if isinstance(hello, ClientHello) else None)
        if self.probe is None:
            self._hand_on(data)
            if self.hello_done:
                self._step_aside()
            return
        verdict = self.probe.feed(data)
        if verdict is None and not self.hello_done:
            return  # the first flight is not all in yet
        self.probe = None
        if isinstance(verdict, tuple):
            self.refused = True
            assert self.on_refused is not None
            self.on_refused(*verdict)
            return
        pending, self.seen = self.seen, b""
        self._hand_on(pending)
        if self.hello_done:
            self._step_aside()

    def _hand_on(self, data: bytes) -> None:
        inner = self.inner
        if isinstance(inner, asyncio.BufferedProtocol):
            view = memoryview(data)
            while view:
                buf = memoryview(inner.get_buffer(len(view)))
                n = min(len(buf), len(view))
                buf[:n] = view[:n]
                inner.buffer_updated(n)
                view = view[n:]
        else:
            inner.data_received(data)  # type: ignore[attr-defined]

    def _step_aside(self) -> None:
        self.seen = b""
        if not self.transport.is_closing():
            self.transport.set_protocol(self.inner)

    def eof_received(self) -> bool | None:
        if self.refused:
            return None
        return self.inner.eof_received()  # type: ignore[attr-defined,no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()
