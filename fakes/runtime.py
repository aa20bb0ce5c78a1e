"""One background event-loop thread, and one CA, shared by many worlds.

A :class:`World` started from synchronous code runs on a runtime: the
process's :func:`default_runtime` unless it is given one (the pytest plugin
keeps one per session), so a world pays for binding a few sockets, not for
a thread, a CA and certificates. Worlds on one runtime share its thread
only: each has its own sockets, addresses, records and key directory, and
stopping one never touches another. An error raised inside the loop becomes
an ``error`` event of the world it came from only (see :func:`blame`), so it
fails the tests that use that world and no other; an error no world can be
blamed for goes to the runtime's own :attr:`Runtime.errors` log.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import os
import ssl
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

from .certs import CertAuthority, default_cache
from .events import EventLog

T = TypeVar("T")

THREAD_NAME = "mailfakes-world"
SHARED_THREAD_NAME = "mailfakes-shared"
"""The thread of :func:`default_runtime`: one per process, for its whole life."""
# How long a cancelled call may take to unwind on the loop (its finally
# blocks, a half-made server closing) before run() gives up waiting.
CANCEL_GRACE = 2.0

# The events log of the world whose work is running. Set in the context a
# world starts in; asyncio copies the context into every callback, timer and
# task created from there, so an error can be traced back to its world.
ROUTE: contextvars.ContextVar[EventLog | None] = contextvars.ContextVar("mailfakes_route", default=None)


def route_context(events: EventLog) -> contextvars.Context:
    """A context whose callbacks and tasks report their errors to ``events``."""
    ctx = contextvars.copy_context()
    ctx.run(ROUTE.set, events)
    return ctx


class _RoutedTask(asyncio.Task):  # type: ignore[type-arg]
    """A task that remembers the world it was made for.

    asyncio reports a task's unretrieved exception from its finalizer, at
    garbage collection, in whatever context happens to run; on Python 3.11
    the task's own context cannot be read back, so keep the route here.
    """

    mailfakes_route: EventLog | None = None


def _task_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
    task = _RoutedTask(coro, loop=loop, **kwargs)
    ctx = kwargs.get("context")
    task.mailfakes_route = ctx.get(ROUTE) if ctx is not None else ROUTE.get()
    return task


# Loops not ours (async worlds run on the caller's) where worlds lent the
# routed task factory, and how many worlds there still use it.
_LENT: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()


def lend_task_routes(loop: asyncio.AbstractEventLoop) -> None:
    """Let tasks on the caller's ``loop`` carry their world, if it has no task factory of its own."""
    if loop in _LENT:
        _LENT[loop] += 1
    elif loop.get_task_factory() is None:
        loop.set_task_factory(_task_factory)
        _LENT[loop] = 1


def return_task_routes(loop: asyncio.AbstractEventLoop) -> None:
    """Undo :func:`lend_task_routes` once the last world on ``loop`` stopped."""
    if loop not in _LENT:
        return
    _LENT[loop] -= 1
    if _LENT[loop] == 0:
        del _LENT[loop]
        if loop.get_task_factory() is _task_factory:
            loop.set_task_factory(None)


def blame(context: dict[str, Any]) -> EventLog | None:
    """The events log of the world an asyncio error context belongs to, or None.

    The most specific evidence wins: the task that failed (its route), then
    the callback that failed (the context it ran in), then the context the
    error is being reported in. A task finalized at garbage collection may
    be reported while another world's callback runs, hence that order.
    """
    for key in ("future", "task"):
        route = getattr(context.get(key), "mailfakes_route", None)
        if isinstance(route, EventLog):
            return route
    handle = context.get("handle")
    # Handle.get_context() is public from Python 3.12; 3.11 has the attribute only.
    get_context = getattr(handle, "get_context", None)
    handle_ctx = get_context() if callable(get_context) else getattr(handle, "_context", None)
    if isinstance(handle_ctx, contextvars.Context):
        route = handle_ctx.get(ROUTE)
        if route is not None:
            return route
    return ROUTE.get()


def is_client_hangup(context: dict[str, Any]) -> bool:
    """A client that hung up mid-write: part of the game here, not an error."""
    return isinstance(context.get("exception"), (ConnectionError, ssl.SSLError))


def error_text(context: dict[str, Any]) -> str:
    return f"{context.get('message', 'error')}: {context.get('exception')!r}"


class _Call:
    """One coroutine run on the loop for a caller in another thread."""

    def __init__(self, coro: Coroutine[Any, Any, Any], context: contextvars.Context | None) -> None:
        self.coro = coro
        self.context = context
        self.task: asyncio.Task[Any] | None = None
        self.cancelled = False
        self.done = threading.Event()

    # Both methods run on the loop thread, so they never race each other.
    def launch(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.cancelled:
            self.coro.close()
            self.done.set()
            return
        self.task = loop.create_task(self.coro, context=self.context)
        self.task.add_done_callback(lambda _task: self.done.set())

    def cancel(self) -> None:
        self.cancelled = True
        if self.task is not None:
            self.task.cancel()


class Runtime:
    """A loop thread plus a certificate authority.

    Example::

        with Runtime() as rt:
            a = World(spec_a, runtime=rt).start()
            b = World(spec_b, runtime=rt).start()   # same thread, same CA
            ...
            a.stop(); b.stop()
    """

    def __init__(self, *, thread_name: str = THREAD_NAME) -> None:
        self.thread_name = thread_name
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self._ca: CertAuthority | None = None
        self._lock = threading.Lock()
        self.errors = EventLog()  # errors no world could be blamed for

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    @property
    def ca(self) -> CertAuthority:
        """The runtime's CA, made on first use; its key directory goes at close().

        The user's cached CA (:func:`mailfakes.certs.default_cache`), as the
        process's :func:`~mailfakes.certs.shared_authority` is, but an
        authority of its own: closing either leaves the other working.
        """
        with self._lock:
            if self._ca is None:
                self._ca = CertAuthority(cache=default_cache())
            return self._ca

    def start(self, timeout: float = 10.0) -> Runtime:
        """Start the loop thread. Nothing is waited for (``timeout`` is kept for
        callers of earlier versions): callbacks queue until the loop runs."""
        if self.thread is not None:
            return self
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._loop_exception)
        loop.set_task_factory(_task_factory)
        thread = threading.Thread(target=self._run, args=(loop,), name=self.thread_name, daemon=True)
        self.loop, self.thread = loop, thread
        try:
            thread.start()
        except BaseException:  # interrupted (Ctrl-C) or no thread to be had
            self.close()
            raise
        return self

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    def run(
        self,
        coro: Coroutine[Any, Any, T],
        timeout: float = 10.0,
        *,
        context: contextvars.Context | None = None,
    ) -> T:
        """Run a coroutine on the loop thread and wait (bounded) for its result.

        On timeout, or when the wait is interrupted (KeyboardInterrupt), the
        coroutine is cancelled and its unwinding waited for (bounded by
        :data:`CANCEL_GRACE`) before the exception reaches the caller, so
        nothing it was doing goes on behind the caller's back.
        """
        loop = self.loop
        if loop is None or not self.running:
            coro.close()
            raise RuntimeError("the runtime is not running")
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("Runtime.run() called from the loop thread: await the coroutine instead")
        call = _Call(coro, context)
        try:
            loop.call_soon_threadsafe(call.launch, loop)
            finished = call.done.wait(timeout)
        except BaseException:
            self._cancel(call)
            raise
        if not finished:
            self._cancel(call)
            name = getattr(coro, "__qualname__", "the call")
            raise TimeoutError(f"mailfakes: {name} did not finish within {timeout} s; it was cancelled")
        assert call.task is not None
        if call.task.cancelled():
            raise RuntimeError("the call was cancelled on the loop (the runtime is closing)")
        return call.task.result()  # type: ignore[no-any-return]

    def _cancel(self, call: _Call) -> None:
        loop = self.loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(call.cancel)
            call.done.wait(CANCEL_GRACE)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if is_client_hangup(context):
            return
        sink = blame(context) or self.errors
        sink.emit("error", "-", error_text(context))

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread, cancel what is left, remove the CA's keys. Idempotent."""
        loop, thread = self.loop, self.thread
        self.loop = self.thread = None
        if loop is not None and thread is not None:
            stopped = True
            with contextlib.suppress(RuntimeError):  # closed already
                # Queued even before the loop first runs: it then stops at once.
                loop.call_soon_threadsafe(loop.stop)
            try:
                thread.join(timeout)
            except RuntimeError:  # interrupted inside Thread.start(): never ran
                stopped = False
            if thread.is_alive():
                stopped = False
            if stopped and not loop.is_closed():
                self._finish(loop)
        with self._lock:
            ca, self._ca = self._ca, None
        if ca is not None:
            ca.close()

    @staticmethod
    def _finish(loop: asyncio.AbstractEventLoop) -> None:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=CANCEL_GRACE))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()

    def __enter__(self) -> Runtime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


_default: Runtime | None = None
_default_lock = threading.Lock()
_abandoned: list[Runtime] = []  # a parent's runtimes seen by a forked child: kept, never run


def default_runtime() -> Runtime:
    """The process's shared runtime, started on first use: where a ``World()`` without ``runtime=`` runs.

    Example::

        a, b = World(spec).start(), World(spec).start()   # one loop thread for both
        assert default_runtime().running

    Its thread (named ``mailfakes-shared``) stays for the life of the process
    and is stopped at exit; each world on it still has its own sockets,
    addresses, records and key directory. A forked child gets a new one on
    its first world (the parent's thread does not exist there). A private
    thread: ``World(spec, runtime=Runtime().start())``, closed by the caller.
    """
    global _default
    with _default_lock:
        runtime = _default
        if runtime is None or not runtime.running:
            runtime = Runtime(thread_name=SHARED_THREAD_NAME).start()
            if _default is None:
                atexit.register(_close_default)
            _default = runtime
        return runtime


def _close_default() -> None:
    runtime = _default
    if runtime is not None:
        runtime.close(timeout=CANCEL_GRACE)


def _forget_default_in_child() -> None:
    # After fork only the forking thread exists: the parent's loop thread is
    # not ours to stop, its loop not ours to close (its fds are shared).
    global _default, _default_lock
    if _default is not None:
        _abandoned.append(_default)
    _default, _default_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_default_in_child)
