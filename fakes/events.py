"""The record of what happened in a world: DNS queries, connections, SMTP lines.

Servers append events from the world's event-loop thread; tests, the CLI and
demos read them from any thread, or subscribe to see them live. Sessions
record through their world's :class:`mailfakes.transcript.Recorder`, which
drops what a session of before a reset still tries to add.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Event:
    """One thing a world saw: a DNS query, a connection, an SMTP line, a fault, an error.

    Example::

        for event in world.events.events("fault"):
            print(event)   # [fault] mail.contoso.test: cut (rst) after 23 bytes of message content
    """

    kind: EventKind
    host: str
    text: str
    time: float = field(default_factory=time.monotonic)
    data: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"[{self.kind}] {self.host}: {self.text}"


Subscriber = Callable[[Event], None]


class EventLog:
    """A thread-safe, append-only list of events with live subscribers.

    Example::

        unsubscribe = world.events.subscribe(lambda event: print(event))
        ...
        unsubscribe()
        assert world.events.errors() == []

    Subscribers run in the thread that emits (the world's loop): they must
    be quick and must not raise; an exception from one is recorded as an
    ``error`` event instead of breaking the server.
    """

    def __init__(self, max_events: int = 100_000, max_errors: int = 1_000) -> None:
        self._lock = threading.Lock()
        # The newest are kept; errors apart, so a flood of events cannot push one out.
        self._events: collections.deque[Event] = collections.deque(maxlen=max_events)
        self._errors: collections.deque[Event] = collections.deque(maxlen=max_errors)
        self.dropped = 0  # events let go (the oldest first) to keep the log bounded
        self._subscribers: list[Subscriber] = []

    def emit(self, kind: EventKind, host: str, text: str, **data: Any) -> Event:
        """Record an event and tell the subscribers; returns it."""
        event = Event(kind=kind, host=host, text=text, data=data)
        with self._lock:
            self._keep(event)
            subscribers = list(self._subscribers)
        for sub in subscribers:
            try:
                sub(event)
            except Exception as exc:  # a bad subscriber must not stop a server
                with self._lock:
                    self._keep(Event("error", host, f"subscriber failed: {exc!r}"))
        return event

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Call ``fn`` for every later event; returns a function that unsubscribes."""
        with self._lock:
            self._subscribers.append(fn)

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._subscribers:
                    self._subscribers.remove(fn)

        return unsubscribe

    def events(self, kind: EventKind | None = None) -> list[Event]:
        with self._lock:
            return [e for e in self._events if kind is None or e.kind == kind]

    def _keep(self, event: Event) -> None:  # under the lock
        if len(self._events) == self._events.maxlen:
            self.dropped += 1
        self._events.append(event)
        if event.kind == "error":
            self._errors.append(event)

    def clear(self) -> None:
        with self._lock:
            self._events.clear()
            self._errors.clear()
            self.dropped = 0

    def errors(self) -> list[Event]:
        with self._lock:
            return list(self._errors)
