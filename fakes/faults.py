"""The fault table: every fault a world can have, its parameters, and one description.

In the spirit of Toxiproxy's toxics, a fault is a small typed value
(:class:`Reply`, :class:`CloseAt`, :class:`Schedule`, :class:`DnsFault`, or
one of the named choices below such as a ``TlsMode`` or a ``CertKind``) and
the :data:`TABLE` says, for every key a scenario's ``[world]`` table may
hold, how it is written, what it does, and what each of its values makes a
client meet. Everything that explains a fault reads it:

- validation (``spec.parse_world``) takes the allowed values from it and
  refuses the combinations :func:`contradictions` names;
- ``mailfakes show``, the demo and the README's catalogue table describe a
  world with :func:`describe_host` and :func:`describe_dns_fault`;
- the README's fault table is :func:`markdown_table` (``make readme-table``).

When two faults apply at one point of a session, :data:`PRECEDENCE` says
which wins; the SMTP fake applies them in that order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Final, Literal

from .values import field, frozen

# -- the typed values ------------------------------------------------------

HostKind = Literal["smtp", "refuse", "blackhole", "silent", "close_on_accept"]
CloseHow = Literal["fin", "rst"]
TlsMode = Literal[
    "starttls",
    "none",
    "starttls_refused",
    "starttls_broken",
    "starttls_legacy",
    "implicit",
    "implicit_broken",
]
CertKind = Literal[
    "valid", "expired", "not_yet_valid", "wrong_host", "untrusted_ca", "self_signed", "missing_intermediate"
]
Command = Literal["EHLO", "HELO", "MAIL", "RCPT", "DATA", "DATA_END", "STARTTLS", "RSET", "QUIT", "NOOP"]
ClosePoint = Literal[
    "before_greeting",
    "after_greeting",
    "after_ehlo",
    "after_starttls",
    "after_mail",
    "after_rcpt",
    "in_data",
    "after_final_dot",
]
Extension = Literal["PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"]
DnsFaultKind = Literal["nxdomain", "servfail", "refused", "drop", "nodata", "truncate", "delay"]
TcpFallback = Literal["answer", "nxdomain", "servfail", "refused", "drop", "reset"]
RecordType = Literal["A", "AAAA", "MX", "CNAME", "TXT"]


@frozen
class Reply:
    """An SMTP reply the fake sends instead of its own.

    ``close`` closes the connection after the reply is sent (``fin``: orderly
    close; ``rst``: reset). Example::

        Reply(421, "Service not available", "4.3.2", close="fin").line()
        # '421 4.3.2 Service not available'
    """

    code: int
    text: str = ""
    enhanced: str | None = None
    close: CloseHow | None = None

    def line(self) -> str:
        parts = [str(self.code)]
        if self.enhanced:
            parts.append(self.enhanced)
        if self.text:
            parts.append(self.text)
        return " ".join(parts)

    @property
    def ends_transaction(self) -> bool:
        """A failure (4xx, 5xx) or a close: a correct client goes no further in this transaction."""
        return self.code >= 400 or self.close is not None


@frozen
class CloseAt:
    """Close the connection abruptly at a named point of the dialogue.

    ``in_data`` cuts as soon as message content arrives after the 354
    reply; with ``after_bytes`` N, once N bytes of content came, or at the
    final dot of a shorter message, so every message meets the cut (and
    none is kept).
    """

    point: ClosePoint
    how: CloseHow = "fin"
    after_bytes: int = 0


@frozen
class Schedule:
    """Apply the host's fault to its first ``fail_first`` sessions only.

    A session is one TCP connection to the host; the count is kept by the
    running world, so it survives nothing but the world itself (a world
    ``reset()`` starts it again). Later sessions get the healthy baseline.
    """

    fail_first: int


@frozen
class DnsFault:
    """A fault on the answers for one name (and optionally some types only)."""

    name: str
    fault: DnsFaultKind
    types: frozenset[str] | None = None
    delay_ms: int = 0
    tcp: TcpFallback = "answer"

    def applies_to(self, qtype: str) -> bool:
        return self.types is None or qtype in self.types


_TLS_OFFERS: Final = {
    "starttls_broken": "no_shared_cipher",
    "implicit_broken": "no_shared_cipher",
    "starttls_legacy": "legacy_only",
}


@frozen
class SmtpPlan:
    """How an SMTP host behaves. The defaults are a healthy server."""

    tls: TlsMode = "starttls"
    cert: CertKind = "valid"
    greeting: Reply | None = None
    replies: Mapping[str, Reply] = field(default_factory=dict)
    close_at: CloseAt | None = None
    delays_ms: Mapping[str, int] = field(default_factory=dict)
    extensions_off: frozenset[str] = frozenset()

    @property
    def uses_tls(self) -> bool:
        return self.tls != "none"

    @property
    def tls_offer(self) -> str:
        """What the server's TLS offers: current, no_shared_cipher or legacy_only (see certs)."""
        return _TLS_OFFERS.get(self.tls, "current")

    def advertises(self, extension: str) -> bool:
        return extension not in self.extensions_off

    @property
    def implicit_tls(self) -> bool:
        return self.tls in ("implicit", "implicit_broken")

    def healthy(self) -> SmtpPlan:
        """The baseline a scheduled host falls back to once its faults are spent."""
        return SmtpPlan(
            tls="implicit" if self.implicit_tls else "starttls", extensions_off=self.extensions_off
        )

    def delay_for(self, point: str) -> float:
        """Seconds to wait before the reply at ``point`` (a command or GREETING)."""
        ms = self.delays_ms.get(point, self.delays_ms.get("*", 0))
        return ms / 1000.0


@frozen
class HostSpec:
    """One host of a world: a DNS name bound to its own loopback address."""

    name: str
    kind: HostKind = "smtp"
    a_record: bool = True
    close: CloseHow = "fin"
    smtp: SmtpPlan = field(default_factory=SmtpPlan)
    schedule: Schedule | None = None


# -- the table --------------------------------------------------------------


@frozen
class Choice:
    """One value of a key, and what a client meets when a world has it."""

    value: str
    effect: str


@frozen
class Key:
    """One key of a scenario's ``[world]`` table: where it goes, how it is written, what it does."""

    scope: str  # world, host, smtp host, DNS fault, record
    key: str
    form: str
    doc: str
    choices: tuple[Choice, ...] = ()
    default: str | None = None

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(c.value for c in self.choices)

    def effect(self, value: str) -> str:
        for c in self.choices:
            if c.value == value:
                return c.effect
        raise KeyError(value)


def _choices(pairs: Mapping[str, str]) -> tuple[Choice, ...]:
    return tuple(Choice(v, e) for v, e in pairs.items())


KINDS: Final = _choices(
    {
        "smtp": "an SMTP server (aiosmtpd), healthy unless its SMTP keys say otherwise",
        "refuse": "RST to the SYN (connection refused)",
        "blackhole": "SYN never answered (connect times out)",
        "silent": "accepts the connection, never sends a greeting",
        "close_on_accept": "accepts, then closes at once",
    }
)
CLOSE_HOWS_TABLE: Final = _choices(
    {
        "fin": "an orderly close (FIN), without any TLS goodbye",
        "rst": "a reset (RST, SO_LINGER 0)",
    }
)
TLS: Final = _choices(
    {
        "starttls": "STARTTLS offered and working",
        "none": "no STARTTLS in the EHLO reply (a STARTTLS sent anyway gets 502 5.5.1, as from Postfix)",
        "starttls_refused": "STARTTLS refused (454 4.7.0)",
        "starttls_broken": (
            "STARTTLS handshake refused with a handshake_failure alert, then FIN (no shared cipher)"
        ),
        "starttls_legacy": (
            "STARTTLS server speaks only TLS 1.0/1.1 (protocol_version alert to a TLS 1.2+ client; "
            "one that still accepts TLS 1.1 gets a session)"
        ),
        "implicit": "implicit TLS (TLS from the first byte, port 465 style)",
        "implicit_broken": "implicit TLS refused with a handshake_failure alert",
    }
)
CERTS: Final = _choices(
    {
        "valid": "a certificate for the host, issued by the trusted CA",
        "expired": "expired certificate, its validity ended yesterday",
        "not_yet_valid": "certificate not yet valid, its validity starts tomorrow",
        "wrong_host": "certificate for another host name",
        "untrusted_ca": "certificate from a second CA the client does not trust",
        "self_signed": "self-signed certificate, no CA vouches for it",
        "missing_intermediate": "chain without its intermediate CA, which the server does not send",
    }
)
CLOSE_POINTS_TABLE: Final = _choices(
    {
        "before_greeting": "closes before the greeting",
        "after_greeting": "closes after the greeting",
        "after_ehlo": "closes instead of answering EHLO",
        "after_starttls": "closes right after the TLS handshake",
        "after_mail": "closes instead of answering MAIL",
        "after_rcpt": "closes instead of answering RCPT",
        "in_data": "closes on the first bytes of message content",
        "after_final_dot": "keeps the message (`replied=False`), closes before answering the final dot",
    }
)
EXTENSIONS_TABLE: Final = _choices(
    {
        "PIPELINING": "no PIPELINING",
        "SIZE": "no SIZE",
        "8BITMIME": "no 8BITMIME",
        "ENHANCEDSTATUSCODES": "no ENHANCEDSTATUSCODES (replies then carry no enhanced code)",
        "SMTPUTF8": "no SMTPUTF8",
    }
)
DNS_FAULTS: Final = _choices(
    {
        "nxdomain": "NXDOMAIN",
        "servfail": "SERVFAIL",
        "refused": "REFUSED",
        "drop": "no answer (query dropped)",
        "nodata": "NODATA (name exists, no record of that type)",
        "truncate": "UDP answer truncated (TC bit); the TCP retry follows `tcp`",
        "delay": "answered after `delay_ms`",
    }
)
TCP_FALLBACKS_TABLE: Final = _choices(
    {
        "answer": "answered",
        "nxdomain": "gets NXDOMAIN",
        "servfail": "gets SERVFAIL",
        "refused": "gets REFUSED",
        "drop": "gets no answer",
        "reset": "is cut with a reset (a firewall that rejects DNS over TCP)",
    }
)
RECORD_TYPES_TABLE: Final = _choices(
    {
        "A": "a loopback IPv4 address or the name of a host of the world",
        "AAAA": "the IPv6 loopback address ::1",
        "MX": "a host name, or `.` with priority 0 for a null MX",
        "CNAME": "a host name",
        "TXT": "any text",
    }
)

COMMANDS_DOC: Final = "EHLO HELO MAIL RCPT DATA DATA_END STARTTLS RSET QUIT NOOP"

TABLE: Final[tuple[Key, ...]] = (
    Key(
        "world", "zone", "a DNS name (default `test`)", "the zone the fake DNS serves; every name stays in it"
    ),
    Key(
        "world",
        "hosts.NAME",
        "a table per host",
        "a host of the world: a DNS name with its own loopback address",
    ),
    Key(
        "host",
        "kind",
        "one of the values",
        "what answers at the host's address",
        KINDS,
        "smtp",
    ),
    Key("host", "a_record", "`true` (default) / `false`", "publish the host's address in DNS"),
    Key(
        "host",
        "close",
        "`fin` (default) / `rst`",
        "how a `close_on_accept` host closes: FIN at once, or RST once the client's side is surely "
        "established (it has spoken, or 0.1 s passed)",
        CLOSE_HOWS_TABLE,
        "fin",
    ),
    Key(
        "host",
        "schedule",
        "`{fail_first = N}`",
        "only the first N sessions (TCP connections) get the host's fault, later ones a healthy server; "
        "counted per world, reset by `world.reset()`; on kinds `smtp`, `silent`, `close_on_accept`",
    ),
    Key(
        "smtp host",
        "greeting",
        "`{code, enhanced, text, close}`",
        "the greeting instead of `220`; a 421 greeting closes the connection after it (RFC 5321 3.8)",
    ),
    Key(
        "smtp host",
        "replies.CMD",
        f"`{{code, enhanced, text, close}}` for {COMMANDS_DOC}",
        "replaces that reply (`DATA_END`: the reply to the final dot); 4xx/5xx skips the command, 2xx/3xx "
        "runs it and swaps the text (not for STARTTLS, which must then start TLS: use `tls`); `close` "
        "(`fin` or `rst`) closes after the reply",
    ),
    Key("smtp host", "tls", "one of the values", "how the host offers TLS", TLS, "starttls"),
    Key(
        "smtp host",
        "cert",
        "one of the values",
        "the certificate the host presents (only where a handshake gets that far)",
        CERTS,
        "valid",
    ),
    Key(
        "smtp host",
        "extensions_off",
        "a list of extension names",
        "EHLO advertises all five (and STARTTLS per `tls`), like a current MTA; these are left out. Replies "
        "carry RFC 3463 enhanced codes only in an EHLO session that advertised ENHANCEDSTATUSCODES (the "
        "greeting and the EHLO reply go as written)",
        EXTENSIONS_TABLE,
    ),
    Key(
        "smtp host",
        "close_at",
        '`{point, how = "fin"|"rst", after_bytes}`',
        "an abrupt close at a point. `after_X`: X was read, no reply sent; `in_data` with `after_bytes` N: "
        "once N bytes of content came, or at the final dot of a shorter message, so every message meets "
        "the cut and none is kept",
        CLOSE_POINTS_TABLE,
    ),
    Key(
        "smtp host",
        "delay_ms",
        "milliseconds",
        "wait before every reply",
    ),
    Key(
        "smtp host",
        "delays_ms.POINT",
        "milliseconds; points `GREETING`, any command, `DATA_END`, `*`",
        "wait before that reply",
    ),
    Key(
        "DNS fault",
        "dns_faults",
        "`[[dns_faults]]` `{name, fault, types, delay_ms, tcp}`",
        "a fault on the answers for one name (and optionally some record types); `delay_ms` delays the "
        "answer of any fault but `drop`",
        DNS_FAULTS,
    ),
    Key(
        "DNS fault",
        "dns_faults.tcp",
        'one of the values (only with `fault = "truncate"`)',
        "what the TCP retry of a truncated answer gets",
        TCP_FALLBACKS_TABLE,
        "answer",
    ),
    Key(
        "record",
        "records",
        "`[[records]]` `{name, type, value, priority, ttl}`",
        "a DNS record of the zone",
        RECORD_TYPES_TABLE,
    ),
)

PRECEDENCE: Final = (
    "At one point of a session: a schedule first picks the faulted or the healthy plan for the "
    "session; then a cut at that point (`close_at`) wins and nothing is sent; else a reply override "
    "(`greeting`, `replies.CMD`) replaces the reply; else, for STARTTLS, the TLS mode's own answer "
    "(454 when refused, 502 when TLS is off, 554 inside TLS); else aiosmtpd's own reply. A delay "
    "applies to whatever reply goes at that point. In DNS, the first `[[dns_faults]]` entry that "
    "matches a query's name and type applies (two that overlap are refused)."
)


def key(name: str) -> Key:
    """The table's entry for ``name`` (``"tls"``, ``"replies.CMD"``, ``"dns_faults"``...)."""
    for k in TABLE:
        if k.key == name:
            return k
    raise KeyError(name)


def values(name: str) -> tuple[str, ...]:
    """The values the table allows for key ``name``: what validation accepts."""
    return key(name).values


# -- contradictions -----------------------------------------------------------

# The points of a session in the order a correct client reaches them; a
# configured reply, delay or cut at a point later than where the session
# surely ends (a cut, a close, a failed MAIL, RCPT or DATA) can never apply.
_ORDER: Final = {
    "GREETING": 0,
    "EHLO": 1,
    "HELO": 1,
    "STARTTLS": 2,
    "TLS_UP": 3,
    "MAIL": 4,
    "RCPT": 5,
    "DATA": 6,
    "CONTENT": 7,
    "DATA_END": 8,
}
# Where each cut fires, and the last point whose reply still goes out before it.
_CUTS: Final = {
    "before_greeting": (0, -1),
    "after_greeting": (1, 0),
    "after_ehlo": (1, 0),
    "after_starttls": (3, 2),
    "after_mail": (4, 3),
    "after_rcpt": (5, 4),
    "in_data": (7, 6),
    "after_final_dot": (8, 7),
}
_ANYTIME: Final = ("RSET", "QUIT", "NOOP", "*")
_NO_CERT_SHOWN: Final = ("none", "starttls_refused", "starttls_broken", "implicit_broken")

Contradiction = tuple[str, object, str]  # (key under the host, value, what is allowed)


def contradictions(plan: SmtpPlan) -> Iterator[Contradiction]:
    """The faults of ``plan`` that contradict another: each can never apply as written.

    Yields ``(key, value, expected)`` with the key under the host's table
    (``replies.MAIL``, ``close_at.point``...), the later fault of each pair
    named. Example::

        plan = SmtpPlan(replies={"MAIL": Reply(550)}, close_at=CloseAt("after_rcpt"))
        next(contradictions(plan))[0]   # 'close_at.point': no RCPT follows a refused MAIL
    """
    end, why = 99, ""  # the last point a correct client can reach, and what ends it there
    g = plan.greeting
    if g is not None and g.ends_transaction:
        end, why = 0, f"the greeting {g.code} ends the session"
    for cmd in ("EHLO", "HELO", "STARTTLS", "MAIL", "RCPT", "DATA", "DATA_END"):
        r = plan.replies.get(cmd)
        if r is None:
            continue
        p = _ORDER[cmd]
        if (r.close is not None or (r.code >= 400 and cmd in ("MAIL", "RCPT", "DATA"))) and p < end:
            end, why = p, f"replies.{cmd} ({r.code}{', then close' if r.close else ''}) ends the transaction"
    ca = plan.close_at
    cut_fires, cut_sent = _CUTS[ca.point] if ca is not None else (99, 99)
    if ca is not None and cut_fires > end:
        yield ("close_at.point", ca.point, f"a point the session reaches: {why}")
    last = min(end, cut_sent)

    def reason() -> str:
        limited_by_cut = ca is not None and (cut_sent < end or last < 0)
        return f"close_at cuts at {ca.point}" if limited_by_cut and ca is not None else why

    if g is not None and last < 0:
        yield ("greeting", g.line(), f"no greeting: {reason()}")
    for cmd, r in plan.replies.items():
        p = -1 if cmd in _ANYTIME else _ORDER[cmd]  # RSET, QUIT, NOOP: whenever the session is open
        if p > last or last < 0:
            yield (f"replies.{cmd}", r.line(), f"no reply to {cmd}: {reason()}, so it is never sent")
    for point, ms in plan.delays_ms.items():
        p = -1 if point in _ANYTIME else _ORDER[point]
        if p > last or last < 0:
            name, at = ("delay_ms", "") if point == "*" else (f"delays_ms.{point}", f" at {point}")
            yield (name, ms, f"no delay{at}: {reason()}, so no reply goes there")
    starttls = plan.replies.get("STARTTLS")
    if starttls is not None:
        if starttls.code < 400:
            yield (
                "replies.STARTTLS",
                starttls.line(),
                "a 4xx or 5xx reply (a 2xx would have to start TLS: leave STARTTLS to tls = starttls)",
            )
        elif plan.tls not in ("starttls", "starttls_refused"):
            yield (
                "replies.STARTTLS",
                starttls.line(),
                "no STARTTLS reply unless tls is starttls or starttls_refused",
            )
        elif plan.cert != "valid":
            yield (
                "cert",
                plan.cert,
                f"no certificate fault: replies.STARTTLS ({starttls.code}) means no handshake",
            )
        elif ca is not None and ca.point == "after_starttls":
            yield (
                "close_at.point",
                ca.point,
                f"a point the session reaches: replies.STARTTLS ({starttls.code}) means no handshake",
            )
    if plan.cert != "valid" and plan.tls in _NO_CERT_SHOWN:
        yield (
            "cert",
            plan.cert,
            f"no certificate fault when tls = {plan.tls}: no certificate is ever presented",
        )
    if ca is not None and ca.point == "after_starttls" and plan.tls != "starttls":
        yield ("close_at.point", ca.point, "after_starttls only with tls = starttls")
    if ca is not None and ca.point == "before_greeting":
        if plan.extensions_off:
            yield (
                "extensions_off",
                sorted(plan.extensions_off),
                "no extensions: close_at cuts before the greeting",
            )
        if plan.cert != "valid":
            yield ("cert", plan.cert, "no certificate fault: close_at cuts before the greeting")


def dns_contradictions(faults: tuple[DnsFault, ...]) -> Iterator[tuple[int, str, object, str]]:
    """``(index, key, value, expected)`` for each DNS fault that cannot apply as written."""
    for i, f in enumerate(faults):
        if f.fault == "drop" and f.delay_ms:
            yield (i, "delay_ms", f.delay_ms, "no delay_ms with fault = drop (no answer is ever sent)")
        for j, earlier in enumerate(faults[:i]):
            if earlier.name == f.name and (
                earlier.types is None or f.types is None or earlier.types & f.types
            ):
                yield (
                    i,
                    "name",
                    f.name,
                    f"one fault per name and record type (dns_faults[{j}] already covers {f.name}"
                    + (f" {'/'.join(sorted(earlier.types & f.types))}" if earlier.types and f.types else "")
                    + ")",
                )


# -- descriptions ----------------------------------------------------------------


def _reply(r: Reply) -> str:
    text = f"`{r.line()}`"
    if r.close:
        text += f" then closes ({r.close.upper()})"
    return text


def describe_dns_fault(f: DnsFault) -> str:
    """One phrase: what a query for ``f.name`` gets."""
    name = f.name + (" " + "/".join(sorted(f.types)) if f.types else "")
    if f.fault == "truncate":
        what = f"UDP answer truncated, TCP retry {key('dns_faults.tcp').effect(f.tcp)}"
    elif f.fault == "delay":
        what = f"answers after {f.delay_ms} ms"
    else:
        what = key("dns_faults").effect(f.fault) + (f" after {f.delay_ms} ms" if f.delay_ms else "")
    return f"DNS {name} → {what}"


_SHORT_COMMANDS: Final = {"DATA_END": "final dot"}


def describe_plan(plan: SmtpPlan) -> list[str]:
    """How an SMTP plan differs from a healthy server, in phrases (empty when it does not)."""
    out: list[str] = []
    if plan.greeting is not None:
        out.append("greeting " + _reply(plan.greeting))
    if plan.tls != "starttls" and not (plan.tls == "starttls_refused" and "STARTTLS" in plan.replies):
        out.append(key("tls").effect(plan.tls))
    if plan.cert != "valid":
        out.append(key("cert").effect(plan.cert))
    out += [f"{_SHORT_COMMANDS.get(cmd, cmd)} → {_reply(r)}" for cmd, r in plan.replies.items()]
    if plan.extensions_off:
        out.append("EHLO without " + ", ".join(sorted(plan.extensions_off)))
    ca = plan.close_at
    if ca is not None:
        where = key("close_at").effect(ca.point)
        if ca.point == "in_data" and ca.after_bytes:
            where = f"closes after {ca.after_bytes} bytes of content (or at a shorter message's dot)"
        out.append(f"{where} ({ca.how.upper()})")
    out += [
        f"{'every reply' if point == '*' else point} delayed {ms} ms"
        for point, ms in plan.delays_ms.items()
        if ms
    ]
    return out


def describe_host(h: HostSpec) -> list[str]:
    """How host ``h`` differs from a healthy SMTP server, in phrases (empty when it does not)."""
    out: list[str] = []
    if h.kind == "close_on_accept":
        out.append(f"{key('kind').effect(h.kind)} ({h.close.upper()})")
    elif h.kind != "smtp":
        out.append(key("kind").effect(h.kind))
    else:
        out += describe_plan(h.smtp)
    if not h.a_record:
        out.append("no A record")
    if h.schedule is not None and out:
        out.append(f"for its first {h.schedule.fail_first} session(s) only")
    return out


# -- the README's fault table --------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(keys: tuple[Key, ...] = TABLE) -> str:
    """The README's fault table: one row per key, its values and what each does."""
    lines = ["| where | key | written | effect |", "|---|---|---|---|"]
    for k in keys:
        effect = k.doc
        if k.choices:
            shown = [
                f"`{c.value}`" + (" (default)" if c.value == k.default else "") + f": {c.effect}"
                for c in k.choices
            ]
            effect += ". " + "; ".join(shown)
        lines.append(f"| {k.scope} | `{k.key}` | {_cell(k.form)} | {_cell(effect)} |")
    return "\n".join(lines) + "\n"


def markdown_precedence() -> str:
    return PRECEDENCE + "\n"


ReadmeSection = tuple[str, str, Callable[[], str]]  # start mark, end mark, what goes between
README_SECTIONS: Final[tuple[ReadmeSection, ...]] = (
    ("<!-- faults:start -->", "<!-- faults:end -->", markdown_table),
    ("<!-- precedence:start -->", "<!-- precedence:end -->", markdown_precedence),
)
