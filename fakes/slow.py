"""Slow servers: replies that trickle out, a server that stops reading, and a client that leaves a wait.

An overloaded server is not silent, it is late. Three behaviours make it on
loopback, each applied by the SMTP fake (``smtp.py``) at its points:

- :func:`trickle` writes a reply a few bytes at a time (``trickle_bps``), so
  a client's reads return pieces of a line;
- :class:`Stall` stops reading the socket in the middle of message content
  (``stall_in_data``): the kernel's buffers fill, the client's writes block,
  and no reply ever comes;
- :func:`left_waiting` records that the client gave up while the server held
  a reply back (``delays_ms``) or had stopped reading: the evidence the
  witness asks of a timeout verdict.

None of them keeps anything alive once the client or the world has gone: a
trickle and a delay run inside the session's own task, which aiosmtpd cancels
when the connection ends; a stall watches the socket's TCP state and closes a
session whose client has left, and the world's stop cuts it like any other.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable
from typing import Final

from .transcript import Transcript

# Above this rate a write carries more than one byte: the event loop wakes about once a millisecond.
WRITES_PER_SECOND: Final = 1000
# How often a stalled session looks at its socket's TCP state to see whether the client has left.
STALL_POLL: Final = 0.1
_TCP_ESTABLISHED: Final = 1  # tcpi_state, the first byte of struct tcp_info (linux/tcp.h)


async def trickle(write: Callable[[bytes], None], data: bytes, bps: int, closing: Callable[[], bool]) -> None:
    """Write ``data`` at ``bps`` bytes per second, one write per byte (a few above
    :data:`WRITES_PER_SECOND`), paced against the loop's clock so the rate holds on average.
    Stops early when the connection is closing."""
    step = max(1, -(-bps // WRITES_PER_SECOND))
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(0, len(data), step):
        if closing():
            return
        if i:
            await asyncio.sleep(max(0.0, start + i / bps - loop.time()))
            if closing():
                return
        write(data[i : i + step])


def tcp_state(transport: asyncio.BaseTransport) -> int | None:
    """The kernel's TCP state of a transport's socket (1: established), or None when it cannot be read."""
    sock = transport.get_extra_info("socket")
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    except OSError:
        return None
    return int(struct.unpack_from("B", info)[0]) if info else None


class Stall:
    """A session that stopped reading: the socket stays open, unread, until the client leaves.

    With reading paused asyncio no longer sees the client's FIN, so the
    stall looks at the socket's TCP state every :data:`STALL_POLL` seconds:
    once it is no longer established (the client closed, or reset), the
    session is closed (``on_gone``). A client whose FIN waits behind data the
    full buffers cannot take is not seen; the server's idle timer ends that
    session (aiosmtpd's ``timeout``), as it would on a real server.
    """

    __slots__ = ("_handle", "_on_gone", "_raw", "dropped")

    def __init__(self, raw: asyncio.BaseTransport, on_gone: Callable[[], None]) -> None:
        self._raw = raw
        self._on_gone = on_gone
        self._handle: asyncio.TimerHandle | None = None
        self.dropped = 0  # bytes read after the stall (asyncio had them already), never looked at
        self.hold()
        self._handle = asyncio.get_running_loop().call_later(STALL_POLL, self._poll)

    def hold(self, data: bytes = b"") -> None:
        """Keep the socket unread (again: a TLS layer or a stream may resume it on its own)."""
        self.dropped += len(data)
        raw = self._raw
        if not raw.is_closing():
            raw.pause_reading()  # type: ignore[attr-defined]

    def _poll(self) -> None:
        self._handle = None
        if self._raw.is_closing():
            return
        state = tcp_state(self._raw)
        if state is not None and state != _TCP_ESTABLISHED:
            self._on_gone()
            return
        self._handle = asyncio.get_running_loop().call_later(STALL_POLL, self._poll)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def left_waiting(t: Transcript, point: str, since: float, what: str) -> None:
    """The client left at ``point`` while the server was ``what`` (since ``since``, monotonic)."""
    if t.waited_at is not None:
        return
    waited = max(0.0, time.monotonic() - since)
    t.waited_at, t.waited_for = point, waited
    t.add("*", f"the client left after waiting {waited:.2f} s at {point}, while the server was {what}")
