"""mailfakes.classify on real exceptions: smtplib, aiosmtplib, ssl, socket and dnspython against a world.

Every exception here is raised by the library itself against a world on
loopback, except the few no loopback world can produce (``getaddrinfo``
errors other than EAI_NONAME need the system resolver; those are built by
hand and say so). Every wait is bounded by a client timeout.
"""

from __future__ import annotations

import asyncio
import errno
import smtplib
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosmtplib
import dns.flags
import dns.message
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import pytest
from error_world import SPEC, araised, raised
from mailfakes import World
from mailfakes.classify import classify
from mailfakes.codes import Failure, find_code

TIMEOUT = 2.0  # client timeouts where an answer comes at once (a bound, never waited out)
SHORT = 0.2  # where the point is that nothing comes
LOCAL_NAME = "client.fabrikam.test"


MakeWorld = Callable[..., World]


def serve(make_world: MakeWorld, *names: str) -> World:
    """A world with only the named hosts of SPEC (and all its DNS faults): a few ms to start."""
    return make_world({**SPEC, "hosts": {name: SPEC["hosts"][name] for name in names}})


def check(exc: BaseException, cls: str, detail: str, server_code: str | None = None) -> Failure:
    failure = classify(exc)
    assert failure is not None, f"{type(exc).__name__}: {exc!r} not classified"
    assert (failure.cls, failure.detail, failure.server_code) == (cls, detail, server_code), (exc, failure)
    assert failure.message
    return failure


# -- smtplib -----------------------------------------------------------------------


def smtp(world: World, host: str, timeout: float = TIMEOUT) -> smtplib.SMTP:
    return smtplib.SMTP(world.address_of(host), world.port, local_hostname=LOCAL_NAME, timeout=timeout)


def smtplib_starttls(world: World, host: str) -> None:
    """Connect, EHLO (checked), STARTTLS verifying the certificate against ``host``."""
    s = smtplib.SMTP(local_hostname=LOCAL_NAME, timeout=TIMEOUT)
    try:
        s.connect(world.address_of(host), world.port)
        s._host = host  # type: ignore[attr-defined]  # the name starttls() verifies
        code, text = s.ehlo()
        if code != 250:
            raise smtplib.SMTPHeloError(code, text)
        s.starttls(context=world.client_context())
        s.ehlo()
    finally:
        s.close()


def smtplib_send(world: World, host: str) -> object:
    with smtp(world, host) as s:
        return s.sendmail("sender@fabrikam.test", ["user@contoso.test"], b"Subject: x\r\n\r\nbody\r\n")


def test_smtplib_refused(make_world: MakeWorld) -> None:
    world = serve(make_world, "refuse.contoso.test")
    exc = raised(lambda: smtp(world, "refuse.contoso.test"))
    assert isinstance(exc, ConnectionRefusedError)
    check(exc, "refused", "refused")
    assert find_code(exc) == "4.4.316" and find_code(exc, "rfc3463") == "4.4.1"


def test_smtplib_connect_timeout(make_world: MakeWorld) -> None:
    world = serve(make_world, "blackhole.contoso.test")
    exc = raised(lambda: smtp(world, "blackhole.contoso.test", timeout=SHORT))
    assert isinstance(exc, TimeoutError)  # socket.timeout
    check(exc, "timeout", "connect")
    assert find_code(exc) == "4.4.315"


def test_smtplib_greeting_timeout_is_a_disconnect_that_says_timed_out(make_world: MakeWorld) -> None:
    world = serve(make_world, "silent.contoso.test")
    exc = raised(lambda: smtp(world, "silent.contoso.test", timeout=SHORT))
    assert isinstance(exc, smtplib.SMTPServerDisconnected) and "timed out" in str(exc)
    check(exc, "timeout", "read")

    # Connected, then no greeting: the conversation timed out, not the connect (4.4.318 / 4.4.2).
    assert find_code(exc) == "4.4.318" and find_code(exc, "rfc3463") == "4.4.2"


def test_a_bare_socket_timeout_after_connect_is_a_read_timeout(make_world: MakeWorld) -> None:
    world = serve(make_world, "silent.contoso.test")
    for _ in range(3):
        with socket.create_connection((world.address_of("silent.contoso.test"), world.port), 2) as sock:
            sock.settimeout(SHORT)
            reader = sock.makefile("rb")  # how smtplib and most clients read a reply line
            exc = raised(reader.readline)
        assert isinstance(exc, TimeoutError)
        check(exc, "timeout", "read")
        assert find_code(exc) == "4.4.318" and find_code(exc, "postfix") == "4.4.2"


def test_smtplib_421_greeting(make_world: MakeWorld) -> None:
    world = serve(make_world, "greet421.contoso.test")
    exc = raised(lambda: smtp(world, "greet421.contoso.test"))
    assert isinstance(exc, smtplib.SMTPConnectError) and exc.smtp_code == 421
    check(exc, "cannot_connect", "greeting_421", "4.3.2")
    assert find_code(exc) == "4.4.317" and find_code(exc, "rfc3463") == "4.3.2"


def test_smtplib_bare_connect_returns_421_without_raising(make_world: MakeWorld) -> None:
    world = serve(make_world, "greet421.contoso.test")
    # Pitfall: only SMTP(host) raises; SMTP().connect() hands the 421 back.
    s = smtplib.SMTP(local_hostname=LOCAL_NAME, timeout=TIMEOUT)
    try:
        code, text = s.connect(world.address_of("greet421.contoso.test"), world.port)
    finally:
        s.close()
    assert code == 421
    assert find_code((code, text)) == "4.3.2"  # the server's code, not an EOP one: check the code yourself


def test_smtplib_421_to_ehlo(make_world: MakeWorld) -> None:
    world = serve(make_world, "ehlo421.contoso.test")
    exc = raised(lambda: smtplib_starttls(world, "ehlo421.contoso.test"))
    assert isinstance(exc, smtplib.SMTPHeloError) and exc.smtp_code == 421
    check(exc, "cannot_connect", "ehlo_421", "4.3.2")
    assert find_code(exc) == "4.4.317" and find_code(exc, "rfc3463") == "4.3.2"


def test_smtplib_421_to_ehlo_unchecked_looks_like_a_lost_connection(make_world: MakeWorld) -> None:
    world = serve(make_world, "ehlo421.contoso.test")

    # Pitfall: starttls() runs ehlo_or_helo_if_needed(): EHLO gets 421, HELO then
    # meets the closed connection, so the 421 is lost and 4.4.318 is reported.
    def unchecked() -> None:
        with smtp(world, "ehlo421.contoso.test") as s:
            s.starttls(context=world.client_context())

    exc = raised(unchecked)
    assert isinstance(exc, smtplib.SMTPServerDisconnected)
    check(exc, "closed", "closed")


def test_smtplib_no_starttls(make_world: MakeWorld) -> None:
    world = serve(make_world, "notls.contoso.test")
    exc = raised(lambda: smtplib_starttls(world, "notls.contoso.test"))
    assert isinstance(exc, smtplib.SMTPNotSupportedError)
    check(exc, "cannot_connect", "no_starttls")
    assert find_code(exc) == "4.4.317" and find_code(exc, "rfc3463") == "4.7.4"


def test_smtplib_starttls_454(make_world: MakeWorld) -> None:
    world = serve(make_world, "tls454.contoso.test")
    exc = raised(lambda: smtplib_starttls(world, "tls454.contoso.test"))
    assert type(exc) is smtplib.SMTPResponseException and exc.smtp_code == 454
    check(exc, "cannot_connect", "starttls_refused", "4.7.0")
    assert find_code(exc) == "4.4.317" and find_code(exc, "rfc3463") == "4.7.0"


def test_smtplib_tls_handshake_failure(make_world: MakeWorld) -> None:
    world = serve(make_world, "tlsbroken.contoso.test")
    exc = raised(lambda: smtplib_starttls(world, "tlsbroken.contoso.test"))
    # The fake's server hangs up in the handshake without its alert reaching
    # us, so ssl says EOF (SSLEOFError) rather than TLSV1_ALERT_PROTOCOL_VERSION.
    assert isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLCertVerificationError)
    check(exc, "cannot_connect", "tls_handshake")
    assert find_code(exc) == "4.4.317" and find_code(exc, "rfc3463") == "4.7.5"


CERT_DETAILS = [
    ("expired", "expired", 10),
    ("not-yet-valid", "not_yet_valid", 9),
    ("wrong-host", "hostname", 62),
    ("untrusted-ca", "untrusted", 20),
    ("self-signed", "self_signed", 18),
    # X509 error 20 as for an unknown CA: a missing intermediate cannot be told apart.
    ("missing-intermediate", "untrusted", 20),
]


@pytest.mark.parametrize(("host", "detail", "verify_code"), CERT_DETAILS, ids=[c[0] for c in CERT_DETAILS])
def test_smtplib_certificate(make_world: MakeWorld, host: str, detail: str, verify_code: int) -> None:
    world = serve(make_world, f"{host}.contoso.test")
    exc = raised(lambda: smtplib_starttls(world, f"{host}.contoso.test"))
    assert isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_code == verify_code
    check(exc, "certificate", detail)
    assert find_code(exc) == "4.7.320"
    assert find_code(exc, "eop-observed") == "4.4.317" and find_code(exc, "rfc3463") == "4.7.5"


def test_smtplib_close_after_ehlo(make_world: MakeWorld) -> None:
    world = serve(make_world, "cut-ehlo.contoso.test")
    exc = raised(lambda: smtplib_starttls(world, "cut-ehlo.contoso.test"))
    assert isinstance(exc, smtplib.SMTPServerDisconnected)
    check(exc, "closed", "closed")
    assert find_code(exc) == "4.4.318" and find_code(exc, "rfc3463") == "4.4.2"


def test_smtplib_close_right_after_the_handshake_is_a_close_not_a_handshake_failure(
    make_world: MakeWorld,
) -> None:
    world = serve(make_world, "cut-tls.contoso.test")
    exc = raised(lambda: smtplib_starttls(world, "cut-tls.contoso.test"))
    assert isinstance(exc, smtplib.SMTPServerDisconnected)
    check(exc, "closed", "closed")


def test_smtplib_reset_before_greeting(make_world: MakeWorld) -> None:
    world = serve(make_world, "cut-rst.contoso.test")
    exc = raised(lambda: smtp(world, "cut-rst.contoso.test"))
    assert isinstance(exc, (smtplib.SMTPServerDisconnected, ConnectionResetError))
    check(exc, "closed", "closed")


@pytest.mark.parametrize(
    ("host", "exc_type", "server_code"),
    [
        ("rcpt550", smtplib.SMTPRecipientsRefused, "5.1.1"),
        ("rcpt550bare", smtplib.SMTPRecipientsRefused, "5.0.0"),  # no enhanced code: from the 550
        ("mail452", smtplib.SMTPSenderRefused, "4.3.1"),
        ("data451", smtplib.SMTPDataError, "4.3.0"),
    ],
)
def test_smtplib_server_replies(make_world: MakeWorld, host: str, exc_type: type, server_code: str) -> None:
    world = serve(make_world, f"{host}.contoso.test")
    exc = raised(lambda: smtplib_send(world, f"{host}.contoso.test"))
    assert isinstance(exc, exc_type)
    check(exc, "server_reply", "reply", server_code)
    for profile in ("eop", "rfc3463", "postfix", "eop-observed"):
        assert find_code(exc, profile) == server_code


# -- aiosmtplib --------------------------------------------------------------------


def aio(world: World, host: str, timeout: float = TIMEOUT, **kwargs: Any) -> aiosmtplib.SMTP:
    kwargs.setdefault("start_tls", True)
    return aiosmtplib.SMTP(
        hostname=world.address_of(host),
        port=world.port,
        local_hostname=LOCAL_NAME,
        timeout=timeout,
        tls_context=world.client_context(),
        **kwargs,
    )


def aio_starttls(world: World, host: str) -> BaseException:
    """Connect by address, STARTTLS verified against the name: the exception raised."""

    async def go() -> None:
        client = aio(world, host, start_tls=False)
        try:
            await client.connect()
            await client.starttls(server_hostname=host)
        finally:
            client.close()

    return araised(go)


def aio_send(world: World, host: str, recipients: list[str] | None = None) -> BaseException:
    async def go() -> object:
        client = aio(world, host, start_tls=False)
        try:
            await client.connect()
            return await client.sendmail(
                "sender@fabrikam.test", recipients or ["user@contoso.test"], "Subject: x\r\n\r\nbody\r\n"
            )
        finally:
            client.close()

    return araised(go)


def test_aiosmtplib_refused_wraps_the_socket_error(make_world: MakeWorld) -> None:
    world = serve(make_world, "refuse.contoso.test")
    exc = araised(lambda: aio(world, "refuse.contoso.test").connect())
    assert isinstance(exc, aiosmtplib.SMTPConnectError)
    assert isinstance(exc.__cause__, ConnectionRefusedError)
    check(exc, "refused", "refused")
    assert find_code(exc) == "4.4.316"


def test_aiosmtplib_connect_timeout(make_world: MakeWorld) -> None:
    world = serve(make_world, "blackhole.contoso.test")
    exc = araised(lambda: aio(world, "blackhole.contoso.test", timeout=SHORT).connect())
    assert isinstance(exc, aiosmtplib.SMTPConnectTimeoutError)
    check(exc, "timeout", "connect")
    assert find_code(exc) == "4.4.315" and find_code(exc, "rfc3463") == "4.4.1"


def test_aiosmtplib_greeting_timeout(make_world: MakeWorld) -> None:
    world = serve(make_world, "silent.contoso.test")
    exc = araised(lambda: aio(world, "silent.contoso.test", timeout=SHORT).connect())
    assert isinstance(exc, aiosmtplib.SMTPConnectTimeoutError)
    check(exc, "timeout", "greeting")


def test_aiosmtplib_read_timeout(make_world: MakeWorld) -> None:
    world = serve(make_world, "slow-ehlo.contoso.test")
    exc = araised(lambda: aio(world, "slow-ehlo.contoso.test", timeout=SHORT).connect())
    assert isinstance(exc, aiosmtplib.SMTPReadTimeoutError)
    check(exc, "timeout", "read")


def test_aiosmtplib_421_greeting(make_world: MakeWorld) -> None:
    world = serve(make_world, "greet421.contoso.test")
    exc = araised(lambda: aio(world, "greet421.contoso.test").connect())
    assert isinstance(exc, aiosmtplib.SMTPConnectResponseError) and exc.code == 421
    check(exc, "cannot_connect", "greeting_421", "4.3.2")
    assert find_code(exc) == "4.4.317" and find_code(exc, "rfc3463") == "4.3.2"


def test_aiosmtplib_421_to_ehlo(make_world: MakeWorld) -> None:
    world = serve(make_world, "ehlo421.contoso.test")
    exc = araised(lambda: aio(world, "ehlo421.contoso.test").connect())
    assert isinstance(exc, aiosmtplib.SMTPHeloError) and exc.code == 421
    check(exc, "cannot_connect", "ehlo_421", "4.3.2")


def test_aiosmtplib_no_starttls(make_world: MakeWorld) -> None:
    world = serve(make_world, "notls.contoso.test")
    exc = araised(lambda: aio(world, "notls.contoso.test").connect())
    assert type(exc) is aiosmtplib.SMTPException  # not SMTPNotSupported: matched on its text
    check(exc, "cannot_connect", "no_starttls")
    assert find_code(exc, "rfc3463") == "4.7.4"


def test_aiosmtplib_default_start_tls_falls_back_to_plaintext(make_world: MakeWorld) -> None:
    world = serve(make_world, "notls.contoso.test")

    # Pitfall: start_tls=None (the default) delivers in clear when STARTTLS is not offered.
    async def go() -> object:
        client = aio(world, "notls.contoso.test", start_tls=None)
        async with client:
            return await client.sendmail(
                "sender@fabrikam.test", ["user@contoso.test"], "Subject: x\r\n\r\nx\r\n"
            )

    result = asyncio.run(asyncio.wait_for(go(), 5))
    assert isinstance(result, tuple) and result[0] == {}
    assert world.wait_until(lambda: len(world.messages) == 1, 2)
    assert world.messages[0].tls_version is None


def test_aiosmtplib_starttls_454(make_world: MakeWorld) -> None:
    world = serve(make_world, "tls454.contoso.test")
    exc = aio_starttls(world, "tls454.contoso.test")
    assert type(exc) is aiosmtplib.SMTPResponseException and exc.code == 454
    check(exc, "cannot_connect", "starttls_refused", "4.7.0")


def test_aiosmtplib_tls_handshake_failure(make_world: MakeWorld) -> None:
    world = serve(make_world, "tlsbroken.contoso.test")
    exc = aio_starttls(world, "tlsbroken.contoso.test")
    # The server hangs up mid-handshake: aiosmtplib says "Connection reset while upgrading transport".
    assert isinstance(exc, (aiosmtplib.SMTPServerDisconnected, ssl.SSLError))
    check(exc, "cannot_connect", "tls_handshake")


@pytest.mark.parametrize(
    ("host", "detail", "verify_code"), CERT_DETAILS[:3], ids=[c[0] for c in CERT_DETAILS[:3]]
)
def test_aiosmtplib_certificate(make_world: MakeWorld, host: str, detail: str, verify_code: int) -> None:
    world = serve(make_world, f"{host}.contoso.test")
    name = f"{host}.contoso.test"
    exc = aio_starttls(world, name)
    assert isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_code == verify_code
    check(exc, "certificate", detail)


def test_aiosmtplib_close_before_greeting_is_a_connect_error(make_world: MakeWorld) -> None:
    world = serve(make_world, "cut-before-greeting.contoso.test")
    exc = araised(lambda: aio(world, "cut-before-greeting.contoso.test").connect())
    assert isinstance(exc, aiosmtplib.SMTPConnectError)
    assert isinstance(exc.__cause__, aiosmtplib.SMTPServerDisconnected)
    check(exc, "closed", "closed")


def test_aiosmtplib_close_after_ehlo(make_world: MakeWorld) -> None:
    world = serve(make_world, "cut-ehlo.contoso.test")
    exc = araised(lambda: aio(world, "cut-ehlo.contoso.test").connect())
    assert isinstance(exc, aiosmtplib.SMTPServerDisconnected)
    check(exc, "closed", "closed")


def test_aiosmtplib_close_right_after_the_handshake(make_world: MakeWorld) -> None:
    world = serve(make_world, "cut-tls.contoso.test")

    async def go() -> None:
        client = aio(world, "cut-tls.contoso.test", start_tls=False)
        try:
            await client.connect()
            await client.starttls(server_hostname="cut-tls.contoso.test")
            await client.ehlo()
        finally:
            client.close()

    exc = araised(go)
    assert isinstance(exc, aiosmtplib.SMTPServerDisconnected)
    check(exc, "closed", "closed")


def test_aiosmtplib_recipient_refused(make_world: MakeWorld) -> None:
    world = serve(make_world, "rcpt550.contoso.test")

    async def go() -> object:
        client = aio(world, "rcpt550.contoso.test", start_tls=False)
        try:
            await client.connect()
            await client.mail("sender@fabrikam.test")
            return await client.rcpt("user@contoso.test")
        finally:
            client.close()

    exc = araised(go)
    assert isinstance(exc, aiosmtplib.SMTPRecipientRefused)
    check(exc, "server_reply", "reply", "5.1.1")


@pytest.mark.parametrize(
    ("host", "exc_type", "server_code"),
    [
        ("rcpt550", aiosmtplib.SMTPRecipientsRefused, "5.1.1"),
        ("mail452", aiosmtplib.SMTPSenderRefused, "4.3.1"),
        ("data451", aiosmtplib.SMTPDataError, "4.3.0"),
    ],
)
def test_aiosmtplib_server_replies(
    make_world: MakeWorld, host: str, exc_type: type, server_code: str
) -> None:
    world = serve(make_world, f"{host}.contoso.test")
    exc = aio_send(world, f"{host}.contoso.test", ["a@contoso.test", "b@contoso.test"])
    assert isinstance(exc, exc_type)
    check(exc, "server_reply", "reply", server_code)
    assert find_code(exc) == server_code


# -- dnspython and getaddrinfo -------------------------------------------------------


def resolver(world: World, lifetime: float = TIMEOUT) -> dns.resolver.Resolver:
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [world.dns_host]
    r.port = world.dns_port
    r.timeout = r.lifetime = lifetime
    return r


@pytest.mark.parametrize(
    ("name", "exc_type", "detail", "rfc3463"),
    [
        ("nx.contoso.test", dns.resolver.NXDOMAIN, "nxdomain", "5.4.4"),
        ("nodata.contoso.test", dns.resolver.NoAnswer, "nodata", "5.4.4"),
        ("servfail.contoso.test", dns.resolver.NoNameservers, "servfail", "4.4.3"),
        ("refused.contoso.test", dns.resolver.NoNameservers, "refused", "4.4.3"),
        ("mail.example.org", dns.resolver.NoNameservers, "refused", "4.4.3"),  # outside the zone
        ("trunc-servfail.contoso.test", dns.resolver.NoNameservers, "servfail", "4.4.3"),
        ("trunc-refused.contoso.test", dns.resolver.NoNameservers, "refused", "4.4.3"),
    ],
)
def test_dnspython(make_world: MakeWorld, name: str, exc_type: type, detail: str, rfc3463: str) -> None:
    world = serve(make_world, "nodata.contoso.test")
    exc = raised(lambda: resolver(world).resolve(name, "A"))
    assert isinstance(exc, exc_type)
    check(exc, "dns", detail)
    assert find_code(exc) == "4.4.312" and find_code(exc, "rfc3463") == rfc3463


@pytest.mark.parametrize("name", ["drop.contoso.test", "trunc-drop.contoso.test"])
def test_dnspython_timeout(make_world: MakeWorld, name: str) -> None:
    world = serve(make_world)
    exc = raised(lambda: resolver(world, lifetime=SHORT).resolve(name, "A"))
    assert isinstance(exc, dns.resolver.LifetimeTimeout)
    check(exc, "dns", "timeout")
    assert find_code(exc) == "4.4.312" and find_code(exc, "rfc3463") == "4.4.3"


def test_dnspython_truncated_udp_answer(make_world: MakeWorld) -> None:
    world = serve(make_world)
    query = dns.message.make_query("trunc-drop.contoso.test", dns.rdatatype.A)
    exc = raised(
        lambda: dns.query.udp(query, world.dns_host, TIMEOUT, world.dns_port, raise_on_truncation=True)
    )
    assert isinstance(exc, dns.message.Truncated)
    check(exc, "dns", "truncated")


def test_getaddrinfo_name_not_found() -> None:
    # AI_NUMERICHOST: glibc answers EAI_NONAME for a name without asking any DNS server.
    exc = raised(lambda: socket.getaddrinfo("mail.contoso.test", 25, flags=socket.AI_NUMERICHOST))
    assert isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_NONAME
    check(exc, "dns", "nxdomain")
    assert find_code(exc) == "4.4.312" and find_code(exc, "rfc3463") == "5.4.4"


# Built by hand: only a real resolver (the system's, off loopback) gives these.
@pytest.mark.parametrize(
    ("code", "detail"),
    [
        (socket.EAI_AGAIN, "servfail"),  # SERVFAIL or no answer in time
        (socket.EAI_FAIL, "servfail"),
        (getattr(socket, "EAI_NODATA", -5), "nodata"),
        (socket.EAI_NONAME, "nxdomain"),
    ],
)
def test_getaddrinfo_errors_built_by_hand(code: int, detail: str) -> None:
    check(socket.gaierror(code, "built by hand"), "dns", detail)


def test_aiosmtplib_wraps_getaddrinfo_errors() -> None:
    # What aiosmtplib's connect does with the resolver's error (built: no system DNS here).
    def connect() -> None:
        try:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        except OSError as exc:
            raise aiosmtplib.SMTPConnectError(
                f"Error connecting to mail.contoso.test on port 25: {exc}"
            ) from exc

    check(raised(connect), "dns", "servfail")


def test_unknown_getaddrinfo_error() -> None:
    assert classify(socket.gaierror(socket.EAI_SERVICE, "Servname not supported")) is None


# -- sockets and ssl without a mail library ------------------------------------------


def test_raw_socket_refused_and_timeout(make_world: MakeWorld) -> None:
    world = serve(make_world, "blackhole.contoso.test", "refuse.contoso.test")
    port = world.port
    refused = raised(
        lambda: socket.create_connection((world.address_of("refuse.contoso.test"), port), TIMEOUT)
    )
    check(refused, "refused", "refused")
    timed_out = raised(
        lambda: socket.create_connection((world.address_of("blackhole.contoso.test"), port), SHORT)
    )
    check(timed_out, "timeout", "connect")


def test_raw_ssl_eof_after_the_handshake_is_a_close(make_world: MakeWorld) -> None:
    world = serve(make_world, "cut-tls.contoso.test")
    name = "cut-tls.contoso.test"

    def session() -> None:
        with socket.create_connection((world.address_of(name), world.port), TIMEOUT) as sock:
            f = sock.makefile("rb")
            f.readline()
            sock.sendall(b"EHLO client.fabrikam.test\r\n")
            while f.readline()[3:4] == b"-":
                pass
            sock.sendall(b"STARTTLS\r\n")
            f.readline()
            ctx = world.client_context()
            with ctx.wrap_socket(sock, server_hostname=name, suppress_ragged_eofs=False) as tls:
                tls.sendall(b"EHLO client.fabrikam.test\r\n")
                while True:
                    if not tls.recv(1024):
                        return

    exc = raised(session)
    assert isinstance(exc, (ssl.SSLEOFError, ConnectionResetError))
    check(exc, "closed", "closed")


# -- chains, groups, the unknown -----------------------------------------------------


class DeliveryFailed(Exception):
    pass


def refused_error(world: World) -> ConnectionRefusedError:
    exc = raised(
        lambda: socket.create_connection((world.address_of("refuse.contoso.test"), world.port), TIMEOUT)
    )
    assert isinstance(exc, ConnectionRefusedError)
    return exc


def test_a_clients_own_wrapper_is_looked_through(make_world: MakeWorld) -> None:
    world = serve(make_world, "refuse.contoso.test")
    inner = refused_error(world)

    def explicit() -> None:
        raise DeliveryFailed("could not deliver") from inner

    def implicit() -> None:
        try:
            raise inner
        except OSError:
            raise DeliveryFailed("could not deliver")  # noqa: B904 - the implicit __context__ is the point

    check(raised(explicit), "refused", "refused")
    check(raised(implicit), "refused", "refused")
    assert find_code(raised(explicit)) == "4.4.316"


def test_a_suppressed_context_is_not_looked_at(make_world: MakeWorld) -> None:
    world = serve(make_world, "refuse.contoso.test")
    inner = refused_error(world)

    def hidden() -> None:
        try:
            raise inner
        except OSError:
            raise DeliveryFailed("could not deliver") from None

    assert classify(raised(hidden)) is None


def test_exception_groups(make_world: MakeWorld) -> None:
    world = serve(make_world, "refuse.contoso.test")
    group = ExceptionGroup("all hosts failed", [ValueError("bad config"), refused_error(world)])
    check(group, "refused", "refused")
    nested = BaseExceptionGroup("outer", [ExceptionGroup("inner", [group])])
    check(nested, "refused", "refused")
    assert classify(ExceptionGroup("nothing known", [ValueError(), KeyError()])) is None


def test_asyncio_multiple_exceptions_text() -> None:
    # asyncio's create_connection folds several addresses' errors into one message.
    exc = OSError("Multiple exceptions: [Errno 111] Connect call failed ('127.1.2.3', 25), [Errno 111] ...")
    check(exc, "refused", "refused")


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("nothing to do with mail"),
        KeyboardInterrupt(),
        OSError(errno.ENOENT, "No such file or directory"),
        smtplib.SMTPResponseException(250, b"2.0.0 fine"),  # not an error reply
        smtplib.SMTPException("something else"),
    ],
    ids=["ValueError", "KeyboardInterrupt", "ENOENT", "250", "SMTPException"],
)
def test_unknown_is_none(exc: BaseException) -> None:
    assert classify(exc) is None


def test_enhanced_code_of_another_class_is_not_trusted() -> None:
    exc = smtplib.SMTPRecipientsRefused({"user@contoso.test": (550, b"4.1.1 odd server")})
    check(exc, "server_reply", "reply", "5.0.0")


def test_421_to_a_transaction_command_is_cannot_connect() -> None:
    exc = smtplib.SMTPSenderRefused(421, b"4.3.2 Shutting down", "sender@fabrikam.test")
    check(exc, "cannot_connect", "reply_421", "4.3.2")
    assert find_code(exc) == "4.4.317"


def test_cyclic_chains_end() -> None:
    a, b = DeliveryFailed("a"), DeliveryFailed("b")
    a.__context__, b.__context__ = b, a
    assert classify(a) is None


def test_importing_classify_imports_neither_aiosmtplib_nor_dnspython() -> None:
    code = (
        "import sys, mailfakes.classify as c; "
        "assert c.classify(ConnectionRefusedError()).cls == 'refused'; "
        "assert c.classify(ValueError()) is None; "
        "bad = [m for m in ('aiosmtplib', 'dns') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30, cwd=Path(__file__).parents[1])


def test_aiosmtplib_connect_error_without_a_cause_is_read_from_its_text() -> None:
    refused = aiosmtplib.SMTPConnectError("Error connecting to x on port 25: [Errno 111] Connect call failed")
    check(refused, "refused", "refused")
    check(
        aiosmtplib.SMTPConnectError("Error connecting to x on port 25: Connection lost"), "closed", "closed"
    )
    looped, inner = aiosmtplib.SMTPConnectError("Error connecting"), ValueError("loop")
    looped.__cause__, inner.__context__ = inner, looped
    assert classify(looped) is None


# -- TLS policy: revocation and DNSSEC, raised by the libraries themselves -------------------


def test_ssl_with_the_crl_raises_revoked_which_is_a_certificate_failure() -> None:
    spec = {"hosts": {"mail.contoso.test": {"cert": "revoked"}}}
    with World(spec) as w:
        ctx = ssl.create_default_context(cafile=str(w.ca_file))
        ctx.load_verify_locations(cafile=str(w.crl_file))
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        with smtplib.SMTP(w.address_of("mail.contoso.test"), w.port, timeout=5) as smtp:
            smtp._host = "mail.contoso.test"  # the name starttls() checks
            exc = raised(lambda: smtp.starttls(context=ctx))
    assert isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_code == 23
    failure = classify(exc)
    assert failure is not None and (failure.cls, failure.detail) == ("certificate", "revoked")
    assert find_code(exc) == "4.7.320" and find_code(exc, "rfc3463") == "4.7.5"


def test_dnspython_validation_of_a_bogus_tlsa_is_dnssec_invalid() -> None:
    import dns.dnssec
    import dns.name

    spec = {
        "dnssec": {"zones": ["contoso.test"]},
        "hosts": {"mx1.contoso.test": {"tlsa": True}},
        "dns_faults": [{"name": "_25._tcp.mx1.contoso.test", "fault": "bad_signature", "types": ["TLSA"]}],
    }
    with World(spec) as w:
        where = (w.dns_host, w.dns_port)

        def ask(name: str, rdtype: str) -> dns.message.Message:
            q = dns.message.make_query(name, rdtype, want_dnssec=True)
            q.flags |= dns.flags.CD  # the records with their signatures, as a validating client wants
            return dns.query.udp(q, where[0], port=where[1], timeout=2)

        zone = dns.name.from_text("contoso.test")
        keys = ask("contoso.test", "DNSKEY").find_rrset(
            dns.message.ANSWER, zone, dns.rdataclass.IN, dns.rdatatype.DNSKEY
        )
        sigs = ask("contoso.test", "DNSKEY").find_rrset(
            dns.message.ANSWER, zone, dns.rdataclass.IN, dns.rdatatype.RRSIG, dns.rdatatype.DNSKEY
        )
        dns.dnssec.validate(keys, sigs, {zone: keys})  # the zone's own keys are fine
        answer = ask("_25._tcp.mx1.contoso.test", "TLSA")
        name = dns.name.from_text("_25._tcp.mx1.contoso.test")
        tlsa = answer.find_rrset(dns.message.ANSWER, name, dns.rdataclass.IN, dns.rdatatype.TLSA)
        rrsig = answer.find_rrset(
            dns.message.ANSWER, name, dns.rdataclass.IN, dns.rdatatype.RRSIG, dns.rdatatype.TLSA
        )
        exc = raised(lambda: dns.dnssec.validate(tlsa, rrsig, {zone: keys}))
    assert isinstance(exc, dns.dnssec.ValidationFailure)
    failure = classify(exc)
    assert failure is not None and (failure.cls, failure.detail) == ("dane", "dnssec-invalid")
    assert find_code(exc) == "4.7.324" and find_code(exc, "postfix") == "4.7.5"
