"""What one SMTP session looked like from the server side, and what it kept.

A :class:`Transcript` holds both directions of the dialogue, the TLS state
and how the session ended; a :class:`Message` is a mail the fake accepted,
with its envelope. Both are filled in the world's loop thread and read from
anywhere: readers get the same objects, so they should treat them as
read-only. A :class:`Recorder` keeps them per test: after ``reset()`` a
session that is still closing adds nothing more (no line, event or message).
"""

from __future__ import annotations

import collections
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
    """One session (one TCP connection) to one host of a world.

    Example::

        [t] = world.sessions
        assert t.ended_by == "server-rst" and "DATA" in t.client_lines()
        print(t.text())   # both directions, with the fake's notes
    """

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
    # At most this many lines are kept (see Limits); the rest are counted.
    max_lines: int = 1_000
    lines_dropped: int = 0

    def add(self, direction: Direction, text: str) -> None:
        if self.retired:
            return
        if len(self.lines) >= self.max_lines:
            self.lines_dropped += 1
            return
        self.lines.append(Line(direction, text))

    def client_lines(self) -> list[str]:
        return [ln.text for ln in self.lines if ln.direction == "C"]

    def server_lines(self) -> list[str]:
        return [ln.text for ln in self.lines if ln.direction == "S"]

    def text(self) -> str:
        more = [f"*: ({self.lines_dropped} more lines not kept)"] if self.lines_dropped else []
        return "\n".join([*(str(ln) for ln in self.lines), *more])

    def tail(self, n: int = 10) -> str:
        return "\n".join(str(ln) for ln in self.lines[-n:])


@dataclass(frozen=True)
class Message:
    """A message the fake accepted (replied 2xx to the final dot, or kept before a cut).

    Example::

        [m] = world.messages
        assert m.rcpt_tos == ("user@contoso.test",) and m.replied
    """

    host: str
    session_id: int
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    tls_version: str | None
    replied: bool  # False when the connection was cut before the reply: the client may send it again


@dataclass(frozen=True)
class Limits:
    """How much one world keeps of what it sees; the oldest go first, and are counted.

    The defaults hold a ``serve`` left running for a week flat in memory
    while keeping far more than any test looks at. Ask for more (or less)
    with ``World(spec, limits=Limits(sessions=100_000))``; what was let go
    is in ``World.dropped``. Example::

        world = World(spec, limits=Limits(sessions=100_000, messages=10_000))
        ...
        print(world.dropped)   # {} until a limit is reached
    """

    sessions: int = 10_000  # transcripts kept (one per TCP connection)
    lines_per_session: int = 1_000  # lines of one transcript
    messages: int = 1_000  # accepted messages kept
    message_bytes: int = 64 * 2**20  # their content, all together
    dns_queries: int = 10_000
    events: int = 100_000  # errors are kept apart: the last 1,000 of them

    def __post_init__(self) -> None:
        for name in ("sessions", "lines_per_session", "messages", "message_bytes", "dns_queries", "events"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits({name}={value!r}): expected a whole number from 1")


class Recorder:
    """Everything one world keeps: transcripts, messages, events, schedule counts.

    Written from the world's loop thread only (``reset()`` included, so a
    schedule count never changes under a connection being accepted); list
    appends are atomic, so readers in other threads see a consistent prefix.
    What it keeps is bounded by :class:`Limits`; ``dropped`` counts the rest.

    ``reset()`` retires the sessions it forgets. What a session records goes
    through :meth:`emit` and :meth:`keep_message` (and its own
    :meth:`Transcript.add`), which drop whatever a retired session still
    tries to add.
    """

    def __init__(self, events: EventLog, limits: Limits | None = None) -> None:
        self.events = events
        self.limits = limits or Limits()
        self.sessions: collections.deque[Transcript] = collections.deque(maxlen=self.limits.sessions)
        self.messages: collections.deque[Message] = collections.deque()
        self.dropped: collections.Counter[str] = collections.Counter()
        self._message_bytes = 0
        self._next_id = 1
        self._session_counts: dict[str, int] = {}

    def open_session(self, host: str, address: str, peer: str, faulted: bool) -> Transcript:
        t = Transcript(self._next_id, host, address, peer, faulted, max_lines=self.limits.lines_per_session)
        self._next_id += 1
        if len(self.sessions) == self.sessions.maxlen:
            gone = self.sessions[0]
            self.dropped["sessions"] += 1
            self.dropped["lines"] += gone.lines_dropped
            gone.retired = True  # a forgotten session records nothing more
        self.sessions.append(t)
        return t

    def emit(self, t: Transcript, kind: EventKind, host: str, text: str, **data: Any) -> Event | None:
        """Record an event of session ``t``; None (nothing kept) when ``t`` is stale."""
        if t.retired:
            return None
        return self.events.emit(kind, host, text, session=t.session_id, **data)

    def line(self, t: Transcript, direction: Direction, host: str, text: str) -> None:
        """A line of the dialogue (``C`` from the client, ``S`` from the server): its one record.

        It goes into the session's transcript; live subscribers see it as a
        ``smtp_in`` or ``smtp_out`` event.
        """
        t.add(direction, text)
        self.emit(t, "smtp_in" if direction == "C" else "smtp_out", host, text)

    def keep_message(self, t: Transcript, message: Message) -> bool:
        """Keep a message ``t`` accepted; False (not kept) when ``t`` is stale."""
        if t.retired:
            return False
        self.messages.append(message)
        self._message_bytes += len(message.content)
        limits = self.limits
        while len(self.messages) > limits.messages or (
            self._message_bytes > limits.message_bytes and len(self.messages) > 1
        ):
            self._message_bytes -= len(self.messages.popleft().content)
            self.dropped["messages"] += 1
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
        self._message_bytes = 0
        self.dropped.clear()
        self._session_counts.clear()
        self.events.clear()
