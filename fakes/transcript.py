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
    # True: the client rejected the certificate with an alert (it verified);
    # False: it completed the handshake on a bad certificate (it did not);
    # None: cannot be told (the certificate was valid, or no TLS happened).
    client_verified: bool | None = None
    # "client", "server-fin", "server-rst", "server-close", "timeout", "stop"
    ended_by: str | None = None
    closed: bool = False
    opened: float = field(default_factory=time.monotonic)
    # The recorder's generation (one per test) this session was opened in;
    # retired once a reset starts the next one: its late lines are dropped.
    generation: int = 0
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


class _Messages(list[Message]):
    """The kept messages; one from a session older than ``first_live`` is not kept.

    ``append`` is what the SMTP fake calls today: the filter makes a session
    that outlives a reset unable to add its message to the next test.
    """

    first_live = 0

    def append(self, message: Message) -> None:
        if message.session_id >= self.first_live:
            super().append(message)


class Recorder:
    """Everything one world keeps: transcripts, messages, events, schedule counts.

    Written from the world's loop thread only (``reset()`` included, so a
    schedule count never changes under a connection being accepted); list
    appends are atomic, so readers in other threads see a consistent prefix.

    Each ``reset()`` starts a new generation. What a session records goes
    through :meth:`emit` and :meth:`keep_message`, which drop whatever a
    session of an earlier generation still tries to add.
    """

    def __init__(self, events: EventLog) -> None:
        self.events = events
        self.sessions: list[Transcript] = []
        self.messages: list[Message] = _Messages()
        self.generation = 0
        self._next_id = 1
        self._session_counts: dict[str, int] = {}

    def open_session(self, host: str, address: str, peer: str, faulted: bool) -> Transcript:
        t = Transcript(self._next_id, host, address, peer, faulted, generation=self.generation)
        self._next_id += 1
        self.sessions.append(t)
        return t

    def is_current(self, t: Transcript) -> bool:
        """True while ``t`` belongs to this generation (no reset since it opened)."""
        return not t.retired and t.generation == self.generation

    def emit(self, t: Transcript, kind: EventKind, host: str, text: str, **data: Any) -> Event | None:
        """Record an event of session ``t``; None (nothing kept) when ``t`` is stale."""
        if not self.is_current(t):
            return None
        return self.events.emit(kind, host, text, session=t.session_id, **data)

    def keep_message(self, t: Transcript, message: Message) -> bool:
        """Keep a message ``t`` accepted; False (not kept) when ``t`` is stale."""
        if not self.is_current(t):
            return False
        self.messages.append(message)
        return True

    def count_session(self, host: str) -> int:
        """Count a new session on ``host``; returns how many came before it."""
        n = self._session_counts.get(host, 0)
        self._session_counts[host] = n + 1
        return n

    @property
    def open_sessions(self) -> list[Transcript]:
        return [t for t in self.sessions if not t.closed]

    def reset(self) -> None:
        """Start a new generation: forget everything, retire the sessions of the last one."""
        self.generation += 1
        for t in self.sessions:
            t.retired = True
        self.sessions.clear()
        self.messages.clear()
        self._session_counts.clear()
        self.events.retire_sessions(self._next_id)
        if isinstance(self.messages, _Messages):
            self.messages.first_live = self._next_id
        self.events.clear()
