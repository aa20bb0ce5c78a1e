"""The record of what happened in a world: DNS queries, connections, SMTP lines.

Servers report events from the world's event-loop thread; tests, the CLI and
demos read them from any thread, or subscribe to see them live.

Each thing a world sees is kept once. A session's lines and its connect,
close, TLS, fault and message events live in its transcript
(:class:`mailfakes.transcript.Transcript`), a DNS query in the DNS server's
query log; the :class:`EventLog` keeps only what belongs to no such record
(errors, the moment a delayed DNS answer went out) and reads the rest from
its *sources* when asked. So ``events()`` and the transcripts always agree,
and whatever a world lets go to stay within its limits is gone from both.
Subscribers see every event live, kept or not.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Literal

EventKind = Literal[
    "dns",  # a DNS query and what it got
    "connect",  # a TCP connection accepted (or refused by design)
    "close",  # a connection ended
    "smtp_in",  # a line the client sent
    "smtp_out",  # a line the server sent
    "tls",  # TLS handshake done or failed
    "fault",  # a fault was applied
    "message",  # a message was accepted
    "error",  # an unexpected error inside the fakes
]

_SHARED: dict[str, str] = {}
_SHARED_MAX = 2048  # distinct texts held for sharing; the table starts afresh when full
_SHARED_LONGEST = 200  # longer texts rarely repeat: not worth a slot


def shared(text: str) -> str:
    """``text``, or an equal string kept already: the lines a world sees repeat a lot.

    Sessions of one world say the same things (the EHLO reply, ``250 2.1.0
    Ok``, the same addresses), so a record holds one copy of each. The table
    is bounded: when full, it starts afresh (the records keep their strings).
    """
    if len(text) > _SHARED_LONGEST:
        return text
    found = _SHARED.get(text)
    if found is not None:
        return found
    if len(_SHARED) >= _SHARED_MAX:
        _SHARED.clear()
    _SHARED[text] = text
    return text


class Event:
    """One thing a world saw: a DNS query, a connection, an SMTP line, a fault, an error.

    Example::

        for event in world.events.events("fault"):
            print(event)   # [fault] mail.contoso.test: cut (rst) after 23 bytes of message content

    Immutable; two events are equal when kind, host, text, time and data are.
    """

    __slots__ = ("data", "host", "kind", "text", "time")

    kind: EventKind
    host: str
    text: str
    time: float
    data: dict[str, Any]

    def __init__(
        self,
        kind: EventKind,
        host: str,
        text: str,
        time: float | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "kind", kind)
        set_(self, "host", host)
        set_(self, "text", text)
        set_(self, "time", _now() if time is None else time)
        set_(self, "data", {} if data is None else data)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Event is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Event is immutable: cannot delete {name!r}")

    def _key(self) -> tuple[object, ...]:
        return (self.kind, self.host, self.text, self.time, self.data)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Event:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self.kind, self.host, self.text, self.time))

    def __repr__(self) -> str:
        return (
            f"Event(kind={self.kind!r}, host={self.host!r}, text={self.text!r}, "
            f"time={self.time!r}, data={self.data!r})"
        )

    def __str__(self) -> str:
        return f"[{self.kind}] {self.host}: {self.text}"


_now = time.monotonic

Subscriber = Callable[[Event], None]
# A record kept elsewhere, read as events: called with the kind asked for (None: all).
Source = Callable[["EventKind | None"], Iterable[Event]]


class EventLog:
    """What a world saw, as events, with live subscribers; thread-safe.

    Example::

        unsubscribe = world.events.subscribe(lambda event: print(event))
        ...
        unsubscribe()
        assert world.events.errors() == []
        lines = world.events.events("smtp_in")   # the client lines of the kept transcripts

    ``events()`` returns, oldest first, the events it keeps itself and those
    read from its sources (a world's transcripts and DNS query log), so it
    shows exactly what those records hold. Subscribers run in the thread
    that emits (the world's loop): they must be quick and must not raise;
    an exception from one is recorded as an ``error`` event instead of
    breaking the server.
    """

    def __init__(self, max_events: int = 100_000, max_errors: int = 1_000) -> None:
        self._lock = threading.Lock()
        # The newest are kept; errors apart, so a flood of events cannot push one out.
        self._events: deque[Event] = deque(maxlen=max_events)
        self._errors: deque[Event] = deque(maxlen=max_errors)
        self.dropped = 0  # events let go (the oldest first) to keep the log bounded
        # Replaced, never changed in place: emitters read it without the lock.
        self._subscribers: tuple[Subscriber, ...] = ()
        self._sources: tuple[Source, ...] = ()

    @property
    def listening(self) -> bool:
        """True when someone subscribed: an event only told live need not be made otherwise."""
        return bool(self._subscribers)

    def emit(self, kind: EventKind, host: str, text: str, **data: Any) -> Event:
        """Keep an event and tell the subscribers; returns it."""
        event = Event(kind, host, text, None, data)
        with self._lock:
            self._keep(event)
        if self._subscribers:
            self.publish(event)
        return event

    def publish(self, event: Event) -> None:
        """Tell the subscribers of an event kept elsewhere (by a source); the log keeps nothing."""
        for sub in self._subscribers:
            try:
                sub(event)
            except Exception as exc:  # a bad subscriber must not stop a server
                with self._lock:
                    self._keep(Event("error", event.host, f"subscriber failed: {exc!r}"))

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Call ``fn`` for every later event; returns a function that unsubscribes."""
        with self._lock:
            self._subscribers = (*self._subscribers, fn)

        def unsubscribe() -> None:
            with self._lock:
                subs = list(self._subscribers)
                if fn in subs:
                    subs.remove(fn)
                    self._subscribers = tuple(subs)

        return unsubscribe

    def add_source(self, source: Source) -> None:
        """Read the events of a record kept elsewhere as part of this log (see ``events()``)."""
        with self._lock:
            self._sources = (*self._sources, source)

    def events(self, kind: EventKind | None = None) -> list[Event]:
        """The events of ``kind`` (None: all), oldest first: those kept here and those of the sources."""
        with self._lock:
            found = [e for e in self._events if kind is None or e.kind == kind]
            sources = self._sources
        derived = [e for source in sources for e in source(kind)]
        if derived:
            found += derived
            found.sort(key=_time_of)  # stable: what came in order stays in order
        return found

    def _keep(self, event: Event) -> None:  # under the lock
        if len(self._events) == self._events.maxlen:
            self.dropped += 1
        self._events.append(event)
        if event.kind == "error":
            self._errors.append(event)

    def clear(self) -> None:
        """Forget the events kept here (the sources are cleared by their owners)."""
        with self._lock:
            self._events.clear()
            self._errors.clear()
            self.dropped = 0

    def errors(self) -> list[Event]:
        with self._lock:
            return list(self._errors)


def _time_of(event: Event) -> float:
    return event.time
