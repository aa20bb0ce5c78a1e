"""What one SMTP session looked like from the server side, and what it kept.

A :class:`Transcript` is the one record of a session: both directions of the
dialogue, the fake's notes, its connect, close, TLS, fault and message
events, the TLS state and how the session ended. A :class:`Message` is a
mail the fake accepted, with its envelope. Both are filled in the world's
loop thread and read from anywhere: readers get the same objects, so they
should treat them as read-only. A :class:`Recorder` keeps them per test:
after ``reset()`` a session that is still closing adds nothing more (no
line, event or message).

A transcript keeps its entries compactly (one shared string each, with its
time in an array); the :class:`Line` and :class:`~mailfakes.events.Event`
objects readers see are made when they read.
"""

from __future__ import annotations

import collections
import time
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from .events import _SHARED, Event, EventKind, EventLog, shared

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

_now = time.monotonic

# A transcript entry is one string: a code, then the text. Lines have their
# direction as code; the session's events (kept in its transcript, not in
# the event log) a lower-case letter of their own.
_LINE_CODES = frozenset("CS*")
_EVENT_CODE: dict[str, str] = {"connect": "c", "close": "x", "tls": "t", "fault": "f", "message": "m"}
_KIND_OF: dict[str, EventKind] = {
    "c": "connect",
    "x": "close",
    "t": "tls",
    "f": "fault",
    "m": "message",
    "C": "smtp_in",
    "S": "smtp_out",
}
_CODES_OF: dict[str | None, frozenset[str]] = {None: frozenset(_KIND_OF)}
_CODES_OF.update({kind: frozenset({code}) for code, kind in _KIND_OF.items()})
SESSION_KINDS: frozenset[str] = frozenset(_KIND_OF.values())  # kinds a transcript holds


class Line:
    """One line of a transcript: ``C`` from the client, ``S`` from the server, ``*`` a note of the fake's."""

    __slots__ = ("direction", "text", "time")

    def __init__(self, direction: Direction, text: str, time: float | None = None) -> None:
        self.direction = direction
        self.text = text
        self.time = _now() if time is None else time

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Line:
            return NotImplemented
        o: Line = other
        return (self.direction, self.text, self.time) == (o.direction, o.text, o.time)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Line(direction={self.direction!r}, text={self.text!r}, time={self.time!r})"

    def __str__(self) -> str:
        return f"{self.direction}: {self.text}"


class Transcript:
    """One session (one TCP connection) to one host of a world.

    Example::

        [t] = world.sessions
        assert t.ended_by == "server-rst" and "DATA" in t.client_lines()
        print(t.text())   # both directions, with the fake's notes

    ``lines`` is a new list of :class:`Line` at each read (a snapshot);
    ``events()`` the session's events, as the world's event log shows them.
    """

    __slots__ = (
        "_nevents",
        "_nlines",
        "_texts",
        "_times",
        "address",
        "client_verified",
        "closed",
        "content_bytes",
        "content_complete",
        "ended_by",
        "events_dropped",
        "faulted",
        "host",
        "lines_dropped",
        "max_lines",
        "opened",
        "out_of_step",
        "peer",
        "retired",
        "session_id",
        "sni",
        "tls_attempted",
        "tls_error",
        "tls_from",
        "tls_version",
        "waited_at",
        "waited_for",
    )

    def __init__(
        self,
        session_id: int,
        host: str,
        address: str,
        peer: str,
        faulted: bool,
        *,
        max_lines: int = 1_000,
        opened: float | None = None,
    ) -> None:
        self.session_id = session_id
        self.host = host
        self.address = address
        self.peer = peer
        self.faulted = faulted
        self.tls_version: str | None = None
        self.tls_error: str | None = None
        # The TLS handshake the client opened: True once its ClientHello arrived,
        # with the server name it asked for (SNI), None when it sent none.
        self.tls_attempted = False
        self.sni: str | None = None
        # Where in ``lines`` the session went on under TLS (None: it never did).
        self.tls_from: int | None = None
        # Message content after the 354: how many bytes came (None: none yet),
        # and whether its final dot did.
        self.content_bytes: int | None = None
        self.content_complete = False
        # A slow server (see mailfakes.slow): the point where the server was holding its reply (or had
        # stopped reading) when the client left, and how long the client had waited there (seconds).
        self.waited_at: str | None = None
        self.waited_for: float | None = None
        # On a host without PIPELINING: the start of what the client sent before the reply it had
        # to wait for (the session was refused with 554 5.5.0); None: it kept in step.
        self.out_of_step: str | None = None
        # True: the client rejected the certificate with an alert (it verified);
        # False: it completed the handshake on a bad certificate (it did not);
        # None: cannot be told (the certificate was valid, or no TLS happened).
        self.client_verified: bool | None = None
        # "client", "server-fin", "server-rst", "server-close", "timeout", "stop"
        self.ended_by: str | None = None
        self.closed = False
        self.opened = _now() if opened is None else opened
        # Retired by a reset (the end of a test): its late lines are dropped.
        self.retired = False
        # At most this many lines are kept, and as many events (see Limits); the rest are counted.
        self.max_lines = max_lines
        self.lines_dropped = 0
        self.events_dropped = 0
        self._nlines = 0
        self._nevents = 0
        # Entries (code + text) and their times: a list and an array while the
        # session runs, a tuple and bytes once it is closed. Written in the
        # loop thread: the time first, then the text, so a reader that takes
        # the texts first always finds their times.
        self._texts: list[str] | tuple[str, ...] = []
        self._times: array[float] | bytes = array("d")

    # -- writing (the world's loop thread) ---------------------------------

    def add(self, direction: Direction, text: str) -> float | None:
        """Add a line; returns its time, or None when it was not kept (retired, or over the limit)."""
        if self.retired:
            return None
        if self._nlines >= self.max_lines:
            self.lines_dropped += 1
            return None
        self._nlines += 1
        return self._append(direction + text)

    def _note_event(self, kind: str, text: str) -> float | None:
        if self._nevents >= self.max_lines:
            self.events_dropped += 1
            return None
        self._nevents += 1
        return self._append(_EVENT_CODE[kind] + text)

    def _append(self, entry: str) -> float:
        now = _now()
        texts = self._texts
        if texts.__class__ is tuple:  # closed, and something still comes in
            self._times = array("d", self._times)
            texts = self._texts = list(texts)
        self._times.append(now)  # type: ignore[union-attr]
        texts.append(_SHARED.get(entry) or shared(entry))  # type: ignore[union-attr]
        return now

    def _compact(self) -> None:
        """The session is over: keep its entries in as little memory as they take."""
        if isinstance(self._texts, list):
            self._times = bytes(self._times)
            self._texts = tuple(self._texts)

    # -- reading (any thread) --------------------------------------------------

    def _entries(self) -> Iterable[tuple[str, float]]:
        texts = self._texts  # first: see _append
        times = self._times
        stamps = memoryview(times).cast("d") if isinstance(times, bytes) else times
        return zip(texts[: len(texts)], stamps, strict=False)

    @property
    def last_time(self) -> float:
        """The monotonic time of its last entry (a line or an event such as its close), else its opening."""
        stamps = [stamp for _, stamp in self._entries()]
        return stamps[-1] if stamps else self.opened

    @property
    def lines(self) -> list[Line]:
        """The dialogue and the fake's notes, oldest first (a new list at each read)."""
        return [Line(e[0], e[1:], at) for e, at in self._entries() if e[0] in _LINE_CODES]  # type: ignore[arg-type]

    def events(self, kind: EventKind | None = None) -> list[Event]:
        """This session's events (its lines as ``smtp_in``/``smtp_out``), oldest first."""
        codes = _CODES_OF.get(kind)
        if not codes:
            return []
        data = {"session": self.session_id}
        return [
            Event(_KIND_OF[e[0]], self.host, e[1:], at, dict(data))
            for e, at in self._entries()
            if e[0] in codes
        ]

    def _texts_of(self, code: str) -> list[str]:
        return [e[1:] for e in self._texts[:] if e[0] == code]

    def client_lines(self) -> list[str]:
        return self._texts_of("C")

    def server_lines(self) -> list[str]:
        return self._texts_of("S")

    def text(self) -> str:
        more = [f"*: ({self.lines_dropped} more lines not kept)"] if self.lines_dropped else []
        return "\n".join([*(str(ln) for ln in self.lines), *more])

    def tail(self, n: int = 10) -> str:
        return "\n".join(str(ln) for ln in self.lines[-n:])

    def __repr__(self) -> str:
        return (
            f"<Transcript #{self.session_id} {self.host} from {self.peer}: {self._nlines} lines, "
            f"ended by {self.ended_by}>"
        )


class Message:
    """A message the fake accepted (replied 2xx to the final dot, or kept before a cut).

    Example::

        [m] = world.messages
        assert m.rcpt_tos == ("user@contoso.test",) and m.replied

    Immutable; equal when all its fields are.
    """

    __slots__ = ("content", "host", "mail_from", "rcpt_tos", "replied", "session_id", "tls_version")

    host: str
    session_id: int
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    tls_version: str | None
    replied: bool  # False when the connection was cut before the reply: the client may send it again

    def __init__(
        self,
        host: str,
        session_id: int,
        mail_from: str,
        rcpt_tos: tuple[str, ...],
        content: bytes,
        tls_version: str | None,
        replied: bool,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "host", host)
        set_(self, "session_id", session_id)
        # Envelopes repeat from one message to the next: one copy of each address.
        set_(self, "mail_from", shared(mail_from))
        set_(self, "rcpt_tos", tuple(shared(r) for r in rcpt_tos))
        set_(self, "content", content)
        set_(self, "tls_version", tls_version)
        set_(self, "replied", replied)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Message is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Message is immutable: cannot delete {name!r}")

    def _key(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Message:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Message(host={self.host!r}, session_id={self.session_id!r}, mail_from={self.mail_from!r}, "
            f"rcpt_tos={self.rcpt_tos!r}, content=<{len(self.content)} bytes>, "
            f"tls_version={self.tls_version!r}, replied={self.replied!r})"
        )


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

    A session's events are kept in its transcript (up to
    ``lines_per_session`` of them), a DNS query's in the query log;
    ``events`` bounds the others (errors, delayed DNS answers).
    """

    sessions: int = 10_000  # transcripts kept (one per TCP connection)
    lines_per_session: int = 1_000  # lines of one transcript, and as many of its events
    messages: int = 1_000  # accepted messages kept
    message_bytes: int = 64 * 2**20  # their content, all together
    dns_queries: int = 10_000
    events: int = 100_000  # events of no session or query; errors are kept apart: the last 1,000 of them

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
    through :meth:`line`, :meth:`emit` and :meth:`keep_message` (and its own
    :meth:`Transcript.add`), which drop whatever a retired session still
    tries to add. Each thing is kept once: a session's lines and events in
    its transcript (the event log reads them from there, and subscribers
    are told them live), its errors in the event log.
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
        events.add_source(self._session_events)

    def open_session(self, host: str, address: str, peer: str, faulted: bool) -> Transcript:
        t = Transcript(self._next_id, host, address, peer, faulted, max_lines=self.limits.lines_per_session)
        self._next_id += 1
        if len(self.sessions) == self.sessions.maxlen:
            gone = self.sessions[0]
            self.dropped["sessions"] += 1
            self.dropped["lines"] += gone.lines_dropped
            self.dropped["events"] += gone.events_dropped
            gone.retired = True  # a forgotten session records nothing more
        self.sessions.append(t)
        return t

    def emit(self, t: Transcript, kind: EventKind, host: str, text: str, **data: Any) -> Event | None:
        """Record an event of session ``t``; None (nothing kept) when ``t`` is stale.

        Its connect, close, TLS, fault and message events go into its
        transcript (a dialogue line given as ``smtp_in``/``smtp_out`` is a
        :meth:`line`); errors, and events with data of their own, into the
        event log. Subscribers are told either way.
        """
        if t.retired:
            return None
        if kind in ("smtp_in", "smtp_out"):
            return self.line(t, "C" if kind == "smtp_in" else "S", host, text, always=True)
        if kind in _EVENT_CODE and not data and host == t.host:
            at = t._note_event(kind, text)
            if kind == "close":
                t._compact()
            event = Event(kind, host, text, at, {"session": t.session_id})
            if self.events.listening:
                self.events.publish(event)
            return event
        return self.events.emit(kind, host, text, session=t.session_id, **data)

    def note(self, t: Transcript, kind: EventKind, text: str) -> None:
        """:meth:`emit` of one of ``t``'s own events (connect, close, TLS, fault, message, on its
        host, without data), for a caller that needs no :class:`Event` back: one is made only
        for live subscribers."""
        if t.retired:
            return
        at = t._note_event(kind, text)
        if kind == "close":
            t._compact()
        if self.events._subscribers:
            self.events.publish(Event(kind, t.host, text, at, {"session": t.session_id}))

    def line(
        self, t: Transcript, direction: Direction, host: str, text: str, *, always: bool = False
    ) -> Event | None:
        """A line of the dialogue (``C`` from the client, ``S`` from the server): its one record.

        It goes into the session's transcript; live subscribers see it as a
        ``smtp_in`` or ``smtp_out`` event (made only when someone listens,
        or with ``always``; returned then).
        """
        if t.retired:
            return None
        if t._nlines < t.max_lines:  # Transcript.add, on the path every line takes
            t._nlines += 1
            at: float | None = t._append(direction + text)
        else:
            t.lines_dropped += 1
            at = None
        if not (always or self.events._subscribers):
            return None
        kind: EventKind = "smtp_in" if direction == "C" else "smtp_out"
        event = Event(kind, host, text, at, {"session": t.session_id})
        self.events.publish(event)
        return event

    def answered(self, message: Message) -> None:
        """The reply to ``message``'s final dot went out after all (a delayed reply): mark it replied."""
        for i, m in enumerate(self.messages):
            if m is message:
                self.messages[i] = Message(
                    host=m.host,
                    session_id=m.session_id,
                    mail_from=m.mail_from,
                    rcpt_tos=m.rcpt_tos,
                    content=m.content,
                    tls_version=m.tls_version,
                    replied=True,
                )
                return

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

    def _session_events(self, kind: EventKind | None) -> list[Event]:
        """The event log's view of the kept transcripts (any thread)."""
        if kind is not None and kind not in SESSION_KINDS:
            return []
        return [e for t in list(self.sessions) for e in t.events(kind)]

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
