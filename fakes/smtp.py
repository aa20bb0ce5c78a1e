"""The fake SMTP host: aiosmtpd plus a fault plan applied at named points.

aiosmtpd runs the dialogue; :class:`FaultySMTP` extends it through its public
extension points (``smtp_*`` command methods, ``push``, handler hooks
``handle_DATA``, ``handle_STARTTLS``, ``handle_exception``) to replace
greetings and replies, add delays, cut the connection at a point, and record
both directions. What aiosmtpd cannot do alone (TLS from the first byte, a
refused or reset connection before any byte) is done here with a small gate
protocol or by the endpoints in ``tcp.py``. :class:`HostServer` owns one
host's listener and chooses each connection's behaviour (its schedule).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException

from .spec import CloseHow, HostSpec, Reply, SmtpPlan
from .tcp import CloseOnAcceptProtocol, SilentProtocol, cut, peer_of
from .transcript import CERT_REJECTION_ALERTS, Message, Recorder, Transcript

# (host name, cert kind, broken) -> server context; supplied by the world.
ContextSource = Callable[[str, str, bool], ssl.SSLContext]

IDENT = "ESMTP mailfakes"
TLS_CLOSE_GRACE = 0.2  # seconds a TLS close waits for the client's close_notify
STARTTLS_REFUSED = Reply(454, "TLS not available due to temporary reason", "4.7.0")


def tls_failure_reason(exc: BaseException | None) -> str:
    if exc is None:
        return "handshake failed"
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else (str(exc) or type(exc).__name__)


class _Handler:
    """aiosmtpd handler hooks, forwarded to the protocol that owns them."""

    def __init__(self, proto: FaultySMTP) -> None:
        self.proto = proto

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return await self.proto.data_end(envelope)

    def handle_STARTTLS(self, server: SMTP, session: Session, envelope: Envelope) -> bool:
        self.proto.tls_established()
        return True

    async def handle_exception(self, error: Exception) -> str:
        return self.proto.exception(error)


class FaultySMTP(SMTP):
    """An aiosmtpd session that follows a :class:`SmtpPlan`."""

    def __init__(
        self,
        host: HostServer,
        plan: SmtpPlan,
        transcript: Transcript,
        *,
        tls_context: ssl.SSLContext | None,
        raw_transport: asyncio.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            _Handler(self),
            hostname=host.spec.name,
            ident=IDENT,
            tls_context=tls_context,
            require_starttls=False,
            timeout=host.idle_timeout,
            loop=asyncio.get_running_loop(),
        )
        self.host = host
        self.plan = plan
        self.t = transcript
        self._raw = raw_transport
        self._greeted = False
        # The point each pending reply answers (GREETING, a command verb, DATA_END),
        # oldest first: it picks the delay of the reply.
        self._expect: collections.deque[str] = collections.deque(["GREETING"])
        self._delayed = False
        self._substitute: str | None = None
        self._pending_close: CloseHow | None = None
        self._in_data = False
        self._data_bytes = 0
        self._tail = b""  # the end of the message content so far, to spot CRLF.CRLF
        self._buf = b""
        self._registered = False
        self._lost = False
        self._handshake_timer: asyncio.TimerHandle | None = None

    # -- connection life --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._registered:
            self._registered = True
            if self._raw is None:
                self._raw = transport
            self.host.live.add(self)
            self.t.peer = peer_of(self._raw)

    def connection_lost(self, error: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        self.host.forget(self, error)
        super().connection_lost(error)

    def shutdown(self) -> None:
        """End the session now (world stop): also during a TLS handshake,
        when asyncio would not report the loss to this protocol."""
        self._terminate()

    def _terminate(self) -> None:
        if self._raw is not None:
            cut(self._raw, "fin")
        self.connection_lost(None)

    def data_received(self, data: bytes) -> None:
        if self._in_data:
            rest = self._count_content(data)
            ca = self.plan.close_at
            if ca is not None and ca.point == "in_data" and self._data_bytes >= max(ca.after_bytes, 1):
                if rest is None:
                    self.t.add("C", f"<message content, {self._data_bytes} bytes so far>")
                self._cut(ca.how, f"after {self._data_bytes} bytes of message content")
                return
            if rest:
                self._record_client(rest)
        else:
            self._record_client(data)
        super().data_received(data)

    def _count_content(self, data: bytes) -> bytes | None:
        """Count message bytes; at the final dot, leave data mode and return what follows."""
        window = self._tail + data
        i = window.find(b"\r\n.\r\n")
        if i < 0:
            self._data_bytes += len(data)
            self._tail = window[-4:]
            return None
        end = i + 5 - len(self._tail)  # just after the terminator, in data
        self._data_bytes += max(end - 3, 0)
        self._in_data = False
        self.t.add("C", f"<message content, {self._data_bytes} bytes>")
        self._expect.append("DATA_END")
        return data[end:]

    def _record_client(self, data: bytes) -> None:
        self._buf += data
        while b"\n" in self._buf:
            raw, _, self._buf = self._buf.partition(b"\n")
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            self.t.add("C", line)
            self._expect.append(line.split(" ", 1)[0].upper()[:16] or "*")
            self.host.recorder.events.emit("smtp_in", self.host.spec.name, line, session=self.t.session_id)
        if len(self._buf) > 4096:  # a runaway line: keep the transcript bounded
            self.t.add("C", self._buf[:80].decode("utf-8", "replace") + "... (line too long)")
            self._buf = b""

    # -- faults -----------------------------------------------------------

    def _cut(self, how: CloseHow, why: str) -> None:
        self.t.add("*", f"fault: connection cut with {how.upper()} {why}")
        self.t.ended_by = f"server-{how}"
        self.host.recorder.events.emit("fault", self.host.spec.name, f"cut ({how}) {why}")
        if self._raw is not None:
            cut(self._raw, how)

    def _close(self, how: CloseHow | None) -> None:
        """Close after a reply: orderly (after flushing) for fin, a reset for rst."""
        if how == "rst":
            self._cut("rst", "after the reply")
            return
        self.t.ended_by = "server-close"
        self.t.add("*", "server closes the connection")
        if self.transport is not None:
            self.transport.close()
        self._close_tls_soon()

    def _close_tls_soon(self) -> None:
        # Under TLS, close() waits for the client's close_notify (30 s by
        # default) before the FIN: give it a moment, then close the socket.
        if self._raw is not None and self._raw is not self.transport:
            asyncio.get_running_loop().call_later(TLS_CLOSE_GRACE, cut, self._raw, "fin")

    async def _park(self) -> None:
        # The connection is closing: connection_lost() cancels this task.
        await asyncio.get_running_loop().create_future()

    # -- replies ----------------------------------------------------------

    async def push(self, status: str | bytes) -> None:
        text = status if isinstance(status, str) else status.decode("utf-8", "replace")
        greeting = not self._greeted
        if greeting:
            self._greeted = True
            if self.plan.greeting is not None:
                text = self.plan.greeting.line()
        final = text[3:4] != "-"
        if final and self._substitute is not None:
            text, self._substitute = self._substitute, None
        if not self._delayed:
            self._delayed = True
            delay = self.plan.delay_for(self._expect[0] if self._expect else "*")
            if delay:
                self.t.add("*", f"fault: reply delayed by {int(delay * 1000)} ms")
                await asyncio.sleep(delay)
        if self._in_data and not text.startswith("354"):
            self._in_data = False  # a reply ends the data phase (e.g. 552 too much data)
        if final:
            self._delayed = False
            if self._expect:
                self._expect.popleft()
        self.t.add("S", text)
        self.host.recorder.events.emit("smtp_out", self.host.spec.name, text, session=self.t.session_id)
        if text.startswith("354"):
            self._in_data = True
            self._data_bytes = 0
            self._tail = b"\r\n"  # the CRLF that ended the DATA line
        await super().push(text)
        if greeting:
            await self._after_greeting(text)
        elif final and self._pending_close is not None:
            how, self._pending_close = self._pending_close, None
            self._close(how)
            await self._park()

    async def _after_greeting(self, text: str) -> None:
        g = self.plan.greeting
        if g is not None and (g.close is not None or text.startswith("421")):
            # RFC 5321 3.8: a server that says 421 closes the connection.
            self._close(g.close or "fin")
            await self._park()
        ca = self.plan.close_at
        if ca is not None and ca.point == "after_greeting":
            self._cut(ca.how, "after the greeting")
            await self._park()

    async def intercept(self, name: str, arg: str | None, default: Callable[..., Awaitable[None]]) -> None:
        """Run before every command: cut, replace the reply, or let aiosmtpd answer."""
        ca = self.plan.close_at
        if ca is not None and _cuts_on(ca.point, name):
            self._cut(ca.how, f"after {name}, before its reply")
            await self._park()
        reply = self.plan.replies.get(name)
        if reply is None and name == "STARTTLS" and self.plan.tls == "starttls_refused":
            reply = STARTTLS_REFUSED
        if reply is None:
            if name == "STARTTLS" and self.tls_context is not None:
                timeout = self.host.handshake_timeout
                loop = asyncio.get_running_loop()
                self._handshake_timer = loop.call_later(timeout, self._handshake_timed_out)
            await default(self, arg)
            if name == "QUIT":
                self._close_tls_soon()
            return
        self.t.add("*", f"fault: reply to {name} replaced")
        self._pending_close = reply.close
        if reply.code < 400 and name not in ("STARTTLS",):
            # A success override keeps aiosmtpd's state and swaps the final line.
            self._substitute = reply.line()
            await default(self, arg)
        else:
            await self.push(reply.line())

    async def data_end(self, envelope: Envelope) -> str:
        """The final dot arrived: keep the message, or not, as the plan says."""
        reply = self.plan.replies.get("DATA_END")
        ca = self.plan.close_at
        cut_now = ca is not None and ca.point == "after_final_dot"
        if reply is None or reply.code < 400:
            content = envelope.original_content or b""
            self.host.recorder.messages.append(
                Message(
                    host=self.host.spec.name,
                    session_id=self.t.session_id,
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    content=content,
                    tls_version=self.t.tls_version,
                    replied=not cut_now,
                )
            )
            self.host.recorder.events.emit(
                "message",
                self.host.spec.name,
                f"message kept ({len(content)} bytes)",
                session=self.t.session_id,
            )
        if cut_now:
            assert ca is not None
            self._cut(ca.how, "after the final dot, before the reply")
            await self._park()
        if reply is not None:
            self.t.add("*", "fault: reply to the final dot replaced")
            self._pending_close = reply.close
            return reply.line()
        return f"250 2.0.0 Ok: queued as MF{self.t.session_id:06d}"

    # -- TLS and errors ---------------------------------------------------

    def _handshake_timed_out(self) -> None:
        self.t.add("*", f"TLS handshake timed out after {self.host.handshake_timeout} s")
        self.t.ended_by = "timeout"
        self._terminate()

    def tls_established(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._buf = b""  # plaintext before STARTTLS is discarded (RFC 3207 4.2)
        self.host.tls_done(self.t, self.transport, self.plan)
        ca = self.plan.close_at
        if ca is not None and ca.point == "after_starttls":
            asyncio.get_running_loop().call_soon(self._cut, ca.how, "right after the TLS handshake")

    def exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            self.host.tls_failed(self.t, error.__cause__)
            return "454 4.7.0 TLS handshake failed"
        self.host.recorder.events.emit("error", self.host.spec.name, f"fake SMTP failed: {error!r}")
        self.t.add("*", f"internal error: {error!r}")
        return "451 4.3.0 mailfakes internal error"


def _cuts_on(point: str, command: str) -> bool:
    return (
        (point == "after_ehlo" and command in ("EHLO", "HELO"))
        or (point == "after_mail" and command == "MAIL")
        or (point == "after_rcpt" and command == "RCPT")
    )


def _intercepting(name: str) -> Callable[..., Awaitable[None]]:
    parent = getattr(SMTP, "smtp_" + name)

    @functools.wraps(parent)  # keeps aiosmtpd's @syntax data for HELP
    async def method(self: FaultySMTP, arg: str | None) -> None:
        await self.intercept(name, arg, parent)

    return method


for _name in ("EHLO", "HELO", "MAIL", "RCPT", "DATA", "STARTTLS", "RSET", "QUIT", "NOOP"):
    setattr(FaultySMTP, "smtp_" + _name, _intercepting(_name))


class ImplicitTLSGate(asyncio.Protocol):
    """Port-465 style: the TLS handshake comes first, then the SMTP session.

    Doing the handshake here (rather than ``create_server(ssl=...)``) lets a
    failed handshake be recorded in the transcript instead of a log line.
    """

    def __init__(self, host: HostServer, plan: SmtpPlan, transcript: Transcript, context: ssl.SSLContext):
        self.host = host
        self.plan = plan
        self.t = transcript
        self.context = context
        self.raw: asyncio.BaseTransport | None = None
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport
        self.host.live.add(self)
        self.t.peer = peer_of(transport)
        self.task = asyncio.get_running_loop().create_task(self._handshake(transport))

    async def _handshake(self, raw: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(
                raw,  # type: ignore[arg-type]
                self,
                self.context,
                server_side=True,
                ssl_handshake_timeout=self.host.handshake_timeout,
            )
        except (TimeoutError, OSError) as exc:
            if isinstance(exc, TimeoutError):
                self.t.ended_by = "timeout"
            self.host.tls_failed(self.t, exc)
            self.host.forget(self, None)
            return
        if tls is None:  # the connection was lost during the handshake
            self.host.forget(self, None)
            return
        self.host.live.discard(self)  # the SMTP session owns the connection now
        smtp = FaultySMTP(self.host, self.plan, self.t, tls_context=None, raw_transport=raw)
        tls.set_protocol(smtp)
        smtp.connection_made(tls)
        self.host.tls_done(self.t, tls, self.plan)

    def shutdown(self) -> None:
        if self.raw is not None:
            cut(self.raw, "fin")
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.host.forget(self, None)

    def connection_lost(self, exc: Exception | None) -> None:
        # Only reached when the connection is lost before start_tls took over.
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.host.forget(self, exc)


class HostServer:
    """One host of a running world: its listener, its connections, its schedule."""

    def __init__(
        self,
        spec: HostSpec,
        address: str,
        *,
        recorder: Recorder,
        contexts: ContextSource | None,
        handshake_timeout: float = 10.0,
        idle_timeout: float = 120.0,
    ) -> None:
        self.spec = spec
        self.address = address
        self.recorder = recorder
        self.contexts = contexts
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.live: set[Any] = set()  # protocols with an open connection; each has shutdown()
        self.server: asyncio.Server | None = None
        self.stopping = False

    async def start(self, sock: socket.socket) -> None:
        if self.spec.kind == "smtp" and self.spec.smtp.uses_tls:
            self._context(self.spec.smtp)  # certificates are part of "ready"
        sock.listen(128)
        sock.setblocking(False)
        self.server = await asyncio.get_running_loop().create_server(self.make_protocol, sock=sock)

    async def stop(self) -> None:
        self.stopping = True
        loop = asyncio.get_running_loop()
        if self.server is not None:
            # Stop accepting first: connections accepted already get their
            # transports over the next iterations (closing the server before
            # that makes asyncio drop them half made, sockets left open).
            for sock in self.server.sockets:
                loop.remove_reader(sock.fileno())
            for _ in range(3):
                await asyncio.sleep(0)
            self.server.close()
        for _ in range(3):
            for proto in list(self.live):
                proto.shutdown()
            await asyncio.sleep(0)
        if self.server is not None:
            await self.server.wait_closed()
            self.server = None

    def _context(self, plan: SmtpPlan) -> ssl.SSLContext:
        assert self.contexts is not None, "a TLS host needs certificates"
        broken = plan.tls in ("starttls_broken", "implicit_broken")
        return self.contexts(self.spec.name, plan.cert, broken)

    def make_protocol(self) -> asyncio.BaseProtocol:
        spec = self.spec
        earlier = self.recorder.count_session(spec.name)
        faulted = spec.schedule is None or earlier < spec.schedule.fail_first
        kind = spec.kind if faulted else "smtp"
        plan = spec.smtp if faulted else spec.smtp.healthy()
        t = self.recorder.open_session(spec.name, self.address, "?", faulted)
        self.recorder.events.emit("connect", spec.name, f"connection accepted ({kind})", session=t.session_id)
        if kind == "silent":
            t.add("*", "fault: the server accepts and never speaks")
            return SilentProtocol(self, t)
        cut_first = plan.close_at is not None and plan.close_at.point == "before_greeting"
        if kind == "close_on_accept" or cut_first:
            how = spec.close if kind == "close_on_accept" else plan.close_at.how  # type: ignore[union-attr]
            t.add("*", f"fault: connection cut with {how.upper()} before the greeting")
            t.ended_by = f"server-{how}"
            return CloseOnAcceptProtocol(self, t, how)
        if plan.implicit_tls:
            return ImplicitTLSGate(self, plan, t, self._context(plan))
        ctx = self._context(plan) if plan.tls.startswith("starttls") else None
        return FaultySMTP(self, plan, t, tls_context=ctx)

    # -- shared bookkeeping -------------------------------------------------

    def forget(self, proto: object, error: BaseException | None) -> None:
        """A connection ended: drop it from the live set and record the end once."""
        self.live.discard(proto)
        t: Transcript = proto.t  # type: ignore[attr-defined]
        if t.closed:
            return
        t.closed = True
        if t.ended_by is None:
            t.ended_by = "stop" if self.stopping else "client"
        self.recorder.events.emit(
            "close", self.spec.name, f"connection closed ({t.ended_by})", session=t.session_id
        )

    def tls_done(self, t: Transcript, transport: Any, plan: SmtpPlan) -> None:
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        t.tls_version = ssl_object.version() if ssl_object is not None else "TLS"
        if plan.cert != "valid":
            # The client finished a handshake on a bad certificate: it did not verify.
            t.client_verified = False
        t.add("*", f"TLS established ({t.tls_version}, certificate {plan.cert})")
        self.recorder.events.emit(
            "tls", self.spec.name, f"TLS established ({t.tls_version})", session=t.session_id
        )

    def tls_failed(self, t: Transcript, exc: BaseException | None) -> None:
        reason = tls_failure_reason(exc)
        t.tls_error = reason
        if any(alert in reason.upper() for alert in CERT_REJECTION_ALERTS):
            t.client_verified = True
        t.add("*", f"TLS handshake failed: {reason}")
        self.recorder.events.emit(
            "tls", self.spec.name, f"TLS handshake failed: {reason}", session=t.session_id
        )
