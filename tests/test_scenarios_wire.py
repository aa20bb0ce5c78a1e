"""Serve every catalogue scenario and probe it with an independent raw client.

The probe resolves through the world's DNS (dnspython), connects with
sockets, speaks SMTP line by line, verifies TLS with ``ssl``, and records
what the wire did. The test then checks that this wire behaviour is the one
the scenario's code stands for, and the details the scenario names
(certificate reason, point of the cut, FIN or RST, ...).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import pytest
from probe import Closed, RawSMTP, client_context, open_connection, resolve_a, resolve_mx

import scenarios
from fakes import World
from fakes.certs import expected_verify_failure

CONNECT_TIMEOUT = 0.3
DNS_TIMEOUT = 0.3


@dataclass
class Outcome:
    stage: str  # dns, connect, greeting, ehlo, starttls, tls, cert, closed, reply, delivered
    detail: str  # rcode, refused/timeout, reply line, verify code, where, ...
    how: str = ""  # fin/rst for closed
    host: str = ""
    lines: tuple[str, ...] = ()


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


def smtp_session(s: scenarios.Scenario, c: RawSMTP, world: World, name: str) -> Outcome:
    t = s.target
    stage = "greeting"
    try:
        greeting = c.reply("before the greeting")
        if greeting.code != 220:
            return Outcome("greeting", greeting.lines[0], how=c.wait_closed(), host=name)
        stage = "ehlo"
        ehlo = c.cmd("EHLO probe.test")
        if ehlo.code != 250:
            return Outcome("ehlo", ehlo.lines[0], host=name)
        if t.require_tls:
            if not any(line[4:].upper().startswith("STARTTLS") for line in ehlo.lines):
                return Outcome("ehlo", "no STARTTLS", host=name)
            stage = "starttls"
            st = c.cmd("STARTTLS")
            if st.code != 220:
                return Outcome("starttls", st.lines[0], host=name)
            stage = "tls"
            try:
                c.starttls(client_context(str(world.ca_file)), name)
            except ssl.SSLCertVerificationError as exc:
                return Outcome("cert", str(exc.verify_code), host=name)
            except ssl.SSLError as exc:
                return Outcome("tls", exc.reason or str(exc), host=name)
            stage = "after_starttls"
            ehlo = c.cmd("EHLO probe.test")
            if ehlo.code != 250:
                return Outcome("ehlo", ehlo.lines[0], host=name)
        commands = [("mail", f"MAIL FROM:<{t.mail_from}>"), *[("rcpt", f"RCPT TO:<{r}>") for r in t.rcpt_to]]
        for step, line in commands:
            stage = step
            r = c.cmd(line)
            if r.code >= 400:
                return Outcome("reply", r.lines[0], host=name)
        stage = "data"
        r = c.cmd("DATA")
        if r.code != 354:
            return Outcome("reply", r.lines[0], host=name)
        body = "Subject: mailfakes probe\r\n\r\n" + "A line of body text for the probe.\r\n" * 20
        c.send(body + ".")
        stage = "final_dot"
        r = c.reply("after the final dot")
        if r.code >= 400:
            return Outcome("reply", r.lines[0], host=name)
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
        if outcome == "reset":
            return Outcome("closed", "greeting", how="rst", host=name)
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
        return {"timeout": "4.4.315", "refused": "4.4.316"}[o.detail]
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


def target_host(s: scenarios.Scenario, o: Outcome):
    return s.world.host(o.host)


def test_wire_behaviour_matches_the_scenario_code(served):
    s, world = served
    o = probe(s, world)
    assert code_of(o) == s.expected_code, f"{s.id}: the wire said {o}"

    # The details each family promises.
    if o.stage == "dns":
        faults = {f.fault for f in s.world.dns_faults}
        if any(f.tcp == "reset" for f in s.world.dns_faults):
            assert o.detail == "TIMEOUT"  # the probe reads a cut TCP retry as no answer
        elif "drop" in faults or ("truncate" in faults and any(f.tcp == "drop" for f in s.world.dns_faults)):
            assert o.detail == "TIMEOUT"
        elif "servfail" in faults or any(f.tcp == "servfail" for f in s.world.dns_faults):
            assert o.detail == "SERVFAIL"
        elif "refused" in faults:
            assert o.detail == "REFUSED"
        else:
            assert o.detail in ("NXDOMAIN", "NODATA")
    elif o.stage == "connect":
        kind = target_host(s, o).kind
        assert (kind, o.detail) in (("blackhole", "timeout"), ("refuse", "refused"))
    elif o.stage == "greeting":
        assert o.detail.startswith("421") and o.how == "fin"  # 421, then the server closes
    elif o.stage == "cert":
        host = target_host(s, o)
        code, _ = expected_verify_failure(host.smtp.cert)
        assert o.detail == str(code)
    elif o.stage == "closed":
        host = target_host(s, o)
        ca = host.smtp.close_at
        if host.kind == "close_on_accept":
            assert o.detail == "greeting" and o.how == host.close
        else:
            assert ca is not None
            expected_stage = {
                "before_greeting": "greeting",
                "after_greeting": "ehlo",
                "after_ehlo": "ehlo",
                "after_starttls": "after_starttls",
                "after_mail": "mail",
                "after_rcpt": "rcpt",
                "in_data": "data",
                "after_final_dot": "final_dot",
            }[ca.point]
            assert o.detail == expected_stage or (ca.point == "in_data" and o.detail == "final_dot")
            assert o.how == ca.how or (ca.how == "rst" and o.how == "fin" and ca.point == "in_data")
        if ca is not None and ca.point == "after_final_dot":
            assert world.wait_until(lambda: len(world.messages) == 1, 2)
            assert world.messages[0].replied is False
    elif o.stage == "delivered":
        assert world.wait_until(lambda: len(world.messages) == 1, 2)
        msg = world.messages[0]
        assert msg.rcpt_tos == s.target.rcpt_to
        assert msg.tls_version is not None or not s.target.require_tls


def test_ehlo_without_starttls_is_visible_on_the_wire(make_world):
    s = scenarios.get("tls-starttls-missing")
    world = make_world(s.world)
    name = s.target.smart_host
    c = RawSMTP.connect(world.address_of(name), world.port)
    c.reply()
    ehlo = c.cmd("EHLO probe.test")
    assert ehlo.code == 250 and not any("STARTTLS" in line for line in ehlo.lines)
