"""What the fakes saw, held against what the client reported: a right code must also have the right reason.

A code alone can be right by accident: a client that connects by IP address
rejects every certificate ("IP address mismatch") and so reports 4.7.320 on
every certificate scenario. :func:`judge` looks at what a world recorded
(DNS queries, SMTP transcripts, TLS handshakes and alerts, accepted
messages) and returns a :class:`Testimony`: did the client reach the step
where the scenario's fault sits, and did the fakes see evidence of another
reason for its failure?

Each piece of :class:`Evidence` is either

- **strict**: every correct client leaves it (a DNS query for the failing
  name, a session that got as far as the cut, a TLS ClientHello); missing
  strict evidence fails the verdict; or
- **best evidence**: what some correct clients leave and others do not (the
  server name it asked for, SNI; the alert it sent when it refused the
  certificate; a DNS lookup before a refused connection). Its absence is
  only noted; it fails the verdict only when what was seen contradicts the
  scenario.

Alerts, measured against these fakes (see the README's pitfalls): OpenSSL
clients (Python ``ssl``, ``openssl s_client``, curl) send
``certificate_expired`` for an expired certificate, ``unknown_ca`` for an
untrusted, self-signed or incomplete chain, and ``bad_certificate`` for a
certificate not yet valid and for a host name or IP address mismatch, ``certificate_revoked``
for a revoked one (when they load the CA's CRL). GnuTLS
clients (gnutls-cli, msmtp) and Go send ``bad_certificate`` for every
failure, Java ``certificate_unknown`` for most; rustls sends
``certificate_expired`` for a certificate not yet valid (RFC 8446: "expired
or not currently valid"). TLS 1.3 encrypts the alert, but the server still
decrypts it: the fakes see the reason whichever version was used.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final

from .spec import DnsFault, HostSpec, SmtpPlan, WorldSpec, normalize_name
from .transcript import Message, Transcript

if TYPE_CHECKING:
    from .catalogue import Scenario
    from .dns import DnsQuery
    from .world import World

# Alerts a client sends when it refuses the certificate for this fault (see the module text).
ALERTS_FOR_FAULT: Final[dict[str, frozenset[str]]] = {
    "expired": frozenset({"certificate_expired"}),
    "not_yet_valid": frozenset({"bad_certificate", "certificate_expired"}),
    "wrong_host": frozenset({"bad_certificate"}),
    "untrusted_ca": frozenset({"unknown_ca"}),
    "self_signed": frozenset({"unknown_ca"}),
    "missing_intermediate": frozenset({"unknown_ca"}),
    "revoked": frozenset({"certificate_revoked"}),
}
# One alert for every certificate failure: GnuTLS and Go (bad_certificate), Java (certificate_unknown).
GENERIC_ALERTS: Final = frozenset({"bad_certificate", "certificate_unknown"})
# Alerts that name a precise reason; each contradicts a fault it does not belong to.
SPECIFIC_ALERTS: Final = frozenset({"certificate_expired", "unknown_ca", "certificate_revoked"})
# Alerts about the protocol, sent before any certificate is judged.
PROTOCOL_ALERTS: Final = frozenset({"protocol_version", "insufficient_security"})
# Commands that only a client which accepted the certificate sends inside TLS.
TRANSACTION_COMMANDS: Final = ("MAIL", "RCPT", "DATA")
ADDRESS_TYPES: Final = frozenset({"A", "AAAA"})
FAILED_RCODES: Final = frozenset({"NXDOMAIN", "SERVFAIL", "REFUSED", "DROPPED", "RESET"})
SETTLE_SECONDS: Final = 1.0  # how long to wait for the fakes to read a client's last words

_ALERT = re.compile(r"ALERT_([A-Z_]+)")


@dataclass(frozen=True)
class Evidence:
    """One thing the fakes saw (or did not see), and what it says about the client's report.

    ``ok`` is True when it fits the scenario, False when it contradicts it
    (the verdict fails), None when there was nothing to see.
    """

    check: str
    strict: bool
    ok: bool | None
    detail: str

    def line(self) -> str:
        mark = {True: "ok", False: "WRONG", None: "--"}[self.ok]
        kind = "strict" if self.strict else "best evidence"
        return f"[{mark}] {self.check} ({kind}): {self.detail}"


@dataclass(frozen=True)
class Testimony:
    """Everything the fakes can say about one run of one scenario."""

    __test__: ClassVar[bool] = False  # not a test class, whatever pytest guesses from the name
    scenario: str
    evidence: tuple[Evidence, ...]

    @property
    def ok(self) -> bool:
        """False when any evidence contradicts the scenario (or strict evidence is missing)."""
        return all(e.ok is not False for e in self.evidence)

    @property
    def against(self) -> list[Evidence]:
        return [e for e in self.evidence if e.ok is False]

    def reason(self) -> str:
        """One paragraph: why the verdict fails (empty when it does not)."""
        return " ".join(e.detail for e in self.against)

    def lines(self) -> list[str]:
        return [e.line() for e in self.evidence]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [{"check": e.check, "strict": e.strict, "ok": e.ok, "detail": e.detail} for e in self.evidence]


@dataclass(frozen=True)
class Records:
    """What a world recorded during one run: the witness's only input."""

    sessions: Sequence[Transcript]
    messages: Sequence[Message]
    dns_queries: Sequence[DnsQuery]
    web_requests: Sequence[tuple[str, str]] = ()  # (host, path) of each HTTP(S) request the world answered

    @classmethod
    def of(cls, world: World) -> Records:
        """The world's records of the client's delivery: what reached the sender domain's own MX
        (the bounce a queue sends back) and the lookups of that domain are not part of it."""
        mx, domain = world.sender_mx, world.spec.sender_domain
        web = [(name, r.path) for name, server in world.web.items() for r in server.requests]
        if mx is None or domain is None:
            return cls(world.sessions, world.messages, world.dns_queries, web)

        def theirs(name: str) -> bool:
            name = name.rstrip(".").lower()
            return name == domain or name.endswith("." + domain)

        return cls(
            [t for t in world.sessions if t.host != mx],
            [m for m in world.messages if m.host != mx],
            [q for q in world.dns_queries if not theirs(q.name or "")],
            [(h, p) for h, p in web if not theirs(h)],
        )


def observe(scenario: Scenario, world: World, *, settle: float = SETTLE_SECONDS) -> Testimony:
    """Judge what ``world`` recorded for ``scenario``, once its sessions have ended (bounded wait)."""
    # A client's TLS alert or close may still be in flight when its report is in the test's hands.
    world.wait_until(lambda: all(t.closed for t in world.sessions), settle)
    records = Records.of(world)
    if _first_attempt_only(scenario):
        records = _first_attempt(world, records)
    return judge(scenario, records)


def _first_attempt_only(scenario: Scenario) -> bool:
    """A queue scenario whose fault ends or changes with time: its code is the first attempt's."""
    queue = getattr(scenario, "queue", None)
    return queue is not None and (queue.outcome == "delivered" or scenario.world.timed)


def _first_attempt(world: World, records: Records) -> Records:
    """Only what the client's first delivery attempt left (a full-cycle client makes more)."""
    from .attempts import attempts_of

    seen = attempts_of(world)
    if not seen:
        return records
    first = seen[0]
    ids = {t.session_id for t in first.sessions}
    mine = {id(q) for q in first.lookups}
    return Records(
        [t for t in records.sessions if t.session_id in ids],
        [m for m in records.messages if m.session_id in ids],
        [q for q in records.dns_queries if id(q) in mine],
        records.web_requests,
    )


def judge(scenario: Scenario, records: Records) -> Testimony:
    """The testimony for a scenario, from what a world recorded while a client met it."""
    spec = scenario.world
    evidence: list[Evidence] = []
    # The faults a first attempt meets (world time 0): a DNS fault that starts later is not one.
    dns_faults = [f for f in spec.dns_faults if f.active(0.0)]
    policy = _tls_policy(scenario, records)
    if scenario.is_success:
        evidence.append(_delivered(records))
        evidence += policy
    elif policy:
        evidence.append(_not_delivered(records, scenario.target.rcpt_to))
        evidence += policy
    else:
        evidence.append(_not_delivered(records, scenario.target.rcpt_to))
        if dns_faults or _dead_mx_targets(spec):
            evidence += _dns(spec, dns_faults, records)
        else:
            for host in _faulty_hosts(spec):
                evidence += _host(scenario, host, records)
    evidence += _lock_step(records)
    if scenario.is_success and any(h.kind == "smtp" and h.smtp.max_recipients for h in spec.hosts):
        evidence.append(_every_recipient_once(scenario, records))
    return Testimony(str(scenario.id), tuple(evidence))


def _lock_step(records: Records) -> list[Evidence]:
    """A client that pipelined where the server did not offer PIPELINING (RFC 2920) is wrong,
    whatever it reported: the fakes refused that session with 554 5.5.0."""
    wrong = [t for t in records.sessions if t.out_of_step is not None]
    if not wrong:
        return []
    t = wrong[0]
    return [
        Evidence(
            "lock-step",
            True,
            False,
            f"the client sent {t.out_of_step!r} before the previous reply on {t.host} (session "
            f"#{t.session_id}), and PIPELINING was not offered: it was refused with 554 5.5.0.",
        )
    ]


def _every_recipient_once(scenario: Scenario, records: Records) -> Evidence:
    """Under a recipient limit (452 after N), each recipient is delivered once: the ones refused
    with 452 go in another transaction (RFC 5321 4.5.3.1.10), none twice, none dropped."""
    got = [r.lower() for m in records.messages if m.replied for r in m.rcpt_tos]
    wanted = [r.lower() for r in scenario.target.rcpt_to]
    missing = [r for r in wanted if r not in got]
    twice = sorted({r for r in got if got.count(r) > 1})
    if not missing and not twice:
        return Evidence(
            "every recipient once", True, True, f"the fakes took each of {len(wanted)} recipient(s) once."
        )
    said = (f"never delivered to {', '.join(missing)}" if missing else "") + (
        ("; " if missing and twice else "") + (f"delivered twice to {', '.join(twice)}" if twice else "")
    )
    return Evidence("every recipient once", True, False, f"under the recipient limit the client {said}.")


# -- TLS policy: DANE and MTA-STS ----------------------------------------------


def _tls_policy(scenario: Scenario, records: Records) -> list[Evidence]:
    """What a client that applies DANE or MTA-STS must have done to meet this scenario's policy."""
    spec, target = scenario.world, scenario.target
    if target.smart_host is not None:
        return []
    domain = normalize_name(target.mail_domain)
    mxs = [r.value for r in spec.records if r.type == "MX" and r.name == domain and r.value != "."]
    dane_hosts = [h for h in spec.hosts if h.tlsa is not None and h.name in mxs]
    if spec.dnssec is not None and dane_hosts:
        return _dane(scenario, dane_hosts[0], records)
    policy = spec.mta_sts_for(domain)
    if policy is not None:
        mx_hosts = [h for h in spec.hosts if h.name in mxs and h.kind == "smtp"]
        return _mta_sts(scenario, policy.host, domain, mx_hosts[0] if mx_hosts else None, records)
    return []


def _asked(records: Records, name: str, qtype: str) -> bool:
    return any(normalize_name(q.name or "") == name and q.qtype == qtype for q in records.dns_queries)


def _policy_lookup(
    check: str,
    scenario: Scenario,
    records: Records,
    qtype: str,
    named: Callable[[str], bool],
    shown: str,
    policy: str,
    what: str,
) -> Evidence:
    """Whether the client looked up the record that says a policy applies (strict): a ``qtype``
    query whose name ``named`` accepts (``shown`` in words)."""
    asked = [q for q in records.dns_queries if q.qtype == qtype and named(normalize_name(q.name or ""))]
    if asked:
        return Evidence(check, True, True, f"the client asked for {asked[0].name} {qtype}.")
    return Evidence(
        check,
        True,
        False,
        f"the client never asked for {shown} {qtype}: it does not apply {policy}, so its "
        + ("delivery" if scenario.is_success else "report")
        + f" says nothing about this scenario's {what}.",
    )


def _policy_session(scenario: Scenario, host: HostSpec, records: Records, checked: str) -> list[Evidence]:
    """What a failure under a policy needs of the session with ``host``: for STARTTLS missing the
    session, for a certificate or TLSA fault the handshake (where ``checked`` is met)."""
    result = scenario.tls_report.result if scenario.tls_report is not None else None
    if result == "starttls-not-supported":
        return [_session_opened(host, [t for t in records.sessions if t.host == host.name], "the session")]
    if result in ("certificate-expired", "certificate-host-mismatch", "tlsa-invalid"):
        return [_handshake(host, records, checked)]
    return []


def _handshake(host: HostSpec, records: Records, checked: str) -> Evidence:
    """Whether the client opened a TLS handshake with ``host``, where it meets what is ``checked``."""
    sessions = [t for t in records.sessions if t.host == host.name]
    if any(_handshake_opened(t, records.messages) for t in sessions):
        return Evidence("TLS handshake", True, True, f"the client opened the TLS handshake with {host.name}.")
    return Evidence(
        "TLS handshake",
        True,
        False,
        f"the client never opened a TLS handshake with {host.name}, so it never saw the certificate "
        f"{checked}.",
    )


def _dane(scenario: Scenario, host: HostSpec, records: Records) -> list[Evidence]:
    spec = scenario.world
    insecure = [
        f.name
        for f in spec.dns_faults
        if f.fault == "missing_ds" and (host.name == f.name or host.name.endswith("." + f.name))
    ]
    if insecure:
        # An insecure zone: a DANE client that trusts its resolver sees no AD on the MX answer and
        # need not ask for TLSA (Postfix does not); one that validates finds the DS absent. What
        # shows it applies DNSSEC is a lookup in the domain with DO or AD set.
        domain = normalize_name(scenario.target.mail_domain)
        aware = [
            q
            for q in records.dns_queries
            if (normalize_name(q.name or "") + ".").endswith(domain + ".") and {"DO", "AD"} & set(q.flags)
        ]
        if aware:
            q = aware[0]
            return [
                Evidence(
                    "DNSSEC lookup",
                    True,
                    True,
                    f"the client asked for {q.name} {q.qtype} with DNSSEC (DO or AD).",
                )
            ]
        return [
            Evidence(
                "DNSSEC lookup",
                True,
                False,
                f"the client asked nothing in {domain} with DO or AD set: it does not apply DNSSEC, so its "
                "delivery says nothing about an insecure zone's TLSA records.",
            )
        ]
    # RFC 7672 2.2.3: _PORT._tcp for the port the client connects to (25, or the world's own).
    port_name = re.compile(r"_\d+\._tcp\." + re.escape(host.name))
    out = [
        _policy_lookup(
            "TLSA lookup",
            scenario,
            records,
            "TLSA",
            lambda name: port_name.fullmatch(name) is not None,
            f"_25._tcp.{host.name} (or its world port's name)",
            "DANE",
            "TLSA records",
        )
    ]
    if scenario.is_success:
        return out  # a bogus TLSA answer (dnssec-invalid): a DANE client connects to no one
    return out + _policy_session(scenario, host, records, "the TLSA records are checked against")


def _mta_sts(
    scenario: Scenario, policy_host: str, domain: str, mx: HostSpec | None, records: Records
) -> list[Evidence]:
    txt = f"_mta-sts.{domain}"
    out = [_policy_lookup("MTA-STS record", scenario, records, "TXT", txt.__eq__, txt, "MTA-STS", "policy")]
    fetched = any(h == policy_host and p == "/.well-known/mta-sts.txt" for h, p in records.web_requests)
    asked_host = _asked(records, policy_host, "A") or _asked(records, policy_host, "AAAA")
    if fetched or asked_host:
        how = "fetched the policy" if fetched else f"looked up {policy_host} to fetch the policy"
        out.append(Evidence("policy fetch", False, True, f"the client {how}."))
    elif out[0].ok:
        out.append(
            Evidence(
                "policy fetch",
                False,
                None,
                f"no request for https://{policy_host}/.well-known/mta-sts.txt reached the world (a "
                "client may use a policy it cached before).",
            )
        )
    if scenario.is_success or mx is None:
        return out
    return out + _policy_session(scenario, mx, records, "the policy requires to be valid")


# -- success and the generic contradiction ------------------------------------


def _delivered(records: Records) -> Evidence:
    kept = [m for m in records.messages if m.replied]
    if kept:
        where = ", ".join(sorted({m.host for m in kept}))
        return Evidence("delivered", True, True, f"the fakes accepted {len(kept)} message(s) on {where}.")
    return Evidence(
        "delivered",
        True,
        False,
        "the client reported a delivery, but the fakes accepted no message (no 250 to a final dot).",
    )


def _not_delivered(records: Records, rcpt_to: Sequence[str] = ()) -> Evidence:
    # Only the scenario's message counts: a client's own bounce to the sender, relayed through
    # the same smart host (Postfix without a sender domain in the world), is not a delivery.
    wanted = {r.lower() for r in rcpt_to}
    kept = [
        m for m in records.messages if m.replied and (not wanted or wanted & {r.lower() for r in m.rcpt_tos})
    ]
    if kept:
        return Evidence(
            "not delivered",
            True,
            False,
            f"the fakes accepted the message on {kept[0].host} (session #{kept[0].session_id}) and "
            "answered 250: the client's failure, if any, came from somewhere else.",
        )
    return Evidence("not delivered", True, True, "no message was accepted.")


# -- DNS ------------------------------------------------------------------------


def _dead_mx_targets(spec: WorldSpec) -> list[str]:
    """MX targets that lead nowhere: no host with an address, no A/AAAA record."""
    with_address = {h.name for h in spec.hosts if h.a_record}
    with_address |= {r.name for r in spec.records if r.type in ADDRESS_TYPES}
    return [
        r.value for r in spec.records if r.type == "MX" and r.value != "." and r.value not in with_address
    ]


def _dns(spec: WorldSpec, dns_faults: list[DnsFault], records: Records) -> list[Evidence]:
    failing: list[tuple[str, Callable[[str], bool], str]] = []
    for f in dns_faults:
        failing.append((f.name, f.applies_to, f.fault))
    for name in _dead_mx_targets(spec):
        failing.append((name, ADDRESS_TYPES.__contains__, "no address"))
    asked = [q for q in records.dns_queries if q.rcode != "MALFORMED"]
    hits = [
        q
        for q in asked
        if any(normalize_name(q.name) == name and applies(q.qtype) for name, applies, _ in failing)
    ]
    names = ", ".join(sorted({name for name, _, _ in failing}))
    out: list[Evidence] = []
    if hits:
        seen = "; ".join(f"{q.transport} {q.qtype} {q.name} -> {q.rcode}" for q in hits[:4])
        out.append(
            Evidence("dns query", True, True, f"the client asked the world's DNS for {names} ({seen}).")
        )
    else:
        others = ", ".join(sorted({f"{q.qtype} {q.name}" for q in asked})) or "nothing at all"
        out.append(
            Evidence(
                "dns query",
                True,
                False,
                f"the client never asked the world's DNS for {names} (it asked: {others}), so the "
                "DNS failure it reported is not this scenario's: is it using another resolver?",
            )
        )
    for f in dns_faults:
        if f.fault == "truncate" and f.tcp != "answer":
            over_tcp = [q for q in hits if q.transport == "tcp" and normalize_name(q.name) == f.name]
            out.append(
                Evidence(
                    "dns over tcp",
                    False,
                    True if over_tcp else None,
                    f"the client asked again over TCP after the truncated answer for {f.name}."
                    if over_tcp
                    else f"the client did not ask again over TCP after the truncated answer for {f.name} "
                    "(a resolver that ignores truncation fails too, but not at this scenario's step).",
                )
            )
    if records.sessions:
        t = records.sessions[0]
        out.append(
            Evidence(
                "no connection",
                True,
                False,
                f"the client opened an SMTP session to {t.host} (#{t.session_id}) although this scenario's "
                "DNS failure leaves it no address: its failure came later, for another reason.",
            )
        )
    return out


# -- hosts: which one is faulty, and at which step -----------------------------


def _faulty_hosts(spec: WorldSpec) -> list[HostSpec]:
    # A host is healthy when its plan is the baseline its schedule would fall back to.
    # A host that asks for authentication counts too: its refusals (530 to an unauthenticated
    # MAIL, 550 5.7.60 to a sender the account may not use) are its plan, not a fault of it.
    return [
        h
        for h in spec.hosts
        if h.kind != "smtp" or h.smtp != h.smtp.healthy() or h.schedule is not None or h.smtp.auth is not None
    ]


def _host(scenario: Scenario, host: HostSpec, records: Records) -> list[Evidence]:
    sessions = [t for t in records.sessions if t.host == host.name]
    if host.kind in ("refuse", "blackhole"):
        return _connect(scenario, host, records)
    if host.kind in ("silent", "close_on_accept"):
        return [_session_opened(host, sessions, "the connection")]
    plan = host.smtp
    if plan.cert != "valid":
        return _certificate(host, sessions)
    # A slow scenario's client waits out its timeout: half of it, at least, is a wait (the other half
    # is room for the two clocks); a client that leaves at once is not one.
    timeout = scenario.target.timeout
    step = _first_step(plan, timeout / 2 if timeout else 0.0, credentials=scenario.target.credentials)
    if step is None:
        return [_session_opened(host, sessions, "the session")]
    what, reached = step
    hit = [t for t in sessions if reached(t, records.messages)]
    if hit:
        return [
            Evidence(
                "reached", True, True, f"the client {what} on {host.name} (session #{hit[0].session_id})."
            )
        ]
    if not sessions:
        detail = f"the client never opened a session on {host.name}, so it cannot have {what}."
    else:
        t = sessions[-1]
        said = "; ".join(t.client_lines()[-3:]) or "nothing"
        detail = (
            f"the client never {what} on {host.name} (its last words: {said}; session ended by "
            f"{t.ended_by or 'nobody yet'}): it stopped before this scenario's fault."
        )
    return [Evidence("reached", True, False, detail)]


def _session_opened(host: HostSpec, sessions: Sequence[Transcript], what: str) -> Evidence:
    if sessions:
        return Evidence("reached", True, True, f"the client opened {what} to {host.name}.")
    return Evidence("reached", True, False, f"the client never connected to {host.name}.")


Reached = Callable[[Transcript, Sequence[Message]], bool]


def _sent(*verbs: str) -> Reached:
    def test(t: Transcript, messages: Sequence[Message]) -> bool:
        return any(line.split(" ", 1)[0].upper() in verbs for line in t.client_lines())

    return test


_SAID: Final = {"DATA_END": "the final dot"}


def _waited(point: str, min_wait: float) -> Reached:
    def test(t: Transcript, messages: Sequence[Message]) -> bool:
        return t.waited_at == point and (t.waited_for or 0.0) >= min_wait

    return test


def _opened(t: Transcript, messages: Sequence[Message]) -> bool:
    return True


def _content_started(t: Transcript, messages: Sequence[Message]) -> bool:
    return t.content_bytes is not None


def _content_ended(t: Transcript, messages: Sequence[Message]) -> bool:
    return t.content_complete or any(m.session_id == t.session_id for m in messages)


def _handshake_opened(t: Transcript, messages: Sequence[Message]) -> bool:
    return t.tls_attempted or t.tls_error is not None or t.tls_version is not None


def _tls_done(t: Transcript, messages: Sequence[Message]) -> bool:
    return t.tls_version is not None


def _ehlo_inside_tls(t: Transcript, messages: Sequence[Message]) -> bool:
    return any(line.split(" ", 1)[0].upper() in ("EHLO", "HELO") for line in _lines_after_tls(t))


def _first_step(
    plan: SmtpPlan, min_wait: float = 0.0, *, credentials: bool = True
) -> tuple[str, Reached] | None:
    """The first point of the dialogue where the plan fails the client, and how to see it was reached.

    ``credentials``: whether the client was given the host's account (its ``auth`` key)."""
    steps: list[tuple[float, str, Reached]] = []
    a = plan.auth
    if a is not None:
        # Where authentication fails the client: the EHLO that leaves AUTH out, the AUTH command,
        # the MAIL of a client without an account, the final dot of a sender the account may not use.
        if a.fault == "not_offered":
            if plan.tls == "none":
                steps.append((2, "sent EHLO (and so saw no AUTH offered)", _sent("EHLO", "HELO")))
            else:
                steps.append((5, "sent EHLO inside TLS (and so saw no AUTH offered)", _ehlo_inside_tls))
        elif credentials and a.fault is not None:
            steps.append((5.5, "sent AUTH (and was refused)", _sent("AUTH")))
        elif not credentials and a.required is not None:
            steps.append((6, "sent MAIL FROM without an account (and was refused)", _sent("MAIL")))
        elif credentials and a.send_as:
            steps.append((9, "sent the whole message and its final dot", _content_ended))
    if plan.greeting is not None and plan.greeting.code >= 400:
        steps.append((0, "opened a session (and got the greeting)", _opened))
    if plan.tls == "none":
        steps.append((2, "sent EHLO (and so saw no STARTTLS offered)", _sent("EHLO", "HELO")))
    if plan.greylist is not None:
        steps.append((7, "sent RCPT TO (and was greylisted)", _sent("RCPT")))
    rl = plan.rate_limit
    if rl is not None and rl.used >= rl.max:  # the window is full from the start
        if rl.per == "connections":
            steps.append((0, "opened a session (and met the connection rate limit)", _opened))
        else:
            steps.append((6, "sent MAIL FROM (and met the message rate limit)", _sent("MAIL")))
    if plan.max_size is not None:
        # SIZE is in the EHLO reply: Postfix stops there (its own 5.3.4), others send MAIL or DATA.
        steps.append((2, "sent EHLO (and so saw the SIZE limit)", _sent("EHLO")))
    if plan.max_recipients is not None:
        steps.append((7, "sent RCPT TO (and met the recipient limit)", _sent("RCPT")))
    if not plan.advertises("SMTPUTF8"):
        # A correct client gives up after the EHLO reply for a UTF-8 address; a wrong one gets 553 5.6.7.
        steps.append((2, "sent EHLO (and so saw no SMTPUTF8 offered)", _sent("EHLO")))
    if plan.tls == "starttls_refused":
        steps.append((3, "sent STARTTLS", _sent("STARTTLS")))
    if plan.tls_offer != "current":  # a server that refuses the handshake
        steps.append((4, "opened the TLS handshake", _handshake_opened))
    points: dict[str, tuple[int, str, Reached]] = {
        "before_greeting": (0, "opened a session", _opened),
        "after_greeting": (1, "got the greeting", _opened),
        "after_ehlo": (2, "sent EHLO", _sent("EHLO", "HELO")),
        "after_starttls": (5, "completed the TLS handshake", _tls_done),
        "after_mail": (6, "sent MAIL FROM", _sent("MAIL")),
        "after_rcpt": (7, "sent RCPT TO", _sent("RCPT")),
        "in_data": (8, "sent DATA and started the message content", _content_started),
        "after_final_dot": (10, "sent the whole message and its final dot", _content_ended),
    }
    if plan.close_at is not None:
        steps.append(points[plan.close_at.point])
    order = {"EHLO": 2, "HELO": 2, "STARTTLS": 3, "MAIL": 6, "RCPT": 7, "DATA": 8, "DATA_END": 9}
    # A slow server: the client must have waited where the server holds back (a delayed reply, a
    # stall), at least ``min_wait`` seconds, and left from there (Transcript.waited_at, waited_for):
    # a client that reports a timeout without having reached the wait, or that left as it began,
    # or after the server answered, did not meet this fault.
    for point, ms in plan.delays_ms.items():
        if ms and point != "*":
            where = "the greeting" if point == "GREETING" else f"the reply to {_SAID.get(point, point)}"
            what = f"waited {min_wait:g} s or more for {where} (held back {ms} ms)"
            steps.append((order.get(point, 0), what, _waited(point, min_wait)))
    if plan.stall_in_data is not None:
        what = f"sent message content and waited {min_wait:g} s or more while the server stopped reading"
        steps.append((8, what, _waited("CONTENT", min_wait)))
    for command, reply in plan.replies.items():
        if (reply.code < 400 and reply.close is None) or command not in order:
            continue
        if command == "DATA_END":
            steps.append((9, "sent the whole message and its final dot", _content_ended))
        else:
            steps.append(
                (order[command], f"sent {command}", _sent(command, *(("HELO",) if command == "EHLO" else ())))
            )
    if not steps:
        return None
    _, what, reached = min(steps, key=lambda s: s[0])
    return what, reached


# -- TCP connect faults: the fakes see nothing ---------------------------------


def _connect(scenario: Scenario, host: HostSpec, records: Records) -> list[Evidence]:
    how = "refused" if host.kind == "refuse" else "dropped (timed out)"
    out = [
        Evidence(
            "connect",
            False,
            None,
            f"a connection {how} at {host.name} leaves nothing for the fakes to see.",
        )
    ]
    t = scenario.target
    lookups = [
        q for q in records.dns_queries if normalize_name(q.name) == host.name and q.qtype in ADDRESS_TYPES
    ]
    if t.smart_host and t.connect_by_ip:
        pass  # the connector is set by address: nothing to look up
    elif lookups:
        out.append(Evidence("dns lookup", False, True, f"the client looked up {host.name} first."))
    else:
        out.append(
            Evidence(
                "dns lookup",
                False,
                None,
                f"the client did not look up {host.name} in the world's DNS (fine if it was given "
                "the address).",
            )
        )
    elsewhere = [s for s in records.sessions if s.host != host.name]
    if elsewhere:
        s = elsewhere[0]
        out.append(
            Evidence(
                "no session",
                True,
                False,
                f"the client reached a working server, {s.host} (session #{s.session_id}), so a {how} "
                f"connection at {host.name} is not what ended its delivery.",
            )
        )
    return out


# -- certificates ---------------------------------------------------------------


def alert_of(tls_error: str | None) -> str | None:
    """The client's TLS alert in a server-side OpenSSL reason ('TLSV1_ALERT_UNKNOWN_CA' -> 'unknown_ca')."""
    if not tls_error:
        return None
    m = _ALERT.search(tls_error.upper())
    return m.group(1).lower() if m else None


def _certificate(host: HostSpec, sessions: Sequence[Transcript]) -> list[Evidence]:
    fault = host.smtp.cert
    tried = [t for t in sessions if _handshake_opened(t, ())]
    if not tried:
        where = "never connected" if not sessions else "never opened the TLS handshake (no ClientHello)"
        return [
            Evidence(
                "tls handshake",
                True,
                False,
                f"the client {where} on {host.name}, so it never saw the {fault.replace('_', '-')} "
                "certificate.",
            )
        ]
    t = tried[-1]
    out = [Evidence("tls handshake", True, True, f"the client opened the TLS handshake with {host.name}.")]
    sni_seen = t.tls_attempted  # the fake records the ClientHello's SNI together with this flag
    sni = normalize_name(t.sni) if t.sni else None
    if not sni_seen:
        out.append(Evidence("sni", False, None, "the fakes did not record the client's ClientHello."))
    elif sni is None:
        out.append(
            Evidence(
                "sni",
                False,
                None,
                f"the client asked for no server name (no SNI), where {host.name} was expected: a client "
                "connecting by IP address sends none, and so do some that connect by name (Postfix by "
                "default).",
            )
        )
    elif sni == host.name:
        out.append(Evidence("sni", False, True, f"the client asked for {host.name} (SNI)."))
    else:
        out.append(
            Evidence(
                "sni",
                False,
                False,
                f"the client asked for {sni} (SNI), not {host.name}: it checked the certificate against "
                "another name than this scenario's host.",
            )
        )
    out.append(_alert(fault, host.name, t, sni_seen and sni is None))
    out.append(_accepted(fault, t))
    return out


def _alert(fault: str, name: str, t: Transcript, no_sni: bool) -> Evidence:
    alert = alert_of(t.tls_error)
    fits = ALERTS_FOR_FAULT.get(fault, frozenset())
    shown = fault.replace("_", "-")
    if t.tls_error is None:
        return Evidence(
            "alert",
            False,
            None,
            "the client completed the handshake and sent no alert (a client that checks the certificate "
            "after the handshake, like Postfix, does this).",
        )
    if alert is None:
        return Evidence(
            "alert", False, None, f"the handshake ended without an alert from the client ({t.tls_error})."
        )
    if alert in fits:
        return Evidence("alert", False, True, f"the client's alert {alert} fits a {shown} certificate.")
    if alert in PROTOCOL_ALERTS:
        return Evidence(
            "alert",
            False,
            False,
            f"the client's TLS alert says {alert}: it refused the TLS version or ciphers, not the {shown} "
            "certificate.",
        )
    if alert in SPECIFIC_ALERTS:
        return Evidence(
            "alert",
            False,
            False,
            f"the client's TLS alert says {alert}, where the certificate is {shown} and otherwise valid "
            f"for {name}: it refused the handshake for another reason than this scenario's.",
        )
    if alert in GENERIC_ALERTS:
        if no_sni and fault != "wrong_host" and "bad_certificate" not in fits:
            return Evidence(
                "alert",
                False,
                False,
                f"the client's TLS alert says {alert}, where the certificate is {shown} and otherwise valid "
                f"for {name}, and it asked for no server name (no SNI): that is what a client sends when the "
                "certificate does not match the name or address it connected to (an OpenSSL client sends "
                f"{'/'.join(sorted(fits))} for a {shown} certificate). If its TLS library sends {alert} for "
                "every failure (GnuTLS, Go), make it send SNI and the fakes can tell.",
            )
        return Evidence(
            "alert",
            False,
            True,
            f"the client's alert {alert} is the one its TLS library sends for any certificate failure.",
        )
    return Evidence(
        "alert", False, None, f"the client's alert {alert} names no certificate fault the fakes know."
    )


def _accepted(fault: str, t: Transcript) -> Evidence:
    after = _lines_after_tls(t)
    went_on = [line for line in after if line.split(" ", 1)[0].upper() in TRANSACTION_COMMANDS]
    if went_on:
        return Evidence(
            "refused the certificate",
            True,
            False,
            f"the client completed the handshake on the {fault.replace('_', '-')} certificate and went on "
            f"with {went_on[0]!r}: it accepted the certificate.",
        )
    return Evidence(
        "refused the certificate", True, True, "the client did not go on with a mail transaction."
    )


def _lines_after_tls(t: Transcript) -> Iterable[str]:
    if t.tls_from is not None:
        yield from (line.text for line in t.lines[t.tls_from :] if line.direction == "C")
