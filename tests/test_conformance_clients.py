"""smtplib and aiosmtplib, driven as a user would, against every scenario of the catalogue.

For each scenario a small delivery function (one per library, written the way
a team writes its own: TLS required, the world's CA trusted, the host name
verified) delivers one message. What it raises (or returns, on success) must
classify, through ``mailfakes.codes.find_code``, to the scenario's code under the
``eop`` profile, and under ``rfc3463`` where the exception carries the detail.

Both functions resolve through the world's DNS server with dnspython (MX in
preference order when there is no smart host, falling back to the next host
when a connection cannot be made, like an MTA), connect to the resolved
address on the world's port, and verify the certificate against the host
*name*:

- smtplib: ``ResolvedSMTP`` connects to the resolved address but keeps the
  name as ``_host``, which ``starttls()`` uses for SNI and the name check;
- aiosmtplib: ``start_tls=True`` would verify against the address it connected
  to (its ``hostname``), so the connection is made to the address with
  ``start_tls=False`` and then upgraded with ``starttls(server_hostname=name)``,
  which raises when the server does not offer STARTTLS: as strict as
  ``start_tls=True``, never the silent plaintext of the default ``None``. The
  third variant, ``aiosmtplib-sock``, shows the other clean way: it connects
  the socket itself and hands aiosmtplib ``hostname=name, sock=...,
  start_tls=True``; its connection errors are then the socket's own.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import dns.exception
import dns.resolver
import pytest
from mailfakes import World
from mailfakes import catalogue as scenarios
from mailfakes.codes import find_code, first_enhanced_code
from mailfakes.facts import account, implicit_tls_of

# Short where the failure is the wait (a dropped DNS query, a SYN never answered);
# generous for replies, which a healthy fake sends at once.
DNS_LIFETIME = 0.3
CONNECT_TIMEOUT = 0.3
READ_TIMEOUT = 2.0
SESSION_BOUND = 5.0  # a whole aiosmtplib delivery; every step has its own shorter timeout too


def read_timeout(target: scenarios.Target) -> float:
    """The scenario's own client timeout (a slow server: its verdict depends on it), else ours."""
    return target.timeout if target.timeout is not None else READ_TIMEOUT


LOCAL_NAME = "client.fabrikam.test"  # never socket.getfqdn(): it may ask the real DNS


def _tls_policy(s: scenarios.Scenario) -> bool:
    """DANE, MTA-STS and revocation are a delivery client's TLS policy, which these application
    clients (a smart host, PKIX checks, no CRL) do not have: the reference connector, Postfix and
    the raw clients of tests/test_tls_policy_wire.py and tests/test_dnssec.py cover them."""
    return s.world.tls_policy


CATALOGUE = {sid: s for sid, s in scenarios.load_catalogue().items() if not _tls_policy(s)}
CLIENTS = ("smtplib", "aiosmtplib", "aiosmtplib-sock")

# (client, scenario id) -> why that client cannot report the scenario's code.
# Used as xfail(strict=True): if a client learns to express one, the test says so.
# Empty today: all three clients express every scenario, under every profile,
# on these conditions (each shown failing in tests/test_classify.py):
# - smtp-421-ehlo, smtplib: only because deliver_smtplib checks ehlo()'s code.
#   Calling starttls() straight away makes smtplib try HELO on the closed
#   connection: SMTPServerDisconnected, reported 4.4.318.
# - tls-starttls-missing, aiosmtplib: only with TLS required (start_tls=True, or
#   an explicit starttls()); the default start_tls=None delivers in clear.
# - tls-handshake-failure: the fake's server hangs up inside the handshake, so
#   the clients see an EOF there (SSLEOFError; aiosmtplib "Connection reset
#   while upgrading transport"), which classify() tells from a later close by
#   where it was raised.
# - tls-cert-missing-intermediate: OpenSSL gives X509 error 20 as for an unknown
#   CA, so the detail is "untrusted", not "chain"; every profile's code is the same.
CANNOT_EXPRESS: dict[tuple[str, str], str] = {
    ("aiosmtplib", "auth-submissions-465-delivered"): (
        "aiosmtplib 3 checks an implicit-TLS (use_tls) certificate against the hostname it connects "
        "to, and has no server_hostname: connected to an address resolved through the world's DNS, "
        "it fails verification (IP mismatch); sock= (the aiosmtplib-sock client) keeps the name"
    ),
}

# (client, scenario id, profile) -> why the exception lacks the detail that
# profile needs; the other profiles are still checked for those.
NO_PROFILE_DETAIL: dict[tuple[str, str, str], str] = {
    (client, "dns-mx-no-address", "postfix"): (
        "an NXDOMAIN exception does not say whether the name was a relayhost (Postfix: 4.3.5) "
        "or an MX host (Postfix: 5.4.4); the classifier reads it as a relayhost"
    )
    for client in CLIENTS
}


# -- what a user writes ------------------------------------------------------------


def make_resolver(world: World) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [world.dns_host]
    resolver.port = world.dns_port
    resolver.timeout = resolver.lifetime = DNS_LIFETIME
    return resolver


def mail_hosts(resolver: dns.resolver.Resolver, domain: str) -> list[str]:
    """The MX hosts of ``domain`` in preference order (the domain itself without MX)."""
    try:
        answer = resolver.resolve(domain, "MX")
    except dns.resolver.NoAnswer:
        return [domain]
    records = sorted(answer, key=lambda r: r.preference)
    return [r.exchange.to_text(omit_final_dot=True) for r in records]


def routes(world: World, target: scenarios.Target) -> Iterator[tuple[str, str] | BaseException]:
    """(host name, IP) pairs to try in order; a DNS error stands in for a host it hid.

    A DNS error of the MX lookup itself is raised: there is nothing to try.
    """
    if target.smart_host and target.connect_by_ip:
        # The connector holds an IP address; the name is still what the certificate must match.
        yield target.smart_host, world.address_of(target.smart_host)
        return
    resolver = make_resolver(world)
    names = [target.smart_host] if target.smart_host else mail_hosts(resolver, target.mail_domain)
    for name in names:
        # AAAA then A, as getaddrinfo sorts ::1 before 127/8 (RFC 6724); a family that answers is
        # used when the other fails (Postfix merges the types it asks for, glibc returns the A
        # records when AAAA gets SERVFAIL). Without any address, the A lookup's error stands.
        found: list[str] = []
        error: BaseException | None = None
        for rtype in ("A", "AAAA"):
            try:
                found = [r.address for r in resolver.resolve(name, rtype)] + found
            except dns.resolver.NXDOMAIN as exc:
                error = error or exc
                break  # the name does not exist: no other type either
            except dns.exception.DNSException as exc:
                error = error or exc
        if not found:
            assert error is not None
            yield error
            continue
        for address in found:
            yield name, address


def message(target: scenarios.Target) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = target.mail_from
    msg["To"] = ", ".join(target.rcpt_to)
    msg["Subject"] = "mailfakes conformance"
    msg.set_content("A line of body text.\n" * 20)
    return msg


class ResolvedSMTP(smtplib.SMTP):
    """smtplib.SMTP that connects to an address resolved elsewhere, keeping the host name for TLS."""

    def __init__(
        self, name: str, address: str, port: int, implicit: ssl.SSLContext | None = None, **kwargs: Any
    ) -> None:
        self._address = address
        self._implicit = implicit  # TLS from the first byte (RFC 8314), verified against the name
        self.final_reply: tuple[int, bytes] | None = None
        super().__init__(name, port, **kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((self._address, port), CONNECT_TIMEOUT, self.source_address)
        sock.settimeout(timeout)  # the read timeout from here on
        if self._implicit is not None:
            return self._implicit.wrap_socket(sock, server_hostname=host)
        return sock

    def data(self, msg: Any) -> tuple[int, bytes]:
        # sendmail() drops the reply to the final dot; keep it to report the server's code.
        self.final_reply = super().data(msg)
        return self.final_reply


def deliver_smtplib(world: World, target: scenarios.Target, context: ssl.SSLContext) -> str:
    last: BaseException | None = None
    for route in routes(world, target):
        if isinstance(route, BaseException):
            last = route
            continue
        name, address = route
        try:
            implicit = context if implicit_tls_of(target, world) else None
            smtp = ResolvedSMTP(
                name,
                address,
                world.port,
                implicit=implicit,
                local_hostname=LOCAL_NAME,
                timeout=read_timeout(target),
            )
        except (smtplib.SMTPConnectError, ConnectionRefusedError, TimeoutError) as exc:
            last = exc  # no session with this host: try the next one
            continue
        with smtp:
            code, reply = smtp.ehlo()
            if code in (500, 502):  # RFC 5321 4.1.4: a server that does not know EHLO takes HELO
                code, reply = smtp.helo()
            if code != 250:
                raise smtplib.SMTPHeloError(code, reply)
            if implicit is None and (target.require_tls or smtp.has_extn("starttls")):
                smtp.starttls(context=context)  # raises SMTPNotSupportedError when not offered
                smtp.ehlo()
            acct = account(target, world)
            if acct is not None and smtp.has_extn("auth"):  # not offered: go on, as Postfix does
                smtp.login(acct.user, acct.password)  # raises SMTPAuthenticationError when refused
            msg = message(target)
            refused = smtp.send_message(msg)
            # 452 to some recipients (a limit per message): they go in another transaction,
            # as RFC 5321 4.5.3.1.10 asks; any other refusal fails the delivery.
            while refused and all(code == 452 for code, _ in refused.values()):
                refused = smtp.send_message(msg, to_addrs=list(refused))
            if refused:
                raise smtplib.SMTPRecipientsRefused(refused)
            code, reply = smtp.final_reply or (250, b"2.0.0")
            return success_line(code, reply.decode())
    assert last is not None
    raise last


def success_line(code: int, text: str) -> str:
    """The final reply as the user's report: a reply without an enhanced code (a HELO session, no
    ENHANCEDSTATUSCODES) stands for x.0.0 of its first digit (RFC 3463 3.1)."""
    if first_enhanced_code(text) is None:
        text = f"{code // 100}.0.0 {text}"
    return f"{code} {text}"


async def _aio_session(smtp: aiosmtplib.SMTP, world: World, target: scenarios.Target) -> str:
    acct = account(target, world)
    if acct is not None:
        if not smtp.esmtp_extensions:
            await smtp.ehlo()  # the EHLO inside TLS, whose extensions say whether AUTH is offered
        if smtp.supports_extension("auth"):  # not offered: go on, as Postfix does
            await smtp.login(acct.user, acct.password)  # raises SMTPAuthenticationError when refused
    msg = message(target)
    refused, reply = await smtp.send_message(msg)
    while refused and all(r.code == 452 for r in refused.values()):  # the rest in a new transaction
        refused, reply = await smtp.send_message(msg, recipients=list(refused))
    if refused:
        raise aiosmtplib.SMTPRecipientsRefused(
            [aiosmtplib.SMTPRecipientRefused(r.code, r.message, addr) for addr, r in refused.items()]
        )
    try:
        await smtp.quit()
    except aiosmtplib.SMTPException:
        smtp.close()
    return success_line(250, str(reply))


async def deliver_aiosmtplib(world: World, target: scenarios.Target, context: ssl.SSLContext) -> str:
    last: BaseException | None = None
    for route in routes(world, target):
        if isinstance(route, BaseException):
            last = route
            continue
        name, address = route
        implicit = implicit_tls_of(target, world)
        smtp = aiosmtplib.SMTP(
            hostname=address,
            port=world.port,
            local_hostname=LOCAL_NAME,
            timeout=read_timeout(target),
            use_tls=implicit,  # verified against the address: see CANNOT_EXPRESS
            start_tls=False,  # upgraded below, verified against the name
            tls_context=context,
        )
        try:
            # The TCP connect and the greeting: a scenario's own timeout is for the greeting too.
            await smtp.connect(timeout=target.timeout or CONNECT_TIMEOUT)
        except aiosmtplib.SMTPConnectError as exc:
            last = exc  # no session with this host: try the next one
            continue
        try:
            if not implicit and (target.require_tls or smtp.supports_extension("starttls")):
                await smtp.starttls(server_hostname=name)  # raises SMTPException when not offered
            return await _aio_session(smtp, world, target)
        finally:
            smtp.close()
    assert last is not None
    raise last


async def deliver_aiosmtplib_sock(world: World, target: scenarios.Target, context: ssl.SSLContext) -> str:
    last: BaseException | None = None
    loop = asyncio.get_running_loop()
    for route in routes(world, target):
        if isinstance(route, BaseException):
            last = route
            continue
        name, address = route
        sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (address, world.port)), CONNECT_TIMEOUT)
        except OSError as exc:  # TimeoutError too
            sock.close()
            last = exc
            continue
        smtp = aiosmtplib.SMTP(
            hostname=name,
            sock=sock,
            local_hostname=LOCAL_NAME,
            timeout=read_timeout(target),
            use_tls=implicit_tls_of(target, world),  # TLS from the first byte (RFC 8314)
            start_tls=False if implicit_tls_of(target, world) else True if target.require_tls else None,
            tls_context=context,
        )
        try:
            await smtp.connect()
            return await _aio_session(smtp, world, target)
        finally:
            smtp.close()
    assert last is not None
    raise last


DELIVER: dict[str, Callable[[World, scenarios.Target, ssl.SSLContext], Any]] = {
    "smtplib": deliver_smtplib,
    "aiosmtplib": deliver_aiosmtplib,
    "aiosmtplib-sock": deliver_aiosmtplib_sock,
}


def run(client: str, world: World, target: scenarios.Target) -> object:
    """What the client produced: its exception, or its success line."""
    context = world.client_context()
    try:
        if client == "smtplib":
            return deliver_smtplib(world, target, context)

        async def bounded() -> str:
            result: str = await asyncio.wait_for(DELIVER[client](world, target, context), SESSION_BOUND)
            return result

        return asyncio.run(bounded())
    except Exception as exc:
        return exc


# -- the tests ---------------------------------------------------------------------


def _params() -> list[Any]:
    params = []
    for client in CLIENTS:
        for sid in CATALOGUE:
            marks = []
            if (client, sid) in CANNOT_EXPRESS:
                marks.append(pytest.mark.xfail(strict=True, reason=CANNOT_EXPRESS[client, sid]))
            params.append(pytest.param(client, sid, marks=marks, id=f"{client}-{sid}"))
    return params


@pytest.mark.parametrize(("client", "sid"), _params())
def test_client_failure_classifies_to_the_scenario_code(client: str, sid: str, make_world: Any) -> None:
    s = CATALOGUE[sid]
    world = make_world(s.world)
    produced = run(client, world, s.target)
    tail = world.sessions[-1].text().splitlines()[-6:] if world.sessions else []
    what = f"{sid} via {client}: {type(produced).__name__}: {produced!r}; transcript tail: {tail}"
    assert find_code(produced, "eop") == s.code_for("eop"), what
    for profile in ("rfc3463", "postfix", "eop-observed"):
        if (client, sid, profile) not in NO_PROFILE_DETAIL:
            assert find_code(produced, profile) == s.code_for(profile), f"{profile}: {what}"
    if s.is_success:
        # Every recipient delivered, in one message or one per transaction (a recipient limit).
        assert world.wait_until(
            lambda: sum(len(m.rcpt_tos) for m in world.messages) == len(s.target.rcpt_to), 2
        )
        assert sorted(r for m in world.messages for r in m.rcpt_tos) == sorted(s.target.rcpt_to)
        # Under TLS, unless the target lets it go in clear and the host offers no STARTTLS.
        clear_ok = not s.target.require_tls and all(h.smtp.tls == "none" for h in s.world.hosts)
        assert clear_ok or all(m.tls_version is not None for m in world.messages)


def test_every_exception_named_in_the_tables_is_a_real_pair() -> None:
    for client, sid in (*CANNOT_EXPRESS, *((c, i) for c, i, _ in NO_PROFILE_DETAIL)):
        assert client in CLIENTS and sid in CATALOGUE, (client, sid)
