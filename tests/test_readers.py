"""The readers on what real clients said: live curl, swaks and msmtp runs, real Python exceptions.

The Python reader is held to :func:`mailfakes.classify.classify` and
:func:`mailfakes.codes.find_code`: each exception of the README's table is
raised for real (by smtplib, aiosmtplib, ssl, socket or dnspython against a
world, or against a small raw server on loopback where the world cannot
misbehave that way), printed as Python prints it, and read back; the
expected answer is what find_code says on the exception object itself.
Postfix needs a namespace and root: its live output is read in
tests/test_postfix.py.
"""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import smtplib
import socket
import ssl
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import dns.message
import dns.query
import dns.rdatatype
import dns.resolver
import pytest
from error_world import SPEC, araised, raised
from mailfakes import World
from mailfakes.classify import classify
from mailfakes.codes import PROFILES, Failure, code_for, find_code
from mailfakes.readers import read_curl, read_msmtp, read_postfix, read_python, read_swaks

ROOT = Path(__file__).resolve().parent.parent
MESSAGE = ROOT / "recipes" / "message.eml"
TIMEOUT = 2.0  # a bound on answers that come at once
SHORT = 0.2  # where the point is that nothing comes
LOCAL = "client.fabrikam.test"
NAME = "mail.contoso.test"


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world(SPEC)


# -- small raw servers for what a world does not do -------------------------------------


class RawServer:
    """A loopback listener that runs ``handle(conn)`` for each connection, in a thread."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.handle = handle
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                self.handle(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept(); close() alone does not
        self.sock.close()
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket], None]], RawServer]]:
    servers: list[RawServer] = []

    def start(handle: Callable[[socket.socket], None]) -> RawServer:
        servers.append(RawServer(handle))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def smtp_until_starttls(conn: socket.socket) -> None:
    """Greet, answer EHLO with STARTTLS, accept STARTTLS: the handshake comes next."""
    conn.settimeout(TIMEOUT)
    f = conn.makefile("rb")
    conn.sendall(b"220 mail.contoso.test ESMTP\r\n")
    f.readline()
    conn.sendall(b"250-mail.contoso.test\r\n250 STARTTLS\r\n")
    f.readline()
    conn.sendall(b"220 2.0.0 Ready to start TLS\r\n")


def hang_up_in_handshake(conn: socket.socket) -> None:
    """Read the ClientHello, then close: the client's handshake meets an EOF."""
    smtp_until_starttls(conn)
    conn.recv(4096)
    conn.shutdown(socket.SHUT_WR)


def reset_on_accept(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def tls12_only(world: World) -> Callable[[socket.socket], None]:
    """A STARTTLS server that speaks TLS 1.2 at most (the client will ask for 1.3)."""
    assert world.ca is not None
    issued = world.ca.issue(NAME, "valid")

    def handle(conn: socket.socket) -> None:
        smtp_until_starttls(conn)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(issued.cert_file, issued.key_file)
        with contextlib.suppress(ssl.SSLError):  # the client's alert, or ours
            ctx.wrap_socket(conn, server_side=True).close()

    return handle


# -- the ways to raise ------------------------------------------------------------------


def smtp(w: World, host: str, timeout: float = TIMEOUT) -> smtplib.SMTP:
    return smtplib.SMTP(w.address_of(host), w.port, local_hostname=LOCAL, timeout=timeout)


def starttls_at(address: str, port: int, name: str, context: ssl.SSLContext) -> None:
    """smtplib: connect, EHLO (checked), STARTTLS verified against ``name``."""
    s = smtplib.SMTP(local_hostname=LOCAL, timeout=TIMEOUT)
    try:
        s.connect(address, port)
        s._host = name  # type: ignore[attr-defined]  # the name starttls() verifies
        code, text = s.ehlo()
        if code != 250:
            raise smtplib.SMTPHeloError(code, text)
        s.starttls(context=context)
        s.ehlo()
    finally:
        s.close()


def starttls(w: World, host: str) -> None:
    starttls_at(w.address_of(host), w.port, host, w.client_context())


def send(w: World, host: str) -> object:
    with smtp(w, host) as s:
        return s.sendmail("sender@fabrikam.test", ["user@contoso.test"], b"Subject: x\r\n\r\nbody\r\n")


def aio(w: World, host: str, timeout: float = TIMEOUT, **kwargs: Any) -> aiosmtplib.SMTP:
    kwargs.setdefault("start_tls", True)
    return aiosmtplib.SMTP(
        hostname=w.address_of(host),
        port=w.port,
        local_hostname=LOCAL,
        timeout=timeout,
        tls_context=w.client_context(),
        **kwargs,
    )


def aio_starttls_at(address: str, port: int, name: str, context: ssl.SSLContext) -> BaseException:
    async def go() -> None:
        client = aiosmtplib.SMTP(
            hostname=address, port=port, local_hostname=LOCAL, timeout=TIMEOUT, start_tls=False
        )
        try:
            await client.connect()
            await client.starttls(server_hostname=name, tls_context=context)
        finally:
            client.close()

    return araised(go)


def aio_send(w: World, host: str) -> BaseException:
    async def go() -> object:
        client = aio(w, host, start_tls=False)
        try:
            await client.connect()
            return await client.sendmail(
                "sender@fabrikam.test", ["user@contoso.test"], "Subject: x\r\n\r\nx\r\n"
            )
        finally:
            client.close()

    return araised(go)


def resolve(w: World, name: str, lifetime: float = TIMEOUT) -> object:
    r = dns.resolver.Resolver(configure=False)
    r.nameservers, r.port, r.lifetime = [w.dns_host], w.dns_port, lifetime
    return r.resolve(name, "A")


def raw_ssl_eof_after_handshake(w: World) -> None:
    name = "cut-tls.contoso.test"
    with socket.create_connection((w.address_of(name), w.port), TIMEOUT) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"EHLO client.fabrikam.test\r\n")
        while f.readline()[3:4] == b"-":
            pass
        sock.sendall(b"STARTTLS\r\n")
        f.readline()
        with w.client_context().wrap_socket(sock, server_hostname=name, suppress_ragged_eofs=False) as tls:
            tls.sendall(b"EHLO client.fabrikam.test\r\n")
            while tls.recv(1024):
                pass


class DeliveryFailed(Exception):
    pass


def wrapped(inner: BaseException, *, explicit: bool = True, hide: bool = False) -> BaseException:
    """A client's own exception raised from (or while handling) ``inner``."""

    def go() -> None:
        try:
            raise inner
        except Exception as exc:
            if hide:
                raise DeliveryFailed("could not deliver") from None
            if explicit:
                raise DeliveryFailed("could not deliver") from exc
            raise DeliveryFailed("could not deliver")  # noqa: B904 - the implicit context is the point

    return raised(go)


def built(exc: BaseException) -> Callable[[World], BaseException]:
    """An exception no loopback world can make, raised for real so it has a traceback."""

    def go(_: World) -> BaseException:
        def throw() -> None:
            raise exc

        return raised(throw)

    return go


def gai_wrapped_by_aiosmtplib(_: World) -> BaseException:
    def connect() -> None:
        try:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        except OSError as exc:
            raise aiosmtplib.SMTPConnectError(f"Error connecting to {NAME} on port 25: {exc}") from exc

    return raised(connect)


Maker = Callable[..., BaseException]

# (id, what the library raises, how). The rows follow the README's table of Python exceptions.
ROWS: list[tuple[str, type[BaseException] | tuple[type[BaseException], ...], Maker]] = [
    ("dns-nxdomain", dns.resolver.NXDOMAIN, lambda w: raised(lambda: resolve(w, "nx.contoso.test"))),
    ("dns-noanswer", dns.resolver.NoAnswer, lambda w: raised(lambda: resolve(w, "nodata.contoso.test"))),
    (
        "dns-servfail",
        dns.resolver.NoNameservers,
        lambda w: raised(lambda: resolve(w, "servfail.contoso.test")),
    ),
    ("dns-refused", dns.resolver.NoNameservers, lambda w: raised(lambda: resolve(w, "refused.contoso.test"))),
    (
        "dns-lifetime",
        dns.resolver.LifetimeTimeout,
        lambda w: raised(lambda: resolve(w, "drop.contoso.test", SHORT)),
    ),
    (
        "dns-truncated",
        dns.message.Truncated,
        lambda w: raised(
            lambda: dns.query.udp(
                dns.message.make_query("trunc-servfail.contoso.test", dns.rdatatype.A),
                w.dns_host,
                TIMEOUT,
                w.dns_port,
                raise_on_truncation=True,
            )
        ),
    ),
    (
        "gai-noname",
        socket.gaierror,
        # AI_NUMERICHOST: glibc answers EAI_NONAME without asking any DNS server.
        lambda w: raised(lambda: socket.getaddrinfo(NAME, 25, flags=socket.AI_NUMERICHOST)),
    ),
    (
        "gai-again",
        socket.gaierror,
        built(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")),
    ),
    (
        "gai-fail",
        socket.gaierror,
        built(socket.gaierror(socket.EAI_FAIL, "Non-recoverable failure in name resolution")),
    ),
    ("gai-nodata", socket.gaierror, built(socket.gaierror(-5, "No address associated with hostname"))),
    ("aiosmtplib-gai", aiosmtplib.SMTPConnectError, gai_wrapped_by_aiosmtplib),
    (
        "smtplib-connect-timeout",
        TimeoutError,
        lambda w: raised(lambda: smtp(w, "blackhole.contoso.test", SHORT)),
    ),
    (
        "aiosmtplib-connect-timeout",
        aiosmtplib.SMTPConnectTimeoutError,
        lambda w: araised(lambda: aio(w, "blackhole.contoso.test", SHORT).connect()),
    ),
    (
        "aiosmtplib-greeting-timeout",
        aiosmtplib.SMTPConnectTimeoutError,
        lambda w: araised(lambda: aio(w, "silent.contoso.test", SHORT).connect()),
    ),
    (
        "aiosmtplib-read-timeout",
        aiosmtplib.SMTPTimeoutError,
        lambda w: araised(lambda: aio(w, "slow-ehlo.contoso.test", SHORT).connect()),
    ),
    (
        "smtplib-read-timeout",
        smtplib.SMTPServerDisconnected,
        lambda w: raised(lambda: smtp(w, "silent.contoso.test", SHORT)),
    ),
    ("smtplib-refused", ConnectionRefusedError, lambda w: raised(lambda: smtp(w, "refuse.contoso.test"))),
    (
        "oserror-econnrefused",
        OSError,
        built(OSError(errno.ECONNREFUSED, "Connection refused")),
    ),
    (
        "aiosmtplib-refused",
        aiosmtplib.SMTPConnectError,
        lambda w: araised(lambda: aio(w, "refuse.contoso.test").connect()),
    ),
    (
        "smtplib-421-greeting",
        smtplib.SMTPConnectError,
        lambda w: raised(lambda: smtp(w, "greet421.contoso.test")),
    ),
    (
        "aiosmtplib-421-greeting",
        aiosmtplib.SMTPConnectResponseError,
        lambda w: araised(lambda: aio(w, "greet421.contoso.test").connect()),
    ),
    (
        "smtplib-421-ehlo",
        smtplib.SMTPHeloError,
        lambda w: raised(lambda: starttls(w, "ehlo421.contoso.test")),
    ),
    (
        "aiosmtplib-421-ehlo",
        aiosmtplib.SMTPHeloError,
        lambda w: araised(lambda: aio(w, "ehlo421.contoso.test").connect()),
    ),
    (
        "smtplib-no-starttls",
        smtplib.SMTPNotSupportedError,
        lambda w: raised(lambda: starttls(w, "notls.contoso.test")),
    ),
    (
        "aiosmtplib-no-starttls",
        aiosmtplib.SMTPException,
        lambda w: araised(lambda: aio(w, "notls.contoso.test").connect()),
    ),
    (
        "smtplib-454",
        smtplib.SMTPResponseException,
        lambda w: raised(lambda: starttls(w, "tls454.contoso.test")),
    ),
    (
        "aiosmtplib-454",
        aiosmtplib.SMTPResponseException,
        lambda w: aio_starttls_at(
            w.address_of("tls454.contoso.test"), w.port, "tls454.contoso.test", w.client_context()
        ),
    ),
    (
        "smtplib-handshake-alert",
        ssl.SSLError,
        lambda w, raw: raised(
            lambda: starttls_at("127.0.0.1", raw(tls12_only(w)).port, NAME, tls13_client(w))
        ),
    ),
    (
        "smtplib-handshake-eof",
        ssl.SSLEOFError,
        lambda w, raw: raised(
            lambda: starttls_at("127.0.0.1", raw(hang_up_in_handshake).port, NAME, w.client_context())
        ),
    ),
    (
        "aiosmtplib-handshake-eof",
        (aiosmtplib.SMTPServerDisconnected, ssl.SSLError, ConnectionResetError),
        lambda w, raw: aio_starttls_at("127.0.0.1", raw(hang_up_in_handshake).port, NAME, w.client_context()),
    ),
    *[
        (
            f"smtplib-cert-{host}",
            ssl.SSLCertVerificationError,
            (lambda h: lambda w: raised(lambda: starttls(w, f"{h}.contoso.test")))(host),
        )
        for host in (
            "expired",
            "not-yet-valid",
            "wrong-host",
            "untrusted-ca",
            "self-signed",
            "missing-intermediate",
        )
    ],
    (
        "smtplib-cert-by-ip",  # connecting by address: "IP address mismatch" (verify code 64)
        ssl.SSLCertVerificationError,
        lambda w: raised(
            lambda: starttls_at(
                w.address_of("ok.contoso.test"), w.port, w.address_of("ok.contoso.test"), w.client_context()
            )
        ),
    ),
    (
        "aiosmtplib-cert-expired",
        ssl.SSLCertVerificationError,
        lambda w: aio_starttls_at(
            w.address_of("expired.contoso.test"), w.port, "expired.contoso.test", w.client_context()
        ),
    ),
    (
        "smtplib-closed",
        smtplib.SMTPServerDisconnected,
        lambda w: raised(lambda: starttls(w, "cut-ehlo.contoso.test")),
    ),
    (
        "aiosmtplib-closed",
        aiosmtplib.SMTPServerDisconnected,
        lambda w: araised(lambda: aio(w, "cut-ehlo.contoso.test").connect()),
    ),
    (
        "aiosmtplib-closed-before-greeting",
        aiosmtplib.SMTPConnectError,
        lambda w: araised(lambda: aio(w, "cut-before-greeting.contoso.test").connect()),
    ),
    (
        "smtplib-closed-after-handshake",
        smtplib.SMTPServerDisconnected,
        lambda w: raised(lambda: starttls(w, "cut-tls.contoso.test")),
    ),
    (
        "ssl-eof-after-handshake",
        (ssl.SSLEOFError, ConnectionResetError),
        lambda w: raised(lambda: raw_ssl_eof_after_handshake(w)),
    ),
    (
        "socket-reset",
        (ConnectionResetError, smtplib.SMTPServerDisconnected),
        lambda w, raw: raised(lambda: smtplib.SMTP("127.0.0.1", raw(reset_on_accept).port, LOCAL, TIMEOUT)),
    ),
    (
        "smtplib-rcpt-550",
        smtplib.SMTPRecipientsRefused,
        lambda w: raised(lambda: send(w, "rcpt550.contoso.test")),
    ),
    (
        "smtplib-mail-452",
        smtplib.SMTPSenderRefused,
        lambda w: raised(lambda: send(w, "mail452.contoso.test")),
    ),
    ("smtplib-data-451", smtplib.SMTPDataError, lambda w: raised(lambda: send(w, "data451.contoso.test"))),
    ("aiosmtplib-rcpt-550", aiosmtplib.SMTPRecipientsRefused, lambda w: aio_send(w, "rcpt550.contoso.test")),
    ("aiosmtplib-mail-452", aiosmtplib.SMTPSenderRefused, lambda w: aio_send(w, "mail452.contoso.test")),
    ("aiosmtplib-data-451", aiosmtplib.SMTPDataError, lambda w: aio_send(w, "data451.contoso.test")),
    (
        "smtplib-421-to-mail",
        smtplib.SMTPSenderRefused,
        built(smtplib.SMTPSenderRefused(421, b"4.3.2 Shutting down", "sender@fabrikam.test")),
    ),
    (
        "own-wrapper-from",
        DeliveryFailed,
        lambda w: wrapped(raised(lambda: smtp(w, "refuse.contoso.test"))),
    ),
    (
        "own-wrapper-during",
        DeliveryFailed,
        lambda w: wrapped(raised(lambda: starttls(w, "expired.contoso.test")), explicit=False),
    ),
    (
        "own-wrapper-from-none",
        DeliveryFailed,
        lambda w: wrapped(raised(lambda: smtp(w, "refuse.contoso.test")), hide=True),
    ),
    (
        "exception-group",
        ExceptionGroup,
        lambda w: built(
            ExceptionGroup(
                "every MX failed", [ValueError("bad config"), raised(lambda: smtp(w, "refuse.contoso.test"))]
            )
        )(w),
    ),
    (
        "asyncio-multiple",
        OSError,
        built(
            OSError("Multiple exceptions: [Errno 111] Connect call failed ('127.1.2.3', 25), [Errno 111] ...")
        ),
    ),
    ("unknown-valueerror", ValueError, built(ValueError("nothing to do with mail"))),
    ("unknown-enoent", FileNotFoundError, built(OSError(errno.ENOENT, "No such file or directory"))),
    ("unknown-250", smtplib.SMTPResponseException, built(smtplib.SMTPResponseException(250, b"2.0.0 fine"))),
    ("unknown-smtpexception", smtplib.SMTPException, built(smtplib.SMTPException("something else"))),
]


def tls13_client(w: World) -> ssl.SSLContext:
    ctx = w.client_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def make(maker: Maker, world: World, raw: Callable[..., RawServer]) -> BaseException:
    return maker(world, raw) if maker.__code__.co_argcount == 2 else maker(world)


def printed(exc: BaseException) -> str:
    """What Python prints on stderr when ``exc`` ends the program."""
    return "".join(traceback.format_exception(exc))


def agree(exc: BaseException, text: str) -> Failure | None:
    """read_python on ``text`` must say what classify and find_code say on ``exc``."""
    got = read_python(1, "", text)
    want = classify(exc)
    if want is None:
        assert got is None, (got, text)
        return None
    assert got is not None, text
    assert (got.cls, got.detail, got.server_code) == (want.cls, want.detail, want.server_code), text
    for profile in PROFILES:
        assert code_for(got, profile) == find_code(exc, profile), (profile, text)
    return got


@pytest.mark.parametrize(("raises", "maker"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_the_python_reader_agrees_with_find_code(world, raw_server, raises, maker) -> None:
    exc = make(maker, world, raw_server)
    assert isinstance(exc, raises), printed(exc)
    agree(exc, printed(exc))


def test_an_eof_inside_the_handshake_is_a_handshake_failure_not_a_close(world, raw_server) -> None:
    server = raw_server(hang_up_in_handshake)
    exc = raised(lambda: starttls_at("127.0.0.1", server.port, NAME, world.client_context()))
    assert isinstance(exc, ssl.SSLEOFError)
    got = agree(exc, printed(exc))
    # The README's table: "the server hangs up inside the handshake": cannot_connect / tls_handshake.
    assert got is not None and (got.cls, got.detail) == ("cannot_connect", "tls_handshake")
    assert code_for(got) == "4.4.317" and code_for(got, "rfc3463") == "4.7.5"
    # The same exception printed without its traceback says nothing of where it was raised.
    bare = read_python(1, "", printed(exc).strip().splitlines()[-1])
    assert bare is not None and bare.cls == "closed"


CLIENT = """
import json, smtplib, ssl, sys
from mailfakes.classify import classify
from mailfakes.codes import PROFILES, find_code
address, port, name, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
try:
    s = smtplib.SMTP(address, port, local_hostname="client.fabrikam.test", timeout=2)
    s._host = name
    s.starttls(context=ssl.create_default_context(cafile=cafile))
    s.sendmail("sender@fabrikam.test", ["user@contoso.test"], b"Subject: x\\r\\n\\r\\nx\\r\\n")
except Exception as exc:
    f = classify(exc)
    print(json.dumps({"failure": f and [f.cls, f.detail, f.server_code],
                      "codes": {p: find_code(exc, p) for p in PROFILES}}))
    raise
"""


@pytest.mark.parametrize("target", ["handshake-eof", "refuse", "expired", "cut-ehlo", "rcpt550"])
def test_the_python_reader_reads_an_uncaught_traceback(world, raw_server, target) -> None:
    if target == "handshake-eof":
        address, port, name = "127.0.0.1", raw_server(hang_up_in_handshake).port, NAME
    else:
        name = f"{target}.contoso.test"
        address, port = world.address_of(name), world.port
    result = subprocess.run(
        [sys.executable, "-c", CLIENT, address, str(port), name, str(world.ca_file)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert result.returncode == 1 and "Traceback (most recent call last):" in result.stderr
    want = json.loads(result.stdout)  # what classify and find_code said on the exception itself
    got = read_python(result.returncode, result.stdout, result.stderr)
    assert got is not None, result.stderr
    assert [got.cls, got.detail, got.server_code] == want["failure"], result.stderr
    assert {p: code_for(got, p) for p in PROFILES} == want["codes"]


# -- curl, swaks, msmtp, live -------------------------------------------------------------


def need(program: str) -> None:
    if shutil.which(program) is None:
        pytest.skip(f"{program} is not installed")


def run(argv: list[str]) -> tuple[int, str, str]:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr


def curl(w: World | None, host: str, port: int, address: str, *extra: str) -> tuple[int, str, str]:
    """The curl recipe's flags, reaching ``host`` at ``address`` without DNS (--resolve)."""
    ca = ["--cacert", str(w.ca_file)] if w is not None else []
    return run(
        [
            "curl", "-sv", "--ssl-reqd", "--crlf", *ca, "--connect-timeout", "1", "--max-time", "10",
            "--resolve", f"{host}:{port}:{address}", "--mail-from", "sender@fabrikam.test",
            "--mail-rcpt", "user@contoso.test", "-T", str(MESSAGE), *extra, f"smtp://{host}:{port}",
        ]
    )  # fmt: skip


def test_curl_refused_is_a_refusal(world) -> None:
    need("curl")
    host = "refuse.contoso.test"
    status, out, err = curl(world, host, world.port, world.address_of(host))
    assert status == 7 and "Connection refused" in err, err
    failure = read_curl(status, out, err)
    assert failure is not None and (failure.cls, failure.detail) == ("refused", "refused")


def test_curl_reset_on_accept_is_a_close_never_a_refusal(raw_server) -> None:
    need("curl")
    server = raw_server(reset_on_accept)
    seen = set()
    for _ in range(30):  # curl sees the reset after connect (56) or, now and then, inside it (7)
        status, out, err = curl(None, NAME, server.port, "127.0.0.1")
        failure = read_curl(status, out, err)
        assert failure is not None and failure.cls == "closed", (status, err)
        if status == 7:
            assert "Connection reset by peer" in err and failure.detail == "reset_at_connect"
        seen.add(status)
    assert seen <= {7, 56}


# curl 7.88.1's -v trace when the reset beat its connect() (caught live against reset_on_accept,
# about one run in forty): the same exit status as a refusal, another reason.
CURL_RESET_AT_CONNECT = """\
*   Trying 127.0.0.1:55623...
* connect to 127.0.0.1 port 55623 failed: Connection reset by peer
* Failed to connect to 127.0.0.1 port 55623 after 0 ms: Couldn't connect to server
* Closing connection 0
"""
CURL_REFUSED = """\
*   Trying 127.0.0.1:42443...
* connect to 127.0.0.1 port 42443 failed: Connection refused
* Failed to connect to 127.0.0.1 port 42443 after 0 ms: Couldn't connect to server
* Closing connection 0
"""


def test_curl_exit_7_is_read_by_its_reason() -> None:
    reset, refused = read_curl(7, "", CURL_RESET_AT_CONNECT), read_curl(7, "", CURL_REFUSED)
    assert reset is not None and (reset.cls, reset.detail) == ("closed", "reset_at_connect")
    assert refused is not None and (refused.cls, refused.detail) == ("refused", "refused")
    assert code_for(reset) == "4.4.318" and code_for(refused) == "4.4.316"
    # Exit 7 with no reason printed (curl run without -v) is not guessed.
    assert read_curl(7, "", "") is None


def test_curl_timeout_and_certificate_live(world) -> None:
    need("curl")
    host = "blackhole.contoso.test"
    status, out, err = curl(world, host, world.port, world.address_of(host))
    failure = read_curl(status, out, err)
    assert status == 28 and failure is not None and (failure.cls, failure.detail) == ("timeout", "connect")
    host = "expired.contoso.test"
    status, out, err = curl(world, host, world.port, world.address_of(host))
    failure = read_curl(status, out, err)
    assert (
        status == 60 and failure is not None and (failure.cls, failure.detail) == ("certificate", "expired")
    )


@pytest.mark.parametrize("client", ["swaks", "msmtp"])
def test_swaks_and_msmtp_tell_a_refusal_from_a_reset(world, raw_server, client) -> None:
    need(client)
    reader = {"swaks": read_swaks, "msmtp": read_msmtp}[client]

    def attempt(address: str, port: int) -> tuple[int, str, str]:
        if client == "swaks":
            return run(
                ["swaks", "--server", f"{address}:{port}", "--tls", "--from", "sender@fabrikam.test",
                 "--to", "user@contoso.test", "--helo", LOCAL, "--timeout", "2"]
            )  # fmt: skip
        return run(
            ["msmtp", "--debug", f"--host={address}", f"--port={port}", "--tls=on", "--tls-starttls=on",
             f"--tls-trust-file={world.ca_file}", "--auth=off", f"--domain={LOCAL}", "--timeout=2",
             "--from=sender@fabrikam.test", "user@contoso.test"]
        )  # fmt: skip

    refused = reader(*attempt(world.address_of("refuse.contoso.test"), world.port))
    assert refused is not None and refused.cls == "refused"
    reset = reader(*attempt("127.0.0.1", raw_server(reset_on_accept).port))
    assert reset is not None and reset.cls == "closed"


def test_every_reader_documents_its_input() -> None:
    from mailfakes.readers import READERS

    for name, reader in READERS.items():
        doc = reader.__doc__ or ""
        assert len(doc.split()) > 20, f"{name}: the docstring must say what input the reader expects"


# Postfix 3.7 logs under DANE (smtp_tls_loglevel = 1) and with postfix-mta-sts-resolver's policy,
# as observed in the namespace (tests/test_postfix_tls_policy.py runs them for real).
_TLSA = "postfix/smtp[9]: DNSSEC-signed TLSA record: _25._tcp.mx1.contoso.test: 3 1 1 A4AA\n"
_STS = "postfix-mta-sts: mta-sts-daemon answered OK secure match=mx9.contoso.test servername=hostname for contoso.test\n"
_VERIFY = "postfix/smtp[9]: server certificate verification failed for mx1.contoso.test[127.3.4.2]:25: {}\n"
_STATUS = "postfix/smtp[9]: 1A2B: to=<user@contoso.test>, relay=mx1.contoso.test[127.3.4.2]:25, dsn={}, status=deferred ({})\n"


@pytest.mark.parametrize(
    ("log", "cls", "detail", "eop"),
    [
        (
            _TLSA
            + _STATUS.format(
                "4.7.4", "TLS is required, but was not offered by host mx1.contoso.test[127.3.4.2]"
            ),
            "dane",
            "starttls-not-supported",
            "4.7.321",
        ),
        (
            _TLSA
            + _VERIFY.format("certificate has expired")
            + _STATUS.format("4.7.5", "Server certificate not verified"),
            "dane",
            "certificate-expired",
            "4.7.322",
        ),
        (
            _TLSA
            + _VERIFY.format("num=65:no matching DANE TLSA records")
            + _STATUS.format("4.7.5", "Server certificate not verified"),
            "dane",
            "tlsa-invalid",
            "4.7.323",
        ),
        (
            _STATUS.format("4.7.5", "TLSA lookup error for mx1.contoso.test:25").replace(
                "relay=mx1.contoso.test[127.3.4.2]:25", "relay=none"
            ),
            "dane",
            "dnssec-invalid",
            "4.7.324",
        ),
        (
            _TLSA
            + _VERIFY.format("num=62:hostname mismatch")
            + _STATUS.format("4.7.5", "Server certificate not verified"),
            "dane",
            "certificate-host-mismatch",
            "4.7.325",
        ),
        (
            _STS
            + _VERIFY.format("num=62:hostname mismatch")
            + _STATUS.format("4.7.5", "Server certificate not verified"),
            "mta_sts",
            "mx-mismatch",
            "4.4.8",
        ),
        (
            _STS.replace("mx9", "mx1")
            + _VERIFY.format("certificate has expired")
            + _STATUS.format("4.7.5", "Server certificate not verified"),
            "mta_sts",
            "certificate-expired",
            "4.7.5",
        ),
        (
            _STS.replace("mx9", "mx1")
            + _STATUS.format(
                "4.7.4", "TLS is required, but was not offered by host mx1.contoso.test[127.3.4.2]"
            ),
            "mta_sts",
            "starttls-not-supported",
            "4.4.317",
        ),
        # Without DANE or a policy, the same texts are a plain certificate or STARTTLS failure.
        (
            _VERIFY.format("certificate has expired")
            + _STATUS.format("4.7.5", "Server certificate not verified"),
            "certificate",
            "expired",
            "4.7.320",
        ),
        (
            _STATUS.format(
                "4.7.4", "TLS is required, but was not offered by host mx1.contoso.test[127.3.4.2]"
            ),
            "cannot_connect",
            "no_starttls",
            "4.4.317",
        ),
    ],
)
def test_postfix_reader_tells_dane_and_mta_sts_failures(log: str, cls: str, detail: str, eop: str) -> None:
    failure = read_postfix(75, log, "")
    assert failure is not None
    assert (failure.cls, failure.detail, code_for(failure, "eop")) == (cls, detail, eop)
    assert code_for(failure, "postfix") == failure.server_code  # Postfix's own dsn


@pytest.mark.parametrize("client", ["curl", "swaks", "msmtp"])
def test_a_greeting_that_never_comes_is_read_as_a_timeout_after_connect(world, client) -> None:
    """Each client's own words once connected (curl exit 28 after "Connected to", swaks "Timeout
    (1 secs) waiting for server response", msmtp "network read error: the operation timed out"):
    4.4.318 / 4.4.2, not the connect timeout 4.4.315 a blackholed SYN gives."""
    need(client)
    host = "silent.contoso.test"
    address = world.address_of(host)
    if client == "curl":
        status, out, err = curl(world, host, world.port, address)
        failure = read_curl(status, out, err)
    elif client == "swaks":
        failure = read_swaks(
            *run(["swaks", "--server", f"{address}:{world.port}", "--tls", "--from", "sender@fabrikam.test",
                  "--to", "user@contoso.test", "--helo", LOCAL, "--timeout", "1"])
        )  # fmt: skip
    else:
        failure = read_msmtp(
            *run(["msmtp", "--debug", f"--host={address}", f"--port={world.port}", "--tls=on",
                  "--tls-starttls=on", f"--tls-trust-file={world.ca_file}", "--auth=off", f"--domain={LOCAL}",
                  "--timeout=1", "--from=sender@fabrikam.test", "user@contoso.test"])
        )  # fmt: skip
    assert failure is not None and failure.cls == "timeout" and failure.detail != "connect", failure
    assert (code_for(failure), code_for(failure, "postfix")) == ("4.4.318", "4.4.2")
