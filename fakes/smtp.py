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
import logging
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException

from .certs import SERVER_NAME_ATTRIBUTE
from .spec import CloseHow, HostSpec, Reply, SmtpPlan
from .tcp import ESTABLISH_GRACE, CloseOnAcceptProtocol, SilentProtocol, cut, peer_of
from .tlsgate import ClientHello, HandshakeProbe, HelloTap, alert_name, parse_client_hello
from .transcript import CERT_REJECTION_ALERTS, Message, Recorder, Transcript

# aiosmtpd logs every unknown command as a warning on "mail.log": garbage is
# part of the game here, and a logger with no handler would print it to stderr
# (logging's last resort). Handlers the user sets on the root still get it.
logging.getLogger("mail.log").addHandler(logging.NullHandler())

# (host name, cert kind, TLS offer) -> server context; supplied by the world.
ContextSource = Callable[[str, str, str], ssl.SSLContext]

IDENT = "ESMTP mailfakes"
TLS_CLOSE_GRACE = 0.2  # seconds a TLS close waits for the client's close_notify
LISTEN_BACKLOG = 4096  # the kernel caps it at net.core.somaxconn
DATA_SIZE_LIMIT = 33554432  # what SIZE advertises (aiosmtpd's default)
STARTTLS_REFUSED = Reply(454, "TLS not available due to temporary reason", "4.7.0")
# Postfix's answer when TLS is off; Exim says "500 5.5.2 unrecognized command".
STARTTLS_UNKNOWN = Reply(502, "Error: command not implemented", "5.5.1")
STARTTLS_AGAIN = Reply(554, "Error: TLS already active", "5.5.1")  # Postfix; RFC 3207 4.2

_ENHANCED = re.compile(r"^([245])\.\d{1,3}\.\d{1,3}(?: |$)")
# The enhanced code a reply of the fake's own gets once ENHANCEDSTATUSCODES is
# advertised (RFC 3463 classes, as Postfix uses them): by (code, command),
# then by code, then class.0.0.
_DEFAULT_ENHANCED = {
    (250, "MAIL"): "2.1.0",
    (250, "RCPT"): "2.1.5",
    (550, "MAIL"): "5.1.0",
    (550, "RCPT"): "5.1.1",
    (421, "*"): "4.4.2",
    (451, "*"): "4.3.0",
    (452, "*"): "4.3.1",
    (454, "*"): "4.7.0",
    (500, "*"): "5.5.2",
    (501, "*"): "5.5.4",
    (502, "*"): "5.5.1",
    (503, "*"): "5.5.1",
    (504, "*"): "5.5.4",
    (530, "*"): "5.7.0",
    (552, "*"): "5.3.4",
    (553, "*"): "5.1.3",
    (555, "*"): "5.5.4",
}


def tls_failure_reason(exc: BaseException | None) -> str:
    if exc is None:
        return "handshake failed"
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else (str(exc) or type(exc).__name__)


def styled(text: str, answering: str, enhanced: bool) -> str:
    """A reply line with an enhanced status code when the session uses them, without otherwise."""
    code = text[:3]
    if not code.isdigit() or code in ("334", "354"):
        return text
    sep, rest = text[3:4], text[4:]
    m = _ENHANCED.match(rest)
    if not enhanced:
        return f"{code}{sep}{rest[m.end() :]}" if m else text
    if m:
        return text
    n = int(code)
    default = _DEFAULT_ENHANCED.get((n, answering)) or _DEFAULT_ENHANCED.get((n, "*")) or f"{code[0]}.0.0"
    return f"{code}{sep}{default} {rest}" if rest else f"{code}{sep}{default}"


class _Handler:
    """aiosmtpd handler hooks, forwarded to the protocol that owns them."""

    def __init__(self, proto: FaultySMTP) -> None:
        self.proto = proto

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return await self.proto.data_end(envelope)

    def handle_STARTTLS(self, server: SMTP, session: Session, envelope: Envelope) -> bool:
        self.proto.tls_established()
        return True

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return self.proto.ehlo_lines(responses)

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
            data_size_limit=DATA_SIZE_LIMIT if plan.advertises("SIZE") else None,
            enable_SMTPUTF8=plan.advertises("SMTPUTF8"),
            loop=asyncio.get_running_loop(),
        )
        self.host = host
        self.plan = plan
        self.t = transcript
        self._raw = raw_transport
        self._tls_active = raw_transport is not None  # implicit TLS: the gate did the handshake
        self._greeted = False
        # The point each pending reply answers (GREETING, a command verb, DATA_END),
        # oldest first: it picks the delay and the enhanced code of the reply.
        self._expect: collections.deque[str] = collections.deque(["GREETING"])
        self._delayed = False
        self._substitute: str | None = None
        self._pending_close: CloseHow | None = None
        self._enhanced = False  # ENHANCEDSTATUSCODES advertised in this EHLO session
        self._in_data = False
        self._data_bytes = 0
        self._tail = b""  # the end of the message content so far, to spot CRLF.CRLF
        self._buf = b""
        # Bytes after a DATA line, until its reply says whether they are content.
        self._held: bytes | None = None
        self._spoke = False  # the client sent bytes: its connect() has surely returned
        self._severed = False  # a cut was decided: nothing more is kept or answered
        self._starting_tls = False
        self._registered = False
        self._lost = False
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._cut_timer: asyncio.TimerHandle | None = None

    # -- connection life --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._registered:
            self._registered = True
            if self._raw is None:
                self._raw = transport
                # push() waits until each reply is in the kernel, so a close
                # right after it never overtakes it.
                cast(asyncio.WriteTransport, transport).set_write_buffer_limits(0)
            self.host.live.add(self)
            self.t.peer = peer_of(self._raw)

    def connection_lost(self, error: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        for timer in (self._handshake_timer, self._cut_timer):
            if timer is not None:
                timer.cancel()
        self.host.forget(self, error)
        super().connection_lost(error)

    def shutdown(self) -> None:
        """End the session now (world stop): also during a TLS handshake,
        when asyncio would not report the loss to this protocol."""
        self._terminate()

    def _terminate(self) -> None:
        if self._raw is not None:
            cut(self._raw, "fin", self.host)
        self.connection_lost(None)

    def data_received(self, data: bytes) -> None:
        self._spoke = True
        if self._severed:
            if self._cut_timer is not None:  # the client spoke: its side is established
                self._cut_timer.cancel()
                self._cut_now("rst")
            return
        if self._held is not None:
            self._held += data
        elif self._in_data:
            rest = self._content(data)
            if self._severed:
                return  # cut in the middle of the message: aiosmtpd never sees its end
            if rest:
                self._record_client(rest)
        else:
            self._record_client(data)
        super().data_received(data)

    def _content(self, data: bytes) -> bytes | None:
        """Count message bytes; cut if the plan says so; at the final dot, return what follows."""
        window = self._tail + data
        i = window.find(b"\r\n.\r\n")
        ca = self.plan.close_at
        if i < 0:
            self._data_bytes += len(data)
            self._tail = window[-4:]
        else:
            end = i + 5 - len(self._tail)  # just after the terminator, in data
            self._data_bytes += max(end - 3, 0)
        self.t.content_bytes = self._data_bytes
        self.t.content_complete = i >= 0
        if (
            ca is not None
            and ca.point == "in_data"
            and (i >= 0 or self._data_bytes >= max(ca.after_bytes, 1))
        ):
            whole = " (the whole message)" if i >= 0 else " so far"
            self.t.add("C", f"<message content, {self._data_bytes} bytes{whole}>")
            self._cut(ca.how, f"after {self._data_bytes} bytes of message content")
            return None
        if i < 0:
            return None
        self._in_data = False
        self.t.add("C", f"<message content, {self._data_bytes} bytes>")
        self._expect.append("DATA_END")
        return data[end:]

    def _record_client(self, data: bytes) -> None:
        self._buf += data
        while b"\n" in self._buf:
            raw, _, self._buf = self._buf.partition(b"\n")
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            self.host.recorder.line(self.t, "C", self.host.spec.name, line)
            verb = line.split(" ", 1)[0].upper()[:16] or "*"
            self._expect.append(verb)
            if verb == "DATA" and line.strip().upper() == "DATA":
                # Whatever follows is content if the reply is 354, commands if not.
                self._held, self._buf = self._buf, b""
                return
        if len(self._buf) > 4096:  # a runaway line: keep the transcript bounded
            self.t.add("C", self._buf[:80].decode("utf-8", "replace") + "... (line too long)")
            self._buf = b""

    def _release_held(self, content: bool) -> None:
        held, self._held = self._held, None
        if not held:
            return
        if content:
            rest = self._content(held)
            if rest and not self._severed:
                self._record_client(rest)
        else:
            self._record_client(held)

    # -- faults -----------------------------------------------------------

    def _cut(self, how: CloseHow, why: str) -> None:
        if self._severed:
            return
        self._severed = True
        self.t.add("*", f"fault: connection cut with {how.upper()} {why}")
        self.t.ended_by = f"server-{how}"
        self.host.recorder.emit(self.t, "fault", self.host.spec.name, f"cut ({how}) {why}")
        if self._raw is None:
            return
        wait = self.t.opened + ESTABLISH_GRACE - time.monotonic()
        if how == "rst" and not self._spoke and wait > 0:
            # A reset this early could overtake the client's connect(): see tcp.ESTABLISH_GRACE.
            self._cut_timer = asyncio.get_running_loop().call_later(wait, self._cut_now, how)
        else:
            self._cut_now(how)

    def _cut_now(self, how: CloseHow) -> None:
        self._cut_timer = None
        if self._raw is not None:
            cut(self._raw, how, self.host)

    def _close(self, how: CloseHow | None) -> None:
        """Close after a reply: orderly (FIN after the reply) for fin, a reset for rst."""
        if how == "rst":
            self._cut("rst", "after the reply")
            return
        self.t.ended_by = "server-close"
        self.t.add("*", "server closes the connection")
        self._severed = True
        if self._raw is not None and self._raw is not self.transport and self.transport is not None:
            # Under TLS: close_notify first, then the socket.
            self.transport.close()
            self._close_tls_soon()
        elif self._raw is not None:
            cut(self._raw, "fin", self.host)

    def _close_tls_soon(self) -> None:
        # Under TLS, close() waits for the client's close_notify (30 s by
        # default) before the FIN: give it a moment, then close the socket.
        if self._raw is not None and self._raw is not self.transport:
            asyncio.get_running_loop().call_later(TLS_CLOSE_GRACE, cut, self._raw, "fin", self.host)

    async def _park(self) -> None:
        # The connection is closing: connection_lost() cancels this task.
        await asyncio.get_running_loop().create_future()

    # -- replies ----------------------------------------------------------

    def ehlo_lines(self, offered: list[str]) -> list[str]:
        """What EHLO advertises: a current MTA's extensions, less those switched off."""
        plan = self.plan
        self._enhanced = plan.advertises("ENHANCEDSTATUSCODES")
        lines = [self.hostname, "PIPELINING"]
        if plan.advertises("SIZE"):
            lines.append(f"SIZE {DATA_SIZE_LIMIT}")
        lines += ["8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"]
        if any(o[4:].upper() == "STARTTLS" for o in offered):
            lines.append("STARTTLS")
        lines = [ln for ln in lines if ln.split(" ")[0] not in plan.extensions_off]
        return [f"250-{ln}" for ln in lines[:-1]] + [f"250 {lines[-1]}"]

    async def push(self, status: str | bytes) -> None:
        text = status if isinstance(status, str) else status.decode("utf-8", "replace")
        greeting = not self._greeted
        answering = self._expect[0] if self._expect else "*"
        if greeting:
            self._greeted = True
            if self.plan.greeting is not None:
                text = self.plan.greeting.line()
        final = text[3:4] != "-"
        if final and self._substitute is not None:
            text, self._substitute = self._substitute, None
        if not greeting and answering not in ("EHLO", "HELO"):
            # The greeting and the EHLO reply go as written (a 421 greeting
            # often carries 4.3.2); the rest follows ENHANCEDSTATUSCODES.
            text = styled(text, answering, self._enhanced)
        if not self._delayed:
            self._delayed = True
            delay = self.plan.delay_for(answering)
            if delay:
                self.t.add("*", f"fault: reply delayed by {int(delay * 1000)} ms")
                await asyncio.sleep(delay)
        if self._in_data and not text.startswith("354"):
            self._in_data = False  # a reply ends the data phase (e.g. 552 too much data)
        if final:
            self._delayed = False
            if self._expect:
                self._expect.popleft()
        self.host.recorder.line(self.t, "S", self.host.spec.name, text)
        if text.startswith("354"):
            self._in_data = True
            self._data_bytes = 0
            self._tail = b"\r\n"  # the CRLF that ended the DATA line
        await super().push(text)
        if final and answering == "DATA" and self._held is not None:
            self._release_held(content=text.startswith("354"))
        if greeting:
            await self._after_greeting(text)
        elif final and self._pending_close is not None:
            how, self._pending_close = self._pending_close, None
            self._close(how)
            await self._park()
        elif final and self._starting_tls and text.startswith("220"):
            self._starting_tls = False
            # aiosmtpd hands the socket to its TLS layer as soon as this
            # returns: hold the input until the tap is in place.
            assert self._raw is not None
            cast(asyncio.ReadTransport, self._raw).pause_reading()
            asyncio.get_running_loop().call_soon(self._tap_handshake)

    def _tap_handshake(self) -> None:
        raw = cast(asyncio.Transport, self._raw)
        inner = raw.get_protocol()
        if inner is self and not raw.is_closing():
            # aiosmtpd no longer hands the socket over right after its 220:
            # without the tap, a TLS refusal would lose its alert.
            self.host.recorder.emit(
                self.t, "error", self.host.spec.name, "aiosmtpd did not start TLS as expected: no TLS tap"
            )
        elif not raw.is_closing():
            probe = None
            if self.plan.tls_offer != "current" and self.tls_context is not None:
                probe = HandshakeProbe(self.tls_context)
            raw.set_protocol(
                HelloTap(raw, inner, on_hello=self._hello, probe=probe, on_refused=self._refuse_tls)
            )
        if not raw.is_closing():
            raw.resume_reading()

    def _hello(self, hello: ClientHello | None) -> None:
        self.host.hello_seen(self.t, hello)

    def _refuse_tls(self, alert: bytes, error: ssl.SSLError) -> None:
        """The server finds nothing in common with the client: alert, then FIN."""
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        assert self._raw is not None
        self.host.refuse_tls(self.t, cast(asyncio.Transport, self._raw), alert, error)
        self._severed = True
        self.connection_lost(None)

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
        if self._severed:
            await self._park()
        if name == "HELO":
            self._enhanced = False
        ca = self.plan.close_at
        if ca is not None and _cuts_on(ca.point, name):
            self._cut(ca.how, f"after {name}, before its reply")
            await self._park()
        reply = self.plan.replies.get(name)
        if reply is None and name == "STARTTLS" and not arg:
            if self._tls_active:
                reply = STARTTLS_AGAIN
            elif self.tls_context is None:
                reply = STARTTLS_UNKNOWN
            elif self.plan.tls == "starttls_refused":
                reply = STARTTLS_REFUSED
        if reply is None:
            if name == "STARTTLS" and not arg and self.tls_context is not None:
                timeout = self.host.handshake_timeout
                loop = asyncio.get_running_loop()
                self._handshake_timer = loop.call_later(timeout, self._handshake_timed_out)
                self._starting_tls = True
            await default(self, arg)
            if name == "QUIT":
                self._close_tls_soon()
            return
        if reply not in (STARTTLS_AGAIN, STARTTLS_UNKNOWN, STARTTLS_REFUSED):
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
        if self._severed:
            await self._park()
        reply = self.plan.replies.get("DATA_END")
        ca = self.plan.close_at
        cut_now = ca is not None and ca.point == "after_final_dot"
        if reply is None or reply.code < 400:
            content = envelope.original_content or b""
            kept = self.host.recorder.keep_message(
                self.t,
                Message(
                    host=self.host.spec.name,
                    session_id=self.t.session_id,
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    content=content,
                    tls_version=self.t.tls_version,
                    replied=not cut_now,
                ),
            )
            if kept:
                self.host.recorder.emit(
                    self.t, "message", self.host.spec.name, f"message kept ({len(content)} bytes)"
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
        self._tls_active = True
        self._enhanced = False  # RFC 3207 4.2: the client starts over with EHLO
        self._buf = b""  # plaintext before STARTTLS is discarded (RFC 3207 4.2)
        self.host.tls_done(self.t, self.transport, self.plan)
        ca = self.plan.close_at
        if ca is not None and ca.point == "after_starttls":
            asyncio.get_running_loop().call_soon(self._cut, ca.how, "right after the TLS handshake")

    def exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            self.host.tls_failed(self.t, error.__cause__)
            return "454 4.7.0 TLS handshake failed"
        self.host.recorder.emit(self.t, "error", self.host.spec.name, f"fake SMTP failed: {error!r}")
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
    failed handshake be recorded in the transcript instead of a log line. A
    server that offers nothing the client can use (``implicit_broken``)
    never starts TLS: the ClientHello goes to a :class:`HandshakeProbe`,
    whose alert is sent before the FIN.
    """

    def __init__(self, host: HostServer, plan: SmtpPlan, transcript: Transcript, context: ssl.SSLContext):
        self.host = host
        self.plan = plan
        self.t = transcript
        self.context = context
        self.raw: asyncio.BaseTransport | None = None
        self.task: asyncio.Task[None] | None = None
        self.probe = HandshakeProbe(context) if plan.tls_offer != "current" else None
        self.seen = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport
        self.host.live.add(self)
        self.t.peer = peer_of(transport)
        if self.probe is None:
            self.task = asyncio.get_running_loop().create_task(self._handshake(transport))

    def data_received(self, data: bytes) -> None:
        # Only reached with a probe: the real handshake owns the socket otherwise.
        if self.probe is None or self.raw is None:
            return
        self.seen += data
        hello = parse_client_hello(self.seen)
        if hello is not None and not self.t.tls_attempted:
            self.host.hello_seen(self.t, hello if isinstance(hello, ClientHello) else None)
        verdict = self.probe.feed(data)
        if verdict is None:
            return
        self.probe = None
        raw = cast(asyncio.Transport, self.raw)
        if isinstance(verdict, tuple):
            self.host.refuse_tls(self.t, raw, *verdict)
        else:  # a client that takes what nobody should: no session for it
            self.t.add("*", "the client accepted a handshake it should refuse; connection closed")
            self.t.ended_by = "server-fin"
            cut(raw, "fin", self.host)

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
            cut(self.raw, "fin", self.host)
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
        self.draining: set[Any] = set()  # connections ended with FIN, still read (tcp.Drainer)
        self.server: asyncio.Server | None = None
        self.stopping = False

    async def start(self, sock: socket.socket) -> None:
        if self.spec.kind == "smtp" and self.spec.smtp.uses_tls:
            self._context(self.spec.smtp)  # certificates are part of "ready"
        sock.setblocking(False)
        # create_server listens on the socket itself, with this backlog (its default is 100).
        self.server = await asyncio.get_running_loop().create_server(
            self.make_protocol, sock=sock, backlog=LISTEN_BACKLOG
        )

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
        for drainer in list(self.draining):
            drainer.shutdown()
        if self.server is not None:
            await self.server.wait_closed()
            self.server = None

    def _context(self, plan: SmtpPlan) -> ssl.SSLContext:
        assert self.contexts is not None, "a TLS host needs certificates"
        return self.contexts(self.spec.name, plan.cert, plan.tls_offer)

    def make_protocol(self) -> asyncio.BaseProtocol:
        spec = self.spec
        earlier = self.recorder.count_session(spec.name)
        faulted = spec.schedule is None or earlier < spec.schedule.fail_first
        kind = spec.kind if faulted else "smtp"
        plan = spec.smtp if faulted else spec.smtp.healthy()
        t = self.recorder.open_session(spec.name, self.address, "?", faulted)
        self.recorder.emit(t, "connect", spec.name, f"connection accepted ({kind})")
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
        self.recorder.emit(t, "close", self.spec.name, f"connection closed ({t.ended_by})")

    def hello_seen(self, t: Transcript, hello: ClientHello | None) -> None:
        """The client's first TLS flight came in (``None``: it was no ClientHello)."""
        if hello is None:
            t.add("*", "the client sent no TLS ClientHello after STARTTLS")
            return
        t.tls_attempted = True
        t.sni = hello.server_name
        t.add("*", f"TLS ClientHello, server name {hello.server_name or '(none sent)'}")

    def refuse_tls(self, t: Transcript, raw: asyncio.Transport, alert: bytes, error: ssl.SSLError) -> None:
        """Refuse a handshake as a real server does: the fatal alert, flushed, then FIN."""
        raw.write(alert)
        name = alert_name(alert) or "no alert"
        self.tls_failed(t, error)
        t.add("*", f"fault: the server refuses the handshake with alert {name}, then closes (FIN)")
        t.ended_by = "server-fin"
        self.recorder.emit(t, "fault", self.spec.name, f"TLS alert {name} sent")
        cut(raw, "fin", self)

    def tls_done(self, t: Transcript, transport: Any, plan: SmtpPlan) -> None:
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        t.tls_version = ssl_object.version() if ssl_object is not None else "TLS"
        noted = getattr(ssl_object, SERVER_NAME_ATTRIBUTE, None)
        if noted is not None and not t.tls_attempted:  # implicit TLS: no tap saw the hello
            t.tls_attempted = True
            t.sni = noted[0]
        if plan.cert != "valid":
            # The client finished a handshake on a bad certificate: it did not verify.
            t.client_verified = False
        t.add("*", f"TLS established ({t.tls_version}, certificate {plan.cert})")
        t.tls_from = len(t.lines)
        self.recorder.emit(t, "tls", self.spec.name, f"TLS established ({t.tls_version})")

    def tls_failed(self, t: Transcript, exc: BaseException | None) -> None:
        reason = tls_failure_reason(exc)
        t.tls_error = reason
        if any(alert in reason.upper() for alert in CERT_REJECTION_ALERTS):
            t.client_verified = True
        t.add("*", f"TLS handshake failed: {reason}")
        self.recorder.emit(t, "tls", self.spec.name, f"TLS handshake failed: {reason}")
