"""Endpoints that are no SMTP server, how a connection is cut, and the listener under every host.

``refuse`` and ``blackhole`` are made by the kernel alone: a bound socket
that never listens answers SYNs with RST; a listener with a backlog of zero
whose single queue slot is taken by a filler connection drops every later
SYN, so the client's ``connect()`` times out. Both stay on loopback: no
"non-routable" address is ever used. ``silent`` and ``close_on_accept`` are
small asyncio protocols. :class:`Listener` accepts for the hosts that do
listen, so that stopping a world ends every connection it accepted.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import weakref
from collections.abc import Callable
from typing import Any, Protocol, cast

from .spec import CloseHow
from .transcript import Transcript

# A reset sent the instant a connection is accepted can overtake the client's
# own connect(): on loopback there is no round trip, and a client that has not
# yet seen its connect() complete reports ECONNRESET there, which curl, s-nail
# and Postfix read as "connection refused". Until the client has spoken (proof
# that its connect() returned), a reset waits this long after the accept, about
# the round trip to a distant load balancer. Nothing on the server side can
# see a client's connect() return, so this is a bound, not a proof: a client
# process kept off the CPU for longer could still lose the race (none did in
# the stability tests, 200 connections at once, also with the CPU loaded).
ESTABLISH_GRACE = 0.1
# After our FIN the connection is still read (and the input dropped) until the
# client closes too, at most this long: closing a socket with unread input
# makes Linux send RST instead of FIN.
FIN_DRAIN_LIMIT = 5.0
# Out of descriptors or memory, the listener stops accepting this long, as
# asyncio's own servers do (the clients wait in the kernel's queue meanwhile).
ACCEPT_RETRY_DELAY = 1.0
# Accepts per readiness of the listening socket; more wait for the next one.
ACCEPT_BATCH = 128
# How long Listener.wait_closed waits for asyncio to report every connection
# lost after it was aborted; a bound for a bug, never reached otherwise.
CLOSE_BOUND = 5.0
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Owner(Protocol):
    """What a raw protocol reports to: the host server that accepted it."""

    live: set[Any]  # sessions with an open connection
    draining: set[Any]  # connections closed with FIN, read until the peer closes (Drainer)

    def forget(self, proto: object, error: BaseException | None) -> None: ...


class Drainer:
    """The last of a connection we closed with FIN: reads and drops input until the peer closes.

    It holds a duplicate of the socket, so the transport can be closed at
    once (its protocol learns of the end as usual) while the kernel socket
    lives on, half closed, until the client's FIN, the limit, or a world stop.
    """

    def __init__(self, sock: socket.socket, owner: Owner | None) -> None:
        self.sock = sock
        self.owner = owner
        self.loop = asyncio.get_running_loop()
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._readable)
        self.timer = self.loop.call_later(FIN_DRAIN_LIMIT, self.shutdown)
        if owner is not None:
            owner.draining.add(self)

    def _readable(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.shutdown()

    def shutdown(self) -> None:
        if self.sock.fileno() < 0:
            return
        self.timer.cancel()
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        if self.owner is not None:
            self.owner.draining.discard(self)


def cut(transport: asyncio.BaseTransport, how: CloseHow, owner: Owner | None = None) -> None:
    """Close a connection abruptly: ``fin`` without a TLS goodbye, ``rst`` with a reset.

    ``transport`` must be the socket transport (under TLS, the raw one). A
    ``fin`` is always a FIN: what the transport had handed to the kernel goes
    first (asyncio's own buffer is dropped, as in any abrupt close; the SMTP
    fake waits for each reply to reach the kernel), and input that arrives
    later is read and dropped (see :class:`Drainer`). An ``rst`` is always a
    RST (``SO_LINGER`` 0). Either way the transport's protocol gets
    ``connection_lost`` as for any close.
    """
    if transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        if how == "rst":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            try:
                twin = socket.socket(fileno=os.dup(sock.fileno()))
            except OSError:
                twin = None
            if twin is not None:
                try:
                    twin.shutdown(socket.SHUT_WR)
                except OSError:  # the peer is gone already
                    twin.close()
                else:
                    Drainer(twin, owner)
    cast(asyncio.Transport, transport).abort()


def bind_socket(
    address: str, port: int, *, family: int = socket.AF_INET, reuse: bool = False
) -> socket.socket:
    """A TCP socket bound to (address, port), not yet listening.

    ``reuse`` (SO_REUSEADDR) is for a host that stops and starts listening
    while its world runs (a timed schedule): its address is bound again over
    the TIME_WAIT its own earlier sessions left. Linux lets two sockets share
    an address only when both set it, so another world (whose sockets never
    do) can still not share it.
    """
    # proto=IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted sockets: without
    # it, multi-line replies wait on delayed ACKs (40 ms per EHLO).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Otherwise not SO_REUSEADDR: two worlds must never share an (address, port).
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
    and is never accepted. Linux drops a SYN that arrives while the accept
    queue is full (``tcp_conn_request``), before any SYN-ACK, whatever
    ``net.ipv4.tcp_abort_on_overflow`` says (that setting only governs the
    final ACK of a handshake that got in) and whether or not syncookies are on.
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

    def close(self) -> None:
        if self.filler is not None:
            self.filler.close()
            self.filler = None
        self.sock.close()


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
            cut(self.transport, "fin", self.owner)
        self.owner.forget(self, None)


class SilentProtocol(TrackedProtocol):
    """Accepts the connection and never says a word; input is read and dropped."""

    def data_received(self, data: bytes) -> None:
        pass


class CloseOnAcceptProtocol(TrackedProtocol):
    """Closes each connection right after the accept, with FIN or RST.

    A FIN goes at once. A RST waits until the client has spoken (its
    connect() has returned) or :data:`ESTABLISH_GRACE` after the accept, so
    the client sees an established connection that is then reset, not a
    refusal.
    """

    def __init__(self, owner: Owner, transcript: Transcript, how: CloseHow) -> None:
        super().__init__(owner, transcript)
        self.how: CloseHow = how
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.how == "fin":
            self.cut()
        else:
            self.timer = asyncio.get_running_loop().call_later(ESTABLISH_GRACE, self.cut)

    def data_received(self, data: bytes) -> None:
        self.cut()

    def cut(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            cut(self.transport, self.how, self.owner)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        super().shutdown()


class Listener:
    """A listening socket with an accept of our own, for one host.

    Each accepted socket gets its transport from the public
    ``loop.connect_accepted_socket``. An ``asyncio.Server`` gives a connection
    it accepted its protocol some loop iterations later and says nothing of
    those still on the way, so a stop could miss them; this listener knows
    them, and stops in two steps: :meth:`stop_accepting` closes the listening
    socket and waits until every connection accepted so far has its protocol
    (so the host can end it), and :meth:`wait_closed` waits until asyncio
    reports each of them lost, its socket closed.
    """

    def __init__(
        self, sock: socket.socket, factory: Callable[[], asyncio.BaseProtocol], *, backlog: int
    ) -> None:
        self.sock = sock
        self.factory = factory
        self.loop = asyncio.get_running_loop()
        # Connections accepted whose transport is still being made.
        self.adopting: set[asyncio.Task[None]] = set()
        # The transports made, while they live (closed ones are skipped at stop).
        self.transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self.retry: asyncio.TimerHandle | None = None
        sock.setblocking(False)
        sock.listen(backlog)
        self.loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # the client gave up while in the queue
                continue
            except OSError as exc:
                self.loop.call_exception_handler({"message": "cannot accept a connection", "exception": exc})
                if exc.errno in _OUT_OF_RESOURCES:
                    self.loop.remove_reader(self.sock.fileno())
                    self.retry = self.loop.call_later(ACCEPT_RETRY_DELAY, self._resume)
                return
            conn.setblocking(False)
            task = self.loop.create_task(self._adopt(conn))
            self.adopting.add(task)
            task.add_done_callback(self.adopting.discard)

    def _resume(self) -> None:
        self.retry = None
        if self.sock.fileno() >= 0:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    async def _adopt(self, conn: socket.socket) -> None:
        try:
            transport, _protocol = await self.loop.connect_accepted_socket(self.factory, conn)
        except Exception as exc:
            conn.close()
            self.loop.call_exception_handler(
                {"message": "cannot serve an accepted connection", "exception": exc}
            )
            return
        except BaseException:
            conn.close()
            raise
        self.transports.add(transport)

    async def stop_accepting(self) -> None:
        """Accept no more; return once every connection accepted has its protocol."""
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()  # clients still in the kernel's queue are reset
        if self.adopting:
            await asyncio.wait(set(self.adopting))

    async def wait_closed(self) -> None:
        """Abort what is still open and wait until asyncio reports each connection lost."""
        still = [tr for tr in self.transports if _open(tr)]
        if not still:
            return
        left = len(still)
        done = self.loop.create_future()

        def gone() -> None:
            nonlocal left
            left -= 1
            if left == 0 and not done.done():
                done.set_result(None)

        for tr in still:
            # A closing transport has its connection_lost on the way: hear it
            # through a stand-in that hands it on to the protocol in place.
            cast(asyncio.Transport, tr).abort()
            tr.set_protocol(_LastWord(tr.get_protocol(), gone))
        await asyncio.wait({done}, timeout=CLOSE_BOUND)
        if not done.done():
            self.loop.call_exception_handler(
                {"message": f"{left} connections not reported lost {CLOSE_BOUND} s after their abort"}
            )


def _open(transport: asyncio.BaseTransport) -> bool:
    sock = transport.get_extra_info("socket")
    return sock is not None and sock.fileno() >= 0


class _LastWord(asyncio.BaseProtocol):
    """Stands in for a protocol whose transport was aborted: hands its end on, then says so."""

    def __init__(self, inner: asyncio.BaseProtocol | None, done: Callable[[], None]) -> None:
        self.inner = inner
        self.done = done

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            if self.inner is not None:
                self.inner.connection_lost(exc)
        finally:
            self.done()


def peer_of(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if peer else "?"
