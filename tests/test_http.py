"""mailfakes.http through real sockets on loopback, with clients that are not mailfakes.

The server runs on an event loop in a background thread, as in a world;
the clients are ``http.client``, raw sockets, ``ssl`` and curl. Waits are
on events with a bound; every socket has a timeout.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from mailfakes.certs import CRL_MEDIA_TYPE, CertAuthority
from mailfakes.http import HttpProblem, HttpRequest, HttpServer, HttpSite, Route, http_date, parse_head
from prerequisites import require

T = TypeVar("T")
TIMEOUT = 10.0
POLICY_PATH = "/.well-known/mta-sts.txt"
POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mx.contoso.test\r\nmax_age: 86400\r\n"
STS_HOST = "mta-sts.contoso.test"
SITE = HttpSite(
    routes={
        POLICY_PATH: (200, "text/plain", POLICY),
        "/moved": Route(301, "text/plain", b"moved\n", (("Location", "https://elsewhere.test/"),)),
    },
    accept_post=frozenset({"/tlsrpt"}),
)


@pytest.fixture
def _curl_installed() -> None:
    require({"curl": "curl"}, netns=False)  # a skip here, a failure in CI (it installs curl)


needs_curl = pytest.mark.usefixtures("_curl_installed")


class LoopThread:
    """An event loop in a thread, as a world runs its fakes; loop errors are kept, not printed."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, context: self.errors.append(context))
        self.thread = threading.Thread(target=self.loop.run_forever, name="http-test-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()
        self.loop.close()


class Served:
    """A running HttpServer and events set when it records a request or a problem."""

    def __init__(self, lt: LoopThread, server: HttpServer) -> None:
        self.lt = lt
        self.server = server
        self.problem_seen = threading.Event()
        self.request_seen = threading.Event()
        server.on_problem = lambda p: self.problem_seen.set()
        server.on_request = lambda r: self.request_seen.set()
        lt.run(server.start())

    @property
    def port(self) -> int:
        return self.server.port

    def wait_problem(self, count: int = 1) -> list[HttpProblem]:
        """The problems once there are ``count`` (bounded wait)."""
        for _ in range(100):
            if len(self.server.problems) >= count:
                break
            self.problem_seen.wait(TIMEOUT / 100)
            self.problem_seen.clear()
        assert len(self.server.problems) >= count, self.server.problems
        return self.server.problems

    def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


@pytest.fixture
def lt() -> Iterator[LoopThread]:
    loop_thread = LoopThread()
    try:
        yield loop_thread
    finally:
        loop_thread.close()


@pytest.fixture
def make(lt: LoopThread) -> Iterator[Callable[..., Served]]:
    made: list[Served] = []

    def start(site: HttpSite = SITE, host: str = STS_HOST, **kwargs: Any) -> Served:
        served = Served(lt, HttpServer(host, "127.0.0.1", 0, site, **kwargs))
        made.append(served)
        return served

    yield start
    for served in made:
        lt.run(served.server.stop())
    assert not [e for e in lt.errors if "hook" not in str(e.get("message"))], lt.errors


@pytest.fixture
def ca() -> Iterator[CertAuthority]:
    authority = CertAuthority()
    try:
        yield authority
    finally:
        authority.close()


def raw_exchange(port: int, data: bytes, *, shut: bool = False) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        return read_all(sock)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def status_of(reply: bytes) -> int:
    line = reply.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1.1 "), reply[:200]
    return int(line.split()[1])


def headers_of(reply: bytes) -> dict[str, str]:
    head = reply.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head)}


# -- plain HTTP -------------------------------------------------------------


def test_get_a_route(make: Callable[..., Served]) -> None:
    served = make()
    status, headers, body = served.get(POLICY_PATH + "?x=1")
    assert (status, body) == (200, POLICY)
    assert headers["content-type"] == "text/plain"
    assert headers["content-length"] == str(len(POLICY))
    assert headers["date"].endswith(" GMT")
    [req] = served.server.requests
    assert (req.method, req.path, req.query, req.version, req.status) == (
        "GET",
        POLICY_PATH,
        "x=1",
        "HTTP/1.1",
        200,
    )
    assert req.host == f"127.0.0.1:{served.port}"
    assert req.header("HOST") == req.host
    assert req.peer.startswith("127.0.0.1:")
    assert req.tls_version is None and req.sni is None


def test_unknown_path_is_404_with_a_length(make: Callable[..., Served]) -> None:
    served = make()
    status, headers, body = served.get("/nothing-here")
    assert status == 404
    assert headers["content-length"] == str(len(body))
    assert served.server.requests[0].status == 404


def test_a_route_with_extra_headers(make: Callable[..., Served]) -> None:
    status, headers, _ = make().get("/moved")
    assert status == 301
    assert headers["location"] == "https://elsewhere.test/"


def test_head_has_the_length_of_get_and_no_body(make: Callable[..., Served]) -> None:
    served = make()
    reply = raw_exchange(
        served.port, f"HEAD {POLICY_PATH} HTTP/1.1\r\nHost: {STS_HOST}\r\nConnection: close\r\n\r\n".encode()
    )
    _, _, rest = reply.partition(b"\r\n\r\n")
    assert status_of(reply) == 200
    assert headers_of(reply)["content-length"] == str(len(POLICY))
    assert rest == b""


def test_post_is_kept_where_accepted(make: Callable[..., Served]) -> None:
    served = make()
    report = gzip.compress(json.dumps({"organization-name": "Fabrikam"}).encode())
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=TIMEOUT)
    try:
        conn.request("POST", "/tlsrpt", body=report, headers={"Content-Type": "application/tlsrpt+gzip"})
        resp = conn.getresponse()
        assert resp.status == 201
        resp.read()
        conn.request("POST", POLICY_PATH, body=b"x", headers={"Content-Type": "text/plain"})
        refused = conn.getresponse()
        assert refused.status == 405
        assert refused.getheader("Allow") == "GET, HEAD"
        refused.read()
        conn.request("PUT", "/tlsrpt", body=b"x")
        put = conn.getresponse()
        assert put.status == 405
        assert put.getheader("Allow") == "GET, HEAD, POST"
        put.read()
    finally:
        conn.close()
    [kept] = served.server.posts("/tlsrpt")
    assert kept.kept and not any(r.kept for r in served.server.requests[1:])
    assert kept.content_type == "application/tlsrpt+gzip"
    assert json.loads(gzip.decompress(kept.body)) == {"organization-name": "Fabrikam"}
    assert [r.status for r in served.server.requests] == [201, 405, 405]
    assert len({r.peer for r in served.server.requests}) == 1  # one connection kept alive


def test_chunked_post(make: Callable[..., Served]) -> None:
    served = make()
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=TIMEOUT)
    try:
        body = iter([b'{"report"', b": 1}", b"\n"])
        conn.request(
            "POST",
            "/tlsrpt",
            body=body,
            headers={"Content-Type": "application/tlsrpt+json"},
            encode_chunked=True,
        )
        assert conn.getresponse().status == 201
    finally:
        conn.close()
    [kept] = served.server.posts()
    assert kept.body == b'{"report": 1}\n'
    assert kept.header("transfer-encoding") == "chunked"


def test_expect_100_continue(make: Callable[..., Served]) -> None:
    served = make()
    with socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT) as sock:
        sock.sendall(
            b"POST /tlsrpt HTTP/1.1\r\nHost: x\r\nContent-Type: application/tlsrpt+json\r\n"
            b"Content-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = sock.recv(1)
            assert chunk, interim
            interim += chunk
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"{}")
        assert status_of(read_all(sock)) == 201
    assert served.server.posts()[0].body == b"{}"


def test_pipelined_requests_are_answered_in_order(make: Callable[..., Served]) -> None:
    served = make()
    reply = raw_exchange(
        served.port,
        f"GET {POLICY_PATH} HTTP/1.1\r\nHost: a\r\n\r\nGET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode(),
    )
    assert reply.count(b"HTTP/1.1 ") == 2
    assert reply.index(b"HTTP/1.1 200") < reply.index(b"HTTP/1.1 404")
    assert [r.path for r in served.server.requests] == [POLICY_PATH, "/nope"]


def test_http_1_0_closes_after_the_answer(make: Callable[..., Served]) -> None:
    served = make()
    reply = raw_exchange(served.port, f"GET {POLICY_PATH} HTTP/1.0\r\n\r\n".encode())  # no Host: fine in 1.0
    assert status_of(reply) == 200
    assert reply.endswith(POLICY)
    assert headers_of(reply)["connection"] == "close"
    [req] = served.server.requests
    assert req.version == "HTTP/1.0" and req.host is None


def test_absolute_form_target(make: Callable[..., Served]) -> None:
    served = make()
    reply = raw_exchange(
        served.port,
        f"GET http://{STS_HOST}{POLICY_PATH} HTTP/1.1\r\nHost: {STS_HOST}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert status_of(reply) == 200
    assert served.server.requests[0].path == POLICY_PATH


def test_callable_body_is_called_for_each_request(make: Callable[..., Served]) -> None:
    calls: list[int] = []

    def body() -> bytes:
        calls.append(1)
        return f"call {len(calls)}".encode()

    served = make(HttpSite({"/n": (200, "text/plain", body)}))
    assert served.get("/n")[2] == b"call 1"
    assert served.get("/n")[2] == b"call 2"


# -- bad input: answered or closed, never raised --------------------------------------


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", 400),
        (b"HELLO\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        (b"GET nopath HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400),
        (b"POST /tlsrpt HTTP/1.1\r\nHost: a\r\n\r\n", 411),
        (b"POST /tlsrpt HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST /tlsrpt HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST /tlsrpt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST /tlsrpt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST /tlsrpt HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n", 413),
    ],
)
def test_bad_requests_get_an_answer_and_the_server_keeps_serving(
    make: Callable[..., Served], data: bytes, status: int
) -> None:
    served = make()
    reply = raw_exchange(served.port, data)
    assert status_of(reply) == status, reply
    assert headers_of(reply)["connection"] == "close"
    assert int(headers_of(reply)["content-length"]) == len(reply.split(b"\r\n\r\n", 1)[1])
    [problem] = served.wait_problem()
    assert problem.status == status
    assert problem.kind in ("bad_request", "too_large")
    assert served.get(POLICY_PATH)[0] == 200  # still serving


def test_oversized_headers_get_431(make: Callable[..., Served]) -> None:
    served = make()
    big = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Filler: " + b"a" * 20000 + b"\r\n\r\n"
    reply = raw_exchange(served.port, big)
    assert status_of(reply) == 431
    assert served.wait_problem()[0].kind == "too_large"
    assert served.get(POLICY_PATH)[0] == 200


def test_head_without_end_over_the_cap_gets_431(make: Callable[..., Served]) -> None:
    served = make(max_head=1024)
    with socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"b" * 2000)  # no blank line ever
        assert status_of(read_all(sock)) == 431


def test_client_closing_mid_request_is_recorded(make: Callable[..., Served]) -> None:
    served = make()
    with socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: a\r\n")
    [problem] = served.wait_problem()
    assert problem.kind == "incomplete"
    assert "request head" in problem.detail
    with socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /tlsrpt HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly part")
        sock.shutdown(socket.SHUT_WR)
        assert read_all(sock) == b""  # nothing to answer: the request never came whole
    problems = served.wait_problem(2)
    assert problems[1].kind == "incomplete" and "request body" in problems[1].detail
    assert served.server.requests == []
    assert served.get(POLICY_PATH)[0] == 200


def test_client_reset_mid_request(make: Callable[..., Served]) -> None:
    served = make()
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT)
    sock.sendall(b"GET / HTTP/1.1\r\nHo")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # RST
    assert served.wait_problem()[0].kind == "incomplete"
    assert served.get(POLICY_PATH)[0] == 200


def test_slow_request_gets_408(make: Callable[..., Served]) -> None:
    served = make(request_timeout=0.3)
    with socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")  # and never the blank line
        reply = read_all(sock)
    assert status_of(reply) == 408
    assert served.wait_problem()[0].kind == "timeout"


def test_silent_client_is_closed(make: Callable[..., Served]) -> None:
    served = make(idle_timeout=0.3)
    with socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT) as sock:
        assert read_all(sock) == b""
    [problem] = served.wait_problem()
    assert problem.kind == "timeout" and problem.status is None


def test_a_body_callable_that_raises_gets_500_and_is_reported(
    make: Callable[..., Served], lt: LoopThread
) -> None:
    def broken() -> bytes:
        raise RuntimeError("no policy today")

    served = make(HttpSite({"/x": (200, "text/plain", broken)}))
    status, _, _ = served.get("/x")
    assert status == 500
    assert served.wait_problem()[0].kind == "server_error"
    [error] = [e for e in lt.errors if isinstance(e.get("exception"), RuntimeError)]
    lt.errors.remove(error)
    assert served.get("/x")[0] == 500  # and again: the server is still there
    lt.errors.clear()


def test_a_hook_that_raises_is_reported_not_raised(make: Callable[..., Served], lt: LoopThread) -> None:
    served = make()

    def bad_hook(request: HttpRequest) -> None:
        raise ValueError("hook")

    served.server.on_request = bad_hook
    assert served.get(POLICY_PATH)[0] == 200
    assert any(isinstance(e.get("exception"), ValueError) for e in lt.errors)


def test_stop_ends_open_connections(lt: LoopThread) -> None:
    served = Served(lt, HttpServer(STS_HOST, "127.0.0.1", 0, SITE))
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=TIMEOUT)
    conn.request("GET", POLICY_PATH)
    conn.getresponse().read()  # the connection stays open (keep-alive)
    assert len(served.server.live) == 1
    lt.run(served.server.stop())
    assert served.server.live == set()
    assert conn.sock is not None
    assert read_all(conn.sock) == b""
    conn.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT).close()
    lt.run(served.server.stop())  # idempotent
    assert lt.errors == []


# -- HTTPS --------------------------------------------------------------------


def https_get(port: int, ca_file: Path, host: str, path: str) -> tuple[int, bytes, str | None]:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=TIMEOUT)
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        conn.sock = ctx.wrap_socket(raw, server_hostname=host)  # connect by address, verify the name
    except BaseException:
        raw.close()  # a refused certificate leaves no socket behind
        raise
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read(), conn.sock.version()
    finally:
        conn.close()


def test_https_verifies_against_the_world_ca_and_records_sni(
    make: Callable[..., Served], ca: CertAuthority
) -> None:
    served = make(ssl_context=ca.server_context(STS_HOST))
    status, body, version = https_get(served.port, ca.ca_file, STS_HOST, POLICY_PATH)
    assert (status, body) == (200, POLICY)
    [req] = served.server.requests
    assert req.sni == STS_HOST
    assert req.tls_version == version
    assert req.host == f"{STS_HOST}:{served.port}"
    assert served.server.url(POLICY_PATH) == f"https://{STS_HOST}:{served.port}{POLICY_PATH}"


def test_https_with_a_bad_certificate_fails_the_client_and_is_recorded(
    make: Callable[..., Served], ca: CertAuthority
) -> None:
    served = make(ssl_context=ca.server_context(STS_HOST, "expired"))
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        https_get(served.port, ca.ca_file, STS_HOST, POLICY_PATH)
    assert info.value.verify_code == 10
    [problem] = served.wait_problem()
    assert problem.kind == "tls_handshake"
    assert served.server.requests == []


def test_plain_text_on_the_tls_port_is_recorded_and_the_server_keeps_serving(
    make: Callable[..., Served], ca: CertAuthority
) -> None:
    served = make(ssl_context=ca.server_context(STS_HOST))
    reply = raw_exchange(served.port, f"GET {POLICY_PATH} HTTP/1.1\r\nHost: {STS_HOST}\r\n\r\n".encode())
    assert b"200" not in reply and b"mta-sts" not in reply.lower()
    [problem] = served.wait_problem()
    assert problem.kind == "tls_handshake"
    assert "HTTP_REQUEST" in problem.detail or "WRONG_VERSION" in problem.detail, problem.detail
    # Garbage that is no HTTP either, then a client that leaves mid-handshake.
    raw_exchange(served.port, b"\x00\x01garbage\xff" * 10)
    with socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"\x16\x03\x01\x00\x10")  # the start of a record
    served.wait_problem(3)
    assert https_get(served.port, ca.ca_file, STS_HOST, POLICY_PATH)[0] == 200


def test_a_request_sent_with_the_last_handshake_flight_is_answered(
    make: Callable[..., Served], ca: CertAuthority
) -> None:
    """TLS 1.3: the client's Finished and its request in one segment, as curl often sends them."""
    served = make(ssl_context=ca.server_context(STS_HOST))
    ctx = ssl.create_default_context(cafile=str(ca.ca_file))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=STS_HOST)
    with socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT) as sock:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                assert data, "the server closed during the handshake"
                incoming.write(data)
        tls.write(f"GET {POLICY_PATH} HTTP/1.1\r\nHost: {STS_HOST}\r\nConnection: close\r\n\r\n".encode())
        sock.sendall(outgoing.read())  # Finished and the request together
        incoming.write(read_all(sock))
    reply = b""
    while True:
        try:
            chunk = tls.read(65536)
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError, ssl.SSLEOFError):
            break
        if not chunk:
            break
        reply += chunk
    assert tls.version() == "TLSv1.3"
    assert status_of(reply) == 200
    assert reply.endswith(POLICY)


def test_tls_handshake_timeout(make: Callable[..., Served], ca: CertAuthority) -> None:
    served = make(ssl_context=ca.server_context(STS_HOST), handshake_timeout=0.3)
    with socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT) as sock:
        assert read_all(sock) == b""  # the server gives up on a client that never says hello
    [problem] = served.wait_problem()
    assert problem.kind == "tls_handshake" and "no handshake within" in problem.detail


@needs_curl
def test_curl_fetches_the_policy_and_posts_a_report(
    make: Callable[..., Served], ca: CertAuthority, tmp_path: Path
) -> None:
    served = make(ssl_context=ca.server_context(STS_HOST))
    base = [
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        str(TIMEOUT),
        "--noproxy",
        "*",
        "--cacert",
        str(ca.ca_file),
        "--resolve",
        f"{STS_HOST}:{served.port}:127.0.0.1",
    ]
    url = f"https://{STS_HOST}:{served.port}"
    got = subprocess.run(
        [*base, f"{url}{POLICY_PATH}"], capture_output=True, timeout=TIMEOUT * 2, check=False
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout == POLICY
    report = tmp_path / "report.json.gz"
    report.write_bytes(gzip.compress(b'{"policies": []}' * 200))
    posted = subprocess.run(
        [
            *base,
            "--header",
            "Content-Type: application/tlsrpt+gzip",
            "--data-binary",
            f"@{report}",
            "--write-out",
            "%{http_code}",
            "--output",
            "/dev/null",
            f"{url}/tlsrpt",
        ],
        capture_output=True,
        timeout=TIMEOUT * 2,
        check=False,
    )
    assert posted.returncode == 0, posted.stderr
    assert posted.stdout == b"201"
    [kept] = served.server.posts("/tlsrpt")
    assert kept.body == report.read_bytes()
    assert kept.sni == STS_HOST
    assert (served.server.requests[0].header("user-agent") or "").startswith("curl/")


@needs_curl
def test_curl_fetches_the_crl_from_its_distribution_point(
    make: Callable[..., Served], ca: CertAuthority
) -> None:
    """The CRL served at the URL a revoked leaf names, in DER, as a CRL-fetching client gets it."""
    url = "http://crl.contoso.test/mailfakes.crl"
    leaf = ca.issue("mx.contoso.test", "revoked", crl_url=url)
    served = make(
        HttpSite({"/mailfakes.crl": (200, CRL_MEDIA_TYPE, lambda: ca.crl("der"))}), host="crl.contoso.test"
    )
    cdp = x509.load_pem_x509_certificate(leaf.leaf_pem).extensions.get_extension_for_class(
        x509.CRLDistributionPoints
    )
    [name] = cdp.value[0].full_name or []
    assert name.value == url
    got = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--max-time",
            str(TIMEOUT),
            "--noproxy",
            "*",
            "--resolve",
            f"crl.contoso.test:{served.port}:127.0.0.1",
            "--dump-header",
            "-",
            f"http://crl.contoso.test:{served.port}/mailfakes.crl",
        ],
        capture_output=True,
        timeout=TIMEOUT * 2,
        check=False,
    )
    assert got.returncode == 0, got.stderr
    head, _, der = got.stdout.partition(b"\r\n\r\n")
    assert b"content-type: application/pkix-crl" in head.lower()
    crl = x509.load_der_x509_crl(der)
    assert crl.get_revoked_certificate_by_serial_number(
        x509.load_pem_x509_certificate(leaf.leaf_pem).serial_number
    )
    assert served.server.requests[0].host == f"crl.contoso.test:{served.port}"


# -- values and refusals ------------------------------------------------------


def test_bad_sites_and_addresses_are_refused() -> None:
    with pytest.raises(ValueError, match="loopback"):
        HttpServer("x.test", "8.8.8.8", 0, SITE)  # refused before binding
    with pytest.raises(ValueError, match="loopback"):
        HttpServer("x.test", "not-an-address", 0, SITE)
    with pytest.raises(ValueError, match="port"):
        HttpServer("x.test", "127.0.0.1", 70000, SITE)
    with pytest.raises(ValueError, match="path"):
        HttpSite({"no-slash": (200, "text/plain", b"")}).check()
    with pytest.raises(ValueError, match="status"):
        HttpSite({"/": (99, "text/plain", b"")}).check()
    with pytest.raises(ValueError, match="content type"):
        HttpSite({"/": (200, "text/plain\r\nX: y", b"")}).check()
    with pytest.raises(ValueError, match="server's to set"):
        HttpSite({"/": Route(200, "text/plain", b"", (("Content-Length", "1"),))}).check()
    with pytest.raises(ValueError, match="body"):
        HttpSite({"/": (200, "text/plain", "text")}).check()  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="path"):
        HttpSite(accept_post=frozenset({"tlsrpt"})).check()
    with pytest.raises(ValueError, match="request_timeout"):
        HttpServer("x.test", "127.0.0.1", 0, SITE, request_timeout=0)
    server = HttpServer("x.test", "127.0.0.1", 0, SITE)
    with pytest.raises(ValueError, match="status"):
        server.site = HttpSite(post_status=700)


def test_site_can_change_while_serving(make: Callable[..., Served]) -> None:
    served = make()
    assert served.get(POLICY_PATH)[2] == POLICY
    served.server.site = HttpSite({POLICY_PATH: (503, "text/plain", b"down\n")})
    assert served.get(POLICY_PATH)[:1] == (503,)


def test_http_date_is_imf_fixdate() -> None:
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert http_date(1_700_000_000) == "Tue, 14 Nov 2023 22:13:20 GMT"


def test_parse_head_reads_what_was_sent() -> None:
    head = parse_head(b"GET /a?b=c HTTP/1.1\r\nHost: h\r\nX-Thing:  v \r\nConnection: close")
    assert (head.method, head.path, head.query, head.version, head.host) == (
        "GET",
        "/a",
        "b=c",
        "HTTP/1.1",
        "h",
    )
    assert head.headers == (("Host", "h"), ("X-Thing", "v"), ("Connection", "close"))
    assert head.keep_alive is False
    assert parse_head(b"GET / HTTP/1.0\r\nConnection: keep-alive").keep_alive is True
    assert parse_head(b"GET / HTTP/1.1\r\nHost: h").keep_alive is True


def test_no_thread_left_running() -> None:
    assert not [t for t in threading.enumerate() if t.name == "http-test-loop"]
