"""One background event-loop thread, and one CA, shared by many worlds.

A :class:`World` started from synchronous code runs on a runtime: its own
private one by default, or a shared one (the pytest plugin keeps one per
session, so a test pays for binding a few sockets, not for a thread, a CA
and certificates). Errors raised inside the loop are turned into ``error``
events of every world attached at the time, so they surface in tests.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from .certs import CertAuthority
from .events import EventLog

T = TypeVar("T")

THREAD_NAME = "mailfakes-world"


class Runtime:
    """A loop thread plus a certificate authority.

    Example::

        with Runtime() as rt:
            a = World(spec_a, runtime=rt).start()
            b = World(spec_b, runtime=rt).start()   # same thread, same CA
            ...
            a.stop(); b.stop()
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self._ca: CertAuthority | None = None
        self._lock = threading.Lock()
        self._sinks: list[EventLog] = []
        self.errors = EventLog()  # errors seen while no world was attached

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    @property
    def ca(self) -> CertAuthority:
        """The shared CA, made on first use; its key directory goes at close()."""
        with self._lock:
            if self._ca is None:
                self._ca = CertAuthority()
            return self._ca

    def start(self, timeout: float = 10.0) -> Runtime:
        if self.thread is not None:
            return self
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._loop_exception)
        ready = threading.Event()
        thread = threading.Thread(target=self._run, args=(loop, ready), name=THREAD_NAME, daemon=True)
        thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("the mailfakes event-loop thread did not start")
        self.loop, self.thread = loop, thread
        return self

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run a coroutine on the loop thread and wait (bounded) for its result."""
        if self.loop is None or not self.running:
            coro.close()
            raise RuntimeError("the runtime is not running")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def attach(self, events: EventLog) -> None:
        with self._lock:
            self._sinks.append(events)

    def detach(self, events: EventLog) -> None:
        with self._lock:
            if events in self._sinks:
                self._sinks.remove(events)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, (ConnectionError, ssl.SSLError)):
            return  # a client hung up mid-write: part of the game here
        text = f"{context.get('message', 'error')}: {exc!r}"
        with self._lock:
            sinks = list(self._sinks) or [self.errors]
        for sink in sinks:
            sink.emit("error", "-", text)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread, cancel what is left, remove the CA's keys. Idempotent."""
        loop, thread = self.loop, self.thread
        self.loop = self.thread = None
        if loop is not None and thread is not None:
            if thread.is_alive():
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout)
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=2.0))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
        with self._lock:
            ca, self._ca = self._ca, None
        if ca is not None:
            ca.close()

    def __enter__(self) -> Runtime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
