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

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Final, Literal

from .clock import format_duration
from .values import field, frozen

# -- the typed values ------------------------------------------------------

HostKind = Literal["smtp", "refuse", "blackhole", "silent", "close_on_accept"]
CloseHow = Literal["fin", "rst"]
Ipv6 = Literal["none", "dual", "only", "refused"]
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
    "valid",
    "expired",
    "not_yet_valid",
    "wrong_host",
    "untrusted_ca",
    "self_signed",
    "missing_intermediate",
    "revoked",
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
DnsFaultKind = Literal[
    "nxdomain",
    "servfail",
    "refused",
    "drop",
    "nodata",
    "truncate",
    "delay",
    "bad_signature",
    "expired_signature",
    "missing_ds",
    "no_ad",
]
# DNSSEC faults: a signed zone's answers are bogus, or insecure, or lose the AD bit.
DNSSEC_FAULTS: Final = ("bad_signature", "expired_signature", "missing_ds", "no_ad")
TcpFallback = Literal["answer", "nxdomain", "servfail", "refused", "drop", "reset"]
RecordType = Literal["A", "AAAA", "MX", "CNAME", "TXT", "TLSA"]
StsMode = Literal["enforce", "testing", "none"]
# The result types of a TLS report (RFC 8460 4.3, and its IANA registry): what a session met.
TLS_RESULT_TYPES: Final = (
    "starttls-not-supported",
    "certificate-host-mismatch",
    "certificate-expired",
    "certificate-not-trusted",
    "validation-failure",
    "tlsa-invalid",
    "dnssec-invalid",
    "dane-required",
    "sts-policy-fetch-error",
    "sts-policy-invalid",
    "sts-webpki-invalid",
)
StsFault = Literal["unreachable", "missing", "malformed"]
RateUnit = Literal["messages", "connections"]
AuthMechanism = Literal["PLAIN", "LOGIN"]
AuthFault = Literal["not_offered", "bad_credentials", "temporary"]


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
    """When a host's fault applies: by count of sessions, or by world time.

    ``fail_first`` N: the first N sessions (TCP connections) only, counted
    by the running world (a ``reset()`` starts again). By time (world
    seconds, see :mod:`mailfakes.clock`): healthy for ``healthy_for``, then
    faulted for ``fail_for`` (None: from then on). Outside the fault the
    host is its healthy baseline. Example::

        Schedule(fail_for=7200).faulted(3600, 0)            # True: the first 2 hours
        Schedule(healthy_for=3600).faulted(1800, 5)         # False: it starts failing at 1 h
    """

    fail_first: int = 0
    fail_for: float | None = None
    healthy_for: float = 0.0

    @property
    def timed(self) -> bool:
        return not self.fail_first

    def faulted(self, now: float, earlier: int) -> bool:
        """Whether a session opened at world time ``now``, after ``earlier`` sessions, meets the fault."""
        if self.fail_first:
            return earlier < self.fail_first
        if now < self.healthy_for:
            return False
        return self.fail_for is None or now < self.healthy_for + self.fail_for

    @property
    def changes(self) -> tuple[float, ...]:
        """The world times at which a timed schedule switches between fault and health."""
        if self.fail_first:
            return ()
        out = [self.healthy_for] if self.healthy_for else []
        if self.fail_for is not None:
            out.append(self.healthy_for + self.fail_for)
        return tuple(out)


@frozen
class StallInData:
    """A server that stops reading in the middle of a message and never answers.

    Once ``after_bytes`` bytes of content came (or at the final dot of a
    shorter message, which is then read but neither kept nor answered), the
    server stops reading the socket: the client's writes block once the
    socket buffers are full, and no reply ever comes. The session ends when
    the client leaves, the server's own idle timer (two minutes) runs out, or
    the world stops.
    """

    after_bytes: int = 0


GREYLISTED: Final = Reply(450, "Greylisted: please try again later", "4.7.1")
# RFC 5321 4.5.3.1.8: a server may refuse recipients past its limit with 452, and the client then
# sends the rest in another transaction (the ones accepted are delivered).
TOO_MANY_RECIPIENTS: Final = Reply(452, "Too many recipients", "4.5.3")


# What real servers say when a client goes over a limit (Postfix's smtpd.c): the connection count
# and the connection rate at the greeting, then close (RFC 5321 3.8); the message rate to MAIL.
# ``{host}`` is the server's name, ``{client}`` the client's address, filled in per session.
TOO_MANY_CONNECTIONS: Final = Reply(421, "{host} Error: too many connections from {client}", "4.7.0")
TOO_MUCH_MAIL: Final = Reply(450, "Error: too much mail from {client}", "4.7.1")


@frozen
class RateLimit:
    """A sliding window on the world's clock: at most ``max`` messages (accepted MAIL commands) or
    connections (sessions greeted with 220) in any ``window`` world seconds, counted per host
    for the whole run (``world.reset()`` empties it). The one over gets ``reply``: a connection
    at the greeting, then the close; a message in reply to its MAIL (a 421 closes, another 4xx
    keeps the session). ``used``: events already in the window when the world starts, from
    other senders (the limit is counted per client address, and senders share addresses), which
    leave it ``window`` seconds later. Example::

        RateLimit("messages", 2, 60.0).reply.code     # 450, Postfix's "too much mail"
    """

    per: RateUnit
    max: int
    window: float
    reply: Reply | None = None
    used: int = 0

    @property
    def refusal(self) -> Reply:
        """The reply to the one over the limit (Postfix's, unless the scenario wrote its own)."""
        if self.reply is not None:
            return self.reply
        return TOO_MANY_CONNECTIONS if self.per == "connections" else TOO_MUCH_MAIL


def limit_line(r: Reply, host: str, client: str) -> str:
    """``r``'s line with ``{host}`` and ``{client}`` filled in."""
    return r.line().replace("{host}", host).replace("{client}", client)


@frozen
class Greylist:
    """Greylisting: the first RCPT of each sender/recipient pair gets ``reply`` (a 4xx), and so does
    every retry of that pair until ``after`` world seconds have passed since that first one."""

    after: float = 300.0
    reply: Reply = GREYLISTED


# RFC 4954 6: what a submission server answers a MAIL from a client that did not authenticate.
AUTH_REQUIRED: Final = Reply(530, "Authentication required", "5.7.0")


@frozen
class Auth:
    """SMTP authentication on a host (RFC 4954): what it offers, the one account it knows, its faults.

    ``mechanisms``: offered in the EHLO reply (``AUTH PLAIN LOGIN``); ``before_tls``: offered
    before STARTTLS too (by default only inside TLS, as every real submission server does);
    ``required``: the reply to a MAIL from a client that did not authenticate (None: such mail is
    taken); ``fault``: ``not_offered``, ``bad_credentials`` (535 5.7.8 whatever the client sends),
    ``temporary`` (454 4.7.0); ``send_as``: the sender addresses the account may use (empty: any),
    others are refused at the final dot as Exchange Online does (550 5.7.60). Example::

        Auth(user="alerts@fabrikam.test", password="s3cret").offered(tls_active=True)   # True
    """

    user: str
    password: str
    mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")
    before_tls: bool = False
    required: Reply | None = AUTH_REQUIRED
    fault: AuthFault | None = None
    send_as: tuple[str, ...] = ()

    def offered(self, *, tls_active: bool) -> bool:
        """Whether the EHLO reply lists AUTH (and AUTH is taken) in a session in this TLS state."""
        return self.fault != "not_offered" and (tls_active or self.before_tls)

    def may_send_as(self, sender: str) -> bool:
        return not self.send_as or sender.lower() in (a.lower() for a in self.send_as)


@frozen
class DnsFault:
    """A fault on the answers for one name (and optionally some types only)."""

    name: str
    fault: DnsFaultKind
    types: frozenset[str] | None = None
    delay_ms: int = 0
    tcp: TcpFallback = "answer"
    active_from: float = 0.0  # world seconds (see mailfakes.clock)
    active_until: float | None = None

    def applies_to(self, qtype: str) -> bool:
        return self.types is None or qtype in self.types

    def active(self, now: float) -> bool:
        """Whether the fault is on at world time ``now``."""
        return self.active_from <= now and (self.active_until is None or now < self.active_until)

    @property
    def timed(self) -> bool:
        return bool(self.active_from) or self.active_until is not None


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
    greylist: Greylist | None = None
    max_recipients: int | None = None  # RCPTs accepted per message; the next get TOO_MANY_RECIPIENTS
    max_size: int | None = None  # bytes: advertised with SIZE, 552 5.3.4 past it (else the default)
    rate_limit: RateLimit | None = None  # messages or connections per sliding window of world time
    max_sessions: int | None = None  # connections at once; the one above gets TOO_MANY_CONNECTIONS
    trickle_bps: int | None = None  # every reply goes out at this many bytes per second
    stall_in_data: StallInData | None = None  # stop reading in the middle of the message content
    auth: Auth | None = None  # SMTP AUTH (RFC 4954): see mailfakes.auth

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
        auth = self.auth
        if auth is not None and auth.fault is not None:
            auth = Auth(auth.user, auth.password, auth.mechanisms, auth.before_tls, auth.required)
        return SmtpPlan(
            tls="implicit" if self.implicit_tls else "starttls", extensions_off=self.extensions_off, auth=auth
        )

    def delay_for(self, point: str) -> float:
        """Seconds to wait before the reply at ``point`` (a command or GREETING)."""
        ms = self.delays_ms.get(point, self.delays_ms.get("*", 0))
        return ms / 1000.0


@frozen
class Tlsa:
    """The TLSA record (RFC 6698, RFC 7672) a host publishes at ``_25._tcp.<host>``.

    Its data is computed by the running world from the certificate the host
    presents: usage 3 (DANE-EE) from the leaf, usage 2 (DANE-TA) from the CA
    that issued it; selector 1 is the SubjectPublicKeyInfo, 0 the whole
    certificate; matching 1 is SHA-256, 2 SHA-512, 0 the full data.
    ``matches=False`` publishes the digest of a key nobody holds (a TLSA
    record that matches nothing, as after a key rollover done wrong).
    """

    usage: int = 3
    selector: int = 1
    matching: int = 1
    matches: bool = True

    def text(self, data: str) -> str:
        """The record's value in zone-file form, for ``data`` (hex)."""
        return f"{self.usage} {self.selector} {self.matching} {data}"


@frozen
class HostSpec:
    """One host of a world: a DNS name bound to its own loopback address."""

    name: str
    kind: HostKind = "smtp"
    a_record: bool = True
    ipv6: Ipv6 = "none"
    close: CloseHow = "fin"
    smtp: SmtpPlan = field(default_factory=SmtpPlan)
    schedule: Schedule | None = None
    tlsa: Tlsa | None = None


@frozen
class Dnssec:
    """DNSSEC for a world: its zone is signed (its key is the trust anchor), and so are ``zones``,
    sub-domains delegated from it with a DS record each (RFC 4033-4035)."""

    zones: tuple[str, ...] = ()


@frozen
class MtaSts:
    """An MTA-STS policy (RFC 8461) for ``domain``: the TXT record ``_mta-sts.<domain>`` and the
    HTTPS host ``mta-sts.<domain>`` serving ``/.well-known/mta-sts.txt``.

    ``fault``: the policy host refuses connections (``unreachable``), answers
    404 (``missing``), or serves a policy that does not parse
    (``malformed``). ``cert``: the certificate the policy host presents.
    """

    domain: str
    mode: StsMode = "enforce"
    mx: tuple[str, ...] = ()
    max_age: int = 86400
    policy_id: str = "20261201T000000"
    fault: StsFault | None = None
    cert: CertKind = "valid"

    @property
    def host(self) -> str:
        return f"mta-sts.{self.domain}"

    @property
    def txt(self) -> str:
        return f"v=STSv1; id={self.policy_id}"

    def policy_text(self) -> str:
        """The policy file as served (RFC 8461 3.2), CRLF line ends."""
        lines = ["version: STSv1", f"mode: {self.mode}", *(f"mx: {m}" for m in self.mx)]
        lines.append(f"max_age: {self.max_age}")
        return "".join(line + "\r\n" for line in lines)


@frozen
class TlsRpt:
    """Where ``domain`` wants TLS reports (RFC 8460): the TXT record ``_smtp._tls.<domain>``.

    Each ``rua`` is ``mailto:ADDRESS`` (a mailbox of the world, at a domain
    with an MX) or ``https://HOST/PATH`` (a host the world adds, which keeps
    what is posted)."""

    domain: str
    rua: tuple[str, ...]

    @property
    def txt(self) -> str:
        return "v=TLSRPTv1; rua=" + ",".join(self.rua)


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
IPV6_TABLE: Final = _choices(
    {
        "none": "IPv4 only: an A record, no AAAA",
        "dual": "A and AAAA records; the server answers on both addresses",
        "only": "an AAAA record and no A record; the server answers on its IPv6 address only",
        "refused": (
            "A and AAAA records; nothing listens on the IPv6 address (a SYN there gets RST) while the "
            "IPv4 address serves: a client must fall back to the A address"
        ),
    }
)
CLOSE_HOWS_TABLE: Final = _choices(
    {
        "fin": "an orderly close (FIN)",
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
        "revoked": "certificate revoked by its CA, valid in every other way (its serial is on the CA's CRL)",
    }
)
CLOSE_POINTS_TABLE: Final = _choices(
    {
        "before_greeting": "closes before the greeting",
        "after_greeting": "closes after the greeting",
        "after_ehlo": "closes instead of answering EHLO (or HELO)",
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
        "SIZE": "no SIZE (a `SIZE=` parameter to MAIL gets `555 5.5.4`)",
        "8BITMIME": "no 8BITMIME (a `BODY=` parameter to MAIL gets `555 5.5.4`)",
        "ENHANCEDSTATUSCODES": "no ENHANCEDSTATUSCODES (replies then carry no enhanced code)",
        "SMTPUTF8": (
            "no SMTPUTF8 (a UTF-8 address gets `553 5.6.7`, the `SMTPUTF8` parameter `555 5.5.4`; offered, "
            "an undeclared UTF-8 address gets `553 5.6.7`)"
        ),
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
        "bad_signature": (
            "signed zone: the RRSIG does not verify (bogus): SERVFAIL from the validating resolver, the "
            "records with their broken RRSIG to a query with CD set"
        ),
        "expired_signature": (
            "signed zone: the RRSIG expired yesterday (bogus): SERVFAIL, the records to a query with CD set"
        ),
        "missing_ds": (
            "a signed sub-zone whose DS the parent does not publish (proven absent): its answers are "
            "insecure, never AD"
        ),
        "no_ad": (
            "signed zone: valid signatures, but answers never carry the AD bit (a resolver that does not "
            "validate)"
        ),
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
        "MX": "a host name, or `.` for a null MX (RFC 7505: priority 0)",
        "CNAME": "a host name",
        "TXT": "any text",
        "TLSA": "`usage selector matching hex` (RFC 6698) for a fixed record; a host's own is its `tlsa`",
    }
)

AUTH_FAULTS_TABLE: Final = _choices(
    {
        "not_offered": (
            "no AUTH in the EHLO reply, and `503 5.5.1 Error: authentication not enabled` to an AUTH sent "
            "anyway (MAIL still needs authentication when `required`)"
        ),
        "bad_credentials": (
            "`535 5.7.8 Authentication credentials invalid` whatever the client sends (the account is "
            "locked or its password was changed on the server)"
        ),
        "temporary": (
            "`454 4.7.0 Temporary authentication failure` (the server cannot reach its account store)"
        ),
    }
)

COMMANDS_DOC: Final = "EHLO HELO MAIL RCPT DATA DATA_END STARTTLS RSET QUIT NOOP"

TABLE: Final[tuple[Key, ...]] = (
    Key(
        "world", "zone", "a DNS name (default `test`)", "the zone the fake DNS serves; every name stays in it"
    ),
    Key(
        "world",
        "hour",
        'a duration (default `"1h"`: real time)',
        "how long one hour of the world's clock lasts in real time, for schedules, greylisting and DNS "
        'fault windows (`hour = "2s"`: a world day in 48 s). A driver can override it, or run the world '
        'on a virtual clock that moves only when told (`World(clock="virtual")`, `world.advance()`)',
    ),
    Key(
        "world",
        "sender_domain",
        "a DNS name in the zone",
        "the sender's domain, which receives the non-delivery reports: adds the host `mx.DOMAIN` (a healthy "
        "SMTP server) and the record `DOMAIN MX 10 mx.DOMAIN`; what arrives there is in `world.bounces`",
    ),
    Key(
        "world",
        "dnssec.zones",
        "`[world.dnssec]` with `zones = [DOMAIN, ...]` (may be empty)",
        "sign the world's DNS (RFC 4033-4035, ECDSA P-256): the zone itself, whose key is the trust "
        "anchor handed to clients (`trust_anchor_file`), and each listed sub-domain, delegated with a DS "
        "record; denial of existence by NSEC. The fake DNS answers as a validating resolver: AD on what "
        "validates (to queries with DO or AD set), SERVFAIL on what is bogus unless CD is set",
    ),
    Key(
        "world",
        "mta_sts.DOMAIN",
        "`{mode, mx, max_age, id, fault, cert}` (mode `enforce`; mx: the domain's MX hosts; max_age 86400)",
        "an MTA-STS policy (RFC 8461): the TXT record `_mta-sts.DOMAIN` (`v=STSv1; id=...`) and the HTTPS "
        "host `mta-sts.DOMAIN` serving `/.well-known/mta-sts.txt` with a certificate from the world's CA. "
        "`fault`: `unreachable` (the policy host refuses connections), `missing` (404), `malformed` (a "
        "policy that does not parse); `cert`: a certificate kind for the policy host",
    ),
    Key(
        "world",
        "tls_rpt.DOMAIN",
        '`{rua = ["mailto:ADDRESS" | "https://HOST/PATH", ...]}`',
        "TLS reporting (RFC 8460): the TXT record `_smtp._tls.DOMAIN`; mail to a `mailto:` address of the "
        "world and posts to an `https:` host of the world (which the world adds) are read back as "
        "`world.tls_reports`",
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
        "ipv6",
        "one of the values (default `none`)",
        "an IPv6 address for an `smtp` host, published as its AAAA record. Inside `--netns` each such "
        "host has its own address on the namespace's loopback (in `fd6d:6169:6c66::/48`, mirroring its "
        "127.A.B.N address); outside a namespace only `::1` exists, so one host per world may take it "
        "(on the world's port) and a world with more is refused",
        IPV6_TABLE,
        "none",
    ),
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
        '`{fail_first = N}`, or by world time `{fail_for = D, healthy_for = D}` (durations like `"2h"`)',
        "when the host's fault applies; outside it the host is its healthy baseline: an SMTP server with "
        "STARTTLS (implicit TLS stays implicit) and a valid certificate, without the greeting, replies, "
        "cuts, delays and greylisting (`extensions_off` and `a_record` stay as they are). `fail_first`: "
        "the first N sessions (TCP connections), counted per world and reset by `world.reset()`, on kinds "
        "`smtp`, `silent`, `close_on_accept`. By time, on every kind: healthy for `healthy_for` "
        "(default 0), then faulted for `fail_for` (default: from then on); a `refuse` or `blackhole` "
        "host starts or stops listening at those instants. Only where there is a fault to limit",
    ),
    Key(
        "smtp host",
        "greeting",
        "`{code, enhanced, text, close}`",
        "the greeting instead of `220`. A 421 greeting, or one with `close`, closes the connection after "
        "it (RFC 5321 3.8); after another 4xx or 5xx greeting the server answers every command but QUIT "
        "with `503 5.5.1` (RFC 5321 3.1), so no mail is taken",
    ),
    Key(
        "smtp host",
        "replies.CMD",
        f"`{{code, enhanced, text, close}}` for {COMMANDS_DOC}",
        "replaces that reply (`DATA_END`: the reply to the final dot). A 4xx or 5xx skips the command; a "
        "2xx runs it and swaps the text (for EHLO and HELO the first line's, the extensions stay); DATA "
        "takes 354 (its text swapped) or 4xx/5xx; STARTTLS only 4xx/5xx (starting TLS is `tls`'s job). "
        "Enhanced codes follow the session: when EHLO advertised ENHANCEDSTATUSCODES a reply without one "
        "gets its RFC 3463 default (`550` to RCPT goes out as `550 5.1.1`), and without that extension "
        "none is sent (so writing one is refused); EHLO and HELO replies go as written. `close` (`fin` "
        "or `rst`) closes after the reply (`fin` under TLS sends close_notify first)",
    ),
    Key(
        "smtp host",
        "max_recipients",
        "a number from 1",
        "a recipient limit per message: the first N RCPTs of a transaction are accepted, each one after "
        "gets `452 4.5.3 Too many recipients` (RFC 5321 4.5.3.1.8: the client sends those in another "
        "transaction); the limit starts again with each MAIL",
    ),
    Key(
        "smtp host",
        "max_size",
        "bytes, from 1",
        "a message-size limit (RFC 1870): EHLO advertises `SIZE N`; a MAIL whose `SIZE=` is above it "
        "gets `552 5.3.4` (message size exceeds fixed maximum message size), and so does the final dot "
        "of content that grew past it (`552 5.3.4 Too much mail data`: the message is not kept). "
        "Without it the limit is 32 MiB",
    ),
    Key(
        "smtp host",
        "rate_limit",
        '`{per = "messages"|"connections", max = N, window = D, used = 0, code, enhanced, text}`',
        "a rate limit: a sliding window of `window` (world time, see `hour`) holding at most `max` "
        "events, counted per host for the whole run (`world.reset()` empties it). `connections`: a "
        "connection that would be one too many gets the greeting `421 4.7.0 HOST Error: too many "
        "connections from CLIENT` and the close (Postfix's anvil; the code must be 421: RFC 5321 3.8); "
        "only connections greeted with 220 count. `messages`: a MAIL that would be one too many gets "
        "`450 4.7.1 Error: too much mail from CLIENT` (Postfix's message rate limit) and the session "
        "goes on; with `code = 421` the server closes after it. Only accepted MAILs count. `used`: "
        "events already in the window at the start (other senders behind the same address), gone "
        "`window` later. `{host}` and `{client}` in `text` are the server's name and the client's "
        "address. Exactly `max` pass in any window, whatever the concurrency",
    ),
    Key(
        "smtp host",
        "max_sessions",
        "a number from 1",
        "a concurrency limit: at most N sessions open at once; the connection above gets `421 4.7.0 "
        "HOST Error: too many connections from CLIENT` (Postfix's `smtpd_client_connection_count_limit`) "
        "as its greeting and is closed; once a session ends, the next connection is served",
    ),
    Key(
        "smtp host",
        "greylist",
        '`{after = D, code, enhanced, text}` (after `"5m"`; reply `450 4.7.1 Greylisted: please try '
        "again later`)",
        "greylisting: the first RCPT of each sender/recipient pair gets the 4xx reply, and so does every "
        "retry of that pair until `after` (world time) has passed since that first RCPT; then the pair is "
        "accepted. Kept per host while the world runs, reset by `world.reset()`",
    ),
    Key(
        "smtp host",
        "auth",
        '`{user, password, mechanisms = ["PLAIN", "LOGIN"], before_tls = false, required = true, fault, '
        "send_as = [ADDRESS, ...]}`",
        "SMTP authentication (RFC 4954), one account: the EHLO reply lists `AUTH PLAIN LOGIN` inside "
        'TLS only (after STARTTLS, or from the first byte with `tls = "implicit"`) unless `before_tls`; '
        "before that an AUTH gets `503 5.5.1 Error: authentication not enabled`, as from Postfix with "
        "`smtpd_tls_auth_only`. PLAIN (RFC 4616, with or without an initial response) and LOGIN "
        "(`334 VXNlcm5hbWU6`, `334 UGFzc3dvcmQ6`); the right credentials get `235 2.7.0 Authentication "
        "successful`, wrong ones `535 5.7.8 Authentication credentials invalid`; AUTH before EHLO, a second "
        "AUTH, or AUTH inside a transaction `503 5.5.1`; a bad base64 response `501 5.5.2`; `*` "
        "`501 5.7.0 Authentication aborted`; an unknown mechanism `504 5.5.4`. `required` (default "
        "`true`: `530 5.7.0 Authentication required`, RFC 4954 6; or a reply `{code, enhanced, text}`, e.g. "
        "Exchange Online's `530 5.7.57`; `false`: mail is taken without AUTH) answers a MAIL of a client "
        "that did not authenticate; before STARTTLS, on a host that offers AUTH only inside TLS, that "
        "MAIL gets `530 5.7.0 Must issue a STARTTLS command first` (Postfix). `send_as`: the senders the "
        "account may use; another is refused at the final dot with `550 5.7.60 SMTP; Client does not "
        "have permissions to send as this sender` (Exchange Online). Inside `--netns` a world with AUTH "
        "listens on 587 (465 for implicit TLS)",
    ),
    Key(
        "smtp host",
        "auth.fault",
        "one of the values",
        "an authentication fault",
        AUTH_FAULTS_TABLE,
    ),
    Key("smtp host", "tls", "one of the values", "how the host offers TLS", TLS, "starttls"),
    Key(
        "smtp host",
        "tlsa",
        "`{usage = 3, selector = 1, matching = 1, matches = true}` (those defaults; or `true`)",
        "a TLSA record at `_25._tcp.HOST` (DANE, RFC 7672) computed from the certificate the host "
        "presents: usage 3 (DANE-EE) from its leaf, 2 (DANE-TA) from the CA that issued it; selector 1 "
        "the public key, 0 the certificate; matching 1 SHA-256, 2 SHA-512, 0 the full data. "
        "`matches = false`: the digest of a key nobody holds",
    ),
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
        "an abrupt close at a point: FIN without any TLS goodbye, or RST. `after_X`: X was read, no reply "
        "sent; `in_data` with `after_bytes` N: "
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
        "wait before that reply; a point's own delay replaces `delay_ms` there (`*` is `delay_ms` itself: "
        "give one or the other). The wait ends early when the client leaves (its close is recorded as "
        "`left during a delay`) or the world stops; the server's own idle timer (two minutes) closes a "
        "session that waits longer without a word from the client",
    ),
    Key(
        "smtp host",
        "trickle_bps",
        "bytes per second, from 1 to 100000",
        "every reply (the greeting, each line of a multi-line reply, inside TLS too) goes out that many "
        "bytes per second, one write per byte (a few bytes per write above 1000 per second), after any "
        "delay. A client that reads each reply line to its end waits and goes on; one that takes what "
        "one read returns for the whole reply breaks. RFC 5321 4.5.3.2 times a reply as a whole, many "
        "clients time each read: a reply that takes longer than a client's timeout in all, each byte "
        "well within it, separates the two",
    ),
    Key(
        "smtp host",
        "stall_in_data",
        "`{after_bytes = N}` (N from 0)",
        "the server stops reading once N bytes of message content came (or at the final dot of a "
        "shorter message, which is then neither kept nor answered) and never answers: the client's "
        "writes block once the socket buffers are full (a message larger than them, a few MB on "
        "loopback, meets the stall while writing; a smaller one meets it waiting for the reply to its "
        "final dot). The session ends when the client leaves, the server's idle timer (two minutes) "
        "runs out, or the world stops",
    ),
    Key(
        "DNS fault",
        "dns_faults",
        "`[[dns_faults]]` `{name, fault, types, delay_ms, tcp, from, until}`",
        "a fault on the answers for one name (and optionally some record types); `delay_ms` delays the "
        "answer of any fault but `drop`",
        DNS_FAULTS,
    ),
    Key(
        "DNS fault",
        "dns_faults.from",
        "a duration of world time (default 0)",
        "the fault starts then; before it the name is answered from the records",
    ),
    Key(
        "DNS fault",
        "dns_faults.until",
        "a duration of world time (default: for ever)",
        "the fault ends then; after it the name is answered from the records",
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
        "`[[records]]` `{name, type, value, priority, ttl}` (priority 10, 0 for a null MX; ttl 300)",
        "a DNS record of the zone",
        RECORD_TYPES_TABLE,
    ),
)

PRECEDENCE: Final = (
    "At one point of a session: a schedule first picks the faulted or the healthy plan for the "
    "session; then a cut at that point (`close_at`) wins and nothing is sent; else a reply override "
    "(`greeting`, `replies.CMD`) replaces the reply; else, after a 4xx or 5xx greeting that does not "
    "close, `503` to every command but QUIT; else, for STARTTLS, the TLS mode's own answer "
    "(454 when refused, 502 when TLS is off, 554 inside TLS); else aiosmtpd's own reply. The point's "
    "own delay (or else `delay_ms`) applies to whatever reply goes there, and the reply's enhanced "
    "code is then added or removed as the session's EHLO advertised. In DNS, the first "
    "`[[dns_faults]]` entry that matches a query's name and type applies (two that overlap are "
    "refused)."
)


_ROWS: Final = {k.key: k for k in TABLE}
# Rows whose second part stands for any name: replies.MAIL is a replies.CMD.
_GENERIC: Final = {"replies": "replies.CMD", "delays_ms": "delays_ms.POINT", "hosts": "hosts.NAME"}


def key(name: str) -> Key:
    """The table's entry for ``name``: a row's key (``"tls"``, ``"replies.CMD"``) or a key as an
    error message names it (``replies.MAIL``, ``close_at.point``, ``dns_faults[0].tcp``,
    ``hosts."mx1.contoso.test".cert``)."""
    row = _ROWS.get(name)
    if row is not None:
        return row
    # Indexes and quoted host names go; so do the world and host prefixes.
    parts = [p for p in re.sub(r'"[^"]*"', "NAME", re.sub(r"\[\d+\]", "", name)).split(".") if p]
    if parts[:1] == ["world"]:
        parts = parts[1:]
    if parts[:2] == ["hosts", "NAME"] and len(parts) > 2:
        parts = parts[2:]
    head = parts[0] if parts else ""
    generic = _GENERIC.get(head) if len(parts) > 1 or head == "hosts" else None
    for candidate in (".".join(parts[:2]), generic, head):  # dns_faults.tcp, replies.CMD, close_at
        if candidate in _ROWS:
            return _ROWS[candidate]
    raise KeyError(name)


def values(name: str) -> tuple[str, ...]:
    """The values the table allows for key ``name``: what validation accepts."""
    return key(name).values


# -- contradictions -----------------------------------------------------------

# The points of a session in the order a client reaches them. A reply, delay
# or cut configured at a point no client can reach (past a cut or a close, or
# message content after a refused MAIL, RCPT or DATA) can never apply.
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
# Each cut: the point where it fires, and the last point whose reply goes out
# before it. after_starttls only ends the clients that start TLS, so it bounds
# no later point (a plaintext client goes on to MAIL).
_CUTS: Final = {
    "before_greeting": (0, -1),
    "after_greeting": (1, 0),
    "after_ehlo": (1, 0),
    "after_starttls": (3, 99),
    "after_mail": (4, 3),
    "after_rcpt": (5, 4),
    "in_data": (7, 6),
    "after_final_dot": (8, 7),
}
_ANYTIME: Final = ("RSET", "QUIT", "NOOP", "*")  # whenever the session is open after the greeting
_NO_CERT_SHOWN: Final = ("none", "starttls_refused", "starttls_broken", "implicit_broken")
_AS_WRITTEN: Final = ("EHLO", "HELO")  # replies that keep their enhanced code whatever EHLO advertised

Contradiction = tuple[str, object, str]  # (key under the host, value, what is allowed)


def _shown(r: Reply) -> str:
    return (
        "{"
        + ", ".join(
            [f"code = {r.code}"]
            + ([f'enhanced = "{r.enhanced}"'] if r.enhanced else [])
            + ([f'text = "{r.text}"'] if r.text else [])
            + ([f'close = "{r.close}"'] if r.close else [])
        )
        + "}"
    )


def contradictions(plan: SmtpPlan) -> Iterator[Contradiction]:
    """The faults of ``plan`` that can never apply as written, or that fight another.

    Yields ``(key, value, expected)`` with the key under the host's table
    (``replies.MAIL``, ``close_at.point``...); of two faults that fight, the
    one a client would meet later is named. Example::

        plan = SmtpPlan(replies={"MAIL": Reply(250)}, close_at=CloseAt("after_mail"))
        next(contradictions(plan))[0]   # 'replies.MAIL': the cut comes instead of that reply
    """
    # last: the last point whose reply some client still gets; why: what ends it there.
    last, why = 99, ""
    # content: whether message content (and the reply to its dot) can still come.
    content, content_why = True, ""
    ca = plan.close_at
    g = plan.greeting
    if plan.tls == "implicit_broken":
        last, why = -1, "tls = implicit_broken refuses every handshake, so no SMTP session begins"
    elif ca is not None and ca.point == "before_greeting":
        last, why = -1, "close_at cuts before the greeting"
    elif g is not None and (g.close is not None or g.code == 421):
        last, why = 0, f"the greeting {g.code} closes the connection"
    if g is not None and g.code >= 400 and last > 0:
        # RFC 5321 3.1: after a refusing greeting the server answers 503 to all but QUIT.
        content, content_why = False, f"after the greeting {g.code} the server takes no mail"
    for cmd in ("EHLO", "MAIL", "RCPT", "DATA"):
        r = plan.replies.get(cmd)
        if r is None or _ORDER[cmd] >= last:
            continue
        if r.close is not None:
            last, why = _ORDER[cmd], f"replies.{cmd} closes the connection"
        elif r.code >= 400 and cmd != "EHLO" and content:
            content, content_why = False, f"replies.{cmd} ({r.code}) refuses the transaction"
            if not plan.advertises("PIPELINING"):
                # Without PIPELINING a client sends nothing more of the transaction.
                last, why = _ORDER[cmd], f"replies.{cmd} ({r.code}) refuses the transaction (no PIPELINING)"
    if ca is not None and ca.point != "before_greeting":  # that one is counted above
        fires, sent = _CUTS[ca.point]
        if fires > last or (fires >= 7 and not content):
            yield ("close_at.point", ca.point, f"a point the session reaches: {why or content_why}")
        elif sent < last:
            last, why = sent, f"close_at cuts at {ca.point}"

    def unreachable(point: str) -> str | None:
        p = -1 if point in _ANYTIME else _ORDER[point]
        if last < 1 and (p > last or point in _ANYTIME):
            return why
        if p > last:
            return why
        if p >= 7 and not content:
            return content_why
        return None

    if g is not None and last < 0:
        yield ("greeting", _shown(g), f"no greeting: {why}")
    for cmd, r in plan.replies.items():
        reason = unreachable(cmd)
        if reason:
            yield (f"replies.{cmd}", _shown(r), f"no reply to {cmd}: {reason}, so it is never sent")
        elif 300 <= r.code < 400 and cmd != "DATA":
            yield (f"replies.{cmd}", _shown(r), "a 2xx, 4xx or 5xx code (only DATA is answered 3xx)")
        elif cmd in ("EHLO", "HELO") and 200 <= r.code < 300 and r.code != 250:
            yield (
                f"replies.{cmd}",
                _shown(r),
                f"250 for a {cmd} that succeeds (RFC 5321 4.2), or a 4xx or 5xx",
            )
        elif cmd == "DATA" and r.code < 300:
            yield ("replies.DATA", _shown(r), "354 (with your text) or a 4xx or 5xx code")
        elif r.enhanced and cmd not in _AS_WRITTEN and not plan.advertises("ENHANCEDSTATUSCODES"):
            yield (
                f"replies.{cmd}.enhanced",
                r.enhanced,
                "no enhanced code: ENHANCEDSTATUSCODES is off, so replies carry none",
            )
    for point, ms in plan.delays_ms.items():
        reason = unreachable(point)
        if reason:
            name, at = ("delay_ms", "") if point == "*" else (f"delays_ms.{point}", f" at {point}")
            yield (name, ms, f"no delay{at}: {reason}, so no reply goes there")
    if plan.greylist is not None:
        reason = unreachable("RCPT")
        shown = f"{{after = {plan.greylist.after:g}}}"
        if reason:
            yield ("greylist", shown, f"no greylisting: {reason}, so no RCPT is ever answered")
        elif "RCPT" in plan.replies:
            yield ("greylist", shown, "no greylisting beside replies.RCPT (that reply answers every RCPT)")
        elif (
            plan.greylist.reply != GREYLISTED
            and plan.greylist.reply.enhanced
            and not plan.advertises("ENHANCEDSTATUSCODES")
        ):
            yield (
                "greylist.enhanced",
                plan.greylist.reply.enhanced,
                "no enhanced code: ENHANCEDSTATUSCODES is off, so replies carry none",
            )
    if plan.stall_in_data is not None:
        shown_stall = f"{{after_bytes = {plan.stall_in_data.after_bytes}}}"
        reason = unreachable("DATA_END")
        if reason:
            yield ("stall_in_data", shown_stall, f"no stall: {reason}, so no message content comes")
        elif ca is not None and ca.point in ("in_data", "after_final_dot"):
            yield (
                "stall_in_data",
                shown_stall,
                f"no stall beside close_at = {ca.point} (one of the two ends DATA)",
            )
        elif "DATA_END" in plan.replies or "DATA_END" in plan.delays_ms:
            what = "replies.DATA_END" if "DATA_END" in plan.replies else "delays_ms.DATA_END"
            yield (
                "stall_in_data",
                shown_stall,
                f"no stall beside {what}: a stalled server never answers the dot",
            )
    if plan.max_size is not None and not plan.advertises("SIZE"):
        yield ("max_size", plan.max_size, "no max_size with SIZE in extensions_off (the limit is advertised)")
    if plan.max_recipients is not None:
        reason = unreachable("RCPT")
        if reason:
            yield (
                "max_recipients",
                plan.max_recipients,
                f"no recipient limit: {reason}, so no RCPT is answered",
            )
        elif "RCPT" in plan.replies:
            yield (
                "max_recipients",
                plan.max_recipients,
                "no recipient limit beside replies.RCPT (it answers every RCPT)",
            )
    yield from _limit_contradictions(plan, unreachable)
    starttls = plan.replies.get("STARTTLS")
    if starttls is not None and not unreachable("STARTTLS"):
        if starttls.code < 400:
            yield (
                "replies.STARTTLS",
                _shown(starttls),
                "a 4xx or 5xx code (a 2xx would have to start TLS: leave that to tls = starttls)",
            )
        elif plan.tls in ("starttls_broken", "starttls_legacy"):
            yield (
                "replies.STARTTLS",
                _shown(starttls),
                f"no STARTTLS reply with tls = {plan.tls} (its fault is in the handshake a reply skips)",
            )
    refused_with = starttls.code if starttls is not None and starttls.code >= 400 else 0
    if plan.cert != "valid":
        if plan.tls in _NO_CERT_SHOWN:
            yield (
                "cert",
                plan.cert,
                f"no certificate fault when tls = {plan.tls}: no certificate is ever presented",
            )
        elif not plan.implicit_tls and refused_with:
            yield (
                "cert",
                plan.cert,
                f"no certificate fault: replies.STARTTLS ({refused_with}) means no handshake",
            )
        elif not plan.implicit_tls and (last < 2 or (not content and g is not None and g.code >= 400)):
            yield ("cert", plan.cert, f"no certificate fault: {why or content_why}, before any STARTTLS")
    if ca is not None and ca.point == "after_starttls":
        if plan.tls not in ("starttls", "starttls_legacy"):
            yield ("close_at.point", ca.point, f"another point: tls = {plan.tls} has no STARTTLS handshake")
        elif refused_with:
            yield (
                "close_at.point",
                ca.point,
                f"another point: replies.STARTTLS ({refused_with}) means no handshake",
            )
    if plan.extensions_off and last < 1:
        yield ("extensions_off", sorted(plan.extensions_off), f"no extensions: {why}, before any EHLO reply")
    auth = plan.auth
    if auth is not None:
        if last < 1:
            yield ("auth", auth.user, f"no authentication: {why}, before any EHLO reply")
        elif auth.fault != "not_offered" and not auth.before_tls and plan.tls in _NO_CERT_SHOWN:
            yield (
                "auth.before_tls",
                False,
                f'before_tls = true, or fault = "not_offered": with tls = {plan.tls} no TLS session ever '
                "begins, so AUTH (offered inside TLS only) would never be offered",
            )
        elif auth.send_as and auth.fault is not None:
            yield (
                "auth.send_as",
                list(auth.send_as),
                f"no send_as with fault = {auth.fault}: no client ever authenticates, so no sender is "
                "checked",
            )
        elif auth.fault == "not_offered" and auth.before_tls:
            yield ("auth.before_tls", True, 'no before_tls with fault = "not_offered": AUTH is never offered')


def _limit_contradictions(
    plan: SmtpPlan, unreachable: Callable[[str], str | None]
) -> Iterator[Contradiction]:
    """What keeps a connection or message limit from ever applying as written."""
    rl, g = plan.rate_limit, plan.greeting
    greets = (
        g is None
        and plan.tls != "implicit_broken"
        and not (plan.close_at is not None and plan.close_at.point == "before_greeting")
    )
    if plan.max_sessions is not None and not greets:
        yield (
            "max_sessions",
            plan.max_sessions,
            "no concurrency limit beside a greeting fault (it answers every connection)",
        )
    if rl is None:
        return
    shown = f'{{per = "{rl.per}", max = {rl.max}}}'
    if rl.per == "connections":
        if not greets:
            yield (
                "rate_limit",
                shown,
                "no connection rate limit beside a greeting fault (it answers every connection)",
            )
        elif rl.refusal.code != 421:
            yield (
                "rate_limit.code",
                rl.refusal.code,
                "421 for a connection over the limit: the server closes after it (RFC 5321 3.8)",
            )
    else:
        reason = unreachable("MAIL")
        if reason:
            yield ("rate_limit", shown, f"no message rate limit: {reason}, so no MAIL is answered")
        elif "MAIL" in plan.replies:
            yield ("rate_limit", shown, "no message rate limit beside replies.MAIL (it answers every MAIL)")
        elif not 400 <= rl.refusal.code < 500:
            yield (
                "rate_limit.code",
                rl.refusal.code,
                "a 4xx code (a rate limit defers: the client retries later)",
            )
    if rl.used > rl.max:
        yield ("rate_limit.used", rl.used, f"a number from 0 to max ({rl.max})")
    if (
        rl.reply is not None
        and rl.reply.enhanced
        and not plan.advertises("ENHANCEDSTATUSCODES")
        and rl.per == "messages"
    ):
        yield (
            "rate_limit.enhanced",
            rl.reply.enhanced,
            "no enhanced code: ENHANCEDSTATUSCODES is off, so replies carry none",
        )


def _overlap(a: DnsFault, b: DnsFault) -> bool:
    """Whether two DNS faults' windows of world time meet."""
    a_end = float("inf") if a.active_until is None else a.active_until
    b_end = float("inf") if b.active_until is None else b.active_until
    return a.active_from < b_end and b.active_from < a_end


def dns_contradictions(faults: tuple[DnsFault, ...]) -> Iterator[tuple[int, str, object, str]]:
    """``(index, key, value, expected)`` for each DNS fault that cannot apply as written."""
    for i, f in enumerate(faults):
        if f.fault == "drop" and f.delay_ms:
            yield (i, "delay_ms", f.delay_ms, "no delay_ms with fault = drop (no answer is ever sent)")
        for j, earlier in enumerate(faults[:i]):
            if (
                earlier.name == f.name
                and (earlier.types is None or f.types is None or earlier.types & f.types)
                and _overlap(earlier, f)
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
    text = f"`{limit_line(r, 'HOST', 'CLIENT')}`"
    if r.close:
        text += f" then closes ({r.close.upper()})"
    return text


def describe_dns_fault(f: DnsFault) -> str:
    """One phrase: what a query for ``f.name`` gets."""
    name = f.name + (" " + "/".join(sorted(f.types)) if f.types else "")
    late = f" after {f.delay_ms} ms" if f.delay_ms else ""
    if f.fault == "truncate":
        retry = key("dns_faults.tcp").effect(f.tcp)
        what = f"UDP answer truncated{late}, TCP retry {retry}{late if f.tcp != 'reset' else ''}"
    elif f.fault == "delay":
        what = f"answers after {f.delay_ms} ms"
    else:
        what = key("dns_faults").effect(f.fault) + late
    if f.timed:
        when = f"from {format_duration(f.active_from)}" if f.active_from else ""
        if f.active_until is not None:
            when += (" " if when else "") + f"until {format_duration(f.active_until)}"
        what += f" ({when})"
    return f"DNS {name} → {what}"


_SHORT_COMMANDS: Final = {"DATA_END": "final dot"}


def describe_plan(plan: SmtpPlan, *, extensions: bool = True) -> list[str]:
    """How an SMTP plan differs from a healthy server, in phrases (empty when it does not)."""
    out: list[str] = []
    if plan.greeting is not None:
        out.append("greeting " + _reply(plan.greeting))
    if plan.tls != "starttls" and not (plan.tls == "starttls_refused" and "STARTTLS" in plan.replies):
        out.append(key("tls").effect(plan.tls))
    if plan.cert != "valid":
        out.append(key("cert").effect(plan.cert))
    out += [f"{_SHORT_COMMANDS.get(cmd, cmd)} → {_reply(r)}" for cmd, r in plan.replies.items()]
    if plan.extensions_off and extensions:
        out.append("EHLO without " + ", ".join(sorted(plan.extensions_off)))
    if plan.greylist is not None:
        out.append(
            f"greylisting: {_reply(plan.greylist.reply)} to each new sender/recipient pair, accepted "
            f"{format_duration(plan.greylist.after)} later"
        )
    if plan.auth is not None:
        out.append(describe_auth(plan.auth))
    if plan.max_recipients is not None:
        out.append(f"{plan.max_recipients} recipient(s) per message, then {_reply(TOO_MANY_RECIPIENTS)}")
    if plan.max_size is not None:
        out.append(f"messages of at most {plan.max_size} bytes (SIZE {plan.max_size}), then `552 5.3.4`")
    if plan.max_sessions is not None:
        out.append(
            f"at most {plan.max_sessions} session(s) at once, the connection above gets "
            f"{_reply(TOO_MANY_CONNECTIONS)} then closes"
        )
    rl = plan.rate_limit
    if rl is not None:
        over = _reply(rl.refusal) + (" then closes" if rl.refusal.code == 421 else "")
        where = "greeting" if rl.per == "connections" else "MAIL"
        used = f" ({rl.used} already used at the start)" if rl.used else ""
        out.append(f"at most {rl.max} {rl.per} per {format_duration(rl.window)}{used}, then {where} → {over}")
    ca = plan.close_at
    if ca is not None:
        where = key("close_at").effect(ca.point)
        if ca.point == "in_data" and ca.after_bytes:
            where = f"closes after {ca.after_bytes} bytes of content (or at a shorter message's dot)"
        out.append(f"{where} ({ca.how.upper()})")
    if plan.stall_in_data is not None:
        n = plan.stall_in_data.after_bytes
        out.append(
            f"stops reading after {n} bytes of content (or at a shorter message's dot) and never answers"
            if n
            else "stops reading at the first byte of content and never answers"
        )
    if plan.trickle_bps is not None:
        out.append(f"replies trickle at {plan.trickle_bps} bytes per second")
    others = len(plan.delays_ms) > 1
    for point, ms in plan.delays_ms.items():
        if point == "*":
            out.append(f"every {'other ' if others else ''}reply delayed {ms} ms")
        else:
            out.append(
                f"{_SHORT_COMMANDS.get(point, point)} delayed {ms} ms" if ms else f"{point} not delayed"
            )
    return out


def describe_auth(a: Auth) -> str:
    """One phrase: what authentication a host asks for, and its fault."""
    if a.fault == "not_offered":
        what = "AUTH not offered"
    else:
        where = "before and inside TLS" if a.before_tls else "inside TLS only"
        what = f"AUTH {' '.join(a.mechanisms)} offered {where}, account {a.user}"
    if a.required is not None:
        what += f"; MAIL without AUTH → `{a.required.line()}`"
    else:
        what += "; mail taken without AUTH too"
    if a.fault is not None and a.fault != "not_offered":
        what += f"; AUTH → {key('auth.fault').effect(a.fault)}"
    if a.send_as:
        what += f"; may send as {', '.join(a.send_as)} only (others `550 5.7.60` at the final dot)"
    return what


def describe_host(h: HostSpec) -> list[str]:
    """How host ``h`` differs from a healthy SMTP server, in phrases (empty when it does not)."""
    limited: list[str] = []  # what a schedule limits to the first sessions
    if h.kind == "close_on_accept":
        limited.append(f"{key('kind').effect(h.kind)} ({h.close.upper()})")
    elif h.kind != "smtp":
        limited.append(key("kind").effect(h.kind))
    else:
        limited += describe_plan(h.smtp, extensions=False)
    lasting = []
    if h.kind == "smtp" and h.smtp.extensions_off:
        lasting.append("EHLO without " + ", ".join(sorted(h.smtp.extensions_off)))
    if h.ipv6 != "none":
        lasting.append(f"IPv6: {key('ipv6').effect(h.ipv6)}")
    elif not h.a_record:
        lasting.append("no A record")
    if h.schedule is not None and limited:
        limited.append(describe_schedule(h.schedule))
    return limited + lasting


def describe_schedule(s: Schedule) -> str:
    """When a scheduled fault applies, in a phrase ("for its first 2 session(s) only", "for the first 2h")."""
    if s.fail_first:
        return f"for its first {s.fail_first} session(s) only"
    if not s.healthy_for:
        return f"for the first {format_duration(s.fail_for or 0)} only, then healthy"
    if s.fail_for is None:
        return f"from {format_duration(s.healthy_for)} on (healthy before)"
    return (
        f"from {format_duration(s.healthy_for)} for {format_duration(s.fail_for)}, healthy before and after"
    )


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
