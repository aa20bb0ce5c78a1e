"""A running world: every host on its own loopback address, one DNS, one CA.

:class:`World` binds a scenario's hosts to 127.A.B.2, .3, ... (one shared SMTP
port), its DNS server to 127.A.B.1, and issues its certificates. It runs on
one background event-loop thread when used from synchronous code, or on the
caller's loop from async code. ``stop()`` is idempotent and leaves no
thread, socket, task or key file behind, also after a ``start()`` that timed
out or was interrupted. ``reset()`` runs on the world's loop, ends the
sessions still open and starts a new record, so a test sees only its own
sessions, messages and events. Errors raised by this world's servers are
recorded as its own ``error`` events, never another world's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .attempts import Attempt, attempts_of, bounces_of, deliveries_of, duplicates_of
from .certs import CertAuthority, shared_authority
from .clock import Clock, RealClock, VirtualClock, format_duration
from .dns import FakeDNS
from .events import Event, EventLog
from .runtime import (
    CANCEL_GRACE,
    Runtime,
    blame,
    default_runtime,
    error_text,
    is_client_hangup,
    lend_task_routes,
    return_task_routes,
    route_context,
)
from .smtp import HostServer
from .spec import MIN_HOUR, HostSpec, WorldSpec, is_loopback, parse_world
from .tcp import BlackholeEndpoint, RefuseEndpoint, bind_socket
from .transcript import Limits, Message, Recorder, Transcript

if TYPE_CHECKING:
    from .control import HostControl
    from .dsn import Bounce
    from .http import HttpServer
    from .tlsrpt import TlsReport

MAX_HOSTS = 250
_BIND_ATTEMPTS = 8
# A policy file that does not parse (RFC 8461 3.2): no version line, a key without a value.
_MALFORMED_POLICY = b"<html><body>mta-sts policy\r\nmode enforce\r\nmx: *\r\n</body></html>\r\n"


class WorldError(RuntimeError):
    """A world could not start (port in use, non-loopback address, ...).

    Example::

        try:
            World(spec, port=70000)
        except WorldError as exc:
            print(exc)   # ports must be from 0 to 65535, not 70000 / 0
    """


class PortInUse(WorldError):
    """The port (or a host's address on it) is taken; choose another, or 0.

    Example::

        try:
            World(spec, port=2525).start()
        except PortInUse:
            world = World(spec).start()   # an ephemeral port
    """


_RANDOM = random.SystemRandom()  # not the global generator: tests may seed that one alike in every worker


def _random_subnet() -> str:
    # 127.0.0.0/16 is left alone: other local services like to live there.
    return f"127.{_RANDOM.randrange(1, 255)}.{_RANDOM.randrange(0, 256)}"


class World:
    """A mail world served on loopback.

    Example::

        with World(parse_world({"hosts": {"mail.contoso.test": {}}})) as w:
            ip = w.address_of("mail.contoso.test")
            smtplib.SMTP(ip, w.port, timeout=2).quit()

    ``port`` is the SMTP port all hosts share (0: an ephemeral one);
    ``runtime`` is the loop thread (and CA) the world runs on when started
    from synchronous code (see :class:`mailfakes.runtime.Runtime`); without
    it, the process's :func:`~mailfakes.runtime.default_runtime`, shared by
    such worlds as the process's CA is (each keeps its own sockets,
    addresses, records and key directory).
    ``subnet`` (like ``"127.5.6"``) fixes the addresses instead of a random
    127.A.B.0/24; ``dns_host``/``dns_port`` place the DNS server. A
    non-loopback address is refused unless ``allow_non_loopback`` is set,
    because fault traffic must never leave the machine.
    """

    def __init__(
        self,
        spec: WorldSpec | Mapping[str, Any],
        *,
        port: int = 0,
        subnet: str | None = None,
        dns_host: str | None = None,
        dns_port: int = 0,
        allow_non_loopback: bool = False,
        handshake_timeout: float = 10.0,
        idle_timeout: float = 120.0,
        runtime: Runtime | None = None,
        limits: Limits | None = None,
        clock: Clock | str | None = None,
        hour: float | None = None,
        https_port: int = 0,
        http_port: int = 0,
    ) -> None:
        self.spec = spec if isinstance(spec, WorldSpec) else parse_world(spec)
        if isinstance(clock, Clock):
            self.clock: Clock = clock
        elif clock in (None, "real"):
            if hour is not None and not hour >= MIN_HOUR:
                raise WorldError(
                    f"an hour must last at least {MIN_HOUR * 1000:g} ms of real time, not {hour!r} s"
                )
            self.clock = RealClock(self.spec.hour if hour is None else hour)
        elif clock == "virtual":
            if hour is not None:
                raise WorldError("a virtual clock has no hour length: it moves only with world.advance()")
            self.clock = VirtualClock()
        else:
            raise WorldError(f"clock must be 'real', 'virtual' or a Clock, not {clock!r}")
        if len(self.spec.hosts) > MAX_HOSTS:
            raise WorldError(f"a world holds at most {MAX_HOSTS} hosts, this one has {len(self.spec.hosts)}")
        if len(self.spec.hosts) + len(self.spec.web_hosts) + 1 > 252:
            raise WorldError(
                f"a world's hosts and web hosts take at most 252 addresses of its /24, this one needs "
                f"{len(self.spec.hosts) + len(self.spec.web_hosts) + 1}"
            )
        if not all(0 <= p <= 65535 for p in (port, dns_port, https_port, http_port)):
            raise WorldError(
                f"ports must be from 0 to 65535, not {port} / {dns_port} / {https_port} / {http_port}"
            )
        for label, addr in (("subnet", f"{subnet}.1" if subnet else None), ("dns_host", dns_host)):
            if addr is None:
                continue
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                raise WorldError(f"{label} {addr!r} is not an IPv4 address (prefix)") from None
            if not allow_non_loopback and not is_loopback(addr):
                raise WorldError(
                    f"{label} {addr} is not a loopback address: fault traffic must stay on this "
                    "machine (127.0.0.0/8 or ::1); pass allow_non_loopback=True only inside a "
                    "network namespace you made yourself"
                )
        v6_hosts = [h.name for h in self.spec.hosts if h.ipv6 != "none"]
        from .netns import in_private_namespace

        self.ipv6_own = bool(v6_hosts) and in_private_namespace()  # each v6 host its own address
        if len(v6_hosts) > 1 and not self.ipv6_own:
            raise WorldError(
                f"this world has {len(v6_hosts)} IPv6 hosts ({', '.join(v6_hosts)}), and outside a "
                "mailfakes network namespace only ::1 exists, for one of them: run it with --netns "
                "(mailfakes serve/check --netns), where each gets its own address"
            )
        self.requested_port = port
        self.requested_https_port = https_port
        self.requested_http_port = http_port
        self.https_port = 0  # where the MTA-STS policy hosts and HTTPS report receivers listen
        self.http_port = 0  # where the CRL distribution point listens
        self.web_hosts: dict[str, str] = {}  # HTTP(S) hosts by name: their addresses
        self.web: dict[str, HttpServer] = {}  # the servers of those that listen
        self._web_socks: list[tuple[HttpServer, socket.socket]] = []
        self._issuer_contexts: dict[tuple[str, str], tuple[Path, ssl.SSLContext]] = {}
        self.requested_subnet = subnet
        self.requested_dns_host = dns_host
        self.requested_dns_port = dns_port
        self.allow_non_loopback = allow_non_loopback
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout

        self.limits = limits or Limits()
        self.events = EventLog(max_events=self.limits.events)
        self.recorder = Recorder(self.events, self.limits)
        self.port = 0
        self.subnet = ""
        self.dns_host = ""
        self.dns_port = 0
        self.hosts: dict[str, str] = {}
        self.hosts6: dict[str, str] = {}  # the IPv6 address of each host with one (its AAAA record)
        self.ca: CertAuthority | None = None
        self.dns: FakeDNS | None = None
        self._servers: list[HostServer] = []
        self._endpoints: list[RefuseEndpoint | BlackholeEndpoint] = []
        self._timed: list[TimedEndpoint] = []  # refuse/blackhole hosts that listen by the clock
        self._timers: list[asyncio.TimerHandle] = []
        self._reserved: list[socket.socket] = []
        self._pending: list[tuple[HostServer, socket.socket]] = []
        self._pending6: list[tuple[HostServer, socket.socket]] = []  # a dual host's IPv6 listener
        self._runtime = runtime
        self._sync_runtime: Runtime | None = None  # the runtime a sync start() used
        self._restore_handler: tuple[asyncio.AbstractEventLoop, Any, Any] | None = None
        # Callbacks, timers and tasks made from this context report errors here.
        self._route = route_context(self.events)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._start_task: asyncio.Task[None] | None = None
        self._state = "new"  # new -> running -> stopped
        # Woken at every event while someone waits in wait_until(), never otherwise.
        self._cond = threading.Condition()

    # -- facts for clients -------------------------------------------------

    @property
    def running(self) -> bool:
        return self._state == "running"

    def address_of(self, name: str) -> str:
        """The loopback address of a host of this world (by DNS name), SMTP or web."""
        key = name.rstrip(".").lower()
        found = self.hosts.get(key) or self.web_hosts.get(key)
        if found is None:
            raise KeyError(name)
        return found

    def address6_of(self, name: str) -> str:
        """The IPv6 address of a host with ``ipv6`` set (``::1`` outside a namespace)."""
        found = self.hosts6.get(name.rstrip(".").lower())
        if found is None:
            raise KeyError(name)
        return found

    def host(self, name: str) -> HostControl:
        """Change the faults of host ``name`` while the world runs (see :mod:`mailfakes.control`):
        ``world.host("mx1.contoso.test").fail_next(3, reply="451 4.3.0 Try again later")``."""
        from .control import HostControl

        if self._state != "running":
            raise WorldError("the world is not running: start it before changing its faults")
        return HostControl(self, name)

    def server_of(self, name: str) -> HostServer | None:
        """The SMTP server of host ``name`` now (a timed refuse/blackhole host's only while it serves)."""
        return next((s for s in self._all_servers() if s.spec.name == name), None)

    def on_loop(self, fn: Callable[[], None], timeout: float = 5.0) -> None:
        """Run ``fn`` on the world's loop and wait for it: from the loop itself, at once."""
        loop = self._loop
        if loop is None or self._state != "running":
            raise WorldError("the world is not running")
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is loop:
            fn()
            return
        runtime = self._sync_runtime
        if runtime is None or not runtime.running:
            raise WorldError("this world runs on another event loop: change it from that loop")

        async def call() -> None:
            fn()

        runtime.run(call(), timeout, context=self._route)

    @property
    def crl_host(self) -> str | None:
        """The CRL distribution point's host (``crl.<zone>``) when a certificate of the world is revoked."""
        return self.spec.crl_host

    @property
    def crl_url(self) -> str | None:
        """The CRL distribution point the revoked certificates name (port 80: outside a namespace
        the world serves it on :attr:`http_port`)."""
        if self.crl_host is None:
            return None
        from .certs import crl_url_for

        return crl_url_for(self.spec.zone)

    @property
    def crl_file(self) -> Path:
        """The CA's CRL (PEM), for clients that load one (``openssl -CRLfile``, ``curl --crlfile``)."""
        if self.ca is None:
            raise WorldError("the world is not started: it has no CA yet")
        return self.ca.crl_file

    @property
    def trust_anchor_file(self) -> Path | None:
        """The DNSSEC trust anchor (the DS and DNSKEY of the world's zone) of a signed world."""
        if self.spec.dnssec is None or self.ca is None:
            return None
        return self.ca.directory / "trust-anchor.txt"

    @property
    def tls_reports(self) -> list[TlsReport]:
        """The TLS reports (RFC 8460) that arrived: by mail at a ``mailto:`` rua of the world's
        ``[world.tls_rpt]``, or posted to an ``https:`` one, in order of arrival."""
        from .tlsrpt import read_report

        mailboxes = {
            u[len("mailto:") :].lower(): u
            for r in self.spec.tls_rpt
            for u in r.rua
            if u.startswith("mailto:")
        }
        opened = {t.session_id: t.opened for t in self.sessions}
        found: list[tuple[float, TlsReport]] = []
        for m in self.messages:
            to = [r for r in m.rcpt_tos if r.lower() in mailboxes]
            if not to:
                continue
            mono = opened.get(m.session_id)
            at = self.clock.at(mono) if mono is not None else None
            report = read_report(m.content, via="mail", to=mailboxes[to[0].lower()], at=at)
            if report is not None:
                found.append((at or 0.0, report))
        from .spec import rua_https_host

        for r in self.spec.tls_rpt:
            for u in r.rua:
                server = self.web.get(rua_https_host(u)) if u.startswith("https://") else None
                for req in server.posts() if server is not None else ():
                    at = self.clock.at(req.time)  # the web hosts stamp requests with time.monotonic
                    report = read_report(req.body, via="https", to=u, at=at)
                    if report is not None:
                        found.append((at or 0.0, report))
        found.sort(key=lambda item: item[0])
        return [r for _, r in found]

    @property
    def ca_file(self) -> Path:
        """PEM file of the CA that issued the good certificates: what a client should trust."""
        if self.ca is None:
            raise WorldError("the world is not running")
        return self.ca.ca_file

    def client_context(self) -> ssl.SSLContext:
        """A fresh client SSLContext trusting this world's CA, with host name checks."""
        if self.ca is None:
            raise WorldError("the world is not running")
        return self.ca.client_context()

    @property
    def dropped(self) -> dict[str, int]:
        """What the world let go to stay within its :class:`Limits`, by kind (since the last reset)."""
        counts = dict(self.recorder.dropped)
        kept = list(self.recorder.sessions)
        counts["lines"] = counts.get("lines", 0) + sum(t.lines_dropped for t in kept)
        counts["events"] = counts.get("events", 0) + sum(t.events_dropped for t in kept) + self.events.dropped
        counts["dns_queries"] = self.dns.dropped_queries if self.dns is not None else 0
        return {kind: n for kind, n in counts.items() if n}

    @property
    def sessions(self) -> list[Transcript]:
        return list(self.recorder.sessions)

    @property
    def messages(self) -> list[Message]:
        return list(self.recorder.messages)

    @property
    def dns_queries(self) -> list[Any]:
        return list(self.dns.queries) if self.dns is not None else []

    @property
    def now(self) -> float:
        """World time: seconds since the world started, on its clock (see :mod:`mailfakes.clock`)."""
        return self.clock.now()

    @property
    def sender_mx(self) -> str | None:
        """The host that receives the sender domain's mail (``mx.DOMAIN``), if the world has one."""
        d = self.spec.sender_domain
        return f"mx.{d}" if d else None

    @property
    def bounces(self) -> list[Bounce]:
        """The non-delivery reports (RFC 3464 DSNs) that arrived at the sender domain's MX, one per
        recipient entry, in order of arrival; with their envelope and world time."""
        return bounces_of(self)

    @property
    def attempts(self) -> list[Attempt]:
        """The delivery attempts the fakes saw (sessions and DNS lookups of the target, grouped; see
        :func:`mailfakes.attempts.attempts_of`), with world times, in order."""
        return attempts_of(self)

    @property
    def deliveries(self) -> list[Message]:
        """The messages the target's hosts kept (not the bounces at the sender domain's MX)."""
        return deliveries_of(self)

    @property
    def duplicates(self) -> dict[str, int]:
        """Message-IDs the target's hosts kept more than once (a client that sent it again after a
        cut that came after the final dot, without deduplicating), with their number of copies."""
        return duplicates_of(self)

    def advance(self, seconds: float, timeout: float = 10.0) -> float:
        """Move a virtual clock ``seconds`` on, and apply what the schedules say then; the new time."""
        return self.advance_to(self.clock.now() + seconds, timeout)

    def advance_to(self, when: float, timeout: float = 10.0) -> float:
        """Move a virtual clock to world time ``when`` (never back), switching timed hosts at once."""
        if not isinstance(self.clock, VirtualClock):
            raise WorldError("only a world on a virtual clock is moved by hand: World(spec, clock='virtual')")
        runtime = self._sync_runtime
        if self._state != "running":
            self.clock.set(when)
        elif runtime is not None and runtime.running:
            runtime.run(self._advance_to(when), timeout, context=self._route)
        else:
            raise WorldError("this world runs on the caller's event loop: use 'await world.aadvance_to(t)'")
        return self.clock.now()

    async def aadvance_to(self, when: float) -> float:
        """:meth:`advance_to` for a world started with ``astart()``."""
        if not isinstance(self.clock, VirtualClock):
            raise WorldError("only a world on a virtual clock is moved by hand: World(spec, clock='virtual')")
        await self._advance_to(when)
        return self.clock.now()

    async def _advance_to(self, when: float) -> None:
        assert isinstance(self.clock, VirtualClock)
        self.clock.set(when)
        await self._apply_time()

    async def _apply_time(self) -> None:
        """Put every timed host in the state its schedule gives for now."""
        if self._state != "running":
            return
        now = self.clock.now()
        for ep in self._timed:
            try:
                change = await ep.apply(now)
            except OSError as exc:
                self.events.emit("error", ep.spec.name, f"cannot switch at {format_duration(now)}: {exc}")
                continue
            if change:
                self.events.emit("fault", ep.spec.name, f"at {format_duration(now)} of world time: {change}")

    def _on_time(self) -> None:
        if self._loop is not None and self._state == "running":
            self._loop.create_task(self._apply_time(), context=self._route)

    def reset(self, timeout: float = 5.0) -> None:
        """Start afresh: end the sessions still open, forget transcripts, messages,
        DNS queries, events and schedule counts.

        Runs on the world's loop, so it cannot interleave with a connection
        being accepted; a session of before the reset adds nothing after it.
        A world started with ``astart()`` is reset with ``await world.areset()``.
        """
        runtime = self._sync_runtime
        if runtime is not None and runtime.running and self._state == "running":
            runtime.run(self._areset(), timeout, context=self._route)
        elif self._state == "running":
            raise WorldError("this world runs on the caller's event loop: use 'await world.areset()'")
        else:  # not serving: nothing can race with the clearing
            self._clear_records()

    async def areset(self) -> None:
        """:meth:`reset` for a world started with ``astart()`` (or from its own loop)."""
        if self._state != "running":
            self._clear_records()
            return
        if asyncio.get_running_loop() is not self._loop:
            raise WorldError(
                "areset() must run on the world's own event loop; from another thread use reset()"
            )
        await self._areset()

    async def _areset(self) -> None:
        # Each shutdown() ends its session and records the end at once; what
        # its handler still does while unwinding belongs to a retired
        # transcript, which the recorder drops after the clearing.
        for server in self._all_servers():
            for proto in list(server.live):
                proto.shutdown()
            server.greylist_seen.clear()
            server.reset_limits()
            server.control(None)  # faults changed at run time end with the test that made them
        if self.dns is not None:  # a client of the last test asks nothing of this one
            self.dns.close_connections()
        self._clear_records()
        self.clock.start()  # world time starts again at 0 with the new record
        if self._timed:
            await self._apply_time()
            self._arm_timers()

    def _clear_records(self) -> None:
        if self._state != "running":
            self.clock.start()
        for web in self.web.values():
            web.requests.clear()
            web.problems.clear()
        self.recorder.reset()
        if self.dns is not None:
            self.dns.reset()

    def _all_servers(self) -> list[HostServer]:
        return self._servers + [ep.server for ep in self._timed if ep.server is not None]

    def _notify(self, event: Event) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait (bounded) until ``predicate()`` holds; re-checked at every event.

        Only a waiter subscribes (for as long as it waits): a world nobody
        waits on wakes nobody, and makes no event nobody reads.
        """
        if predicate():
            return True
        deadline = time.monotonic() + timeout
        unsubscribe = self.events.subscribe(self._notify)
        try:
            with self._cond:
                while not predicate():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(min(left, 0.05))
        finally:
            unsubscribe()
        return True

    # -- sync lifecycle ------------------------------------------------------

    def start(self, timeout: float = 10.0) -> World:
        """Start on a background event-loop thread; returns self once everything listens.

        The thread is the given ``runtime``'s, else the process's shared
        :func:`~mailfakes.runtime.default_runtime` (started on first use).
        A start that does not finish within ``timeout`` (TimeoutError) or is
        interrupted (KeyboardInterrupt) is cancelled and undone before the
        exception propagates: no thread, listener or key file is left, and
        ``stop()`` afterwards is safe.
        """
        if self._state != "new":
            raise WorldError(f"a world starts once; this one is {self._state}")
        runtime = self._runtime
        if runtime is not None and not runtime.running:
            raise WorldError("the shared runtime is not running: call runtime.start() first")
        try:
            if runtime is None:
                runtime = default_runtime()
            self._sync_runtime = runtime
            runtime.run(self._astart(), timeout, context=self._route)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop everything; safe to call twice, or after a failed start."""
        runtime = self._sync_runtime
        if runtime is None:
            if self._state == "running":
                raise WorldError("this world runs on the caller's event loop: use 'await world.astop()'")
            self._state = "stopped"
            return
        self._sync_runtime = None
        try:
            if runtime.running:
                runtime.run(self._astop(), timeout, context=self._route)
        finally:
            # Whatever the loop could not do (it was gone or too slow):
            # sockets and key files are plain resources. While the loop
            # still runs they may be registered with it, so it frees them;
            # once it has stopped, they are freed from here. The runtime
            # itself is left running: other worlds may be on it.
            self._state = "stopped"
            loop = runtime.loop
            if runtime.running and loop is not None:
                with contextlib.suppress(RuntimeError):  # closed meanwhile
                    loop.call_soon_threadsafe(self._release_sockets)
            else:
                self._release_sockets()
            if self.ca is not None and self._runtime is None:
                self.ca.close()

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> bool:
        """Record an error of this world's on the caller's loop; True when it was ours."""
        if is_client_hangup(context):
            return True
        if blame(context) is not self.events:
            return False
        self.events.emit("error", "-", error_text(context))
        return True

    def __enter__(self) -> World:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- async lifecycle -----------------------------------------------------

    async def astart(self) -> World:
        """Start on the running event loop.

        Cancelling it (``asyncio.wait_for``, ``task.cancel()``) undoes the
        start before the cancellation propagates.
        """
        if self._state != "new":
            raise WorldError(f"a world starts once; this one is {self._state}")
        # Errors of this world's servers become its 'error' events; every
        # error still reaches the caller's own handler (or asyncio's).
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if self._restore_handler is not None:
                self._loop_exception(loop, context)
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)
        self._restore_handler = (loop, handler, previous)
        lend_task_routes(loop)
        try:
            # Its own task, in this world's context: what it creates carries the
            # route, and the caller's context is left as it was.
            await loop.create_task(self._astart(), context=self._route)
        except BaseException:
            await self.astop()
            raise
        return self

    async def astop(self) -> None:
        if self._sync_runtime is not None:
            raise WorldError("this world runs on a runtime thread: use world.stop()")
        await self._astop()
        if self._restore_handler is not None:
            loop, handler, previous = self._restore_handler
            self._restore_handler = None
            return_task_routes(loop)
            # Worlds may stop in any order: only unwind our own layer; a layer
            # left under another world's handler then just passes errors on.
            if loop.get_exception_handler() is handler:
                loop.set_exception_handler(previous)

    async def __aenter__(self) -> World:
        return await self.astart()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.astop()

    # -- the work ------------------------------------------------------------

    async def _astart(self) -> None:
        self._state = "running"
        self._loop = asyncio.get_running_loop()
        self._start_task = asyncio.current_task()
        self.clock.start()
        # A shared runtime lends its CA (and its cached certificates); without
        # one, the process's CA lends a view with this world's own directory.
        self.ca = self._runtime.ca if self._runtime is not None else shared_authority().lend()
        for attempt in range(_BIND_ATTEMPTS):
            subnet = self.requested_subnet or _random_subnet()
            try:
                self._bind(subnet)
                break
            except OSError as exc:
                self._release_sockets()
                if exc.errno != errno.EADDRINUSE:
                    raise WorldError(f"cannot bind on {subnet}.0/24: {exc.strerror or exc}") from exc
                if self.requested_subnet or attempt == _BIND_ATTEMPTS - 1:
                    what = f"port {self.requested_port}" if self.requested_port else "a port"
                    raise PortInUse(
                        f"{what} is already in use on {subnet}.x ({exc.strerror}); "
                        "choose another port, or 0 for an ephemeral one"
                    ) from exc
        self.dns = FakeDNS(
            self._dns_spec(),
            host=self.dns_host,
            port=self.requested_dns_port,
            address_of=self.address_of,
            address6_of=self.address6_of,
            events=self.events,
            allow_non_loopback=self.allow_non_loopback,
            max_queries=self.limits.dns_queries,
            clock=self.clock.now if any(f.timed for f in self.spec.dns_faults) else None,
        )
        try:
            await self.dns.start()
        except OSError as exc:
            raise PortInUse(
                f"DNS port {self.requested_dns_port} on {self.dns_host} is in use ({exc.strerror})"
            ) from exc
        self.dns_port = self.dns.port
        self._publish_tls_policy()
        await self._serve()

    def _dns_spec(self) -> WorldSpec:
        """The spec the DNS serves: the world's, with each fault on ``_25._tcp.HOST`` also on
        ``_PORT._tcp.HOST`` when the hosts share another port, as the TLSA records are (a DANE
        client names them by the port it connects to, RFC 7672 2.2.3)."""
        spec = self.spec
        if self.port in (0, 25) or not any(f.name.startswith("_25._tcp.") for f in spec.dns_faults):
            return spec
        from .spec import DnsFault

        mirrored = tuple(
            DnsFault(
                name=f"_{self.port}._tcp.{f.name[len('_25._tcp.') :]}",
                fault=f.fault,
                types=f.types,
                delay_ms=f.delay_ms,
                tcp=f.tcp,
                active_from=f.active_from,
                active_until=f.active_until,
            )
            for f in spec.dns_faults
            if f.name.startswith("_25._tcp.")
        )
        return WorldSpec(
            zone=spec.zone,
            records=spec.records,
            hosts=spec.hosts,
            dns_faults=spec.dns_faults + mirrored,
            hour=spec.hour,
            sender_domain=spec.sender_domain,
            dnssec=spec.dnssec,
            mta_sts=spec.mta_sts,
            tls_rpt=spec.tls_rpt,
        )

    def _publish_tls_policy(self) -> None:
        """What the world computes once its CA and DNS exist: the TLSA records of its hosts (from the
        certificates they present), the DNSSEC trust anchor, the CRL."""
        assert self.ca is not None and self.dns is not None
        from .spec import Record

        records = []
        for h in self.spec.hosts:
            if h.kind != "smtp" or h.tlsa is None:
                continue
            from .dane import tlsa_data

            issued = self.ca.issue(
                h.name, h.smtp.cert, crl_url=self.crl_url if h.smtp.cert == "revoked" else None
            )
            data = tlsa_data(h.tlsa, issued.leaf_pem, self.ca.ca_file.read_bytes())
            # RFC 7672 names the record by the port a client connects to: 25 for MX delivery, and
            # the world's own port as well when its hosts share another one (outside a namespace).
            for port in dict.fromkeys((25, self.port)):
                records.append(Record(name=f"_{port}._tcp.{h.name}", type="TLSA", value=h.tlsa.text(data)))
        if records:
            self.dns.add_records(records)
        anchor = self.trust_anchor_file
        if anchor is not None:
            self.dns.write_trust_anchor(anchor)
        if self.crl_host is not None:
            for h in self.spec.hosts:  # issued now, so the CRL lists them from the start
                if h.kind == "smtp" and h.smtp.cert == "revoked":
                    self.ca.issue(h.name, "revoked", crl_url=self.crl_url)
            _ = self.ca.crl_file  # written, for clients that load it

    def _web_servers(self, subnet: str, first: int) -> None:
        """Bind the world's web hosts: MTA-STS policy hosts and HTTPS report receivers on the
        HTTPS port, the CRL distribution point on the HTTP port. An ``unreachable`` policy host
        has an address and nothing listening there (a connection is refused)."""
        from .http import HttpServer, HttpSite
        from .mtasts import WELL_KNOWN
        from .spec import rua_https_host

        names = list(self.spec.web_hosts)
        crl_host = self.crl_host
        https_port, http_port = self.requested_https_port, self.requested_http_port
        for i, name in enumerate(names):
            address = f"{subnet}.{first + i}"
            self.web_hosts[name] = address
            policy = next((p for p in self.spec.mta_sts if p.host == name), None)
            ctx: ssl.SSLContext | None = None
            if name == crl_host:
                from .certs import CRL_MEDIA_TYPE, CRL_PATH

                assert self.ca is not None
                site = HttpSite({CRL_PATH: (200, CRL_MEDIA_TYPE, functools.partial(self.ca.crl, "der"))})
            elif policy is not None:
                if policy.fault == "unreachable":
                    continue
                routes: dict[str, tuple[int, str, bytes]] = {}
                if policy.fault is None:
                    routes[WELL_KNOWN] = (200, "text/plain", policy.policy_text().encode())
                elif policy.fault == "malformed":
                    routes[WELL_KNOWN] = (200, "text/plain", _MALFORMED_POLICY)
                site = HttpSite(routes)
                ctx = self._server_context(name, policy.cert, "current")
            else:  # an https rua: it keeps what is posted
                paths = {
                    "/" + u.split("/", 3)[3] if u.count("/") >= 3 else "/"
                    for r in self.spec.tls_rpt
                    for u in r.rua
                    if u.startswith("https://") and rua_https_host(u) == name
                }
                site = HttpSite(accept_post=frozenset(paths))
                ctx = self._server_context(name, "valid", "current")
            port = http_port if ctx is None else https_port
            sock = bind_socket(address, port)
            self._reserved.append(sock)
            bound = sock.getsockname()[1]
            if ctx is None:
                http_port = bound
            else:
                https_port = bound
            server = HttpServer(name, address, bound, site, ctx, clock=time.monotonic)
            self.web[name] = server
            self._web_socks.append((server, sock))
        if any(p.fault == "unreachable" for p in self.spec.mta_sts) and not https_port:
            # Nothing else took a port: the world still names one, where nothing listens.
            sock = bind_socket(f"{subnet}.1", 0)
            self._reserved.append(sock)
            https_port = sock.getsockname()[1]
        self.https_port, self.http_port = https_port, http_port

    async def _serve(self) -> None:
        """Open the host listeners (the sockets are bound already)."""
        for server, sock in self._pending:
            await server.start(sock)
        for server, sock in self._pending6:
            server.also_listen(sock, self.hosts6[server.spec.name])
        self._pending, self._pending6 = [], []
        for web, sock in self._web_socks:
            await web.start(sock)
        self._web_socks = []
        for ep in self._timed:
            await ep.apply(self.clock.now())
        self._arm_timers()

    def _arm_timers(self) -> None:
        """On a real clock, wake at each instant a timed host changes (from now on)."""
        for timer in self._timers:
            timer.cancel()
        self._timers = []
        if self.clock.virtual or not self._timed or self._loop is None:
            return
        now = self.clock.now()
        changes = {t for ep in self._timed if ep.spec.schedule is not None for t in ep.spec.schedule.changes}
        for when in sorted(t for t in changes if t > now):
            delay = self.clock.real_delay(when - now)
            if delay is not None:
                self._timers.append(self._loop.call_later(delay, self._on_time))

    def _bind(self, subnet: str) -> None:
        """Bind every host at subnet.N on one shared port (sockets only; no loop work)."""
        self.subnet = subnet
        self.dns_host = self.requested_dns_host or f"{subnet}.1"
        port = self.requested_port
        self.hosts = {}
        self.hosts6 = {}
        self._pending, self._pending6 = [], []
        for i, host in enumerate(self.spec.hosts):
            address = f"{subnet}.{i + 2}"
            sock = bind_socket(address, port)
            self._reserved.append(sock)
            port = sock.getsockname()[1]
            self.hosts[host.name] = address
            timed = host.schedule is not None and host.schedule.timed
            if host.ipv6 != "none":
                sock6 = self._bind6(host, address, port)
                if host.ipv6 == "refused":  # bound, never listening: a SYN there gets RST
                    self._endpoints.append(RefuseEndpoint(sock6))
                    v6 = []
                else:
                    v6 = [sock6]
                if host.ipv6 == "only":  # the IPv4 address stays reserved, and refuses
                    self._endpoints.append(RefuseEndpoint(sock))
                    sock, v6 = v6[0], []
                server = self._new_server(host, self.hosts6[host.name] if host.ipv6 == "only" else address)
                self._servers.append(server)
                self._pending.append((server, sock))
                self._pending6 += [(server, s6) for s6 in v6]
            elif host.kind in ("refuse", "blackhole") and timed:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # see bind_socket(reuse=)
                self._timed.append(TimedEndpoint(host, sock, self._new_server))
            elif host.kind == "refuse":
                self._endpoints.append(RefuseEndpoint(sock))
            elif host.kind == "blackhole":
                self._endpoints.append(BlackholeEndpoint(sock))
            else:
                server = self._new_server(host, address)
                self._servers.append(server)
                self._pending.append((server, sock))
        if not self.spec.hosts:
            # Nothing listens, but the world still owns its port (clients are told it).
            sock = bind_socket(self.dns_host, port)
            self._reserved.append(sock)
            port = sock.getsockname()[1]
        self.port = port
        self.web_hosts, self.web, self._web_socks = {}, {}, []
        if self.spec.web_hosts:
            self._web_servers(subnet, len(self.spec.hosts) + 2)

    def _bind6(self, host: HostSpec, address: str, port: int) -> socket.socket:
        """Bind ``host``'s IPv6 address on the world's port: its own inside the namespace (put on
        lo first), ``::1`` outside (World() refused a second IPv6 host there)."""
        if self.ipv6_own:
            from .netns import add_ipv6_address, ipv6_address_for

            v6 = ipv6_address_for(address)
            add_ipv6_address(v6)
        else:
            v6 = "::1"
        sock = bind_socket(v6, port, family=socket.AF_INET6)
        self._reserved.append(sock)
        self.hosts6[host.name] = v6
        return sock

    def _new_server(self, host: HostSpec, address: str) -> HostServer:
        return HostServer(
            host,
            address,
            recorder=self.recorder,
            contexts=self._server_context,
            handshake_timeout=self.handshake_timeout,
            idle_timeout=self.idle_timeout,
            clock=self.clock,
        )

    def _server_context(self, name: str, kind: str, offer: str) -> ssl.SSLContext:
        assert self.ca is not None
        crl_url = self.crl_url if kind == "revoked" else None
        host = next((h for h in self.spec.hosts if h.name == name), None)
        if host is not None and host.tlsa is not None and host.tlsa.usage == 2 and offer == "current":
            return self._with_issuer(name, kind, crl_url)
        return self.ca.server_context(name, kind, offer=offer, crl_url=crl_url)  # type: ignore[arg-type]

    def _with_issuer(self, name: str, kind: str, crl_url: str | None) -> ssl.SSLContext:
        """A server context whose chain ends with the issuing CA: a DANE-TA (usage 2) TLSA record
        names that CA, and RFC 7671 5.2.2 has the server send it."""
        assert self.ca is not None
        from .certs import _note_server_name

        issued = self.ca.issue(name, kind, crl_url=crl_url)  # type: ignore[arg-type]
        known = self._issuer_contexts.get((name, kind))
        if known is not None and known[0] == issued.cert_file:
            return known[1]
        chain = self.ca.directory / f"{name}.{kind}.with-issuer.pem"
        chain.write_bytes(issued.leaf_pem + self.ca.ca_file.read_bytes())
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.sni_callback = _note_server_name
        ctx.load_cert_chain(chain, issued.key_file)
        self._issuer_contexts[(name, kind)] = (issued.cert_file, ctx)
        return ctx

    def _release_sockets(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers = []
        for ep in self._endpoints:
            ep.close()
        for timed in self._timed:
            timed.close()
        self._timed = []
        for sock in self._reserved:
            sock.close()
        self._endpoints, self._reserved, self._servers, self._pending = [], [], [], []
        self._pending6 = []

    async def _astop(self) -> None:
        if self._state == "stopped":
            return
        self._state = "stopped"
        start = self._start_task
        if start is not None and not start.done() and start is not asyncio.current_task():
            # A start still under way (its caller gave up): let it unwind first.
            start.cancel()
            await asyncio.wait({start}, timeout=CANCEL_GRACE)
        for timer in self._timers:
            timer.cancel()
        for server in self._all_servers():
            await server.stop()
        for web in self.web.values():
            await web.stop()
        if self.dns is not None:
            await self.dns.stop()
        self._release_sockets()
        # Let the world's cancelled handlers (aiosmtpd's, a gate's handshake)
        # run to their end: every task made for this world carries its route.
        me = asyncio.current_task()
        left = [
            t
            for t in asyncio.all_tasks()
            if t is not me and not t.done() and getattr(t, "mailfakes_route", None) is self.events
        ]
        if left:
            await asyncio.wait(left, timeout=CANCEL_GRACE)
        if self.ca is not None and self._runtime is None:
            self.ca.close()


class TimedEndpoint:
    """A ``refuse`` or ``blackhole`` host with a timed schedule, on one address and port: its
    fault while the schedule says so (bound without listening: every SYN gets RST; or a full
    accept queue: SYNs go unanswered), a healthy SMTP server the rest of the time.

    Stopping to listen closes the listening socket (the kernel cannot un-listen one), and the
    address is bound again with SO_REUSEADDR, over the TIME_WAIT of the sessions it served.
    """

    def __init__(
        self, spec: HostSpec, sock: socket.socket, make_server: Callable[[HostSpec, str], HostServer]
    ) -> None:
        self.spec = spec
        self.address, self.port = sock.getsockname()[:2]
        self.sock: socket.socket | None = sock  # bound, not listening, while mode is "refuse"
        self.mode = "refuse"
        self.blackhole: BlackholeEndpoint | None = None
        self.server: HostServer | None = None
        self.make_server = make_server

    def wanted(self, now: float) -> str:
        assert self.spec.schedule is not None
        return self.spec.kind if self.spec.schedule.faulted(now, 0) else "serve"

    async def apply(self, now: float) -> str | None:
        """Switch to what the schedule gives at world time ``now``; what changed, or None."""
        want = self.wanted(now)
        if want == self.mode:
            return None
        if self.server is not None:  # its listener closes the socket
            server, self.server, self.sock = self.server, None, None
            await server.stop(ended_by="schedule")
        if self.blackhole is not None:
            self.blackhole.close()
            self.blackhole, self.sock = None, None
        self.mode = "down"  # until the new state is up
        if self.sock is None:
            self.sock = bind_socket(self.address, self.port, reuse=True)
        if want == "serve":
            self.server = self.make_server(self.spec, self.address)
            await self.server.start(self.sock)
            what = "healthy: accepts connections (SMTP)"
        elif want == "blackhole":
            self.blackhole = BlackholeEndpoint(self.sock)
            what = "stops answering connections (SYNs dropped)"
        else:
            what = "refuses connections (RST to the SYN)"
        self.mode = want
        return what

    def close(self) -> None:
        """Free the sockets (the world's loop has stopped the server, or is gone)."""
        if self.blackhole is not None:
            self.blackhole.close()
            self.blackhole = None
        if self.server is None and self.sock is not None:
            self.sock.close()
        elif self.server is not None and self.server.listener is not None:
            self.server.listener.sock.close()
        self.sock = None
