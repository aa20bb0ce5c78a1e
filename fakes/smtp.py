"""The fake SMTP host: aiosmtpd plus a fault plan applied at named points of one protocol state.

aiosmtpd runs the dialogue, and its own dispatch says where a session is:
the greeting (its first reply), a command (the ``smtp_*`` method it calls),
the end of a message (``handle_DATA``, after its 354), the TLS layer up
(``handle_STARTTLS``), and ``*`` for what it answers on its own (an unknown
command, bad syntax). These are the *points* of :data:`POINTS`. At each one
:func:`decide` alone maps the session's plan and state to an :class:`Action`:
cut the connection, replace the reply, delay it, close after it, or let
aiosmtpd answer; its docstring says which fault wins when two apply. Message
content has no hook inside aiosmtpd, so :class:`Inbound`, a small state
machine over the client's bytes, watches it (point ``CONTENT``); it also
records the client's lines for the transcript, and decides nothing else.

What aiosmtpd cannot do alone (TLS from the first byte, a refused or reset
connection before any byte) is done here with a small gate protocol or by
the endpoints in ``tcp.py``. :class:`HostServer` owns one host's listener and
picks each connection's plan (its schedule).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import re
import socket
import ssl
import time
import types
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException, login_always_fail

from . import auth as smtp_auth
from .certs import SERVER_NAME_ATTRIBUTE
from .clock import Clock, RealClock, format_duration
from .faults import TOO_MANY_CONNECTIONS, TOO_MANY_RECIPIENTS, RateLimit, limit_line
from .slow import Stall, left_waiting, trickle
from .spec import CloseHow, HostSpec, Reply, SmtpPlan
from .tcp import ESTABLISH_GRACE, CloseOnAcceptProtocol, Listener, SilentProtocol, cut, peer_of
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
MAX_PLANS_KEPT = 64  # plans set at run time (world.host().set...) whose memos a host keeps
STARTTLS_REFUSED = Reply(454, "TLS not available due to temporary reason", "4.7.0")
# Postfix's answer when TLS is off; Exim says "500 5.5.2 unrecognized command".
STARTTLS_UNKNOWN = Reply(502, "Error: command not implemented", "5.5.1")
STARTTLS_AGAIN = Reply(554, "Error: TLS already active", "5.5.1")  # Postfix; RFC 3207 4.2
# After a refusing (4xx or 5xx, not 421) greeting, to every command but QUIT (RFC 5321 3.1).
SESSION_REFUSED = Reply(503, "Error: bad sequence of commands")
CONTEXT_REFRESH = 60.0  # seconds a host reuses a server context before asking the CA again
# A client line longer than this is recorded cut short (aiosmtpd refuses it too).
LINE_RECORD_LIMIT = 4096
# A host without PIPELINING answers a client that sends before its reply is out, and hangs up, as
# Postfix does with smtpd_forbid_unauth_pipelining (the default from 3.9: smtpd.c).
OUT_OF_STEP = Reply(554, "Error: SMTP protocol synchronization", "5.5.0")

# -- the points of a session ------------------------------------------------

GREETING: Final = "GREETING"  # the server's first reply
AFTER_GREETING: Final = "AFTER_GREETING"  # the greeting is out, nothing asked yet
COMMAND_POINTS: Final = ("EHLO", "HELO", "MAIL", "RCPT", "DATA", "STARTTLS", "RSET", "QUIT", "NOOP")
TLS_UP: Final = "TLS_UP"  # the STARTTLS handshake just completed
CONTENT: Final = "CONTENT"  # message bytes after the 354
DATA_END: Final = "DATA_END"  # the reply to the final dot
ANY: Final = "*"  # a reply aiosmtpd makes on its own: unknown command, bad syntax, HELP...
POINTS: Final = (GREETING, AFTER_GREETING, *COMMAND_POINTS, TLS_UP, CONTENT, DATA_END, ANY)

# Where each ``close_at`` point of a plan cuts.
CUT_POINTS: Final[dict[str, frozenset[str]]] = {
    "before_greeting": frozenset({GREETING}),
    "after_greeting": frozenset({AFTER_GREETING}),
    "after_ehlo": frozenset({"EHLO", "HELO"}),
    "after_starttls": frozenset({TLS_UP}),
    "after_mail": frozenset({"MAIL"}),
    "after_rcpt": frozenset({"RCPT"}),
    "in_data": frozenset({CONTENT}),
    "after_final_dot": frozenset({DATA_END}),
}
_NO_REPLY_POINTS: Final = frozenset({AFTER_GREETING, TLS_UP, CONTENT})  # nothing is answered there
_AS_WRITTEN: Final = frozenset({GREETING, "EHLO", "HELO"})  # replies sent without enhanced-code styling
_FOLLOWED: Final = frozenset({GREETING, "DATA", DATA_END, "STARTTLS"})  # where a reply moves the session on

TlsState = Literal["off", "offered", "active"]  # no TLS on this host; STARTTLS possible; TLS is up


@dataclass(frozen=True, slots=True)
class Action:
    """What the fault plan does at one point of a session (see :func:`decide`).

    ``cut``: close the connection now with FIN or RST and send nothing more
    (``why`` says where, for the transcript). ``reply``: the reply that goes
    instead of aiosmtpd's; with ``alone`` aiosmtpd does not run the command
    at all (a refusal leaves its state as it was), without it aiosmtpd runs
    the command and its final reply line is swapped for this one. ``note``:
    what the transcript says of the replacement. ``delay``: seconds before
    the reply goes. ``close``: close the connection after the reply.
    Example::

        decide(SmtpPlan(close_at=CloseAt("after_mail", "rst")), "MAIL").cut   # 'rst'
    """

    cut: CloseHow | None = None
    why: str = ""
    reply: Reply | None = None
    alone: bool = False
    note: str | None = None
    delay: float = 0.0
    close: CloseHow | None = None


PASS: Final = Action()  # nothing to do: aiosmtpd answers, at once


def decide(
    plan: SmtpPlan,
    point: str,
    *,
    tls: TlsState = "offered",
    bare: bool = True,
    content: int = 0,
    complete: bool = False,
) -> Action:
    """What ``plan`` does at ``point`` of a session: the one place the SMTP fake decides a fault.

    The session's state is ``tls`` (TLS off on this host, offered, or
    active), ``bare`` (the command came without an argument) and, at
    ``CONTENT``, how many bytes of the message came and whether its final
    dot did. When several faults apply at one point, the one that wins is
    the first in the order :data:`mailfakes.faults.PRECEDENCE` states (the
    one place it is written; ``mailfakes faults`` prints it): a cut, then a
    reply override, then the answers of a refusing greeting and of the TLS
    mode, then aiosmtpd's own reply; the delay applies to what goes out.
    """
    ca = plan.close_at
    if (
        ca is not None
        and point in CUT_POINTS[ca.point]
        # in_data: on the first content, after ``after_bytes`` of it, or at the final dot
        and (point != CONTENT or complete or content >= max(ca.after_bytes, 1))
    ):
        return Action(cut=ca.how, why=_cut_reason(point, content))
    if point in _NO_REPLY_POINTS:
        return PASS
    delay = plan.delay_for(point)
    if point == GREETING:
        g = plan.greeting
        if g is not None:
            # RFC 5321 3.8: a server that says 421 closes the connection.
            return Action(reply=g, delay=delay, close=g.close or ("fin" if g.code == 421 else None))
    else:
        reply = plan.replies.get(point)
        if reply is not None:
            return Action(
                reply=reply,
                # A success keeps aiosmtpd's state (a MAIL that is accepted is
                # recorded); STARTTLS never starts TLS on an override.
                alone=point in COMMAND_POINTS and (reply.code >= 400 or point == "STARTTLS"),
                note=f"fault: reply to {'the final dot' if point == DATA_END else point} replaced",
                delay=delay,
                close=reply.close,
            )
        g = plan.greeting
        refusing = g is not None and g.code >= 400 and g.close is None and g.code != 421
        if refusing and point in COMMAND_POINTS and point != "QUIT":
            # RFC 5321 3.1: after refusing at the greeting, the server answers 503 to all but QUIT.
            return Action(reply=SESSION_REFUSED, alone=True, delay=delay)
        if point == "STARTTLS" and bare:
            if tls == "active":
                return Action(reply=STARTTLS_AGAIN, alone=True, delay=delay)
            if tls == "off":
                return Action(reply=STARTTLS_UNKNOWN, alone=True, delay=delay)
            if plan.tls == "starttls_refused":
                return Action(reply=STARTTLS_REFUSED, alone=True, delay=delay)
    return Action(delay=delay) if delay else PASS


def _cut_reason(point: str, content: int) -> str:
    if point == GREETING:
        return "before the greeting"
    if point == AFTER_GREETING:
        return "after the greeting"
    if point == TLS_UP:
        return "right after the TLS handshake"
    if point == CONTENT:
        return f"after {content} bytes of message content"
    if point == DATA_END:
        return "after the final dot, before the reply"
    return f"after {point}, before its reply"


# What a session of one plan has decided so far, shared by the host's
# sessions of that plan: (point, TLS state, bare) -> action.
Decisions = dict[tuple[str, TlsState, bool], Action]


def decided(memo: Decisions, plan: SmtpPlan, point: str, tls: TlsState, bare: bool = True) -> Action:
    """:func:`decide`, once per plan and state (every point but ``CONTENT`` depends on nothing else)."""
    key = (point, tls, bare)
    act = memo.get(key)
    if act is None:
        act = memo[key] = decide(plan, point, tls=tls, bare=bare)
    return act


# -- replies ------------------------------------------------------------------

_ENHANCED = re.compile(r"^([245])\.\d{1,3}\.\d{1,3}(?: |$)")
# The enhanced code a reply of the fake's own gets once ENHANCEDSTATUSCODES is
# advertised (RFC 3463 classes, as Postfix uses them): by (code, point),
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


# What styled() made of (line, point, enhanced) lately: most replies are the same few lines.
_STYLED: dict[tuple[str, str, bool], str] = {}
_STYLED_MEMO: Final = 1024  # lines remembered at most (some carry a session number or a client's words)


def _styled(text: str, answering: str, enhanced: bool) -> str:
    key = (text, answering, enhanced)
    out = _STYLED.get(key)
    if out is None:
        out = styled(text, answering, enhanced)
        if len(_STYLED) < _STYLED_MEMO:
            _STYLED[key] = out
    return out


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
    return f"{code}{sep}{default} {rest}" if rest else f"{code} {default}"


# -- the client's bytes ---------------------------------------------------------


def reads_as_bare_data(line: bytes) -> bool:
    """Whether aiosmtpd reads ``line`` (up to its LF) as a DATA command without argument.

    It splits the command at the first space, upper-cases it, strips the
    argument, and refuses a line longer than its ``command_size_limit``
    before any dispatch.
    """
    if line[:4].upper() != b"DATA":
        return False
    line = line.rstrip(b"\r\n")
    command, _, arg = line.partition(b" ")
    return command.upper() == b"DATA" and not arg.strip() and len(line) <= SMTP.command_size_limit


class Inbound:
    """The client's bytes as the transcript shows them, and the watch on message content.

    aiosmtpd reads the same bytes and answers them; this only records them:
    command lines split where aiosmtpd splits them (at each LF), and message
    content after a 354, whose final dot (CRLF.CRLF) it watches, since
    aiosmtpd has no hook inside the content. Bytes that follow a DATA line
    are held until aiosmtpd's answer to that DATA says whether they are
    content (354) or more commands. Three states: ``LINES``, ``HELD``,
    ``CONTENT``.
    """

    LINES, HELD, CONTENT = 0, 1, 2
    __slots__ = ("buf", "count", "held", "session", "skipping", "state", "tail")

    def __init__(self, session: FaultySMTP) -> None:
        self.session = session
        self.state = Inbound.LINES
        self.buf = b""  # the start of a line not yet ended
        self.skipping = False  # inside a line too long to record: drop it up to its LF
        self.held = b""
        self.count = 0  # content bytes so far
        self.tail = b""  # the last bytes of content, to find a terminator split across reads

    def feed(self, data: bytes) -> bool:
        """Take bytes from the wire; False when they cut the session (aiosmtpd must not see them)."""
        if self.state != Inbound.CONTENT and self.session.early(data):
            return False
        if self.state == Inbound.HELD:
            self.held += data
            return True
        if self.state == Inbound.CONTENT:
            rest = self._content(data)
            if rest is None:
                return not (self.session.severed or self.session.stalled)
            if self.session.early(rest):  # the next command, with the final dot's reply not out yet
                return False
            data = rest
        if data:
            return self._lines(data)
        return True

    def data_answered(self, content: bool) -> None:
        """aiosmtpd answered a DATA: after a 354 what follows is message content, else commands."""
        held = self.held if self.state == Inbound.HELD else b""
        self.held = b""
        if content:
            self.state, self.count, self.tail = Inbound.CONTENT, 0, b"\r\n"  # the CRLF that ended DATA
            rest = self._content(held) if held else None
        else:
            self.state, rest = Inbound.LINES, held
        if rest:
            self._lines(rest)  # an early sender was refused when these bytes came

    def content_over(self) -> None:
        """aiosmtpd answered the message: whatever comes next is commands."""
        if self.state == Inbound.CONTENT:
            self.state = Inbound.LINES

    def restart(self) -> None:
        """TLS is up: the plaintext before it is forgotten (RFC 3207 4.2), as aiosmtpd forgets it."""
        self.state, self.buf, self.held, self.skipping = Inbound.LINES, b"", b"", False

    def _lines(self, data: bytes) -> bool:
        """Record the command lines in ``data``; False when one came before the last one's reply
        on a host without PIPELINING (the session is cut)."""
        session = self.session
        buf = self.buf + data if self.buf else data
        start = 0
        while (end := buf.find(b"\n", start)) >= 0:
            line, start = buf[start:end], end + 1
            if self.skipping:
                self.skipping = False
                continue
            session.heard(line.rstrip(b"\r").decode("utf-8", "replace"))
            if session.early(buf[start:]):
                return False
            if reads_as_bare_data(line):
                self.state, self.held, self.buf = Inbound.HELD, buf[start:], b""
                return True
        rest = buf[start:] if start else buf
        if self.skipping:
            rest = b""
        elif len(rest) > LINE_RECORD_LIMIT:  # a runaway line: keep the transcript bounded
            self.session.heard(rest[:80].decode("utf-8", "replace") + "... (line too long)")
            self.skipping, rest = True, b""
        self.buf = rest
        return True

    def _content(self, data: bytes) -> bytes | None:
        """Count message bytes; at the final dot, return what follows it (None: still content, or cut)."""
        window = self.tail + data
        i = window.find(b"\r\n.\r\n")
        if i < 0:
            self.count += len(data)
            self.tail = window[-4:]
            self.session.at_content(self.count, False)
            return None
        end = i + 5 - len(self.tail)  # just after the terminator, in data
        size = max(self.count + end - 3, 0)  # without the final ".\r\n"
        if not self.session.at_content(size, True):
            return None
        self.state = Inbound.LINES
        return data[end:]


class _Handler:
    """aiosmtpd handler hooks, forwarded to the session that owns them."""

    def __init__(self, session: FaultySMTP) -> None:
        self.session = session

    def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> Awaitable[str]:
        return self.session.data_end(envelope)  # aiosmtpd awaits it

    def handle_STARTTLS(self, server: SMTP, session: Session, envelope: Envelope) -> bool:
        self.session.tls_established()
        return True

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        return self.session.mail(envelope, address, options)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        return self.session.rcpt(envelope, address, options)

    async def handle_exception(self, error: Exception) -> str:
        return self.session.exception(error)


# -- aiosmtpd's session setup, introspection once per class -----------------------
#
# aiosmtpd's SMTP.__init__ looks itself and its handler over for every
# connection (inspect.getmembers, dir: about 100 us here, most of a
# session's setup) to find the same smtp_*, auth_* and handle_* methods each
# time. A session here does what it does with the names found once per
# class. That leans on what SMTP.__init__ sets, so the first session of each
# class also builds one the aiosmtpd way and compares the two attribute by
# attribute (:func:`_shape`): if they differ (another aiosmtpd version), every
# session of that class is set up by aiosmtpd itself, and
# :func:`aiosmtpd_setup_matches` says so (a test fails loudly then).


def _shape(value: Any, owner: object, handler: object) -> Any:
    """What ``value`` of an aiosmtpd session's attributes is, with its own session and handler anonymous."""
    if value is owner:
        return "<self>"
    if value is handler:
        return "<handler>"
    if isinstance(value, types.MethodType):
        return ("method", value.__func__, _shape(value.__self__, owner, handler))
    if isinstance(value, dict):
        return (type(value), [(k, _shape(v, owner, handler)) for k, v in value.items()])
    if isinstance(value, tuple):
        return (type(value), [_shape(v, owner, handler) for v in value])
    if value is None or isinstance(
        value, (str, int, float, types.FunctionType, ssl.SSLContext, asyncio.AbstractEventLoop)
    ):
        return value
    return ("object", type(value))  # made per session (a reader, a future, a deque, a weak reference)


class _Setup:
    """What SMTP.__init__ finds by introspection, for one session class and its handler class."""

    __slots__ = ("auth", "hooks", "smtp")

    def __init__(self, cls: type[SMTP], handler: object) -> None:
        # The same walks as SMTP.__init__, in the same order, on a session of the class.
        # (mechanism, on the handler rather than the session, method name, a value to rebind)
        self.auth: list[tuple[str, bool, str, Any]] = []
        probe = SMTP.__new__(cls)
        SMTP.__init__(probe, handler, loop=asyncio.get_running_loop())
        for name, attr in probe._auth_methods.items():
            method: Any = attr.method
            self.auth.append((name, method.__self__ is not probe, method.__name__, attr))
        # (the key aiosmtpd files it under, the method's name), in dir()'s order
        self.hooks = [(m.replace("handle_", ""), m) for m in dir(handler) if m.startswith("handle_")]
        self.smtp = [(m.replace("smtp_", ""), m) for m in dir(cls) if m.startswith("smtp_")]

    def apply(self, session: SMTP, handler: object, loop: asyncio.AbstractEventLoop, **kw: Any) -> None:
        """SMTP.__init__ for ``session``, with the keywords FaultySMTP uses, without introspection."""
        asyncio.StreamReaderProtocol.__init__(
            session,
            asyncio.StreamReader(loop=loop, limit=session.line_length_limit),
            client_connected_cb=session._cb_client_connected,
            loop=loop,
        )
        d = session.__dict__
        d["__ident__"] = kw["ident"]
        d["loop"] = loop
        d["event_handler"] = handler
        d["data_size_limit"] = kw["data_size_limit"]
        d["enable_SMTPUTF8"] = kw["enable_SMTPUTF8"]
        d["_decode_data"] = False
        session.command_size_limits.clear()  # a class attribute: aiosmtpd resets it each time
        d["hostname"] = kw["hostname"]
        d["tls_context"] = kw["tls_context"]
        d["require_starttls"] = kw["tls_context"] and kw["require_starttls"]
        d["_timeout_duration"] = kw["timeout"]
        d["_timeout_handle"] = None
        d["_tls_handshake_okay"] = True
        d["_tls_protocol"] = None
        d["_original_transport"] = None
        d["session"] = None
        d["envelope"] = None
        d["transport"] = None
        d["_handler_coroutine"] = None
        d["_auth_require_tls"] = True
        d["_proxy_timeout"] = None
        d["_authenticator"] = None
        d["_auth_callback"] = login_always_fail
        d["_auth_required"] = False
        d["_auth_methods"] = {
            name: attr.__class__(getattr(handler if on_handler else session, method), *attr[1:])
            for name, on_handler, method, attr in self.auth
        }
        d["_handle_hooks"] = {key: getattr(handler, m) for key, m in self.hooks}
        d["_ehlo_hook_ver"] = None
        d["_smtp_methods"] = {key: getattr(session, m) for key, m in self.smtp}
        d["_enforce_call_limit"] = False


# Per session class: its setup, or None where it does not match aiosmtpd's own.
_SETUPS: dict[type, _Setup | None] = {}


def _setup_for(cls: type[SMTP], handler: object, kw: dict[str, Any]) -> _Setup | None:
    if cls in _SETUPS:
        return _SETUPS[cls]
    setup: _Setup | None = _Setup(cls, handler)
    loop = asyncio.get_running_loop()
    ours, theirs = SMTP.__new__(cls), SMTP.__new__(cls)
    ours_handler, their_handler = type(handler).__new__(type(handler)), type(handler).__new__(type(handler))
    assert setup is not None
    setup.apply(ours, ours_handler, loop, **kw)
    SMTP.__init__(theirs, their_handler, loop=loop, **kw)
    mine = {k: _shape(v, ours, ours_handler) for k, v in vars(ours).items()}
    aiosmtpd = {k: _shape(v, theirs, their_handler) for k, v in vars(theirs).items()}
    if mine != aiosmtpd:
        setup = None
    _SETUPS[cls] = setup
    return setup


def aiosmtpd_setup_matches(cls: type[SMTP] | None = None) -> bool:
    """Whether sessions of ``cls`` (FaultySMTP) are set up without aiosmtpd's introspection,
    with the same attributes as aiosmtpd gives them (decided at the class's first session)."""
    return _SETUPS.get(cls or FaultySMTP) is not None


class FaultySMTP(SMTP):
    """An aiosmtpd session that follows a :class:`SmtpPlan`, point by point."""

    def __init__(
        self,
        host: HostServer,
        plan: SmtpPlan,
        transcript: Transcript,
        *,
        tls_context: ssl.SSLContext | None,
        raw_transport: asyncio.BaseTransport | None = None,
        refused: Reply | None = None,
    ) -> None:
        handler = _Handler(self)
        loop = asyncio.get_running_loop()
        kw: dict[str, Any] = {
            "hostname": host.spec.name,
            "ident": IDENT,
            "tls_context": tls_context,
            "require_starttls": False,
            "timeout": host.idle_timeout,
            "data_size_limit": (plan.max_size or DATA_SIZE_LIMIT) if plan.advertises("SIZE") else None,
            # Lines are always read as UTF-8: without SMTPUTF8 a UTF-8 address gets the reply a
            # server gives it (553 5.6.7, see _capability_refusal), not aiosmtpd's "strict ASCII mode".
            "enable_SMTPUTF8": True,
        }
        cls = type(self)
        setup = _SETUPS[cls] if cls in _SETUPS else _setup_for(cls, handler, kw)
        if setup is not None:
            setup.apply(self, handler, loop, **kw)
        else:
            super().__init__(handler, loop=loop, **kw)
        self.host = host
        self.plan = plan
        self.t = transcript
        self._raw = raw_transport
        # Implicit TLS: the gate did the handshake. aiosmtpd never changes tls_context.
        self._tls: TlsState = (
            "active" if raw_transport is not None else "off" if tls_context is None else "offered"
        )
        self._decisions = host.decisions(plan)
        # Where the session is, and what the plan does there.
        self._point: str = GREETING
        self._act = decided(self._decisions, plan, GREETING, self._tls)
        self._reply: list[str] = []  # the lines of a multi-line reply before its last
        self._inbound = Inbound(self)
        self._enhanced = False  # ENHANCEDSTATUSCODES advertised in this EHLO session
        self._awaiting = False  # a command (or a final dot) came and its reply is not out yet
        self._lockstep = not plan.advertises("PIPELINING")  # RFC 2920: then the client must wait
        self._spoke = False  # the client sent bytes: its connect() has surely returned
        self.severed = False  # a cut or close was decided: nothing more is kept or answered
        self._starting_tls = False
        self._registered = False
        self._lost = False
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._cut_timer: asyncio.TimerHandle | None = None
        self._refused = refused  # a connection over a limit: this greeting, then the close
        # A slow server (mailfakes.slow): the stall in DATA once it began, and when;
        # a message kept before its delayed reply, marked replied once that reply is out.
        self._stall: Stall | None = None
        self._stall_since = 0.0
        self._unanswered: Message | None = None
        # SMTP AUTH (mailfakes.auth): the session's account state; client lines that carry secrets.
        self._auth = smtp_auth.AuthSession(plan.auth) if plan.auth is not None else None
        self._secret_lines = 0

    # -- where the session is --------------------------------------------

    def _enter(self, point: str, arg: str | None = None) -> Action:
        """The session reaches ``point``: what the plan does there."""
        act = self._decisions.get((point, self._tls, not arg))  # decided(), on the path of every reply
        if act is None:
            act = decided(self._decisions, self.plan, point, self._tls, not arg)
        self._point, self._act = point, act
        return act

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
            if self._refused is not None:
                # The greeting goes once aiosmtpd's task runs, after this returns.
                line = limit_line(self._refused, self.host.spec.name, self.client)
                self._act = Action(reply=Reply(int(line[:3]), line[4:]), close="fin")

    @property
    def client(self) -> str:
        """The client's address, as a server names it in its replies."""
        return self.t.peer.rpartition(":")[0] or "?"

    def connection_lost(self, error: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        for timer in (self._handshake_timer, self._cut_timer):
            if timer is not None:
                timer.cancel()
        if self._stall is not None:
            self._stall.cancel()
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

    @property
    def stalled(self) -> bool:
        """The server stopped reading in the middle of the message (``stall_in_data``)."""
        return self._stall is not None

    def _timeout_cb(self) -> None:
        # aiosmtpd's idle timer: the server gives up on a client that said nothing for too long.
        self.t.add("*", f"the server's idle timer ({self.host.idle_timeout:g} s) ran out: it closes")
        self.t.ended_by = "timeout"
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def _stall_gone(self) -> None:
        """The client of a stalled session has left: close the socket it left behind."""
        left_waiting(self.t, CONTENT, self._stall_since, "not reading (stalled in DATA)")
        if self._raw is not None:
            cut(self._raw, "fin", self.host)

    def data_received(self, data: bytes) -> None:
        self._spoke = True
        if self._stall is not None:
            self._stall.hold(data)  # read before the pause took hold: left unread, as the rest
            return
        if self.severed:
            if self._cut_timer is not None:  # the client spoke: its side is established
                self._cut_timer.cancel()
                self._cut_now("rst")
            return
        if self._inbound.feed(data):
            super().data_received(data)

    def heard(self, line: str) -> None:
        """A command line from the client, for the transcript (credentials masked: see mailfakes.auth):
        its reply is awaited."""
        self._awaiting = True
        if self._secret_lines or line[:5].upper() == "AUTH ":
            line = self._masked(line)
        self.host.recorder.line(self.t, "C", self.host.spec.name, line)

    def _masked(self, line: str) -> str:
        if self._secret_lines:
            self._secret_lines -= 1
            return "*" if line.strip() == "*" else f"<AUTH response, {len(line.strip())} characters>"
        parts = line.split()
        if len(parts) >= 3:
            return f"{parts[0]} {parts[1]} <initial response, {len(parts[2])} characters>"
        return line

    def early(self, data: bytes) -> bool:
        """Whether ``data`` came before the reply the client waits for, on a host without PIPELINING
        (RFC 2920 3.1: a client that was not offered it sends one command and waits for its reply);
        then the session is refused with 554 5.5.0 and closed, and nothing more of it is read."""
        if not (data and self._awaiting and self._lockstep) or self.severed:
            return False
        self.severed = True
        shown = data[:40].decode("utf-8", "replace").replace("\r", "").replace("\n", " | ")
        self.t.out_of_step = shown.strip()
        why = f"client sent {shown.strip()!r} before the reply to its last command (PIPELINING is off)"
        self.t.add("*", f"fault: {why}")
        self.host.recorder.emit(self.t, "fault", self.host.spec.name, why)
        asyncio.get_running_loop().create_task(self._refuse_out_of_step())
        return True

    async def _refuse_out_of_step(self) -> None:
        line = OUT_OF_STEP.line()
        self.host.recorder.line(self.t, "S", self.host.spec.name, line)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await super().push(line)
        self._close("fin")

    def at_content(self, size: int, complete: bool) -> bool:
        """Message content came (``size`` bytes so far; ``complete``: its final dot too).
        False when the plan cuts the session there."""
        t = self.t
        t.content_bytes, t.content_complete = size, complete
        act = decide(self.plan, CONTENT, content=size, complete=complete)
        if act.cut is not None:
            whole = " (the whole message)" if complete else " so far"
            t.add("C", f"<message content, {size} bytes{whole}>")
            self._cut(act.cut, act.why)
            return False
        stall = self.plan.stall_in_data
        if stall is not None and self._raw is not None and (complete or size >= stall.after_bytes):
            whole = " (the whole message)" if complete else " so far"
            t.add("C", f"<message content, {size} bytes{whole}>")
            t.add("*", f"fault: the server stops reading after {size} bytes of content and never answers")
            self.host.recorder.emit(t, "fault", self.host.spec.name, f"stalled after {size} bytes of content")
            self._stall_since = time.monotonic()
            self._stall = Stall(self._raw, self._stall_gone)
            return False
        if complete:
            t.add("C", f"<message content, {size} bytes>")
            self._awaiting = True  # the reply to the final dot
        return True

    # -- cuts and closes ---------------------------------------------------

    def _cut(self, how: CloseHow, why: str, *, soon: bool = False) -> None:
        """Cut the connection (``soon``: once the current callback is over)."""
        if self.severed:
            return
        self.severed = True
        self.t.add("*", f"fault: connection cut with {how.upper()} {why}")
        self.t.ended_by = f"server-{how}"
        self.host.recorder.emit(self.t, "fault", self.host.spec.name, f"cut ({how}) {why}")
        if self._raw is None:
            return
        loop = asyncio.get_running_loop()
        wait = self.t.opened + ESTABLISH_GRACE - time.monotonic()
        if how == "rst" and not self._spoke and wait > 0:
            # A reset this early could overtake the client's connect(): see tcp.ESTABLISH_GRACE.
            self._cut_timer = loop.call_later(wait, self._cut_now, how)
        elif soon:
            loop.call_soon(self._cut_now, how)
        else:
            self._cut_now(how)

    def _cut_now(self, how: CloseHow) -> None:
        self._cut_timer = None
        if self._raw is not None:
            cut(self._raw, how, self.host)

    def _close(self, how: CloseHow) -> None:
        """Close after a reply: orderly (FIN after the reply) for fin, a reset for rst."""
        if how == "rst":
            self._cut("rst", "after the reply")
            return
        self.t.ended_by = "server-close"
        self.t.add("*", "server closes the connection")
        self.severed = True
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

    # -- the points aiosmtpd dispatches ------------------------------------

    async def command(self, point: str, arg: str | None, default: Callable[..., Awaitable[None]]) -> None:
        """aiosmtpd dispatched a command: cut, answer for it, or let it answer."""
        if self.severed:
            await self._park()
        if point == "HELO":
            self._enhanced = False  # a HELO session has no extensions
        act = self._enter(point, arg)
        try:
            if act.cut is not None:
                self._cut(act.cut, act.why)
                await self._park()
            if act.alone:
                assert act.reply is not None
                await self.push(act.reply.line())
                return
            refusal = self._capability_refusal(point, arg) if point in ("MAIL", "RCPT") and arg else None
            if refusal is None and point == "MAIL" and self._auth is not None and self._greeted():
                refusal = self._auth.mail_refusal(
                    tls_active=self._tls == "active", tls_possible=self._tls == "offered"
                )
            if refusal is not None:
                await self.push(refusal)
                return
            if point == "STARTTLS" and not arg and self.tls_context is not None:
                timeout = self.host.handshake_timeout
                loop = asyncio.get_running_loop()
                self._handshake_timer = loop.call_later(timeout, self._handshake_timed_out)
                self._starting_tls = True
            await default(self, arg)
            if point == "QUIT":
                self._close_tls_soon()
        finally:
            self._enter(ANY)  # until the next dispatch, replies are aiosmtpd's own

    def _greeted(self) -> bool:
        return self.session is not None and bool(getattr(self.session, "host_name", None))

    @functools.wraps(SMTP.smtp_AUTH)  # keeps aiosmtpd's @syntax data for HELP
    async def smtp_AUTH(self, arg: str | None) -> None:
        """AUTH (RFC 4954): the host's account decides (mailfakes.auth); without one, Postfix's refusal."""
        await self.command("AUTH", arg, FaultySMTP._auth_command)

    async def _auth_command(self, arg: str | None) -> None:
        if self._auth is None:
            await self.push(smtp_auth.NO_HELO if not self._greeted() else smtp_auth.NOT_ENABLED)
            return
        await self._auth.command(
            arg,
            helo=self._greeted(),
            tls_active=self._tls == "active",
            in_transaction=self.envelope is not None and self.envelope.mail_from is not None,
            push=self._auth_push,
            readline=self._auth_readline,
        )

    async def _auth_push(self, line: str) -> None:
        if line.startswith("334"):
            self._secret_lines = 1  # the client's next line answers the challenge
        await self.push(line)

    async def _auth_readline(self) -> bytes:
        try:
            line: bytes = await self._reader.readline()
        except (ValueError, asyncio.LimitOverrunError):
            await self.push("500 5.5.6 Authentication Exchange line is too long")  # RFC 4954 6
            return b""
        except ConnectionError:
            return b""
        return line

    def _capability_refusal(self, point: str, arg: str) -> str | None:
        """The reply a server gives a MAIL or RCPT that uses what its EHLO did not offer (RFC 5321
        4.1.1.11, RFC 6531 3.4, RFC 6152, RFC 1870), or None. After HELO nothing was offered."""
        extended = bool(self.session is not None and getattr(self.session, "extended_smtp", False))

        def offered(extension: str) -> bool:
            return extended and self.plan.advertises(extension)

        address, _, params = arg.partition(">")
        keywords = {p.split("=", 1)[0].upper() for p in params.split()}
        if not offered("SMTPUTF8"):
            if "SMTPUTF8" in keywords:
                return "555 5.5.4 Unsupported option: SMTPUTF8"
            if not address.isascii():
                return "553 5.6.7 Non-ASCII address not permitted: SMTPUTF8 is not offered"
        elif not address.isascii():
            # RFC 6531 3.4: a UTF-8 address only in a transaction whose MAIL declared SMTPUTF8.
            in_mail = "SMTPUTF8" in keywords
            declared = in_mail if point == "MAIL" else getattr(self.envelope, "smtp_utf8", False)
            if not declared:
                return "553 5.6.7 Must declare SMTPUTF8 to send a non-ASCII address"
        if point == "MAIL":
            for keyword, extension in (("BODY", "8BITMIME"), ("SIZE", "SIZE")):
                if keyword in keywords and not offered(extension):
                    return f"555 5.5.4 Unsupported option: {keyword}"
        return None

    async def data_end(self, envelope: Envelope) -> str:
        """The final dot arrived (point DATA_END): keep the message, or not, as the plan says."""
        if self.severed:
            await self._park()
        act = self._act if self._point == DATA_END else self._enter(DATA_END)
        if act.cut is None and act.reply is None and self._auth is not None:
            denied = self._auth.data_refusal(envelope.mail_from or "")
            if denied is not None:
                self.t.add("*", f"fault: the account {self._auth.user} may not send as {envelope.mail_from}")
                return denied
        if act.reply is None or act.reply.code < 400:
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
                    # A delayed reply: replied once it is out (the client may leave before).
                    replied=act.cut is None and not act.delay,
                ),
            )
            if kept:
                self.host.recorder.note(self.t, "message", f"message kept ({len(content)} bytes)")
                if act.delay and act.cut is None:
                    self._unanswered = self.host.recorder.messages[-1]
        if act.cut is not None:
            self._cut(act.cut, act.why)
            await self._park()
        return f"250 2.0.0 Ok: queued as MF{self.t.session_id:06d}"  # push() swaps in an override

    def mail(self, envelope: Envelope, address: str, options: list[str]) -> str:
        """A MAIL aiosmtpd found well formed: accepted, unless the message rate limit is reached."""
        rl = self.plan.rate_limit
        if rl is not None and rl.per == "messages" and not self.host.admit(rl):
            r = rl.refusal
            self.t.add(
                "*",
                f"fault: message rate limit reached ({rl.max} per {format_duration(rl.window)} of world "
                f"time), MAIL refused with {r.code}",
            )
            self.host.recorder.emit(self.t, "fault", self.host.spec.name, f"message rate limit: {r.code}")
            if r.code == 421:
                self._act = dataclasses.replace(self._act, close="fin")
            return limit_line(r, self.host.spec.name, self.client)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    def rcpt(self, envelope: Envelope, address: str, options: list[str]) -> str:
        """A RCPT aiosmtpd found well formed: accepted, unless greylisting defers it."""
        grey = self.plan.greylist
        if grey is not None:
            waited = self.host.greylist_wait(envelope.mail_from or "", address)
            if waited < grey.after:
                self.t.add(
                    "*",
                    f"fault: greylisted ({envelope.mail_from or '<>'} to {address}: first seen "
                    f"{waited:g} s ago of world time, accepted after {grey.after:g} s)",
                )
                return grey.reply.line()
        limit = self.plan.max_recipients
        if limit is not None and len(envelope.rcpt_tos) >= limit:
            self.t.add("*", f"fault: recipient limit {limit} per message reached ({address} refused)")
            return TOO_MANY_RECIPIENTS.line()
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    def tls_established(self) -> None:
        """aiosmtpd's STARTTLS handshake completed (point TLS_UP)."""
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._tls = "active"
        self._enhanced = False  # RFC 3207 4.2: the client starts over with EHLO
        self._inbound.restart()
        if self._auth is not None:
            self._auth.reset()
        self.host.tls_done(self.t, self.transport, self.plan)
        act = self._enter(TLS_UP)
        if act.cut is not None:
            # Inside aiosmtpd's own connection_made: cut once it returns.
            self._cut(act.cut, act.why, soon=True)

    def ehlo_lines(self, offered: list[str]) -> list[str]:
        """What EHLO advertises instead of aiosmtpd's ``offered`` lines: a current MTA's
        extensions, less those switched off (STARTTLS where aiosmtpd offers it)."""
        plan = self.plan
        self._enhanced = plan.advertises("ENHANCEDSTATUSCODES")
        starttls = any(o[4:].upper() == "STARTTLS" for o in offered)
        auth = plan.auth is not None and plan.auth.offered(tls_active=self._tls == "active")
        memo = self.host.ehlo_memo
        key = (id(plan), starttls, auth)
        made = memo.get(key)
        if made is None:
            made = memo[key] = self._ehlo_lines(starttls, auth)
        return list(made)

    def _ehlo_lines(self, starttls: bool, auth: bool = False) -> tuple[str, ...]:
        plan = self.plan
        lines = [self.hostname, "PIPELINING"]
        if plan.advertises("SIZE"):
            lines.append(f"SIZE {plan.max_size or DATA_SIZE_LIMIT}")
        lines += ["8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"]
        if auth and plan.auth is not None:
            lines.append("AUTH " + " ".join(plan.auth.mechanisms))
        if starttls:
            lines.append("STARTTLS")
        lines = [ln for ln in lines if ln.split(" ")[0] not in plan.extensions_off]
        return (*[f"250-{ln}" for ln in lines[:-1]], f"250 {lines[-1]}")

    # -- replies ----------------------------------------------------------

    async def push(self, status: str | bytes) -> None:
        """Every reply goes through here, at the session's current point, in one write.

        aiosmtpd pushes a multi-line reply line by line: the lines before the
        last wait for it, so the whole reply goes out at once, as from a real
        MTA, and a delay holds all of it.
        """
        if self.t.out_of_step is not None:
            return  # refused for pipelining: the 554 is the session's last reply
        text = status if isinstance(status, str) else status.decode("utf-8", "replace")
        if text[3:4] == "-":
            self._reply.append(text)
            return
        own = text  # aiosmtpd's final line, before any replacement
        lines, self._reply = self._reply, []
        lines.append(text)
        point, act = self._point, self._act
        if len(lines) == 1 and act.reply is None and not act.delay and act.note is None and point != "EHLO":
            # The common case, on the path of most replies: one line, aiosmtpd's own.
            line = text if point in _AS_WRITTEN else _styled(text, point, self._enhanced)
            self.host.recorder.line(self.t, "S", self.host.spec.name, line)
            self._awaiting = False
            if self.plan.trickle_bps is None:
                await super().push(line)
            else:
                await self._trickled(line)
            if act.close is not None or point in _FOLLOWED:
                await self._replied(point, act, own)
            return
        if point == "EHLO" and own.startswith("250"):
            lines = self.ehlo_lines(lines)
        if act.note is not None:
            self.t.add("*", act.note)
        if act.delay:
            self.t.add("*", f"fault: reply delayed by {int(act.delay * 1000)} ms")
            since = time.monotonic()
            try:
                await asyncio.sleep(act.delay)
            except asyncio.CancelledError:
                if self.t.ended_by in (None, "client"):  # not the world's stop, not the idle timer
                    left_waiting(
                        self.t, point, since, f"holding its reply ({int(act.delay * 1000)} ms delay)"
                    )
                    if self._raw is not None:  # the FIN only cancelled the wait: close the socket too
                        asyncio.get_running_loop().call_soon(cut, self._raw, "fin", self.host)
                raise
        if act.reply is not None:
            if len(lines) > 1:
                # A 250 to EHLO keeps the extensions: the text goes on the first line.
                r = act.reply
                lines[0] = f"{r.code}-" + " ".join(p for p in (r.enhanced, r.text or self.hostname) if p)
            else:
                lines[-1] = act.reply.line()
        if point not in _AS_WRITTEN:
            # The greeting and the EHLO reply go as written (a 421 greeting
            # often carries 4.3.2); the rest follows ENHANCEDSTATUSCODES.
            lines = [_styled(line, point, self._enhanced) for line in lines]
        recorder, name = self.host.recorder, self.host.spec.name
        for line in lines:
            recorder.line(self.t, "S", name, line)
        self._awaiting = False
        out = lines[0] if len(lines) == 1 else "\r\n".join(lines)
        if self.plan.trickle_bps is None:
            await super().push(out)
        else:
            await self._trickled(out)
        await self._replied(point, act, own)

    async def _trickled(self, text: str) -> None:
        """A reply at ``trickle_bps`` bytes per second (see :func:`mailfakes.slow.trickle`)."""
        bps = self.plan.trickle_bps
        assert bps is not None
        writer = self._writer

        def closing() -> bool:
            return self.transport is None or self.transport.is_closing()

        await trickle(writer.write, text.encode("utf-8") + b"\r\n", bps, closing)
        if not closing():
            await writer.drain()

    async def _replied(self, point: str, act: Action, own: str) -> None:
        """A reply went out at ``point`` (``own``: aiosmtpd's words for it): where the session goes next."""
        if point == "DATA":
            content = own.startswith("354")
            self._inbound.data_answered(content)
            if content:
                self._enter(DATA_END)  # aiosmtpd's next reply answers the message
        elif point == DATA_END:
            self._inbound.content_over()
            if self._unanswered is not None:
                self.host.recorder.answered(self._unanswered)
                self._unanswered = None
        elif point == "STARTTLS" and self._starting_tls:
            self._starting_tls = False
            if own.startswith("220"):
                # aiosmtpd hands the socket to its TLS layer as soon as this
                # returns: hold the input until the tap is in place.
                assert self._raw is not None
                cast(asyncio.ReadTransport, self._raw).pause_reading()
                asyncio.get_running_loop().call_soon(self._tap_handshake)
        if act.close is not None:
            self._close(act.close)
            await self._park()
        if point == GREETING:
            after = self._enter(AFTER_GREETING)
            if after.cut is not None:
                self._cut(after.cut, after.why)
                await self._park()
            self._enter(ANY)

    # -- TLS and errors ---------------------------------------------------

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
        self.severed = True
        self.connection_lost(None)

    def _handshake_timed_out(self) -> None:
        self.t.add("*", f"TLS handshake timed out after {self.host.handshake_timeout} s")
        self.t.ended_by = "timeout"
        self._terminate()

    def exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            self.host.tls_failed(self.t, error.__cause__)
            return "454 4.7.0 TLS handshake failed"
        self.host.recorder.emit(self.t, "error", self.host.spec.name, f"fake SMTP failed: {error!r}")
        self.t.add("*", f"internal error: {error!r}")
        return "451 4.3.0 mailfakes internal error"


def _dispatched(name: str) -> Callable[..., Awaitable[None]]:
    parent = getattr(SMTP, "smtp_" + name)

    # aiosmtpd awaits what the method returns: the command's own coroutine, with no frame around it.
    @functools.wraps(parent)  # keeps aiosmtpd's @syntax data for HELP
    def method(self: FaultySMTP, arg: str | None) -> Awaitable[None]:
        return self.command(name, arg, parent)

    return method


for _name in COMMAND_POINTS:
    setattr(FaultySMTP, "smtp_" + _name, _dispatched(_name))


class ImplicitTLSGate(asyncio.Protocol):
    """Port-465 style: the TLS handshake comes first, then the SMTP session.

    Doing the handshake here (rather than ``create_server(ssl=...)``) lets a
    failed handshake be recorded in the transcript instead of a log line. A
    server that offers nothing the client can use (``implicit_broken``)
    never starts TLS: the ClientHello goes to a :class:`HandshakeProbe`,
    whose alert is sent before the FIN.
    """

    def __init__(
        self,
        host: HostServer,
        plan: SmtpPlan,
        transcript: Transcript,
        context: ssl.SSLContext,
        refused: Reply | None = None,
    ):
        self.host = host
        self.refused = refused
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
        smtp = FaultySMTP(
            self.host, self.plan, self.t, tls_context=None, raw_transport=raw, refused=self.refused
        )
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
        clock: Clock | None = None,
    ) -> None:
        self.spec = spec
        self.clock = clock or RealClock()
        # Greylisting: (sender, recipient) -> world time of its first RCPT.
        self.greylist_seen: dict[tuple[str, str], float] = {}
        self.address = address
        self.recorder = recorder
        self.contexts = contexts
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.live: set[Any] = set()  # protocols with an open connection; each has shutdown()
        self.draining: set[Any] = set()  # connections ended with FIN, still read (tcp.Drainer)
        self.listener: Listener | None = None
        self.also: list[Listener] = []  # a dual-stack host's IPv6 listener
        self.stopping = False
        self.stop_reason = "stop"
        self.healthy = spec.smtp.healthy()  # what a session gets once a schedule's faults are spent
        self._decisions: dict[int, Decisions] = {}
        # (id of a plan, STARTTLS offered) -> the EHLO reply's lines (see FaultySMTP.ehlo_lines).
        self.ehlo_memo: dict[tuple[int, bool, bool], tuple[str, ...]] = {}
        # id of a plan -> its server context and when it was asked of the CA (see _context).
        self._contexts: dict[int, tuple[ssl.SSLContext, float]] = {}
        # A plan set while the world runs (world.host(NAME).set/fail_next/heal), for ``override_left``
        # more sessions (None: until changed again), then ``override_after`` (the state before it).
        self.override: SmtpPlan | None = None
        self.override_left: int | None = None
        self.override_after: tuple[SmtpPlan | None, int | None] = (None, None)
        self._plans: list[SmtpPlan] = []  # every plan set, kept: memos above are keyed by id()
        # Rate limits: the world times of the events in each window (oldest first), per unit.
        self.windows: dict[str, deque[float]] = {"messages": deque(), "connections": deque()}
        self.admitted: set[int] = set()  # the sessions (ids) served now: what max_sessions counts
        self.reset_limits()

    def reset_limits(self) -> None:
        """Empty the rate windows, but for the events a scenario says were there at the start."""
        for q in self.windows.values():
            q.clear()
        self.admitted.clear()
        rl = self.spec.smtp.rate_limit
        if rl is not None and rl.used:
            self.windows[rl.per].extend([0.0] * rl.used)

    def admit(self, limit: RateLimit) -> bool:
        """Count one event in ``limit``'s window, if it has room (on the loop: nothing interleaves)."""
        now = self.clock.now()
        q = self.windows[limit.per]
        while q and now - q[0] >= limit.window:
            q.popleft()
        if len(q) >= limit.max:
            return False
        q.append(now)
        return True

    def control(self, plan: SmtpPlan | None, sessions: int | None = None) -> None:
        """From the next session on, ``plan`` (None: the host's own, as its spec and schedule say);
        with ``sessions``, only for that many sessions, then back to what held before. On the loop."""
        if plan is not None:
            self._plans.append(plan)
            rl = plan.rate_limit
            if rl is not None and rl.used:
                # Events of other senders, from now: the window holds at least that many.
                q, now = self.windows[rl.per], self.clock.now()
                q.extend([now] * max(0, rl.used - len(q)))
        after = (self.override, self.override_left) if sessions is not None else (None, None)
        self.override, self.override_left, self.override_after = plan, sessions, after
        # The memos of plans set long ago go, and the plans with them: a host changed in a loop
        # (a control API client) keeps a bounded record. A plan still in use is kept.
        while len(self._plans) > MAX_PLANS_KEPT:
            old = self._plans.pop(0)
            if old is self.override or old is self.override_after[0]:
                self._plans.append(old)
                continue
            for memo in (self._decisions, self._contexts):
                memo.pop(id(old), None)
            for key in [k for k in self.ehlo_memo if k[0] == id(old)]:
                del self.ehlo_memo[key]

    def _controlled(self) -> SmtpPlan | None:
        """The plan a runtime change gives the session being opened, counting it."""
        plan = self.override
        if plan is None or self.override_left is None:
            return plan
        self.override_left -= 1
        if self.override_left <= 0:
            self.override, self.override_left = self.override_after
            self.override_after = (None, None)
        return plan

    async def start(self, sock: socket.socket) -> None:
        if self.spec.kind == "smtp" and self.spec.smtp.uses_tls:
            self._context(self.spec.smtp)  # certificates are part of "ready"
        self.listener = Listener(sock, self.make_protocol, backlog=LISTEN_BACKLOG)

    def also_listen(self, sock: socket.socket, address: str) -> None:
        """Serve the same host on a second address (a dual-stack host's IPv6 one): one schedule,
        one greylist, one set of runtime changes; each session records the address it came in on."""
        self.also.append(
            Listener(sock, functools.partial(self.make_protocol, address), backlog=LISTEN_BACKLOG)
        )

    async def stop(self, ended_by: str = "stop") -> None:
        """Stop accepting, end every connection, and return once their sockets are closed.

        ``ended_by`` is what the sessions cut now record: ``stop`` (the world stops) or
        ``schedule`` (a timed host stops listening)."""
        self.stopping = True
        self.stop_reason = ended_by
        listener, self.listener = self.listener, None
        also, self.also = self.also, []
        for extra in also:
            await extra.stop_accepting()
        if listener is not None:
            await listener.stop_accepting()  # every connection accepted has its protocol now
        # No protocol can join the live set from here: the listener is closed
        # and an implicit-TLS gate's shutdown cancels the handshake that would.
        for proto in list(self.live):
            proto.shutdown()
        for drainer in list(self.draining):
            drainer.shutdown()
        if listener is not None:
            await listener.wait_closed()
        for extra in also:
            await extra.wait_closed()

    def greylist_wait(self, sender: str, rcpt: str) -> float:
        """World seconds since the first RCPT of this sender/recipient pair (0 for the first one)."""
        now = self.clock.now()
        first = self.greylist_seen.setdefault((sender.lower(), rcpt.lower()), now)
        return now - first

    def decisions(self, plan: SmtpPlan) -> Decisions:
        """What the sessions of ``plan`` (this host's, or its healthy one) decided so far."""
        return self._decisions.setdefault(id(plan), {})

    def _context(self, plan: SmtpPlan) -> ssl.SSLContext:
        """The server context of ``plan``'s sessions, asked of the CA again every CONTEXT_REFRESH
        seconds: the CA issues a certificate anew an hour before it would change kind."""
        now = time.monotonic()
        held = self._contexts.get(id(plan))
        if held is not None and now - held[1] < CONTEXT_REFRESH:
            return held[0]
        assert self.contexts is not None, "a TLS host needs certificates"
        ctx = self.contexts(self.spec.name, plan.cert, plan.tls_offer)
        self._contexts[id(plan)] = (ctx, now)
        return ctx

    def make_protocol(self, address: str | None = None) -> asyncio.BaseProtocol:
        spec = self.spec
        earlier = self.recorder.count_session(spec.name)
        controlled = self._controlled() if spec.kind not in ("refuse", "blackhole") else None
        if controlled is not None:  # set while the world runs: an SMTP server with that plan
            faulted = controlled != self.healthy
            kind, plan = "smtp", controlled
        else:
            if spec.kind in ("refuse", "blackhole"):
                faulted = False  # such a host listens only in its healthy time (see world.TimedEndpoint)
            else:
                faulted = spec.schedule is None or spec.schedule.faulted(self.clock.now(), earlier)
            kind = spec.kind if faulted else "smtp"
            plan = spec.smtp if faulted else self.healthy
        t = self.recorder.open_session(spec.name, address or self.address, "?", faulted)
        self.recorder.note(t, "connect", f"connection accepted ({kind})")
        if kind == "silent":
            t.add("*", "fault: the server accepts and never speaks")
            return SilentProtocol(self, t)
        how = spec.close if kind == "close_on_accept" else None
        if how is None:
            tls: TlsState = "active" if plan.implicit_tls else "offered" if plan.uses_tls else "off"
            how = decided(self.decisions(plan), plan, GREETING, tls).cut
        if how is not None:
            t.add("*", f"fault: connection cut with {how.upper()} {_cut_reason(GREETING, 0)}")
            t.ended_by = f"server-{how}"
            return CloseOnAcceptProtocol(self, t, how)
        refused = self._over_limit(plan, t)
        if plan.implicit_tls:
            return ImplicitTLSGate(self, plan, t, self._context(plan), refused)
        ctx = self._context(plan) if plan.tls.startswith("starttls") else None
        return FaultySMTP(self, plan, t, tls_context=ctx, refused=refused)

    def _over_limit(self, plan: SmtpPlan, t: Transcript) -> Reply | None:
        """The greeting of a connection over a limit (None: it is served, and counted)."""
        if plan.max_sessions is not None and len(self.admitted) >= plan.max_sessions:
            t.add("*", f"fault: {len(self.admitted)} session(s) open, at most {plan.max_sessions}: refused")
            self.recorder.emit(t, "fault", self.spec.name, "concurrency limit: connection refused")
            return TOO_MANY_CONNECTIONS
        rl = plan.rate_limit
        if rl is not None and rl.per == "connections" and not self.admit(rl):
            t.add(
                "*",
                f"fault: connection rate limit reached ({rl.max} per {format_duration(rl.window)} of "
                "world time): refused",
            )
            self.recorder.emit(t, "fault", self.spec.name, "connection rate limit: connection refused")
            return rl.refusal
        self.admitted.add(t.session_id)
        return None

    # -- shared bookkeeping -------------------------------------------------

    def forget(self, proto: object, error: BaseException | None) -> None:
        """A connection ended: drop it from the live set and record the end once."""
        self.live.discard(proto)
        t: Transcript = proto.t  # type: ignore[attr-defined]
        self.admitted.discard(t.session_id)
        if t.closed:
            return
        t.closed = True
        if t.ended_by is None:
            t.ended_by = self.stop_reason if self.stopping else "client"
        self.recorder.note(t, "close", f"connection closed ({t.ended_by})")

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
