"""Serve every catalogue scenario and probe it with an independent raw client.

The probe resolves through the world's DNS (dnspython), connects with
sockets, speaks SMTP line by line, verifies TLS with ``ssl``, and records
what the wire did. The test then checks that this wire behaviour is the one
the scenario's code stands for, and exactly the event the scenario's TOML
configures: the point of a cut and whether it is a FIN or a RST, how the
server ends the connection after a refusal, the alert of a TLS refusal, and
the certificate error by OpenSSL's own verification code and text.
"""

from __future__ import annotations

import socket
import ssl
import struct
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from mailfakes import World
from mailfakes import catalogue as scenarios
from mailfakes.spec import DnsFault, HostSpec
from mailfakes.spec import Reply as ConfiguredReply
from probe import Closed, RawSMTP, client_context, open_connection, resolve_a, resolve_mx, tcp_end

CONNECT_TIMEOUT = 0.3
DNS_TIMEOUT = 0.3

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
}

# A server with nothing in common with a current client sends this fatal
# alert (RFC 8446 6.2), which OpenSSL reports as the reason of the error
# (SSL_R_*_ALERT_*: 1000 + the alert's description).
TLS_REFUSAL_ALERT = {"starttls_broken": "handshake_failure", "starttls_legacy": "protocol_version"}
OPENSSL_ALERT_REASON = {
    "handshake_failure": "SSLV3_ALERT_HANDSHAKE_FAILURE",  # 40
    "protocol_version": "TLSV1_ALERT_PROTOCOL_VERSION",  # 70
}


@dataclass
class Outcome:
    stage: str  # dns, connect, greeting, ehlo, starttls, tls, cert, closed, reply, delivered
    detail: str  # rcode, refused/timeout/reset, reply line, verify code, where, ...
    how: str = ""  # closed: fin/rst; after a refusal: fin/rst, or open if QUIT was answered
    host: str = ""
    lines: tuple[str, ...] = ()
    command: str = ""  # the command a reply answered (GREETING, EHLO, MAIL, RCPT, DATA, DATA_END)
    message: str = ""  # cert: the verify message


def candidates(s: scenarios.Scenario, world: World) -> list[tuple[str, str]] | Outcome:
    """(name, ip) to try in order, or the DNS failure that stops delivery."""
    t = s.target
    if t.smart_host and t.connect_by_ip:
        return [(t.smart_host, world.address_of(t.smart_host))]
    names: list[str]
    if t.smart_host:
        names = [t.smart_host]
    else:
        rcode, mx = resolve_mx(world.dns_host, world.dns_port, t.mail_domain, timeout=DNS_TIMEOUT)
        if rcode != "NOERROR":
            return Outcome("dns", rcode)
        if not mx:
            return Outcome("dns", "NODATA")
        names = [name for _, name in mx]
    found: list[tuple[str, str]] = []
    last = Outcome("dns", "NODATA")
    for name in names:
        r = resolve_a(world.dns_host, world.dns_port, name, timeout=DNS_TIMEOUT)
        if r.rcode != "NOERROR" or not r.addresses:
            last = Outcome("dns", r.rcode if r.rcode != "NOERROR" else "NODATA", host=name)
            continue
        found += [(name, ip) for ip in r.addresses]
    return found or last


def end_after_refusal(c: RawSMTP) -> str:
    """After a failing reply, say QUIT: 'open' if the server answers it, else how it had closed."""
    try:
        c.cmd("QUIT")
    except Closed as closed:
        return closed.how
    return "open"


def current_client(world: World) -> ssl.SSLContext:
    """A verifying client of today: TLS 1.2 and 1.3 only, the world's CA trusted."""
    ctx = client_context(str(world.ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def smtp_session(s: scenarios.Scenario, c: RawSMTP, world: World, name: str) -> Outcome:
    t = s.target
    stage = "greeting"

    def refused(stage: str, command: str, line: str) -> Outcome:
        return Outcome(stage, line, how=end_after_refusal(c), host=name, command=command)

    try:
        greeting = c.reply("before the greeting")
        if greeting.code != 220:
            return refused("greeting", "GREETING", greeting.lines[0])
        stage = "ehlo"
        ehlo = c.cmd("EHLO probe.test")
        if ehlo.code != 250:
            return refused("ehlo", "EHLO", ehlo.lines[0])
        if t.require_tls:
            if not any(line[4:].upper().startswith("STARTTLS") for line in ehlo.lines):
                return Outcome("ehlo", "no STARTTLS", host=name)
            stage = "starttls"
            st = c.cmd("STARTTLS")
            if st.code != 220:
                return refused("starttls", "STARTTLS", st.lines[0])
            stage = "tls"
            try:
                c.starttls_keep_socket(current_client(world), name)
            except ssl.SSLCertVerificationError as exc:
                return Outcome("cert", str(exc.verify_code), host=name, message=exc.verify_message)
            except ssl.SSLError as exc:
                return Outcome("tls", exc.reason or str(exc), how=tcp_end(c.sock), host=name)
            stage = "after_starttls"
            ehlo = c.cmd("EHLO probe.test")
            if ehlo.code != 250:
                return refused("ehlo", "EHLO", ehlo.lines[0])
        commands = [("mail", f"MAIL FROM:<{t.mail_from}>"), *[("rcpt", f"RCPT TO:<{r}>") for r in t.rcpt_to]]
        for step, line in commands:
            stage = step
            r = c.cmd(line)
            if r.code >= 400:
                return refused("reply", step.upper(), r.lines[0])
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
        c.cmd("QUIT")
        return Outcome("delivered", r.lines[0], host=name)
    except Closed as closed:
        return Outcome("closed", stage, how=closed.how, host=name, lines=tuple(c.log))
    finally:
        c.close()


def probe(s: scenarios.Scenario, world: World) -> Outcome:
    found = candidates(s, world)
    if isinstance(found, Outcome):
        return found
    last = Outcome("connect", "none")
    for name, ip in found:  # MX fallback: the next host after a connect failure
        sock, outcome = open_connection(ip, world.port, timeout=CONNECT_TIMEOUT)
        if outcome == "reset":  # ECONNRESET at connect: a client reads it as a refusal, never right
            return Outcome("connect", "reset", host=name)
        if sock is None:
            last = Outcome("connect", outcome, host=name)
            continue
        sock.settimeout(2)
        return smtp_session(s, RawSMTP(sock), world, name)
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
    if o.stage == "closed":
        return "4.4.318"
    if o.stage in ("greeting", "ehlo", "starttls", "tls"):
        return "4.4.317"
    return enhanced(o.detail)


CATALOGUE = scenarios.load_catalogue()


@pytest.fixture(params=list(CATALOGUE), ids=list(CATALOGUE))
def served(request, make_world):
    s = CATALOGUE[request.param]
    return s, make_world(s.world)


def target_host(s: scenarios.Scenario, o: Outcome) -> HostSpec:
    return s.world.host(o.host)


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


def test_wire_behaviour_matches_the_scenario_code(served):
    s, world = served
    o = probe(s, world)
    assert code_of(o) == s.expected_code, f"{s.id}: the wire said {o}"

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
    elif o.stage == "delivered":
        assert world.wait_until(lambda: len(world.messages) == 1, 2)
        msg = world.messages[0]
        assert msg.rcpt_tos == s.target.rcpt_to
        assert msg.tls_version is not None or not s.target.require_tls
    else:
        pytest.fail(f"{s.id}: an outcome this test does not know: {o}")


def test_every_configured_wire_event_is_reached_by_the_probe():
    """The exact checks above cover each kind of event the catalogue configures."""
    hosts = [h for s in CATALOGUE.values() for h in s.world.hosts]
    assert {h.close for h in hosts if h.kind == "close_on_accept"} == {"rst"}
    assert {h.smtp.close_at.how for h in hosts if h.smtp.close_at} == {"fin", "rst"}
    assert {h.smtp.tls for h in hosts} >= set(TLS_REFUSAL_ALERT)
    assert {h.smtp.cert for h in hosts} - {"valid"} == set(X509_V_ERR)


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
SENTINEL = "sentinel.invalid"  # outside every world's zone: always answered, REFUSED


def expected_dns_wire(fault: DnsFault) -> DnsWire:
    kind = fault.fault
    if kind in _FAULT_RCODE:
        return DnsWire(_FAULT_RCODE[kind], _FAULT_RCODE[kind])
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
