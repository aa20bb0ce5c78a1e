"""What one SMTP session looked like from the server side, and what it kept.

A :class:`Transcript` holds both directions of the dialogue, the TLS state
and how the session ended; a :class:`Message` is a mail the fake accepted,
with its envelope. Both are filled in the world's loop thread and read from
anywhere: readers get the same objects, so they should treat them as
read-only. A :class:`Recorder` keeps them per test: after ``reset()`` a
session that is still closing adds nothing more (no line, event or message).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from .events import Event, EventKind, EventLog

Direction = Literal["C", "S", "*"]  # client line, server line, note from the fake

# OpenSSL alert reasons a server sees when the client refused its certificate.
CERT_REJECTION_ALERTS = (
    "UNKNOWN_CA",
    "CERTIFICATE_EXPIRED",
    "BAD_CERTIFICATE",
    "CERTIFICATE_UNKNOWN",
    "UNSUPPORTED_CERTIFICATE",
    "CERTIFICATE_REVOKED",
    "ACCESS_DENIED",
)


@dataclass
class Line:
    direction: Direction
    text: str
    time: float = field(default_factory=time.monotonic)

    def __str__(self) -> str:
        return f"{self.direction}: {self.text}"


@dataclass
class Transcript:
    """One session (one TCP connection) to one host of a world."""

    session_id: int
    host: str
    address: str
    peer: str
    faulted: bool
    lines: list[Line] = field(default_factory=list)
    tls_version: str | None = None
    tls_error: str | None = None
    # The TLS handshake the client opened: True once its ClientHello arrived,
    # with the server name it asked for (SNI), None when it sent none.
    tls_attempted: bool = False
    sni: str | None = None
    # Where in ``lines`` the session went on under TLS (None: it never did).
    tls_from: int | None = None
    # Message content after the 354: how many bytes came (None: none yet),
    # and whether its final dot did.
    content_bytes: int | None = None
    content_complete: bool = False
    # True: the client rejected the certificate with an alert (it verified);
    # False: it completed the handshake on a bad certificate (it did not);
    # None: cannot be told (the certificate was valid, or no TLS happened).
    client_verified: bool | None = None
    # "client", "server-fin", "server-rst", "server-close", "timeout", "stop"
    ended_by: str | None = None
    closed: bool = False
    opened: float = field(default_factory=time.monotonic)
    # Retired by a reset (the end of a test): its late lines are dropped.
    retired: bool = False

    def add(self, direction: Direction, text: str) -> None:
        if not self.retired:
            self.lines.append(Line(direction, text))

    def client_lines(self) -> list[str]:
        return [ln.text for ln in self.lines if ln.direction == "C"]

    def server_lines(self) -> list[str]:
        return [ln.text for ln in self.lines if ln.direction == "S"]

    def text(self) -> str:
        return "\n".join(str(ln) for ln in self.lines)

    def tail(self, n: int = 10) -> str:
        return "\n".join(str(ln) for ln in self.lines[-n:])


@dataclass(frozen=True)
class Message:
    """A message the fake accepted (replied 2xx to the final dot, or kept before a cut)."""

    host: str
    session_id: int
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    tls_version: str | None
    replied: bool  # False when the connection was cut before the reply: the client may send it again


class Recorder:
    """Everything one world keeps: transcripts, messages, events, schedule counts.

    Written from the world's loop thread only (``reset()`` included, so a
    schedule count never changes under a connection being accepted); list
    appends are atomic, so readers in other threads see a consistent prefix.

    ``reset()`` retires the sessions it forgets. What a session records goes
    through :meth:`emit` and :meth:`keep_message` (and its own
    :meth:`Transcript.add`), which drop whatever a retired session still
    tries to add.
    """

    def __init__(self, events: EventLog) -> None:
        self.events = events
        self.sessions: list[Transcript] = []
        self.messages: list[Message] = []
        self._next_id = 1
        self._session_counts: dict[str, int] = {}

    def open_session(self, host: str, address: str, peer: str, faulted: bool) -> Transcript:
        t = Transcript(self._next_id, host, address, peer, faulted)
        self._next_id += 1
        self.sessions.append(t)
        return t

    def emit(self, t: Transcript, kind: EventKind, host: str, text: str, **data: Any) -> Event | None:
        """Record an event of session ``t``; None (nothing kept) when ``t`` is stale."""
        if t.retired:
            return None
        return self.events.emit(kind, host, text, session=t.session_id, **data)

    def keep_message(self, t: Transcript, message: Message) -> bool:
        """Keep a message ``t`` accepted; False (not kept) when ``t`` is stale."""
        if t.retired:
            return False
        self.messages.append(message)
        return True

    def count_session(self, host: str) -> int:
        """Count a new session on ``host``; returns how many came before it."""
        n = self._session_counts.get(host, 0)
        self._session_counts[host] = n + 1
        return n

    def reset(self) -> None:
        """Forget everything; the sessions forgotten are retired: their late records are dropped."""
        for t in self.sessions:
            t.retired = True
        self.sessions.clear()
        self.messages.clear()
        self._session_counts.clear()
        self.events.clear()
