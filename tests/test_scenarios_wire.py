"""Serve every catalogue scenario and probe it with an independent raw client.

The probe resolves through the world's DNS (dnspython), connects with
sockets, speaks SMTP line by line, verifies TLS with ``ssl``, and records
what the wire did. The test then checks that this wire behaviour is the one
the scenario's code stands for, and exactly the event the scenario's TOML
configures: the point of a cut and whether it is a FIN or a RST, how the
server ends the connection after a refusal, the alert of a TLS refusal, and
the certificate error by OpenSSL's own verification code and text.

Delivering to a domain's MX hosts, the probe applies the TLS policies a
careful sender applies, with clients of its own (``dane_probe``,
``sts_probe``), never mailfakes' client code: DANE (RFC 7672) when the MX,
address and TLSA answers validate here from the world's trust anchor, with
the TLSA records matched against the chain the server sends; else the
domain's MTA-STS policy (RFC 8461), fetched over HTTPS with the world's CA.
Its verdict, an RFC 8460 result type, must be the one the scenario's
``[tls_report]`` names. Its verifying client also checks the leaf against
the CA's CRL when the world publishes one.
"""

from __future__ import annotations

import base64
import datetime as dt
import socket
import ssl
import struct
import subprocess
from collections import Counter
from dataclasses import dataclass, field, replace

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from dane_probe import BioTLS, Lookup, Tlsa, Validator, authenticate, certificate_chain, load_trust_anchor
from mailfakes import World
from mailfakes import catalogue as scenarios
from mailfakes.faults import TOO_MANY_RECIPIENTS, SmtpPlan
from mailfakes.spec import DnsFault, HostSpec
from mailfakes.spec import Reply as ConfiguredReply
from prerequisites import require
from probe import Closed, RawSMTP, client_context, open_connection, resolve_a, resolve_mx, tcp_end
from sts_probe import WELL_KNOWN, Fetched, fetch_policy, mx_matches, sts_id, txt_records

CONNECT_TIMEOUT = 0.3
DNS_TIMEOUT = 0.3
REPEAT = 3  # each TLS-policy scenario is probed this many times on one world, and what arrives counted

# What a verifying OpenSSL client reports for each kind of bad certificate:
# the X509_V_ERR_* code (openssl/x509_vfy.h) and the start of its text
# (X509_verify_cert_error_string, as openssl-verify(1) prints it). CPython
# writes its own text for 62 ("Hostname mismatch, certificate is not valid
# for ..."), so texts are compared without case, by their start.
X509_V_ERR: dict[str, tuple[int, str]] = {
    "expired": (10, "certificate has expired"),  # X509_V_ERR_CERT_HAS_EXPIRED
    "not_yet_valid": (9, "certificate is not yet valid"),  # X509_V_ERR_CERT_NOT_YET_VALID
    "wrong_host": (62, "hostname mismatch"),  # X509_V_ERR_HOSTNAME_MISMATCH
    # Signed by a CA the client does not hold, and the server sends the leaf alone.
    "untrusted_ca": (20, "unable to get local issuer certificate"),  # ..._UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    "self_signed": (18, "self-signed certificate"),  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
    # The leaf's issuer is the intermediate the server leaves out.
    "missing_intermediate": (20, "unable to get local issuer certificate"),
    # On the CA's CRL, which the client loads (VERIFY_CRL_CHECK_LEAF).
    "revoked": (23, "certificate revoked"),  # X509_V_ERR_CERT_REVOKED
}

# A server with nothing in common with a current client sends this fatal
# alert (RFC 8446 6.2), which OpenSSL reports as the reason of the error
# (SSL_R_*_ALERT_*: 1000 + the alert's description).
TLS_REFUSAL_ALERT = {"starttls_broken": "handshake_failure", "starttls_legacy": "protocol_version"}
OPENSSL_ALERT_REASON = {
    "handshake_failure": "SSLV3_ALERT_HANDSHAKE_FAILURE",  # 40
    "protocol_version": "TLSV1_ALERT_PROTOCOL_VERSION",  # 70
}

# Exchange Online's codes for a host DANE refuses, by RFC 8460 result type (its NDR reference:
# 4.7.321 starttls-not-supported to 4.7.325 certificate-host-mismatch).
DANE_CODE = {
    "starttls-not-supported": "4.7.321",
    "certificate-expired": "4.7.322",
    "tlsa-invalid": "4.7.323",
    "dnssec-invalid": "4.7.324",
    "certificate-host-mismatch": "4.7.325",
}
# An MTA-STS policy in enforce mode refusing a host: 4.4.8 for an MX the policy does not name,
# 4.4.317 when TLS is required and not offered, 4.7.5 for a certificate that does not verify.
STS_CODE = {
    "validation-failure": "4.4.8",
    "starttls-not-supported": "4.4.317",
    "certificate-expired": "4.7.5",
    "certificate-host-mismatch": "4.7.5",
    "certificate-not-trusted": "4.7.5",
}
# A failed ssl verification as an RFC 8460 result type (by X509_V_ERR code); any other: not trusted.
VERIFY_RESULT = {10: "certificate-expired", 62: "certificate-host-mismatch"}
EDE_DNSSEC_BOGUS = 6  # RFC 8914 4.7


@dataclass
class Outcome:
    stage: str  # dns, connect, greeting, ehlo, starttls, tls, cert, closed, reply, delivered, dane, sts
    detail: str  # rcode, refused/timeout/reset, reply line, verify code, where, result type, ...
    how: str = ""  # closed: fin/rst; after a refusal: fin/rst, or open if QUIT was answered
    host: str = ""
    lines: tuple[str, ...] = ()
    command: str = ""  # the command a reply answered (GREETING, EHLO, MAIL, RCPT, DATA, DATA_END)
    message: str = ""  # cert: the verify message; dane: why
    policy: str = ""  # the TLS policy the probe applied: tlsa (DANE), sts (MTA-STS), or '' for none
    result: str | None = None  # that policy's RFC 8460 result type for the delivery (None: no failure)
    tls: str = ""  # the TLS version the message went over ('' in clear)
    verify: int = 0  # sts: the X509_V_ERR code of a certificate refused


@dataclass
class Trace:
    """What one probe did: its validating resolver (signed worlds), connections, policy requests."""

    validator: Validator | None
    connections: int = 0  # TCP connections to SMTP hosts that were accepted
    policy_gets: int = 0  # policy requests sent (the TLS handshake with the policy host succeeded)
    policy: Fetched | None = None

    @property
    def lookups(self) -> list[Lookup]:
        return self.validator.lookups if self.validator is not None else []


def new_trace(world: World) -> Trace:
    anchor = world.trust_anchor_file
    if anchor is None:
        return Trace(None)
    return Trace(Validator(world.dns_host, world.dns_port, load_trust_anchor(anchor), timeout=DNS_TIMEOUT))


@dataclass(frozen=True)
class Route:
    name: str
    ip: str
    secure: bool = False  # the MX answer and this address validated (DNSSEC): DANE applies


@dataclass
class HostPolicy:
    """How the probe speaks TLS to one host.

    ``kind``: plain (no STARTTLS), verify (TLS required, ssl verifies), dane (TLS required,
    TLSA authenticates), sts-enforce / sts-testing (ssl verifies; testing delivers anyway),
    unverified (TLS, no check: testing mode after a certificate failure).
    """

    kind: str
    tlsa: list[Tlsa] = field(default_factory=list)
    report: str = ""  # the policy type a report would name: tlsa, sts, or ''
    result: str | None = None  # a failure known before the session (no policy, MX not named)


def authenticated(lk: Lookup) -> bool:
    """An answer DANE may rely on: the resolver vouches for it (AD, which an RFC 7672 client that
    trusts its resolver reads) and it validated here from the trust anchor."""
    return lk.status == "secure" and lk.ad


def candidates(s: scenarios.Scenario, world: World, trace: Trace) -> list[Route] | Outcome:
    """Routes to try in order, or the DNS failure that stops delivery."""
    t = s.target
    if t.smart_host and t.connect_by_ip:
        return [Route(t.smart_host, world.address_of(t.smart_host))]
    v = None if t.smart_host else trace.validator
    names: list[str]
    mx_secure = False
    if t.smart_host:
        names = [t.smart_host]
    elif v is not None:
        mx = v.lookup(t.mail_domain, "MX")
        if mx.rcode != "NOERROR":
            return Outcome("dns", mx.rcode)
        if mx.rrset is None:
            return Outcome("dns", "NODATA")
        names = [rd.exchange.to_text().rstrip(".") for rd in sorted(mx.rrset, key=lambda rd: rd.preference)]
        mx_secure = authenticated(mx)
    else:
        rcode, found_mx = resolve_mx(world.dns_host, world.dns_port, t.mail_domain, timeout=DNS_TIMEOUT)
        if rcode != "NOERROR":
            return Outcome("dns", rcode)
        if not found_mx:
            return Outcome("dns", "NODATA")
        names = [name for _, name in found_mx]
    found: list[Route] = []
    last = Outcome("dns", "NODATA")
    for name in names:
        if v is not None:
            a = v.lookup(name, "A")
            rcode, addresses, secure = a.rcode, [rd.address for rd in a.rrset or ()], authenticated(a)
        else:
            r = resolve_a(world.dns_host, world.dns_port, name, timeout=DNS_TIMEOUT)
            if r.rcode == "NOERROR" and not r.addresses:  # no IPv4: its IPv6 address, if it has one
                r = resolve_a(world.dns_host, world.dns_port, name, timeout=DNS_TIMEOUT, rdtype="AAAA")
            rcode, addresses, secure = r.rcode, r.addresses, False
        if rcode != "NOERROR" or not addresses:
            last = Outcome("dns", rcode if rcode != "NOERROR" else "NODATA", host=name)
            continue
        found += [Route(name, ip, mx_secure and secure) for ip in addresses]
    return found or last


def discover_sts(world: World, domain: str, trace: Trace) -> Fetched | None:
    """The domain's MTA-STS policy as fetched now, None when it publishes none (no v=STSv1 TXT)."""
    _, values = txt_records(world.dns_host, world.dns_port, f"_mta-sts.{domain}", timeout=DNS_TIMEOUT)
    if sts_id(values) is None:
        return None
    host = f"mta-sts.{domain}"
    r = resolve_a(world.dns_host, world.dns_port, host, timeout=DNS_TIMEOUT)
    if not r.addresses:
        return Fetched(None, "sts-policy-fetch-error", f"{host}: no address ({r.rcode})")
    fetched = fetch_policy(domain, r.addresses[0], world.https_port, str(world.ca_file))
    trace.policy_gets += fetched.sent
    trace.policy = fetched
    return fetched


def host_policy(
    s: scenarios.Scenario, route: Route, sts: Fetched | None, trace: Trace
) -> HostPolicy | Outcome:
    """DANE when the route is secure and has secure TLSA records (it takes precedence, RFC 8461 2),
    else the MTA-STS policy, else what the target asks (a refusal: the host is not to be used)."""
    t = s.target
    plain = HostPolicy("verify" if t.require_tls else "plain")
    if t.smart_host:
        return plain
    if route.secure and trace.validator is not None:
        tlsa = trace.validator.lookup(f"_25._tcp.{route.name}", "TLSA")
        if tlsa.rcode not in ("NOERROR", "NXDOMAIN") or tlsa.status == "bogus":
            # RFC 7672 2.1.1: a failed TLSA lookup, never a reason to go on without DANE.
            return Outcome("dane", "dnssec-invalid", host=route.name, policy="tlsa", result="dnssec-invalid")
        if authenticated(tlsa) and tlsa.rrset is not None:
            return HostPolicy("dane", [Tlsa.from_text(v) for v in tlsa.values], report="tlsa")
    if sts is None:
        return plain
    if sts.policy is None:  # RFC 8461 3.3: no usable policy, delivery as without one (and reported)
        return HostPolicy(plain.kind, report="sts", result=sts.result)
    if sts.policy.mode == "none":
        return plain
    named = any(mx_matches(p, route.name) for p in sts.policy.mx)
    if not named and sts.policy.mode == "enforce":  # RFC 8461 4.2: not a host to deliver to
        return Outcome(
            "sts", "validation-failure", host=route.name, policy="sts", result="validation-failure"
        )
    return HostPolicy(f"sts-{sts.policy.mode}", report="sts", result=None if named else "validation-failure")


def end_after_refusal(c: RawSMTP) -> str:
    """After a failing reply, say QUIT: 'open' if the server answers it, else how it had closed."""
    try:
        c.cmd("QUIT")
    except Closed as closed:
        return closed.how
    return "open"


def current_client(world: World, *, crl: bool | None = None) -> ssl.SSLContext:
    """A verifying client of today: TLS 1.2 and 1.3 only, the world's CA trusted, and the leaf
    checked against the CA's CRL (``crl``; by default when the world publishes one)."""
    ctx = client_context(str(world.ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if crl if crl is not None else world.crl_url is not None:
        ctx.load_verify_locations(cafile=str(world.crl_file))
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


def unverified_client() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    return ctx


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def smart_host_account(s: scenarios.Scenario, name: str) -> tuple[str, str] | None:
    """The account the client is given: the smart host's auth table, unless credentials = false."""
    if not s.target.credentials or name != s.target.smart_host:
        return None
    host = next(h for h in s.world.hosts if h.name == name)
    a = host.smtp.auth if host.kind == "smtp" else None
    return (a.user, a.password) if a is not None else None


# What a host with an auth table answers, by its fault (RFC 4954 6, as Postfix's smtpd words it).
AUTH_REFUSALS = {
    "bad_credentials": "535 5.7.8 Authentication credentials invalid",
    "temporary": "454 4.7.0 Temporary authentication failure",
}


def smtp_session(s: scenarios.Scenario, c: RawSMTP, world: World, name: str, policy: HostPolicy) -> Outcome:
    t = s.target
    stage = "greeting"
    said = {"policy": policy.report, "result": policy.result}
    tls_version = ""

    def refused(stage: str, command: str, line: str) -> Outcome:
        return Outcome(stage, line, how=end_after_refusal(c), host=name, command=command)

    def refuse_host(stage: str, result: str, **more: object) -> Outcome:
        """The policy refuses the host: QUIT (over TLS if it is up), and the result type."""
        end_after_refusal(c)
        return Outcome(stage, result, host=name, policy=policy.report, result=result, **more)  # type: ignore[arg-type]

    host = next((h for h in s.world.hosts if h.name == name), None)
    implicit = host is not None and host.kind == "smtp" and host.smtp.tls == "implicit"
    try:
        if implicit:  # RFC 8314 3.3: TLS from the first byte, the greeting inside it
            stage = "tls"
            try:
                tls_version = c.starttls_keep_socket(current_client(world), name).version() or ""
            except ssl.SSLCertVerificationError as exc:
                return Outcome("cert", str(exc.verify_code), host=name, message=exc.verify_message)
            except ssl.SSLError as exc:
                return Outcome("tls", exc.reason or str(exc), how=tcp_end(c.sock), host=name)
            stage = "greeting"
        greeting = c.reply("before the greeting")
        if greeting.code != 220:
            return refused("greeting", "GREETING", greeting.lines[0])
        stage = "ehlo"
        ehlo = c.cmd("EHLO probe.test")
        if ehlo.code in (500, 502):  # RFC 5321 4.1.4: HELO, a session without extensions
            ehlo = c.cmd("HELO probe.test")
            ehlo = replace(ehlo, lines=ehlo.lines[:1])
        if ehlo.code != 250:
            return refused("ehlo", "EHLO", ehlo.lines[0])
        if policy.kind != "plain" and not implicit:
            offered = any(line[4:].upper().startswith("STARTTLS") for line in ehlo.lines)
            if not offered and policy.kind == "verify":
                return Outcome("ehlo", "no STARTTLS", host=name)
            if not offered and policy.kind in ("dane", "sts-enforce"):
                return refuse_host("dane" if policy.kind == "dane" else "sts", "starttls-not-supported")
            if not offered:  # sts-testing: delivered in clear, the failure reported
                said["result"] = said["result"] or "starttls-not-supported"
            else:
                stage = "starttls"
                st = c.cmd("STARTTLS")
                if st.code != 220:
                    return refused("starttls", "STARTTLS", st.lines[0])
                stage = "tls"
                if policy.kind == "dane":
                    bio = BioTLS(c.sock, name)
                    try:
                        bio.handshake()
                    except ssl.SSLError as exc:
                        return Outcome("tls", exc.reason or str(exc), how=tcp_end(c.sock), host=name)
                    c.sock, c.buf = bio, b""  # type: ignore[assignment]
                    tls_version = bio.version() or ""
                    chain = certificate_chain(bio.received)
                    verdict = authenticate(policy.tlsa, chain, name, dt.datetime.now(dt.UTC))
                    if verdict.result != "ok":
                        return refuse_host("dane", verdict.result, message=verdict.why)
                else:
                    ctx = unverified_client() if policy.kind == "unverified" else current_client(world)
                    try:
                        tls = c.starttls_keep_socket(ctx, name)
                    except ssl.SSLCertVerificationError as exc:
                        if policy.kind == "verify":
                            return Outcome(
                                "cert", str(exc.verify_code), host=name, message=exc.verify_message
                            )
                        result = VERIFY_RESULT.get(exc.verify_code, "certificate-not-trusted")
                        # sts-testing: the caller delivers on a new connection, without the check
                        stage_name = "sts" if policy.kind == "sts-enforce" else "retry"
                        return Outcome(
                            stage_name,
                            result,
                            host=name,
                            message=exc.verify_message,
                            policy="sts",
                            result=result,
                            verify=exc.verify_code,
                        )
                    except ssl.SSLError as exc:
                        return Outcome("tls", exc.reason or str(exc), how=tcp_end(c.sock), host=name)
                    tls_version = tls.version() or ""
                stage = "after_starttls"
                ehlo = c.cmd("EHLO probe.test")
                if ehlo.code != 250:
                    return refused("ehlo", "EHLO", ehlo.lines[0])
        account = smart_host_account(s, name)
        offered_auth = [ln[4:].split()[1:] for ln in ehlo.lines[1:] if ln[4:].upper().startswith("AUTH ")]
        if account is not None and offered_auth:  # not offered: go on without, as Postfix does
            stage = "auth"
            user, password = account
            mechanisms = [m.upper() for m in offered_auth[0]]
            if "PLAIN" in mechanisms:  # RFC 4616, with the initial response (RFC 4954 4)
                r = c.cmd("AUTH PLAIN " + b64(f"\0{user}\0{password}"))
            else:
                r = c.cmd("AUTH LOGIN")
                for value in (user, password):
                    if r.code == 334:
                        r = c.cmd(b64(value))
            if r.code != 235:
                return refused("reply", "AUTH", r.lines[0])
        pending = list(t.rcpt_to)
        while pending:  # one transaction, or more where the server takes a few recipients at a time
            stage = "mail"
            r = c.cmd(f"MAIL FROM:<{t.mail_from}>")
            if r.code >= 400:
                return refused("reply", "MAIL", r.lines[0])
            taken: list[str] = []
            later: list[str] = []
            for rcpt in pending:
                stage = "rcpt"
                r = c.cmd(f"RCPT TO:<{rcpt}>")
                if r.code == 452 and taken:
                    later.append(rcpt)  # RFC 5321 4.5.3.1.10: in the next transaction
                elif r.code >= 400:
                    return refused("reply", "RCPT", r.lines[0])
                else:
                    taken.append(rcpt)
            stage = "data"
            r = c.cmd("DATA")
            if r.code != 354:
                return refused("reply", "DATA", r.lines[0])
            body = "Subject: mailfakes probe\r\n\r\n" + "A line of body text for the probe.\r\n" * 20
            c.send(body + ".")  # one write: the whole message is sent before any cut is seen
            stage = "final_dot"
            r = c.reply("after the final dot")
            if r.code >= 400:
                return refused("reply", "DATA_END", r.lines[0])
            pending = later
        c.cmd("QUIT")
        return Outcome("delivered", r.lines[0], host=name, tls=tls_version, **said)  # type: ignore[arg-type]
    except Closed as closed:
        return Outcome("closed", stage, how=closed.how, host=name, lines=tuple(c.log))
    except TimeoutError:
        # Connected, then nothing within the timeout: how the server holds the line (open: it
        # neither closed nor reset) is read below TLS, briefly.
        return Outcome("timeout", stage, how=tcp_end(c.sock, 0.2), host=name, lines=tuple(c.log))
    finally:
        c.close()


def probe(s: scenarios.Scenario, world: World, trace: Trace | None = None) -> Outcome:
    trace = trace if trace is not None else new_trace(world)
    found = candidates(s, world, trace)
    if isinstance(found, Outcome):
        return found
    sts = None if s.target.smart_host else discover_sts(world, s.target.mail_domain, trace)
    last = Outcome("connect", "none")
    for route in found:
        policy = host_policy(s, route, sts, trace)
        if isinstance(policy, Outcome):  # RFC 7672 2.2, RFC 8461 4.2: the next host may do
            last = policy
            continue
        while True:
            sock, outcome = open_connection(route.ip, world.port, timeout=CONNECT_TIMEOUT)
            if outcome == "reset":  # ECONNRESET at connect: a client reads it as a refusal, never right
                return Outcome("connect", "reset", host=route.name)
            if sock is None:
                last = Outcome("connect", outcome, host=route.name)
                break
            trace.connections += 1
            sock.settimeout(s.target.timeout or 2)  # a slow scenario's own timeout, else generous
            o = smtp_session(s, RawSMTP(sock), world, route.name, policy)
            if o.stage != "retry":
                return o
            policy = HostPolicy("unverified", report="sts", result=o.result)  # RFC 8461 5: testing
    return last


def enhanced(line: str) -> str:
    parts = line.split()
    return parts[1] if len(parts) > 1 and parts[1][0] in "245" and parts[1].count(".") == 2 else ""


def code_of(o: Outcome) -> str:
    """The EOP code a wire outcome stands for (or the server's own code)."""
    if o.stage == "dns":
        return "4.4.312"
    if o.stage == "connect":
        return {"timeout": "4.4.315", "refused": "4.4.316"}.get(o.detail, f"no code for a {o.detail}")
    if o.stage == "cert":
        return "4.7.320"
    if o.stage in ("closed", "timeout"):  # a timeout once connected: the connection is dropped
        return "4.4.318"
    if o.stage in ("greeting", "ehlo", "starttls", "tls"):
        return "4.4.317"
    if o.stage == "dane":
        return DANE_CODE.get(o.detail, f"no DANE code for {o.detail}")
    if o.stage == "sts":
        return STS_CODE.get(o.detail, f"no MTA-STS code for {o.detail}")
    if o.stage == "reply" and o.detail.startswith("421"):
        return "4.4.317"  # RFC 5321 3.8: a 421 to any command closes the session (classify agrees)
    found = enhanced(o.detail)
    if not found and o.detail[:1] in ("2", "4", "5"):
        return f"{o.detail[0]}.0.0"  # no enhanced code in the reply: RFC 3463 3.1's x.0.0
    return found


CATALOGUE = scenarios.load_catalogue()


@pytest.fixture(params=list(CATALOGUE), ids=list(CATALOGUE))
def served(request, make_world):
    s = CATALOGUE[request.param]
    return s, make_world(s.world)


def target_host(s: scenarios.Scenario, o: Outcome) -> HostSpec:
    return s.world.host(o.host)


def limit_reply(plan: SmtpPlan, command: str) -> ConfiguredReply | None:
    """The reply a host's limit sends to ``command`` (its {host} and {client} not filled in)."""
    rl = plan.rate_limit
    if command == "MAIL" and rl is not None and rl.per == "messages":
        return rl.refusal
    if command == "RCPT" and plan.max_recipients is not None:
        return TOO_MANY_RECIPIENTS
    return None


def configured_end(reply: ConfiguredReply | None) -> str:
    """How the server ends the session after ``reply``: its ``close``, a FIN after any 421
    (RFC 5321 3.8: a server that says 421 closes), or not at all (QUIT is answered)."""
    if reply is not None and reply.close is not None:
        return reply.close
    return "fin" if reply is not None and reply.code == 421 else "open"


# Where the probe is when a cut at each configured point reaches it.
PROBE_STAGE_OF_POINT = {
    "before_greeting": "greeting",
    "after_greeting": "ehlo",  # the probe speaks after the greeting: the cut meets its EHLO
    "after_ehlo": "ehlo",
    "after_starttls": "after_starttls",
    "after_mail": "mail",
    "after_rcpt": "rcpt",
    # The probe writes the whole message at once, so the cut always reaches it
    # while it waits for the reply to the final dot.
    "in_data": "final_dot",
    "after_final_dot": "final_dot",
}


# The EDE code (RFC 8914 4) a validating resolver gives an answer whose signature is broken.
SIGNATURE_EDE = {"bad_signature": 6, "expired_signature": 7}  # DNSSEC Bogus, Signature Expired


def signature_fault(s: scenarios.Scenario, name: str, rdtype: str) -> str | None:
    """The signature fault configured on ``name``/``rdtype``, if any."""
    for f in s.world.dns_faults:
        if f.fault in SIGNATURE_EDE and f.name == name and (not f.types or rdtype in f.types):
            return f.fault
    return None


def configured_dane_result(s: scenarios.Scenario, name: str) -> str | None:
    """The RFC 8460 result a DANE client must come to for MX host ``name``, from the TOML alone."""
    if signature_fault(s, f"_25._tcp.{name}", "TLSA"):
        return "dnssec-invalid"
    host = s.world.host(name)
    assert host.tlsa is not None, f"{s.id}: {name} has no TLSA record"
    if host.smtp.tls == "none":
        return "starttls-not-supported"
    if not host.tlsa.matches:
        return "tlsa-invalid"
    if host.tlsa.usage == 2:  # DANE-TA keeps the checks of dates and names; DANE-EE drops them
        return {"expired": "certificate-expired", "wrong_host": "certificate-host-mismatch"}.get(
            host.smtp.cert
        )
    return None


def configured_sts_result(s: scenarios.Scenario, name: str) -> str | None:
    """The RFC 8460 result an MTA-STS client must come to for MX host ``name``, from the TOML alone."""
    p = s.world.mta_sts_for(s.target.mail_domain)
    assert p is not None, f"{s.id}: no MTA-STS policy for {s.target.mail_domain}"
    if p.fault in ("unreachable", "missing"):
        return "sts-policy-fetch-error"
    if p.fault == "malformed":
        return "sts-policy-invalid"
    if p.cert != "valid":
        return "sts-webpki-invalid"
    if p.mode == "none":
        return None
    if name not in p.mx and f"*.{name.partition('.')[2]}" not in p.mx:
        return "validation-failure"
    host = s.world.host(name)
    if host.smtp.tls == "none":
        return "starttls-not-supported"
    cert_results = {
        "valid": None,
        "expired": "certificate-expired",
        "wrong_host": "certificate-host-mismatch",
    }
    return cert_results.get(host.smtp.cert, "certificate-not-trusted")


def check_policy_verdict(s: scenarios.Scenario, o: Outcome) -> None:
    """The probe applied the policy the scenario's [tls_report] names and came to its result type,
    and that result is the one the world's configuration calls for."""
    rep = s.tls_report
    want = (rep.policy, rep.result) if rep is not None else ("", None)
    assert (o.policy, o.result) == want, (
        f"{s.id}: the probe's verdict {o.policy}/{o.result}, want {want}: {o}"
    )
    if o.policy == "tlsa":
        assert o.result == configured_dane_result(s, o.host), f"{s.id}: {o}"
    elif o.policy == "sts":
        assert o.result == configured_sts_result(s, o.host), f"{s.id}: {o}"


def expected_dnssec(s: scenarios.Scenario, name: str, rdtype: str) -> tuple[str, bool]:
    """(status, AD bit) of a DO answer for ``name``/``rdtype`` by the world's TOML: insecure at and
    below a sub-zone whose DS is missing (the DS itself denied, securely), the AD bit withheld
    where ``no_ad`` says, secure everywhere else (signature faults: see signature_fault)."""
    missing = {f.name for f in s.world.dns_faults if f.fault == "missing_ds"}
    if rdtype == "DS" and name in missing:
        return "denied", True
    if any(name == z or name.endswith("." + z) for z in missing):
        return "insecure", False
    for f in s.world.dns_faults:
        if f.fault == "no_ad" and f.name == name and (not f.types or rdtype in f.types):
            return "secure", False
    return "secure", True


def check_dnssec_answers(s: scenarios.Scenario, trace: Trace) -> None:
    """Each answer the probe validated is what the world's configuration calls for, and carries
    the AD bit exactly when it should; a bogus one is SERVFAIL with its EDE and, asked again with
    CD, comes without AD and fails here too."""
    for lk in trace.lookups:
        fault = signature_fault(s, lk.name, lk.rdtype)
        where = f"{s.id}: {lk.name} {lk.rdtype}"
        if fault is None:
            status, ad = expected_dnssec(s, lk.name, lk.rdtype)
            assert (lk.status, lk.rcode, lk.ad) == (status, "NOERROR", ad), f"{where}: {lk}"
        else:
            assert lk.status == "bogus", f"{where}: {fault} configured, the probe found it {lk.status}: {lk}"
            assert (lk.rcode, lk.ad, lk.ede) == ("SERVFAIL", False, (SIGNATURE_EDE[fault],)), f"{where}: {lk}"
            assert (lk.cd_rcode, lk.cd_ad) == ("NOERROR", False), f"{where}: with CD: {lk}"


def test_wire_behaviour_matches_the_scenario_code(served):
    s, world = served
    trace = new_trace(world)
    o = probe(s, world, trace)
    assert code_of(o) == s.expected_code, f"{s.id}: the wire said {o}"
    check_policy_verdict(s, o)
    check_dnssec_answers(s, trace)
    if s.world.dnssec is not None and not s.target.smart_host:
        assert trace.lookups, f"{s.id}: a signed world, and the probe validated nothing"

    # Exactly the event the scenario configures.
    if o.stage == "dns":
        assert o.detail in resolver_outcomes(s), f"{s.id}: the resolver got {o.detail}"
    elif o.stage == "connect":
        kind = target_host(s, o).kind
        assert (kind, o.detail) in (("blackhole", "timeout"), ("refuse", "refused")), f"{s.id}: {o}"
    elif o.stage in ("greeting", "ehlo", "starttls", "reply") and o.command:
        plan = target_host(s, o).smtp
        reply = plan.greeting if o.command == "GREETING" else plan.replies.get(o.command)
        if reply is not None:
            assert o.detail == reply.line(), f"{s.id}: {o.command} answered {o.detail!r}"
        else:
            reply = limit_reply(plan, o.command)
            if reply is not None:
                assert o.detail.startswith(f"{reply.code} {reply.enhanced}"), (
                    f"{s.id}: {o.command}: {o.detail!r}"
                )
        a = plan.auth
        if o.command == "AUTH":
            assert a is not None and a.fault is not None, f"{s.id}: AUTH refused with no fault: {o}"
            assert o.detail == AUTH_REFUSALS[a.fault], f"{s.id}: AUTH answered {o.detail!r}"
        elif o.command == "MAIL" and reply is None and a is not None:
            # Refused for want of authentication: the probe had no account, or AUTH was not offered.
            assert smart_host_account(s, o.host) is None or a.fault == "not_offered", f"{s.id}: {o}"
            assert a.required is not None and o.detail == a.required.line(), f"{s.id}: MAIL got {o.detail!r}"
        elif o.command == "DATA_END" and reply is None and a is not None:
            assert a.send_as and s.target.mail_from not in a.send_as, f"{s.id}: {o}"
            text = "550 5.7.60 SMTP; Client does not have permissions to send as this sender"
            assert o.detail == text, f"{s.id}: the final dot got {o.detail!r}"
        assert o.how == configured_end(reply), f"{s.id}: after {o.detail!r} the server's end was {o.how}"
    elif o.stage == "ehlo":
        assert o.detail == "no STARTTLS" and target_host(s, o).smtp.tls == "none", f"{s.id}: {o}"
    elif o.stage == "tls":
        alert = TLS_REFUSAL_ALERT[target_host(s, o).smtp.tls]
        assert o.detail == OPENSSL_ALERT_REASON[alert], f"{s.id}: want the {alert} alert, got {o.detail}"
        assert o.how == "fin", f"{s.id}: after the {alert} alert the connection ended with {o.how}"
    elif o.stage == "cert":
        code, text = X509_V_ERR[target_host(s, o).smtp.cert]
        assert (o.detail, o.message.lower()[: len(text)]) == (str(code), text), f"{s.id}: {o}"
    elif o.stage == "closed":
        host = target_host(s, o)
        ca = host.smtp.close_at
        if host.kind == "close_on_accept":
            assert (o.detail, o.how) == ("greeting", host.close), f"{s.id}: {o}"
        else:
            assert ca is not None, f"{s.id}: a cut nobody configured: {o}"
            assert (o.detail, o.how) == (PROBE_STAGE_OF_POINT[ca.point], ca.how), f"{s.id}: {o}"
        if ca is not None and ca.point == "after_final_dot":
            assert world.wait_until(lambda: len(world.messages) == 1, 2)
            assert world.messages[0].replied is False
        if ca is not None and ca.point == "in_data":
            assert world.wait_until(lambda: all(t.closed for t in world.sessions), 2)
            assert world.messages == []
    elif o.stage == "timeout":
        check_timeout(s, world, o)
    elif o.stage == "dane":
        assert o.detail == configured_dane_result(s, o.host), f"{s.id}: {o}"
        if o.detail == "dnssec-invalid":  # RFC 7672 2.1.1: the host is skipped, never connected to
            assert world.sessions == [], f"{s.id}: a session with a host whose TLSA lookup failed"
    elif o.stage == "sts":
        assert o.detail == configured_sts_result(s, o.host), f"{s.id}: {o}"
        if o.verify:
            assert o.verify == X509_V_ERR[target_host(s, o).smtp.cert][0], f"{s.id}: {o}"
        if o.detail == "validation-failure":  # RFC 8461 4.2: not an MX to connect to
            assert world.sessions == [], f"{s.id}: a session with an MX the policy does not name"
    elif o.stage == "delivered":
        limits = [h.smtp.max_recipients for h in s.world.hosts if h.smtp.max_recipients]
        transactions = -(-len(s.target.rcpt_to) // limits[0]) if limits else 1
        assert world.wait_until(lambda: len(world.messages) == transactions, 2)
        assert [r for m in world.messages for r in m.rcpt_tos] == list(s.target.rcpt_to)
        msg = world.messages[0]
        assert msg.tls_version is not None or not s.target.require_tls
        assert (msg.tls_version or "") == o.tls, (
            f"{s.id}: the server saw {msg.tls_version}, the probe {o.tls}"
        )
        if o.policy == "tlsa" or (o.policy == "sts" and o.result is None):
            assert o.tls, f"{s.id}: delivered in clear under {o.policy}: {o}"
    else:
        pytest.fail(f"{s.id}: an outcome this test does not know: {o}")


# Where the probe waits out a slow host, by what the host holds back.
PROBE_STAGE_OF_DELAY = {"GREETING": "greeting", "EHLO": "ehlo", "DATA_END": "final_dot"}


def check_timeout(s: scenarios.Scenario, world: World, o: Outcome) -> None:
    """A timeout the scenario configures: the server held the line open (no FIN, no RST) and sent
    nothing at the stage where its delay or its stall is; what it kept says which."""
    host = target_host(s, o)
    assert s.target.timeout is not None, f"{s.id}: a timeout with no [target] timeout: {o}"
    assert o.how == "open", f"{s.id}: the server ended the connection ({o.how}): a close, not a wait"
    plan = host.smtp
    if plan.stall_in_data is not None:
        assert o.detail == "final_dot", f"{s.id}: the stall met at {o.detail}"
        # It stopped reading: the message never reached it, and no message was kept.
        assert world.wait_until(lambda: bool(world.sessions) and world.sessions[0].closed, 3)
        assert world.messages == [], f"{s.id}: a stalled server kept a message"
        return
    held = [point for point, ms in plan.delays_ms.items() if ms >= 3000 * s.target.timeout]
    assert [PROBE_STAGE_OF_DELAY.get(p) for p in held] == [o.detail], f"{s.id}: delays {held}, met {o}"
    if held == ["DATA_END"]:  # the message was taken, its 250 never came in time: a duplicate on retry
        assert world.wait_until(lambda: len(world.messages) == 1, 2)
        assert world.messages[0].replied is False


SLOW = [sid for sid, s in CATALOGUE.items() if s.target.timeout is not None]


@pytest.mark.parametrize("sid", SLOW)
def test_slow_scenarios_hold_the_same_way_each_time(sid, make_world):
    """Three probes on one world: each meets the same wait at the same stage (or delivers), and a
    trickling host's greeting comes in pieces, several reads of a few bytes."""
    s = CATALOGUE[sid]
    world = make_world(s.world)
    seen = set()
    for _ in range(REPEAT):
        o = probe(s, world)
        seen.add((o.stage, o.detail if o.stage != "delivered" else "", o.how))
    assert len(seen) == 1, f"{sid}: {seen}"
    trickle = [h.smtp.trickle_bps for h in s.world.hosts if h.smtp.trickle_bps]
    if trickle:
        ip = world.address_of(s.target.smart_host or "")
        for _ in range(REPEAT):
            c = RawSMTP.connect(ip, world.port, timeout=s.target.timeout or 2)
            try:
                assert c.reply("before the greeting").code == 220
                assert c.cmd("EHLO probe.test").code == 250
                # Written bps/1000 bytes a millisecond: the two replies (about 200 bytes) take
                # many reads where a healthy server's take two.
                assert c.reads > 4, f"{sid}: the greeting and EHLO reply came in {c.reads} reads"
            finally:
                c.close()


def test_every_configured_wire_event_is_reached_by_the_probe():
    """The exact checks above cover each kind of event the catalogue configures."""
    hosts = [h for s in CATALOGUE.values() for h in s.world.hosts]
    assert {h.close for h in hosts if h.kind == "close_on_accept"} == {"rst"}
    assert {h.smtp.close_at.how for h in hosts if h.smtp.close_at} == {"fin", "rst"}
    assert {h.smtp.tls for h in hosts} >= set(TLS_REFUSAL_ALERT)
    assert {h.smtp.cert for h in hosts} - {"valid"} == set(X509_V_ERR)
    # Every result type a policy refuses a host for has its code here, and every DNS fault a wire.
    refused = [s.tls_report for s in CATALOGUE.values() if s.tls_report is not None and s.code != "success"]
    assert {r.result for r in refused if r.policy == "tlsa"} == set(DANE_CODE)
    assert {r.result for r in refused if r.policy == "sts"} <= set(STS_CODE)
    faults = {f.fault for s in CATALOGUE.values() for f in s.world.dns_faults}
    assert faults <= {*_FAULT_RCODE, "drop", "delay", "truncate", *SIGNATURE_EDE, *INSECURE_FAULTS}


def test_the_exact_checks_tell_fin_from_rst():
    """configured_end and the stage table leave no room for 'fin or rst'."""
    assert configured_end(ConfiguredReply(421, "x")) == "fin"
    assert configured_end(ConfiguredReply(421, "x", close="rst")) == "rst"
    assert configured_end(ConfiguredReply(550, "x")) == "open"
    assert configured_end(None) == "open"
    assert len(set(PROBE_STAGE_OF_POINT)) == len(PROBE_STAGE_OF_POINT)


def test_ehlo_without_starttls_is_visible_on_the_wire(make_world):
    s = scenarios.get("tls-starttls-missing")
    world = make_world(s.world)
    name = s.target.smart_host
    c = RawSMTP.connect(world.address_of(name), world.port)
    c.reply()
    ehlo = c.cmd("EHLO probe.test")
    assert ehlo.code == 250 and not any("STARTTLS" in line for line in ehlo.lines)


# ----------------------------------------------------------------------
# TLS policies, probed again and again: what arrives is counted
#
# Each DANE, MTA-STS and revocation scenario is probed REPEAT times on one
# world. Every probe must come to the same verdict, and the fakes must have
# seen exactly what the probes sent: one SMTP session per accepted
# connection, one message per delivery, one policy request per request sent
# (with its SNI), and each DNSSEC query once, with its CD bit, given the
# verdict the probe came to on its own.

TLS_POLICY = [sid for sid, s in CATALOGUE.items() if s.tls_report is not None or s.world.tls_policy]


@pytest.mark.parametrize("sid", TLS_POLICY)
def test_tls_policy_scenarios_give_one_verdict_and_the_fakes_see_each_probe(sid, make_world):
    s = CATALOGUE[sid]
    world = make_world(s.world)
    traces = [new_trace(world) for _ in range(REPEAT)]
    outcomes = [probe(s, world, t) for t in traces]
    verdicts = {(o.stage, code_of(o), o.policy, o.result, o.host, o.tls) for o in outcomes}
    assert len(verdicts) == 1, f"{sid}: {REPEAT} probes, {len(verdicts)} verdicts: {verdicts}"
    assert code_of(outcomes[0]) == s.expected_code, f"{sid}: {outcomes[0]}"

    delivered = sum(o.stage == "delivered" for o in outcomes)
    connections = sum(t.connections for t in traces)
    assert world.wait_until(lambda: len(world.messages) == delivered, 2), f"{sid}: {world.messages}"
    assert world.wait_until(
        lambda: len(world.sessions) == connections and all(t.closed for t in world.sessions), 2
    ), f"{sid}: {connections} connections, {len(world.sessions)} sessions"
    assert all(m.tls_version == (outcomes[0].tls or None) for m in world.messages)

    if s.world.dnssec is not None:
        asked = Counter(q for t in traces for q in (t.validator.asked if t.validator else ()))
        arrived = Counter((q.name, q.qtype, "CD" in q.flags) for q in world.dns_queries if "DO" in q.flags)
        assert arrived == asked, f"{sid}: the DNS saw {arrived}, the probes sent {asked}"
        # The fake's own verdict on each query (as a validating resolver) is the probe's.
        mine = Counter(
            (lk.name, lk.rdtype, "secure" if lk.status == "denied" else lk.status)
            for t in traces
            for lk in t.lookups
        )
        theirs = Counter(
            (q.name, q.qtype, q.dnssec) for q in world.dns_queries if "DO" in q.flags and "CD" not in q.flags
        )
        assert mine == theirs, f"{sid}: the probe found {mine}, the fake answered {theirs}"

    for p in s.world.mta_sts:
        server = world.web.get(p.host)
        sent = sum(t.policy_gets for t in traces)
        # A request goes out each time the policy host listens and its certificate verifies.
        assert sent == (REPEAT if p.fault != "unreachable" and p.cert == "valid" else 0), f"{sid}: {sent}"
        if server is None:
            assert p.fault == "unreachable", f"{sid}: no server for {p.host}"
            continue
        assert world.wait_until(lambda w=server, n=sent: len(w.requests) == n, 2), f"{sid}: {server.requests}"
        requests = server.requests
        assert all((r.sni, r.host, r.path) == (p.host, p.host, WELL_KNOWN) for r in requests), requests
        seen = [t.policy.status for t in traces if t.policy is not None and t.policy.sent]
        want = {None: 200, "missing": 404, "malformed": 200}.get(p.fault)
        assert [r.status for r in requests] == seen == [want] * sent, f"{sid}: {requests}"


# ----------------------------------------------------------------------
# Revocation, as OpenSSL's own client sees it


def s_client(world: World, host: str) -> subprocess.CompletedProcess[bytes]:
    """openssl s_client over STARTTLS, verifying the name, the chain and the leaf against the CRL."""
    argv = [
        "openssl",
        "s_client",
        "-brief",
        "-starttls",
        "smtp",
        "-connect",
        f"{world.address_of(host)}:{world.port}",
        "-servername",
        host,
        "-verify_hostname",
        host,
        "-CAfile",
        str(world.ca_file),
        "-CRL",
        str(world.crl_file),
        "-crl_check",
        "-verify_return_error",
    ]
    return subprocess.run(argv, input=b"", capture_output=True, timeout=20, check=False)


def test_openssl_and_ssl_with_the_crl_refuse_the_revoked_host_and_accept_a_healthy_one(make_world):
    require({"openssl": "openssl"}, netns=False)  # CI installs it: it must run there
    s = CATALOGUE["tls-cert-revoked"]
    host = s.target.smart_host
    revoked = make_world(s.world)
    healthy = make_world({"zone": "test", "hosts": {host: {}}})  # the control: another world
    for _ in range(REPEAT):
        bad, good = s_client(revoked, host), s_client(healthy, host)
        said = (bad.stdout + bad.stderr).decode(errors="replace")
        assert bad.returncode != 0 and "verify error:num=23:certificate revoked" in said, said
        said = (good.stdout + good.stderr).decode(errors="replace")
        assert good.returncode == 0 and "Verification: OK" in said, said
        for world, refused in ((revoked, True), (healthy, False)):
            c = RawSMTP.connect(world.address_of(host), world.port)
            try:
                c.reply()
                c.cmd("EHLO probe.test")
                assert c.cmd("STARTTLS").code == 220
                if refused:
                    with pytest.raises(ssl.SSLCertVerificationError) as err:
                        c.starttls(current_client(world, crl=True), host)
                    assert (err.value.verify_code, err.value.verify_message) == (23, "certificate revoked")
                else:
                    c.starttls(current_client(world, crl=True), host)
                    assert c.cmd("EHLO probe.test").code == 250
            finally:
                c.close()
    # Every handshake reached the server: two clients a round, nothing delivered.
    for world in (revoked, healthy):
        assert world.wait_until(lambda w=world: len(w.sessions) == 2 * REPEAT, 2), world.sessions
        assert world.messages == []


# ----------------------------------------------------------------------
# DNS faults, exactly as the wire shows them
#
# A stub resolver (the probe above) sees "no answer" for a dropped query and
# for a TCP retry cut by a reset alike. Here each configured fault is asked
# for directly, over UDP and over TCP, and the wire event must be the one the
# fault names: a drop is silence on UDP and, on TCP, a connection that stays
# open (a later query on it is answered) and is never reset; a reset is a RST.


@dataclass(frozen=True)
class DnsWire:
    udp: str  # an rcode, NODATA (NOERROR, nothing of the type), TC, or silent
    tcp: str  # an rcode, NODATA, rst, fin, or silent (open, no answer)


ANSWER = "answer"  # expected: any real answer (the fault only delays it)
_FAULT_RCODE = {"nxdomain": "NXDOMAIN", "servfail": "SERVFAIL", "refused": "REFUSED", "nodata": "NODATA"}
INSECURE_FAULTS = ("missing_ds", "no_ad")
SENTINEL = "sentinel.invalid"  # outside every world's zone: always answered, REFUSED


def expected_dns_wire(fault: DnsFault) -> DnsWire:
    kind = fault.fault
    if kind in _FAULT_RCODE:
        return DnsWire(_FAULT_RCODE[kind], _FAULT_RCODE[kind])
    if kind in SIGNATURE_EDE:  # a validating resolver's answer to bogus data, with DO or without
        return DnsWire("SERVFAIL", "SERVFAIL")
    if kind in INSECURE_FAULTS:  # the data is answered, only its proof is missing
        return DnsWire(ANSWER, ANSWER)
    if kind == "drop":
        return DnsWire("silent", "silent")
    if kind == "delay":
        return DnsWire(ANSWER, ANSWER)
    assert kind == "truncate", kind
    tcp = {"answer": ANSWER, "drop": "silent", "reset": "rst"}.get(fault.tcp) or _FAULT_RCODE[fault.tcp]
    return DnsWire("TC", tcp)


def _dns_token(wire: bytes, qtype: str) -> str:
    resp = dns.message.from_wire(wire)
    if resp.flags & dns.flags.TC:
        return "TC"
    rcode = dns.rcode.to_text(resp.rcode())
    want = dns.rdatatype.from_text(qtype)
    if rcode == "NOERROR" and not any(rrset.rdtype == want for rrset in resp.answer):
        return "NODATA"
    return rcode


def _query(name: str, qtype: str, qid: int) -> bytes:
    q = dns.message.make_query(name, qtype)
    q.id = qid
    wire: bytes = q.to_wire()
    return wire


def dns_over_udp(world: World, name: str, qtype: str, bound: float) -> str:
    """What one UDP query gets within ``bound``; silence only counts if the server is alive."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((world.dns_host, world.dns_port))
        sock.settimeout(bound)
        sock.send(_query(name, qtype, 1))
        try:
            return _dns_token(sock.recv(65535), qtype)
        except TimeoutError:
            pass
        sock.settimeout(2)
        sock.send(_query(SENTINEL, "A", 2))
        reply = dns.message.from_wire(sock.recv(65535))
        assert reply.id == 2, "an answer to the silent query came late"
        return "silent"


def _read_frame(sock: socket.socket) -> bytes | None:
    """One length-prefixed DNS message, or None when the server closed with a FIN."""
    data = b""
    need = 2
    while len(data) < need:
        chunk = sock.recv(need - len(data))
        if not chunk:
            return None
        data += chunk
        if len(data) == 2 and need == 2:
            need = 2 + struct.unpack("!H", data)[0]
    return data[2:]


def dns_over_tcp(world: World, name: str, qtype: str, bound: float) -> str:
    """What one query on a fresh TCP connection gets within ``bound``: rcode, rst, fin or silent."""
    with socket.create_connection((world.dns_host, world.dns_port), timeout=2) as sock:
        query = _query(name, qtype, 1)
        sock.sendall(struct.pack("!H", len(query)) + query)
        sock.settimeout(bound)
        try:
            frame = _read_frame(sock)
        except ConnectionResetError:
            return "rst"
        except TimeoutError:
            frame = b""
        if frame is None:
            return "fin"
        if frame:
            return _dns_token(frame, qtype)
        # Silent so far: the connection must be open and usable, not reset or closed.
        sock.settimeout(2)
        sentinel = _query(SENTINEL, "A", 2)
        try:
            sock.sendall(struct.pack("!H", len(sentinel)) + sentinel)
            frame = _read_frame(sock)
        except ConnectionResetError:
            return "silent, then rst"
        if frame is None:
            return "silent, then fin"
        assert dns.message.from_wire(frame).id == 2, "an answer to the silent query came late"
        return "silent"


def matches(observed: str, expected: str) -> bool:
    if expected == ANSWER:
        return observed not in ("TC", "silent", "rst", "fin") and not observed.startswith("silent")
    return observed == expected


def resolver_outcomes(s: scenarios.Scenario) -> set[str]:
    """What a stub resolver (UDP, then TCP on TC) reports for the scenario's DNS faults."""
    outcomes: set[str] = set()
    for f in s.world.dns_faults:
        wire = expected_dns_wire(f)
        last = wire.tcp if wire.udp == "TC" else wire.udp
        # No answer at all, by silence or by a reset, is a timeout to the probe's resolver.
        outcomes.add({"silent": "TIMEOUT", "rst": "TIMEOUT"}.get(last, last))
    return outcomes or {"NXDOMAIN", "NODATA"}  # no fault: a name that is not there


DNS_FAULTED = [sid for sid, s in CATALOGUE.items() if s.world.dns_faults]


@pytest.mark.parametrize("sid", DNS_FAULTED)
def test_each_dns_fault_is_exactly_the_configured_wire_event(sid, make_world):
    s = CATALOGUE[sid]
    timed = any(f.timed for f in s.world.dns_faults)
    world = make_world(s.world, clock="virtual") if timed else make_world(s.world)
    for f in s.world.dns_faults:
        qtype = sorted(f.types)[0] if f.types else "A"
        bound = DNS_TIMEOUT + f.delay_ms / 1000
        if f.timed:
            # Before its window the name is answered from the records; then the fault is on.
            before = DnsWire(
                dns_over_udp(world, f.name, qtype, bound), dns_over_tcp(world, f.name, qtype, bound)
            )
            assert before == DnsWire("NOERROR", "NOERROR"), f"{sid}: before {f.active_from} s: {before}"
            world.advance_to(f.active_from)
        observed = DnsWire(
            dns_over_udp(world, f.name, qtype, bound),
            dns_over_tcp(world, f.name, qtype, bound),
        )
        expected = expected_dns_wire(f)
        assert matches(observed.udp, expected.udp), f"{sid}: {f.fault} on UDP: {observed} (want {expected})"
        assert matches(observed.tcp, expected.tcp), f"{sid}: {f.fault} on TCP: {observed} (want {expected})"
    assert world.events.errors() == []


def test_dns_drop_and_reset_are_told_apart(make_world):
    """The probe must not pass a reset for a drop, nor a drop for a reset."""
    spec = {
        "zone": "test",
        "hosts": {"mail.contoso.test": {}},
        "dns_faults": [
            {"name": "drop.contoso.test", "fault": "drop"},
            {"name": "cut.contoso.test", "fault": "truncate", "tcp": "reset"},
            {"name": "quiet.contoso.test", "fault": "truncate", "tcp": "drop"},
        ],
    }
    world = make_world(spec)
    assert dns_over_tcp(world, "drop.contoso.test", "A", DNS_TIMEOUT) == "silent"
    assert dns_over_tcp(world, "cut.contoso.test", "A", DNS_TIMEOUT) == "rst"
    assert dns_over_tcp(world, "quiet.contoso.test", "A", DNS_TIMEOUT) == "silent"
    assert dns_over_udp(world, "drop.contoso.test", "A", DNS_TIMEOUT) == "silent"
    assert dns_over_udp(world, "cut.contoso.test", "A", DNS_TIMEOUT) == "TC"
    assert not matches("rst", "silent") and not matches("silent", "rst")
    assert [q.rcode for q in world.dns_queries if q.transport == "tcp"] == [
        "DROPPED",
        "REFUSED",  # the sentinel on the dropped query's connection
        "RESET",
        "DROPPED",
        "REFUSED",
    ]
