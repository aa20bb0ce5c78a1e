"""Endpoints that are no SMTP server: refused, blackholed, silent, closed at once.

``refuse`` and ``blackhole`` are made by the kernel alone: a bound socket
that never listens answers SYNs with RST; a listener with a backlog of zero
whose single queue slot is taken by a filler connection drops every later
SYN, so the client's ``connect()`` times out. Both stay on loopback: no
"non-routable" address is ever used. ``silent`` and ``close_on_accept`` are
small asyncio protocols.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any, Protocol, cast

from .spec import CloseHow
from .transcript import Transcript


def cut(transport: asyncio.BaseTransport, how: CloseHow) -> None:
    """Close a connection abruptly: ``fin`` without a TLS goodbye, ``rst`` with a reset.

    ``transport`` must be the socket transport (under TLS, the raw one).
    """
    if transport.is_closing():
        return
    if how == "rst":
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0 turns close() into an RST instead of a FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    cast(asyncio.Transport, transport).abort()


def bind_socket(address: str, port: int, *, family: int = socket.AF_INET) -> socket.socket:
    """A TCP socket bound to (address, port), not yet listening."""
    # proto=IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted sockets: without
    # it, multi-line replies wait on delayed ACKs (40 ms per EHLO).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # Not SO_REUSEADDR: two worlds must never share an (address, port).
        sock.bind((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


class RefuseEndpoint:
    """A port on which every SYN is answered with RST (``ECONNREFUSED``).

    The socket is bound but never listens: the kernel refuses connections,
    and nobody else can take the port while the world runs.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.address, self.port = sock.getsockname()[:2]

    def close(self) -> None:
        self.sock.close()


class BlackholeEndpoint:
    """A port on which SYNs are never answered, so ``connect()`` times out.

    ``listen(0)`` leaves one accept-queue slot; a filler connection takes it
    and is never accepted, so later SYNs are dropped (this relies on
    ``net.ipv4.tcp_abort_on_overflow=0``, the Linux default).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.address, self.port = sock.getsockname()[:2]
        self.filler: socket.socket | None = None
        try:
            self.sock.listen(0)
            self.filler = socket.create_connection((self.address, self.port), timeout=1.0)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def overflow_drops_syns() -> bool:
        """False when the kernel would reset instead of dropping (tcp_abort_on_overflow=1)."""
        try:
            with open("/proc/sys/net/ipv4/tcp_abort_on_overflow") as f:
                return f.read().strip() == "0"
        except OSError:
            return True

    def close(self) -> None:
        if self.filler is not None:
            self.filler.close()
            self.filler = None
        self.sock.close()


class Owner(Protocol):
    """What a raw protocol reports to: the host server that accepted it."""

    live: set[Any]

    def forget(self, proto: object, error: BaseException | None) -> None: ...


class TrackedProtocol(asyncio.Protocol):
    """Base for our raw protocols: known to the host until closed, so stop() can end it."""

    def __init__(self, owner: Owner, transcript: Transcript) -> None:
        self.owner = owner
        self.t = transcript
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.t.peer = peer_of(transport)
        self.owner.live.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.forget(self, exc)

    def shutdown(self) -> None:
        if self.transport is not None:
            cut(self.transport, "fin")
        self.owner.forget(self, None)


class SilentProtocol(TrackedProtocol):
    """Accepts the connection and never says a word; input is read and dropped."""

    def data_received(self, data: bytes) -> None:
        pass


class CloseOnAcceptProtocol(TrackedProtocol):
    """Closes each connection as soon as it is accepted, with FIN or RST."""

    def __init__(self, owner: Owner, transcript: Transcript, how: CloseHow) -> None:
        super().__init__(owner, transcript)
        self.how: CloseHow = how

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        cut(transport, self.how)


def peer_of(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if peer else "?"
