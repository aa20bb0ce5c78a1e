"""What a world is made of, as plain data: its zone, records and hosts, and parsing.

Every fault the harness knows, and each host's plan of them, is a typed
value of the fault table (``faults.py``, re-exported here); the servers in
``dns.py``, ``smtp.py`` and ``tcp.py`` apply them (the "how").
``parse_world`` turns the ``[world]`` table of a scenario file, or an inline
dict, into a :class:`WorldSpec`, takes the allowed values from the fault
table, refuses what it calls contradictions, and names the exact key of any
bad value.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any, Final, get_args

from .clock import DURATION_RULE, HOUR, parse_duration
from .faults import (
    AUTH_REQUIRED,
    DNSSEC_FAULTS,
    GREYLISTED,
    TOO_MANY_CONNECTIONS,
    TOO_MUCH_MAIL,
    Auth,
    CertKind,
    CloseAt,
    CloseHow,
    ClosePoint,
    Command,
    DnsFault,
    DnsFaultKind,
    Dnssec,
    Extension,
    Greylist,
    HostKind,
    HostSpec,
    MtaSts,
    RateLimit,
    RateUnit,
    RecordType,
    Reply,
    Schedule,
    SmtpPlan,
    StallInData,
    StsFault,
    StsMode,
    TcpFallback,
    Tlsa,
    TlsMode,
    TlsRpt,
    contradictions,
    dns_contradictions,
    values,
)
from .values import field, frozen

__all__ = [
    "CertKind",
    "CloseAt",
    "CloseHow",
    "ClosePoint",
    "Command",
    "DnsFault",
    "DnsFaultKind",
    "Dnssec",
    "Extension",
    "Greylist",
    "HostKind",
    "HostSpec",
    "MtaSts",
    "RecordType",
    "Reply",
    "Schedule",
    "SmtpPlan",
    "StallInData",
    "StsFault",
    "StsMode",
    "TcpFallback",
    "TlsMode",
    "TlsRpt",
    "Tlsa",
    "field",
    "frozen",
]

RECORD_TYPES: Final = get_args(RecordType)
HOST_KINDS: Final = get_args(HostKind)
CLOSE_HOWS: Final = get_args(CloseHow)
TLS_MODES: Final = get_args(TlsMode)
CERT_KINDS: Final = get_args(CertKind)
COMMANDS: Final = get_args(Command)
CLOSE_POINTS: Final = get_args(ClosePoint)
EXTENSIONS: Final = get_args(Extension)
DNS_FAULT_KINDS: Final = get_args(DnsFaultKind)
TCP_FALLBACKS: Final = get_args(TcpFallback)
DELAY_KEYS: Final = ("GREETING", "*", *COMMANDS)

# Kinds whose behaviour is made per connection by our own code, so a
# schedule ("fail the first N sessions") can apply to them.
SCHEDULABLE_KINDS: Final = ("smtp", "silent", "close_on_accept")
MAX_HOST_NAME: Final = 64
MIN_HOUR: Final = 0.001  # real seconds: a world hour shorter than a millisecond no timer can follow


UNKNOWN_KEY: Final = object()  # the "value" of a key nobody expects


class SpecError(ValueError):
    """A bad value in a world spec or scenario file.

    The message names where the value came from (file), the dotted key, the
    bad value and what is allowed, so the user can fix it without reading code.
    Example::

        try:
            parse_world({"hosts": {"mail.contoso.test": {"cert": "expird"}}})
        except SpecError as exc:
            print(exc.key, exc.expected)   # hosts."mail.contoso.test".cert one of valid, expired, ...
    """

    def __init__(self, where: str, key: str, value: object, expected: str) -> None:
        self.where = where
        self.key = key
        self.value = value
        self.expected = expected
        if value is None:
            shown = "missing"
        elif value is UNKNOWN_KEY:
            shown = "unknown key"
        else:
            shown = f"{value!r} is not valid"
        super().__init__(f"{where}: {key}: {shown}; expected {expected}")


@frozen
class Record:
    """A DNS record. For A records ``value`` is an address or a host's name."""

    name: str
    type: RecordType
    value: str
    priority: int = 10
    ttl: int = 300


@frozen
class WorldSpec:
    """A small mail world: its DNS zone, records, hosts and DNS faults.

    Example::

        spec = parse_world({"hosts": {"mail.contoso.test": {"cert": "expired"}}})
        assert spec.host("mail.contoso.test").smtp.cert == "expired"
    """

    zone: str = "test"
    records: tuple[Record, ...] = ()
    hosts: tuple[HostSpec, ...] = ()
    dns_faults: tuple[DnsFault, ...] = ()
    hour: float = HOUR  # real seconds one hour of the world's clock lasts (see mailfakes.clock)
    sender_domain: str | None = None  # its MX host receives the non-delivery reports
    dnssec: Dnssec | None = None  # the zone (and these sub-zones) signed
    mta_sts: tuple[MtaSts, ...] = ()
    tls_rpt: tuple[TlsRpt, ...] = ()

    @property
    def web_hosts(self) -> tuple[str, ...]:
        """The names of the world's HTTPS hosts (MTA-STS policy hosts, TLS-RPT receivers), which the
        world binds beside its SMTP hosts and the DNS publishes with an A record each."""
        names = [p.host for p in self.mta_sts]
        for r in self.tls_rpt:
            names += [rua_https_host(u) for u in r.rua if u.startswith("https://")]
        if self.crl_host is not None:
            names.append(self.crl_host)
        return tuple(dict.fromkeys(names))

    @property
    def tls_policy(self) -> bool:
        """Whether the world tests a TLS policy beyond a CA's check: DNSSEC (and DANE), MTA-STS, or a
        revoked certificate (which only a client that loads the CRL sees)."""
        return self.dnssec is not None or bool(self.mta_sts) or self.crl_host is not None

    @property
    def crl_host(self) -> str | None:
        """``crl.<zone>``, the CRL distribution point, when a certificate of the world is revoked."""
        revoked = any(h.kind == "smtp" and h.smtp.cert == "revoked" for h in self.hosts)
        if revoked or any(p.cert == "revoked" for p in self.mta_sts):
            return f"crl.{self.zone}"
        return None

    def mta_sts_for(self, domain: str) -> MtaSts | None:
        for p in self.mta_sts:
            if p.domain == domain:
                return p
        return None

    def signed_zone_of(self, name: str) -> str | None:
        """The signed zone ``name`` falls in (the closest one), or None without DNSSEC."""
        if self.dnssec is None:
            return None
        best = self.zone
        for z in self.dnssec.zones:
            if in_zone(name, z) and len(z) > len(best):
                best = z
        return best

    @property
    def timed(self) -> bool:
        """Whether something in the world changes with world time."""
        return any(
            (h.schedule is not None and h.schedule.timed) or h.smtp.greylist is not None for h in self.hosts
        ) or any(f.timed for f in self.dns_faults)

    def host(self, name: str) -> HostSpec:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    @property
    def uses_tls(self) -> bool:
        return any(h.kind == "smtp" and h.smtp.uses_tls for h in self.hosts) or bool(self.web_hosts)


# --------------------------------------------------------------------------
# Parsing, with errors that point at the key.


def normalize_name(name: str) -> str:
    return name.strip().rstrip(".").lower()


def in_zone(name: str, zone: str) -> bool:
    zone = normalize_name(zone)
    name = normalize_name(name)
    return zone == "" or name == zone or name.endswith("." + zone)


class Table:
    """A dict read with typed getters that raise SpecError with the full key."""

    def __init__(self, data: object, where: str, path: str) -> None:
        if not isinstance(data, Mapping):
            raise SpecError(where, path or "(top level)", data, "a table")
        self.data: Mapping[str, Any] = data
        self.where = where
        self.path = path
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        shown = f'"{name}"' if "." in name or " " in name else name
        return f"{self.path}.{shown}" if self.path else shown

    def fail(self, name: str, value: object, expected: str) -> SpecError:
        return SpecError(self.where, self.key(name), value, expected)

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str) -> Any:
        self.used.add(name)
        return self.data.get(name)

    def string(self, name: str, default: str | None = None, *, required: bool = False) -> str:
        if name not in self.data:
            if required or default is None:
                raise self.fail(name, None, "a string (this key is required)")
            return default
        value = self.raw(name)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(name, value, "a non-empty string")
        return value

    def opt_string(self, name: str) -> str | None:
        return self.string(name) if name in self.data else None

    def integer(self, name: str, default: int, *, lo: int = 0, hi: int = 2**31) -> int:
        if name not in self.data:
            return default
        value = self.raw(name)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(name, value, f"an integer from {lo} to {hi}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        if name not in self.data:
            return default
        value = self.raw(name)
        if not isinstance(value, bool):
            raise self.fail(name, value, "true or false")
        return value

    def choice(self, name: str, allowed: tuple[str, ...], default: str | None = None) -> str:
        if name not in self.data:
            if default is None:
                raise self.fail(name, None, "one of " + ", ".join(allowed) + " (required)")
            return default
        value = self.raw(name)
        if value not in allowed:
            raise self.fail(name, value, "one of " + ", ".join(allowed))
        assert isinstance(value, str)
        return value

    def table(self, name: str) -> Table:
        return Table(self.raw(name) if name in self.data else {}, self.where, self.key(name))

    def tables(self, name: str) -> list[Table]:
        if name not in self.data:
            return []
        value = self.raw(name)
        if not isinstance(value, list):
            raise self.fail(name, value, "an array of tables ([[...]])")
        return [Table(v, self.where, f"{self.key(name)}[{i}]") for i, v in enumerate(value)]

    def duration(self, name: str, default: float | None, *, positive: bool = False) -> float | None:
        """Seconds of a duration key (``"2h"``, ``"5m"``, a number of seconds); ``default`` when absent."""
        if name not in self.data:
            return default
        value = self.raw(name)
        seconds = parse_duration(value)
        if seconds is None or (positive and seconds <= 0) or seconds > 366 * 86400:
            raise self.fail(
                name, value, DURATION_RULE + (", more than 0" if positive else "") + ", at most 366d"
            )
        return seconds

    def string_list(self, name: str) -> list[str]:
        if name not in self.data:
            return []
        value = self.raw(name)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(name, value, "a string or an array of strings")
        return list(value)

    def done(self, allowed: tuple[str, ...] | None = None) -> None:
        """Reject keys nobody read: a typo must not pass silently."""
        known = self.used if allowed is None else set(allowed) | self.used
        for k in self.data:
            if k not in known:
                expected = "one of " + ", ".join(sorted(known)) if known else "no keys here"
                raise SpecError(self.where, self.key(k), UNKNOWN_KEY, expected)


ENHANCED_HINT = "an enhanced status code like 4.3.2 (class 2, 4 or 5)"


def enhanced_ok(value: str) -> bool:
    parts = value.split(".")
    return (
        len(parts) == 3
        and parts[0] in ("2", "4", "5")
        and all(p.isdigit() and 1 <= len(p) <= 3 for p in parts[1:])
    )


def parse_reply(t: Table) -> Reply:
    code = t.integer("code", -1, lo=200, hi=599)
    if code < 0:
        raise t.fail("code", None, "an SMTP reply code from 200 to 599 (required)")
    enhanced = t.opt_string("enhanced")
    if enhanced is not None and not enhanced_ok(enhanced):
        raise t.fail("enhanced", enhanced, ENHANCED_HINT)
    if enhanced is not None and enhanced[0] != str(code)[0]:
        raise t.fail("enhanced", enhanced, f"a code of the same class as {code}")
    text = t.string("text", "")
    if not all(" " <= ch <= "~" for ch in text):
        # Replies go out in ASCII (RFC 5321 4.5.3.1); a control character
        # or an accented letter could not be sent as written.
        raise t.fail("text", text, "one line of printable ASCII text")
    close = t.choice("close", values("close"), "") if t.has("close") else None
    t.done(("code", "enhanced", "text", "close"))
    return Reply(code=code, text=text, enhanced=enhanced, close=close)  # type: ignore[arg-type]


def parse_rate_limit(t: Table) -> RateLimit:
    per = t.choice("per", get_args(RateUnit))
    most = t.integer("max", -1, lo=1, hi=1_000_000)
    if most < 0:
        raise t.fail("max", None, "a number of events from 1 (required)")
    window = t.duration("window", None, positive=True)
    if window is None:
        raise t.fail("window", None, DURATION_RULE + " (required)")
    used = t.integer("used", 0, lo=0, hi=1_000_000)
    reply = None
    if any(t.has(k) for k in ("code", "enhanced", "text")):
        default = TOO_MANY_CONNECTIONS if per == "connections" else TOO_MUCH_MAIL
        fields = {k: t.raw(k) for k in ("code", "enhanced", "text") if t.has(k)}
        fields.setdefault("code", default.code)
        if isinstance(fields["code"], int) and 400 <= fields["code"] < 500:
            # Policy class 4.7: 4.7.0 with a 421 (as Postfix's), else the default's own.
            fields.setdefault("enhanced", "4.7.0" if fields["code"] == 421 else default.enhanced)
        fields.setdefault("text", default.text)
        reply = parse_reply(Table(fields, t.where, t.path))
    t.done(("per", "max", "window", "used", "code", "enhanced", "text"))
    return RateLimit(per=per, max=most, window=window, reply=reply, used=used)  # type: ignore[arg-type]


def parse_smtp_plan(t: Table) -> SmtpPlan:
    tls = t.choice("tls", values("tls"), "starttls")
    cert = t.choice("cert", values("cert"), "valid")
    greeting = parse_reply(t.table("greeting")) if t.has("greeting") else None
    replies: dict[str, Reply] = {}
    rt = t.table("replies")
    for cmd in list(rt.data):
        if cmd not in COMMANDS:
            raise rt.fail(cmd, UNKNOWN_KEY, "one of " + ", ".join(COMMANDS))
        replies[cmd] = parse_reply(rt.table(cmd))
    rt.done()
    close_at = None
    if t.has("close_at"):
        ct = t.table("close_at")
        point = ct.choice("point", values("close_at"))
        how = ct.choice("how", values("close"), "fin")
        after_bytes = ct.integer("after_bytes", 0, lo=0, hi=10**9)
        if after_bytes and point != "in_data":
            raise ct.fail("after_bytes", after_bytes, "no after_bytes unless point is in_data")
        ct.done(("point", "how", "after_bytes"))
        close_at = CloseAt(point=point, how=how, after_bytes=after_bytes)  # type: ignore[arg-type]
    delays: dict[str, int] = {}
    if t.has("delay_ms"):
        delays["*"] = t.integer("delay_ms", 0, lo=0, hi=600_000)
    dt = t.table("delays_ms")
    if "*" in dt.data and "*" in delays:
        # Two settings of one delay: say which, rather than let one win in silence.
        raise dt.fail("*", dt.data["*"], "no delays_ms.* beside delay_ms: they set the same delay")
    for point in list(dt.data):
        if point not in DELAY_KEYS:
            raise dt.fail(point, UNKNOWN_KEY, "one of " + ", ".join(DELAY_KEYS))
        delays[point] = dt.integer(point, 0, lo=0, hi=600_000)
    dt.done()
    off = t.string_list("extensions_off")
    for ext in off:
        if ext.upper() not in values("extensions_off"):
            raise t.fail(
                "extensions_off", ext, "extension names among " + ", ".join(values("extensions_off"))
            )
    greylist = None
    if t.has("greylist"):
        gt = t.table("greylist")
        after = gt.duration("after", 300.0, positive=True)
        assert after is not None
        reply = GREYLISTED
        if any(gt.has(k) for k in ("code", "enhanced", "text")):
            fields = {k: gt.raw(k) for k in ("code", "enhanced", "text") if gt.has(k)}
            fields.setdefault("code", GREYLISTED.code)
            reply = parse_reply(Table(fields, gt.where, gt.path))
            if not 400 <= reply.code < 500:
                raise gt.fail("code", reply.code, "a 4xx code (greylisting defers: the client must retry)")
        gt.done(("after", "code", "enhanced", "text"))
        greylist = Greylist(after=after, reply=reply)
    plan = SmtpPlan(
        tls=tls,  # type: ignore[arg-type]
        cert=cert,  # type: ignore[arg-type]
        greeting=greeting,
        replies=replies,
        close_at=close_at,
        delays_ms=delays,
        extensions_off=frozenset(ext.upper() for ext in off),
        greylist=greylist,
        max_recipients=t.integer("max_recipients", 0, lo=1, hi=100_000) if t.has("max_recipients") else None,
        max_size=t.integer("max_size", 0, lo=1, hi=2**31 - 1) if t.has("max_size") else None,
        rate_limit=parse_rate_limit(t.table("rate_limit")) if t.has("rate_limit") else None,
        max_sessions=t.integer("max_sessions", 0, lo=1, hi=100_000) if t.has("max_sessions") else None,
        trickle_bps=t.integer("trickle_bps", 0, lo=1, hi=100_000) if t.has("trickle_bps") else None,
        stall_in_data=_parse_stall(t) if t.has("stall_in_data") else None,
        auth=_auth(t),
    )
    for where, value, expected in contradictions(plan):
        # Refused as the user wrote it: the file, the key, the value, why it cannot apply.
        raise SpecError(t.where, f"{t.path}.{where}" if t.path else where, value, expected)
    return plan


def _parse_stall(t: Table) -> StallInData:
    st = t.table("stall_in_data")
    after_bytes = st.integer("after_bytes", 0, lo=0, hi=10**9)
    st.done(("after_bytes",))
    return StallInData(after_bytes=after_bytes)


def _auth(t: Table) -> Auth | None:
    if not t.has("auth"):
        return None
    return _parse_auth(t.table("auth"))


_SMTP_KEYS: Final = (
    "auth",
    "tls",
    "cert",
    "greeting",
    "replies",
    "close_at",
    "delay_ms",
    "delays_ms",
    "extensions_off",
    "greylist",
    "max_recipients",
    "max_size",
    "rate_limit",
    "max_sessions",
    "trickle_bps",
    "stall_in_data",
    "tlsa",
)


_NOT_FROM_THE_CA: Final = ("untrusted_ca", "self_signed", "missing_intermediate")


def parse_tlsa(t: Table, name: str) -> Tlsa:
    if t.raw(name) is True:
        return Tlsa()
    tt = t.table(name)
    usage = tt.integer("usage", 3, lo=0, hi=255)
    if usage not in (2, 3):
        raise tt.fail(
            "usage", usage, "2 (DANE-TA) or 3 (DANE-EE): RFC 7672 3.1.3 has SMTP clients ignore 0 and 1"
        )
    selector = tt.integer("selector", 1, lo=0, hi=1)
    matching = tt.integer("matching", 1, lo=0, hi=2)
    matches = tt.boolean("matches", True)
    tt.done(("usage", "selector", "matching", "matches"))
    return Tlsa(usage=usage, selector=selector, matching=matching, matches=matches)


def parse_host(name: str, t: Table) -> HostSpec:
    kind = t.choice("kind", values("kind"), "smtp")
    ipv6 = t.choice("ipv6", values("ipv6"), "none")
    if ipv6 != "none" and kind != "smtp":
        # The v6 address of a refuse or blackhole host would be a second copy of the fault; a
        # host whose v6 address alone refuses is ipv6 = "refused" on an smtp host.
        raise t.fail("ipv6", ipv6, f"no ipv6 on a host of kind {kind} (only on kind = smtp)")
    if ipv6 == "only" and t.has("a_record") and t.data["a_record"] is not False:
        raise t.fail("a_record", t.data["a_record"], "false or left out with ipv6 = only (no A record)")
    a_record = t.boolean("a_record", ipv6 != "only")
    if ipv6 in ("dual", "refused") and not a_record:
        raise t.fail("a_record", False, f"true with ipv6 = {ipv6} (an A record and an AAAA record)")
    close = t.choice("close", values("close"), "fin")
    if t.has("close") and kind != "close_on_accept":
        raise t.fail("close", t.data["close"], "no close unless kind = close_on_accept")
    tlsa = None
    if kind == "smtp":
        smtp = parse_smtp_plan(t)
        if t.has("tlsa"):
            tlsa = parse_tlsa(t, "tlsa")
            if tlsa.usage == 2 and tlsa.matches and smtp.cert in _NOT_FROM_THE_CA:
                # The record names the world's CA; this leaf does not chain to it, so it would
                # match nothing: say so with matches = false, or use usage 3.
                raise t.table("tlsa").fail(
                    "usage",
                    2,
                    f"3 (DANE-EE), or matches = false: the {smtp.cert} certificate is not "
                    "issued by the world's CA, which a DANE-TA record names",
                )
    else:
        for k in _SMTP_KEYS:
            if t.has(k):
                raise t.fail(k, t.data[k], f"no SMTP settings on a host of kind {kind}")
        smtp = SmtpPlan()
    schedule = None
    if t.has("schedule"):
        st = t.table("schedule")
        n = st.integer("fail_first", 0, lo=1, hi=10**6)
        fail_for = st.duration("fail_for", None, positive=True)
        healthy_for = st.duration("healthy_for", 0.0, positive=True) or 0.0
        st.done(("fail_first", "fail_for", "healthy_for"))
        timed = st.has("fail_for") or st.has("healthy_for")
        if n and timed:
            raise st.fail("fail_first", n, "a count (fail_first) or times (fail_for, healthy_for), not both")
        if not n and not timed:
            raise st.fail(
                "fail_first", None, "a number of sessions from 1, or fail_for / healthy_for (durations)"
            )
        if n and kind not in SCHEDULABLE_KINDS:
            raise t.fail(
                "schedule",
                t.data["schedule"],
                "fail_first only on kinds " + ", ".join(SCHEDULABLE_KINDS) + " (a refused or unanswered "
                "SYN never reaches the server, so it cannot count it); fail_for / healthy_for work on "
                "every kind",
            )
        if kind == "smtp" and smtp == smtp.healthy():
            # healthy() keeps what a schedule does not limit (extensions_off, implicit TLS).
            raise t.fail(
                "schedule",
                t.data["schedule"],
                "a schedule on a host with a fault it can limit (greeting, replies, tls, cert, close_at, "
                "delays, greylist): later sessions would be the same",
            )
        schedule = Schedule(fail_first=n, fail_for=fail_for, healthy_for=healthy_for)
    t.done(("kind", "a_record", "ipv6", "close", "schedule", *_SMTP_KEYS))
    return HostSpec(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        a_record=a_record,
        ipv6=ipv6,  # type: ignore[arg-type]
        close=close,  # type: ignore[arg-type]
        smtp=smtp,
        schedule=schedule,
        tlsa=tlsa,
    )


# A label of a host name (RFC 1123), plus '_' for service names like _mta-sts.
_LABEL: Final = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
# \w: letters and digits of any script too, for a UTF-8 local part (RFC 6531); never a shell character.
_LOCAL_PART: Final = re.compile(r"[\w+][\w+-]*(?:\.[\w+-]+)*")
NAME_RULE: Final = (
    "a DNS name like mail.contoso.test: labels of letters, digits, '-' and '_', "
    "1 to 63 characters each, none starting or ending with '-'"
)
LOCAL_PART_RULE: Final = (
    "a local part like user or first.last (letters, digits, '.', '-', '_', '+'; letters of any script for "
    "SMTPUTF8), not starting with '-'"
)


def name_ok(name: str) -> bool:
    """Whether a normalized name is a host name mailfakes accepts (see NAME_RULE).

    Names and addresses end up as arguments of the user's client
    (``mailfakes check`` substitutes them into its argv): one starting with
    '-' would be read as an option, so no label may start with it. Only
    letters, digits, '-' and '_', so no shell or URL syntax gets through.
    """
    labels = name.split(".")
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def local_part_ok(local: str) -> bool:
    """Whether the part before '@' is a plain dot-atom that cannot pass for an option (LOCAL_PART_RULE)."""
    return _LOCAL_PART.fullmatch(local) is not None


def check_name(t: Table, key: str, name: str, zone: str) -> str:
    norm = normalize_name(name)
    if not name_ok(norm):
        raise t.fail(key, name, NAME_RULE)
    if not in_zone(norm, zone):
        raise t.fail(key, name, f"a name inside the world's zone {zone!r}")
    return norm


def is_loopback(value: str) -> bool:
    """Whether ``value`` is an address of 127.0.0.0/8 or ::1 (a name is not), or one of the IPv6
    addresses the harness gives hosts inside its own network namespace, when this process runs in
    such a namespace (:func:`mailfakes.netns.in_private_namespace`); anywhere else those are
    addresses like any other, which traffic could leave the machine for."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return False
    if ip.is_loopback:
        return True
    from .netns import is_namespace_address

    return is_namespace_address(value)


def parse_record(t: Table, zone: str, host_names: set[str]) -> Record:
    name = check_name(t, "name", t.string("name", required=True), zone)
    rtype = t.choice("type", values("records"))
    value = t.string("value", required=True)
    null_mx = rtype == "MX" and value.strip() == "."
    priority = t.integer("priority", 0 if null_mx else 10, lo=0, hi=65535)
    ttl = t.integer("ttl", 300, lo=0, hi=2**31 - 1)
    t.done(("name", "type", "value", "priority", "ttl"))
    if null_mx and priority != 0:
        raise t.fail("priority", priority, "0 for a null MX (RFC 7505), or leave it out")
    if rtype == "A":
        if normalize_name(value) in host_names:
            value = normalize_name(value)
        elif not (is_loopback(value) and ipaddress.ip_address(value).version == 4):
            raise t.fail(
                "value", value, "a loopback IPv4 address (127.0.0.0/8) or the name of a host of this world"
            )
    elif rtype == "AAAA":
        if not (is_loopback(value) and ipaddress.ip_address(value).version == 6):
            raise t.fail("value", value, "the IPv6 loopback address ::1")
    elif rtype in ("MX", "CNAME"):
        if value.strip() != ".":
            if not name_ok(normalize_name(value)):
                raise t.fail("value", value, NAME_RULE + (" (or '.' for a null MX)" if rtype == "MX" else ""))
            value = normalize_name(value)
        elif rtype == "CNAME":
            raise t.fail("value", value, "a DNS name")
    elif rtype == "TLSA":
        value = tlsa_value(t, value)
    return Record(name=name, type=rtype, value=value, priority=priority, ttl=ttl)  # type: ignore[arg-type]


_TLSA_VALUE: Final = re.compile(r"([0-9]{1,3}) ([0-9]{1,3}) ([0-9]{1,3}) ([0-9a-fA-F]+)")


def tlsa_value(t: Table, value: str) -> str:
    m = _TLSA_VALUE.fullmatch(" ".join(value.split()))
    if m is None or any(int(g) > 255 for g in m.groups()[:3]) or len(m.group(4)) % 2:
        raise t.fail(
            "value", value, "usage selector matching and hex data, like '3 1 1 0a1b...' (RFC 6698 2.2)"
        )
    return f"{m.group(1)} {m.group(2)} {m.group(3)} {m.group(4).lower()}"


def parse_dns_fault(t: Table, zone: str) -> DnsFault:
    name = check_name(t, "name", t.string("name", required=True), zone)
    fault = t.choice("fault", values("dns_faults"))
    types = t.string_list("types")
    for ty in types:
        if ty not in values("records"):
            raise t.fail("types", ty, "record types among " + ", ".join(values("records")))
    delay_ms = t.integer("delay_ms", 0, lo=0, hi=600_000)
    if fault == "delay" and delay_ms == 0:
        raise t.fail("delay_ms", None, "a delay in milliseconds from 1 (required for fault = delay)")
    tcp = t.choice("tcp", values("dns_faults.tcp"), "answer")
    if t.has("tcp") and fault != "truncate":
        raise t.fail("tcp", tcp, "no tcp setting unless fault = truncate")
    if fault in DNSSEC_FAULTS and delay_ms:
        raise t.fail("delay_ms", delay_ms, f"no delay_ms with fault = {fault} (a DNSSEC fault)")
    if fault == "missing_ds" and types:
        raise t.fail("types", types, "no types with fault = missing_ds (it names a signed sub-zone)")
    active_from = t.duration("from", 0.0) or 0.0
    active_until = t.duration("until", None)
    if active_until is not None and active_until <= active_from:
        raise t.fail(
            "until", t.raw("until"), f"a time after from ({t.data.get('from', 0)!r}): the window is empty"
        )
    t.done(("name", "fault", "types", "delay_ms", "tcp", "from", "until"))
    return DnsFault(
        name=name,
        fault=fault,  # type: ignore[arg-type]
        types=frozenset(types) if types else None,
        delay_ms=delay_ms,
        tcp=tcp,  # type: ignore[arg-type]
        active_from=active_from,
        active_until=active_until,
    )


def parse_world(data: Mapping[str, Any], where: str = "<world>", path: str = "") -> WorldSpec:
    """Build a WorldSpec from a dict (a TOML ``[world]`` table or inline).

    Raises SpecError naming ``where`` and the dotted key of the first bad value.
    Example::

        spec = parse_world({
            "hosts": {"mx1.contoso.test": {"kind": "refuse"}, "mx2.contoso.test": {}},
            "records": [{"name": "contoso.test", "type": "MX", "value": "mx1.contoso.test"}],
        })
    """
    t = Table(data, where, path)
    zone = normalize_name(t.string("zone", "test"))
    if not name_ok(zone):
        raise t.fail(
            "zone", t.data.get("zone"), "a DNS zone like test or contoso.test (not the root): " + NAME_RULE
        )
    ht = t.table("hosts")
    hosts = []
    for name in list(ht.data):
        norm = check_name(ht, name, name, zone)
        if len(norm) > MAX_HOST_NAME:
            # A certificate's common name holds at most 64 characters.
            raise ht.fail(name, name, f"a host name of at most {MAX_HOST_NAME} characters")
        hosts.append(parse_host(norm, ht.table(name)))
    ht.done()
    host_names = {h.name for h in hosts}
    if len(host_names) != len(hosts):
        raise t.fail("hosts", sorted(h.name for h in hosts), "each host name once")
    hour = t.duration("hour", HOUR, positive=True)
    assert hour is not None
    if hour < MIN_HOUR:
        raise t.fail(
            "hour", t.raw("hour"), f"an hour that lasts at least {MIN_HOUR * 1000:g} ms of real time"
        )
    sender_domain = None
    extra: list[Record] = []
    if t.has("sender_domain"):
        sender_domain = check_name(t, "sender_domain", t.string("sender_domain"), zone)
        mx = f"mx.{sender_domain}"
        if len(mx) > MAX_HOST_NAME:
            raise t.fail(
                "sender_domain", sender_domain, f"a domain of at most {MAX_HOST_NAME - 3} characters"
            )
        if sender_domain == zone:
            raise t.fail(
                "sender_domain", sender_domain, f"a domain below the zone {zone!r}, not the zone itself"
            )
        inside = sorted(h for h in host_names if h != mx and in_zone(h, sender_domain))
        if inside:
            # What arrives at the sender's domain is its bounces: no other host may live there.
            raise t.fail(
                "sender_domain",
                sender_domain,
                f"a domain that holds no host of the world but mx.{sender_domain} "
                f"(it holds {', '.join(inside)})",
            )
        if mx not in host_names:
            hosts.append(HostSpec(name=mx))
            host_names.add(mx)
        extra.append(Record(name=sender_domain, type="MX", value=mx))
    records = tuple(parse_record(r, zone, host_names) for r in t.tables("records"))
    if sender_domain is not None:
        if any(r.name == sender_domain and r.type in ("MX", "CNAME") for r in records):
            raise t.fail(
                "sender_domain",
                sender_domain,
                "a domain whose MX the world makes (leave out its MX and CNAME records)",
            )
        records += tuple(extra)
    dnssec = parse_dnssec(t, zone, host_names) if t.has("dnssec") else None
    policies = parse_mta_sts(t, zone, host_names, records)
    reports = parse_tls_rpt(t, zone, host_names, records, sender_domain)
    taken = {p.host for p in policies}
    for r in reports:
        for u in r.rua:
            if u.startswith("https://") and rua_https_host(u) in taken:
                raise t.table("tls_rpt").fail(r.domain, u, "an https host that is not an MTA-STS policy host")
    for owner, txt in [
        *((f"_mta-sts.{p.domain}", p.txt) for p in policies),
        *((f"_smtp._tls.{r.domain}", r.txt) for r in reports),
    ]:
        if any(x.name == owner and x.type in ("TXT", "CNAME") for x in records):
            raise t.fail("records", owner, f"no TXT or CNAME record at {owner}: the world makes it")
        records += (Record(name=owner, type="TXT", value=txt),)
    fault_tables = t.tables("dns_faults")
    faults = tuple(parse_dns_fault(f, zone) for f in fault_tables)
    for i, where, value, expected in dns_contradictions(faults):
        raise fault_tables[i].fail(where, value, expected)
    for ft, f in zip(fault_tables, faults, strict=True):
        if f.fault in DNSSEC_FAULTS:
            if dnssec is None:
                raise ft.fail("fault", f.fault, "a DNSSEC fault only in a signed world ([world.dnssec])")
            if f.fault == "missing_ds" and f.name not in dnssec.zones:
                raise ft.fail(
                    "name", f.name, "a signed sub-zone listed in dnssec.zones (the DS of which is missing)"
                )
    t.done(
        ("zone", "hosts", "records", "dns_faults", "hour", "sender_domain", "dnssec", "mta_sts", "tls_rpt")
    )
    crl = f"crl.{zone}"
    revoked = any(h.kind == "smtp" and h.smtp.cert == "revoked" for h in hosts) or any(
        p.cert == "revoked" for p in policies
    )  # as WorldSpec.crl_host says
    if revoked and crl in host_names:
        raise t.fail("hosts", crl, f"no host named {crl}: a revoked certificate's CRL is served there")
    if revoked and any(u.startswith("https://") and rua_https_host(u) == crl for r in reports for u in r.rua):
        raise t.fail("tls_rpt", crl, f"a report host other than {crl}: the CRL is served there")
    return WorldSpec(
        zone=zone,
        records=records,
        hosts=tuple(hosts),
        dns_faults=faults,
        hour=hour,
        sender_domain=sender_domain,
        dnssec=dnssec,
        mta_sts=policies,
        tls_rpt=reports,
    )


def rua_https_host(uri: str) -> str:
    """The host name of an ``https://HOST/PATH`` reporting address."""
    return uri[len("https://") :].split("/", 1)[0].lower()


def parse_dnssec(t: Table, zone: str, host_names: set[str]) -> Dnssec:
    dt = t.table("dnssec")
    zones = [check_name(dt, "zones", z, zone) for z in dt.string_list("zones")]
    dt.done(("zones",))
    for z in zones:
        if z == zone:
            raise dt.fail("zones", z, f"a sub-domain of {zone!r} (the zone itself is always signed)")
        if zones.count(z) > 1:
            raise dt.fail("zones", z, "each sub-zone once")
        inner = [o for o in zones if o != z and in_zone(o, z)]
        if inner:
            raise dt.fail("zones", inner[0], f"sub-zones that do not nest ({inner[0]} is inside {z})")
        if z in host_names:
            raise dt.fail("zones", z, "a domain, not the name of a host")
    return Dnssec(zones=tuple(zones))


_POLICY_ID: Final = re.compile(r"[A-Za-z0-9]{1,32}")
_MX_PATTERN_RULE: Final = "MX host names or patterns like *.contoso.test (RFC 8461 4.1)"


def parse_mta_sts(
    t: Table, zone: str, host_names: set[str], records: tuple[Record, ...]
) -> tuple[MtaSts, ...]:
    out: list[MtaSts] = []
    st = t.table("mta_sts")
    for raw_domain in list(st.data):
        domain = check_name(st, raw_domain, raw_domain, zone)
        pt = st.table(raw_domain)
        mode = pt.choice("mode", ("enforce", "testing", "none"), "enforce")
        mx = [normalize_name(m) for m in pt.string_list("mx")]
        for m in mx:
            bare = m[2:] if m.startswith("*.") else m
            if not name_ok(bare):
                raise pt.fail("mx", m, _MX_PATTERN_RULE)
        if not pt.has("mx"):
            mx = [r.value for r in records if r.name == domain and r.type == "MX" and r.value != "."]
            if not mx and mode != "none":
                raise pt.fail("mx", None, f"{_MX_PATTERN_RULE}: {domain} has no MX record to take them from")
        max_age = pt.integer("max_age", 86400, lo=0, hi=31557600)
        policy_id = pt.string("id", "20261201T000000")
        if not _POLICY_ID.fullmatch(policy_id):
            raise pt.fail("id", policy_id, "1 to 32 letters and digits (RFC 8461 3.1)")
        fault = pt.choice("fault", ("unreachable", "missing", "malformed"), "") or None
        cert = pt.choice("cert", values("cert"), "valid")
        pt.done(("mode", "mx", "max_age", "id", "fault", "cert"))
        if fault == "unreachable" and cert != "valid":
            raise pt.fail("cert", cert, "no certificate fault on an unreachable policy host")
        policy = MtaSts(
            domain=domain,
            mode=mode,  # type: ignore[arg-type]
            mx=tuple(mx),
            max_age=max_age,
            policy_id=policy_id,
            fault=fault,  # type: ignore[arg-type]
            cert=cert,  # type: ignore[arg-type]
        )
        if policy.host in host_names:
            raise st.fail(
                raw_domain, raw_domain, f"a domain whose policy host {policy.host} is not a host of the world"
            )
        out.append(policy)
    return tuple(out)


def parse_tls_rpt(
    t: Table, zone: str, host_names: set[str], records: tuple[Record, ...], sender_domain: str | None
) -> tuple[TlsRpt, ...]:
    out: list[TlsRpt] = []
    rt = t.table("tls_rpt")
    mx_domains = {r.name for r in records if r.type == "MX" and r.value != "."}
    for raw_domain in list(rt.data):
        domain = check_name(rt, raw_domain, raw_domain, zone)
        dt = rt.table(raw_domain)
        rua = dt.string_list("rua")
        dt.done(("rua",))
        if not rua:
            raise dt.fail("rua", None, 'one or more "mailto:ADDRESS" or "https://HOST/PATH" (required)')
        for u in rua:
            if u.startswith("mailto:"):
                local, _, at = u[len("mailto:") :].partition("@")
                at = normalize_name(at)
                if not local_part_ok(local) or not name_ok(at) or not in_zone(at, zone):
                    raise dt.fail("rua", u, "mailto:local@domain with a domain of the world")
                if at not in mx_domains:
                    raise dt.fail("rua", u, f"a mailbox at a domain with an MX record ({at} has none)")
            elif u.startswith("https://"):
                host = rua_https_host(u)
                path = u[len("https://") + len(host) :] or "/"
                if (
                    not name_ok(host)
                    or not in_zone(host, zone)
                    or not re.fullmatch(r"/[A-Za-z0-9._~/-]*", path)
                ):
                    raise dt.fail("rua", u, "https://HOST/PATH with a host name of the world")
                if host in host_names:
                    raise dt.fail("rua", u, "an https host that is not an SMTP host of the world")
            else:
                raise dt.fail("rua", u, '"mailto:ADDRESS" or "https://HOST/PATH" (RFC 8460 3)')
        out.append(TlsRpt(domain=domain, rua=tuple(rua)))
    return tuple(out)


AUTH_MECHANISMS: Final = ("PLAIN", "LOGIN")


def _parse_auth(t: Table) -> Auth:
    """The ``auth`` table of a host, checked key by key (SpecError naming the key otherwise)."""
    user = t.string("user", required=True)
    password = t.string("password", required=True)
    for name, value in (("user", user), ("password", password)):
        if not all(" " < ch <= "~" for ch in value) or len(value) > 256:
            raise t.fail(name, value, "printable ASCII without spaces, at most 256 characters")
    mechanisms = tuple(m.upper() for m in t.string_list("mechanisms")) or AUTH_MECHANISMS
    for m in mechanisms:
        if m not in AUTH_MECHANISMS:
            raise t.fail("mechanisms", m, "mechanism names among " + ", ".join(AUTH_MECHANISMS))
    if len(set(mechanisms)) != len(mechanisms):
        raise t.fail("mechanisms", list(mechanisms), "each mechanism once")
    before_tls = t.boolean("before_tls", False)
    required = AUTH_REQUIRED
    raw = t.raw("required") if t.has("required") else True
    if raw is False:
        required_reply = None
    elif raw is True:
        required_reply = required
    elif isinstance(raw, dict):
        reply = parse_reply(Table(raw, t.where, t.key("required")))
        if not 400 <= reply.code < 600 or reply.close is not None:
            raise t.table("required").fail("code", reply.code, "a 4xx or 5xx code (it refuses the MAIL)")
        required_reply = reply
    else:
        raise t.fail("required", raw, "true, false, or a reply {code, enhanced, text}")
    fault = t.choice("fault", values("auth.fault")) if t.has("fault") else None
    send_as = tuple(t.string_list("send_as"))
    for address in send_as:
        if address.count("@") != 1 or not all(" " < ch <= "~" for ch in address):
            raise t.fail("send_as", address, "addresses like alerts@fabrikam.test")
    t.done(("user", "password", "mechanisms", "before_tls", "required", "fault", "send_as"))
    return Auth(
        user=user,
        password=password,
        mechanisms=mechanisms,
        before_tls=before_tls,
        required=required_reply,
        fault=fault or None,  # type: ignore[arg-type]
        send_as=send_as,
    )
