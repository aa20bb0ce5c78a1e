"""A small HTTP/1.1 server for a world's fake web hosts: MTA-STS policies, CRLs, TLS-RPT reports.

An :class:`HttpServer` serves one :class:`HttpSite` (fixed answers by path)
on one loopback address, over plain TCP or, given an ``ssl.SSLContext``
(such as ``CertAuthority.server_context(host, kind)``), over TLS from the
first byte. It runs on the caller's event loop and records every request
(:class:`HttpRequest`) and every connection that went wrong
(:class:`HttpProblem`). Example::

    site = HttpSite(
        routes={"/.well-known/mta-sts.txt": (200, "text/plain", policy)},
        accept_post=frozenset({"/tlsrpt"}),
    )
    server = HttpServer("mta-sts.contoso.test", "127.0.0.5", 0, site, ssl_context=ctx)
    await server.start()
    ...
    await server.stop()
    server.requests[0].path      # '/.well-known/mta-sts.txt'

What it answers:

- ``GET`` and ``HEAD`` of a route: the route's status, content type and body
  (a body may be a callable, called for each request, e.g. ``ca.crl``);
  of any other path: 404.
- ``POST`` to a path of ``accept_post``: the body is kept (in the request
  record) and the answer is 201 (TLS-RPT reporters POST
  ``application/tlsrpt+gzip`` or ``application/tlsrpt+json``, RFC 8460
  section 5.4); any other POST, or another method: 405 with ``Allow``.
- Bad input never raises out of the server: a request line or header that
  is not HTTP/1.x gets 400 (505 for another major version), a head over
  ``max_head`` bytes 431, a body over ``max_body`` 413, a POST without a
  length 411, a request not complete within ``request_timeout`` 408; each
  then closes the connection and is an :class:`HttpProblem`. So is a failed
  TLS handshake (plain text sent to a TLS port included), a silent client
  (closed after ``idle_timeout``) and a client that closes in the middle of
  a request.

Every answer has ``Content-Length``. HTTP/1.1 connections stay open for the
next request unless either side says ``Connection: close``; HTTP/1.0 ones
close after the answer unless the client asked for ``keep-alive``. Bodies
may come with ``Content-Length`` or chunked. Paths are matched as sent
(no percent-decoding), without the query string. The server never follows
a world's DNS: it only listens where it is told.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, TypeVar, cast

from .certs import SERVER_NAME_ATTRIBUTE
from .spec import is_loopback
from .tcp import FIN_DRAIN_LIMIT, Listener, bind_socket, cut, peer_of
from .values import field, frozen

_T = TypeVar("_T")

Body = bytes | Callable[[], bytes]
"""A route's body: fixed bytes, or a callable giving the bytes for each request."""

MAX_HEAD: Final = 16 * 1024
"""Bytes of request line and headers a request may have (a larger one gets 431)."""
MAX_BODY: Final = 1 << 20
"""Bytes of body a request may have (a larger one gets 413)."""
MAX_RECORDS: Final = 10_000
"""Requests (and problems) kept per server; later ones are counted in ``dropped``."""
POST_STATUS: Final = 201
SERVER_HEADER: Final = "mailfakes"
TLS_CLOSE_GRACE: Final = 1.0
"""Seconds a TLS close waits for the client's close_notify before the socket is closed anyway."""
_LISTEN_BACKLOG: Final = 128
_CHUNK_LINE_LIMIT: Final = 1024

ProblemKind = Literal["tls_handshake", "bad_request", "too_large", "timeout", "incomplete", "server_error"]

_REASONS: Final = {
    100: "Continue",
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    410: "Gone",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}
_TCHAR: Final = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def reason_phrase(status: int) -> str:
    """The reason phrase sent with ``status``."""
    return _REASONS.get(status, "Status")


def http_date(when: float | None = None) -> str:
    """An IMF-fixdate (RFC 9110, 5.6.7), independent of the locale."""
    t = time.gmtime(time.time() if when is None else when)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def _is_token(text: str) -> bool:
    return bool(text) and all(c in _TCHAR for c in text)


def _field_value_ok(text: str) -> bool:
    return all(c == "\t" or " " <= c <= "~" or c >= "\x80" for c in text)


@frozen
class Route:
    """The answer to a ``GET`` or ``HEAD`` of one path. ``headers``: extra header lines (e.g. Location)."""

    status: int = 200
    content_type: str = "text/plain"
    body: Body = b""
    headers: tuple[tuple[str, str], ...] = ()


@frozen
class HttpSite:
    """What a fake web host serves: ``routes`` by path, and the paths whose POST bodies it keeps.

    A route is a :class:`Route` or a ``(status, content_type, body)`` tuple.
    Example::

        HttpSite({"/.well-known/mta-sts.txt": (200, "text/plain", b"version: STSv1\\r\\n...")})
    """

    routes: Mapping[str, Route | tuple[int, str, Body]] = field(default_factory=dict)
    accept_post: frozenset[str] = frozenset()
    post_status: int = POST_STATUS

    def route(self, path: str) -> Route | None:
        """The route of ``path`` (None: 404)."""
        found = self.routes.get(path)
        if found is None or isinstance(found, Route):
            return found
        status, content_type, body = found
        return Route(status, content_type, body)

    def check(self) -> HttpSite:
        """This site, if every route and path can be served; else ValueError naming what cannot."""
        if not isinstance(self.accept_post, frozenset | set):
            raise ValueError(f"accept_post must be a set of paths, not {self.accept_post!r}")
        for path in [*self.routes, *self.accept_post]:
            if not isinstance(path, str) or not path.startswith("/") or not path.isprintable() or " " in path:
                raise ValueError(f"path {path!r}: expected one starting with / without spaces")
        for path, value in self.routes.items():
            if not isinstance(value, Route) and not (isinstance(value, tuple) and len(value) == 3):
                raise ValueError(f"route {path!r}: expected a Route or (status, content_type, body)")
            route = self.route(path)
            assert route is not None
            _check_status(route.status, f"route {path!r}")
            if not isinstance(route.content_type, str) or not _field_value_ok(route.content_type):
                raise ValueError(f"route {path!r}: content type {route.content_type!r} is no header value")
            if not isinstance(route.body, bytes | bytearray) and not callable(route.body):
                raise ValueError(f"route {path!r}: body must be bytes or a callable giving bytes")
            for name, value_text in route.headers:
                if not _is_token(name) or not isinstance(value_text, str) or not _field_value_ok(value_text):
                    raise ValueError(f"route {path!r}: header {name!r}: {value_text!r} cannot be sent")
                if name.lower() in ("content-length", "transfer-encoding", "connection"):
                    raise ValueError(f"route {path!r}: header {name!r} is the server's to set")
        _check_status(self.post_status, "post_status")
        return self


def _check_status(status: object, what: str) -> None:
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        raise ValueError(f"{what}: status {status!r}, expected an integer from 200 to 599")


@frozen
class HttpRequest:
    """One request the server answered (``status``), as it came.

    ``headers`` in the order sent, names as sent; ``host``: the Host header
    (None: none sent); ``sni``: the server name of the TLS ClientHello
    (None: none sent, or no TLS, or a context that does not note it: those
    of ``CertAuthority`` do); ``tls_version``: None over plain TCP;
    ``time``: the server's clock when the request was complete; ``kept``:
    a POST whose body the site keeps (answered ``post_status``).
    """

    method: str
    target: str
    path: str
    query: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    peer: str
    host: str | None
    sni: str | None
    tls_version: str | None
    time: float
    status: int
    kept: bool = False

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        wanted = name.lower()
        return next((v for n, v in self.headers if n.lower() == wanted), None)

    @property
    def content_type(self) -> str | None:
        return self.header("content-type")


@frozen
class HttpProblem:
    """A connection that went wrong: ``kind``, what happened, and the status answered (None: closed)."""

    kind: ProblemKind
    detail: str
    peer: str
    time: float
    status: int | None = None


class _Bad(Exception):
    """A request the server refuses: the status to answer and why."""

    def __init__(self, status: int, detail: str, kind: ProblemKind = "bad_request") -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind


class _Head:
    """A parsed request line and headers."""

    __slots__ = ("headers", "host", "keep_alive", "method", "path", "query", "target", "version")

    def __init__(
        self,
        method: str,
        target: str,
        path: str,
        query: str,
        version: str,
        headers: tuple[tuple[str, str], ...],
        host: str | None,
        keep_alive: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers
        self.host = host
        self.keep_alive = keep_alive

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name]


def _split_target(method: str, target: str) -> tuple[str, str]:
    """(path, query) of a request target in origin, absolute or asterisk form."""
    if target == "*":
        if method != "OPTIONS":
            raise _Bad(400, "the target * is for OPTIONS only")
        return "*", ""
    rest = target
    lower = target.lower()
    for scheme in ("http://", "https://"):
        if lower.startswith(scheme):
            after = target[len(scheme) :]
            cut_at = min((i for i in (after.find("/"), after.find("?")) if i >= 0), default=len(after))
            if cut_at == 0:
                raise _Bad(400, f"no host in the target {target!r}")
            rest = after[cut_at:] or "/"
            if rest.startswith("?"):
                rest = "/" + rest
            break
    if not rest.startswith("/"):
        raise _Bad(400, f"the target {target!r} is no path")
    path, _, query = rest.partition("?")
    return path, query


def parse_head(data: bytes) -> _Head:
    """The request line and headers of one request (without the blank line); _Bad if not HTTP/1.x."""
    if not data.split(b"\n", 1)[0].isascii():
        raise _Bad(400, "the request line is not ASCII")
    text = data.decode("latin-1")  # header values may hold obs-text
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    parts = lines[0].split(" ")
    if len(parts) != 3 or not all(parts):
        raise _Bad(400, f"malformed request line {lines[0][:80]!r}")
    method, target, version = parts
    if not _is_token(method):
        raise _Bad(400, f"malformed method {method[:40]!r}")
    if not (
        version.startswith("HTTP/")
        and len(version) == 8
        and version[5].isdigit()
        and version[6] == "."
        and version[7].isdigit()
    ):
        raise _Bad(400, f"malformed HTTP version {version[:40]!r}")
    if version[5] != "1":
        raise _Bad(505, f"{version} is not HTTP/1.x")
    if not target.isprintable() or not target.isascii():
        raise _Bad(400, "control characters in the request target")
    path, query = _split_target(method, target)
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            raise _Bad(400, "an empty line inside the header")
        if line[0] in " \t":
            raise _Bad(400, "a folded header line (obs-fold)")
        name, colon, value = line.partition(":")
        if not colon or not _is_token(name):
            raise _Bad(400, f"malformed header line {line[:80]!r}")
        value = value.strip(" \t")
        if not _field_value_ok(value):
            raise _Bad(400, f"control characters in header {name!r}")
        headers.append((name, value))
    hosts = [v for n, v in headers if n.lower() == "host"]
    if len(hosts) > 1:
        raise _Bad(400, "more than one Host header")
    if version != "HTTP/1.0" and not hosts:
        raise _Bad(400, "an HTTP/1.1 request without Host")
    tokens = {t.strip().lower() for n, v in headers if n.lower() == "connection" for t in v.split(",")}
    keep_alive = "close" not in tokens and (version != "HTTP/1.0" or "keep-alive" in tokens)
    return _Head(
        method, target, path, query, version, tuple(headers), hosts[0] if hosts else None, keep_alive
    )


class HttpServer:
    """One fake web host: a listener on ``(address, port)`` serving ``site``, plain or TLS.

    ``start(sock)`` takes a socket bound already (as a world binds its
    hosts), else binds ``(address, port)`` itself (port 0: an ephemeral
    one, then in :attr:`port`). ``site`` may be replaced while it runs.
    ``clock`` stamps records (default ``time.time``); ``on_request`` and
    ``on_problem`` hear of each record as it is made (an exception there is
    reported to the loop's exception handler, never raised into the server).
    """

    def __init__(
        self,
        host_name: str,
        address: str,
        port: int = 0,
        site: HttpSite | None = None,
        ssl_context: ssl.SSLContext | None = None,
        *,
        clock: Callable[[], float] = time.time,
        handshake_timeout: float = 10.0,
        request_timeout: float = 10.0,
        idle_timeout: float = 30.0,
        max_head: int = MAX_HEAD,
        max_body: int = MAX_BODY,
        max_records: int = MAX_RECORDS,
        on_request: Callable[[HttpRequest], None] | None = None,
        on_problem: Callable[[HttpProblem], None] | None = None,
        allow_non_loopback: bool = False,
    ) -> None:
        if not allow_non_loopback and not is_loopback(address):
            raise ValueError(
                f"address {address!r}: a fake host listens on loopback only (127.0.0.0/8 or ::1)"
            )
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port}: expected 0 to 65535")
        for name, value in (
            ("handshake_timeout", handshake_timeout),
            ("request_timeout", request_timeout),
            ("idle_timeout", idle_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, not {value!r}")
        if max_head < 256 or max_body < 0 or max_records < 0:
            raise ValueError("max_head must be at least 256 bytes, max_body and max_records not negative")
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise ValueError(f"ssl_context must be an ssl.SSLContext, not {type(ssl_context).__name__}")
        self.host_name = host_name
        self.address = address
        self.port = port
        self._site = (site or HttpSite()).check()
        self.ssl_context = ssl_context
        self.clock = clock
        self.handshake_timeout = handshake_timeout
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.max_head = max_head
        self.max_body = max_body
        self.max_records = max_records
        self.on_request = on_request
        self.on_problem = on_problem
        self.requests: list[HttpRequest] = []
        self.problems: list[HttpProblem] = []
        self.dropped = {"requests": 0, "problems": 0}
        self.connections = 0
        self.live: set[Any] = set()  # connections open now, each a _Connection (tcp.Owner)
        self.draining: set[Any] = set()  # connections cut with FIN, read until the peer closes (tcp.Drainer)
        self.listener: Listener | None = None
        self.stopping = False

    @property
    def site(self) -> HttpSite:
        return self._site

    @site.setter
    def site(self, site: HttpSite) -> None:
        self._site = site.check()

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None

    @property
    def running(self) -> bool:
        return self.listener is not None

    def url(self, path: str = "/") -> str:
        """This host's URL for ``path``, with the port it listens on (the host name as given)."""
        scheme = "https" if self.tls else "http"
        default = 443 if self.tls else 80
        host = f"[{self.host_name}]" if ":" in self.host_name else self.host_name
        return f"{scheme}://{host}{'' if self.port == default else f':{self.port}'}{path}"

    def posts(self, path: str | None = None) -> list[HttpRequest]:
        """The POST requests kept (to ``path``, or to any path)."""
        return [r for r in self.requests if r.kept and path in (None, r.path)]

    def __repr__(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"<HttpServer {self.host_name} {scheme} {self.address}:{self.port}>"

    # -- life cycle ------------------------------------------------------

    async def start(self, sock: socket.socket | None = None) -> None:
        """Listen (on ``sock`` if given, else on a socket bound to ``(address, port)`` now)."""
        if self.listener is not None:
            raise RuntimeError(f"{self!r} is running already")
        if sock is None:
            family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
            sock = bind_socket(self.address, self.port, family=family)
        try:
            self.address, self.port = sock.getsockname()[:2]
            self.stopping = False
            self.listener = Listener(sock, self._make_protocol, backlog=_LISTEN_BACKLOG)
        except BaseException:
            sock.close()
            raise

    async def stop(self) -> None:
        """Stop accepting, end every connection, and return once their sockets are closed. Idempotent."""
        self.stopping = True
        listener, self.listener = self.listener, None
        if listener is not None:
            await listener.stop_accepting()
        for conn in list(self.live):
            conn.shutdown()
        for drainer in list(self.draining):
            drainer.shutdown()
        if listener is not None:
            await listener.wait_closed()

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- for the connections --------------------------------------------

    def _make_protocol(self) -> asyncio.BaseProtocol:
        self.connections += 1
        return _Connection(self)

    def forget(self, proto: object, error: BaseException | None) -> None:
        """A connection ended (tcp.Owner)."""
        self.live.discard(proto)

    def record(self, request: HttpRequest) -> None:
        if len(self.requests) < self.max_records:
            self.requests.append(request)
        else:
            self.dropped["requests"] += 1
        if self.on_request is not None:
            self._tell(self.on_request, request)

    def problem(self, kind: ProblemKind, detail: str, peer: str, status: int | None = None) -> None:
        item = HttpProblem(kind, detail, peer, self.clock(), status)
        if len(self.problems) < self.max_records:
            self.problems.append(item)
        else:
            self.dropped["problems"] += 1
        if self.on_problem is not None:
            self._tell(self.on_problem, item)

    def _tell(self, hook: Callable[[_T], None], item: _T) -> None:
        try:
            hook(item)
        except Exception as exc:
            asyncio.get_running_loop().call_exception_handler(
                {"message": f"{self!r}: a hook raised", "exception": exc}
            )

    def body_of(self, route: Route) -> bytes:
        body = route.body
        if callable(body):
            body = body()
            if not isinstance(body, bytes | bytearray):
                raise TypeError(f"a route's body callable gave {type(body).__name__}, not bytes")
        return bytes(body)


class _Connection(asyncio.Protocol):
    """One client connection: the TLS handshake if any, then requests one after another."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.raw: asyncio.Transport | None = None  # the socket's transport
        self.transport: asyncio.Transport | None = None  # what requests are read from (TLS or raw)
        self.peer = "?"
        self.sni: str | None = None
        self.tls_version: str | None = None
        self.handshake: asyncio.Task[None] | None = None
        self.buf = bytearray()
        self.head: _Head | None = None  # the request whose body is being read
        self.body = bytearray()
        self.length = 0  # bytes of body still to come (fixed length)
        self.chunked: str | None = None  # "size", "data", "data_end", "trailer" while chunked
        self.trailer = 0
        self.continued = False
        self.served = 0
        self.closing = False
        self.gone = False
        self.timer: asyncio.TimerHandle | None = None
        self.in_request = False

    # -- asyncio's calls -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = cast(asyncio.Transport, transport)
        self.peer = peer_of(transport)
        self.server.live.add(self)
        if self.server.ssl_context is not None:
            self.raw.pause_reading()  # every byte for the TLS layer: start_tls resumes reading
            self.handshake = self.loop.create_task(self._handshake(self.server.ssl_context))
        else:
            self.transport = self.raw
            self._arm(self.server.idle_timeout)

    async def _handshake(self, ctx: ssl.SSLContext) -> None:
        assert self.raw is not None
        try:
            tls = await self.loop.start_tls(
                self.raw,
                self,
                ctx,
                server_side=True,
                ssl_handshake_timeout=self.server.handshake_timeout,
                ssl_shutdown_timeout=TLS_CLOSE_GRACE,
            )
        except (TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError | ConnectionAbortedError):  # asyncio's handshake timeout
                reason = f"no handshake within {self.server.handshake_timeout:g} s"
            elif isinstance(exc, ConnectionError):
                reason = "the client left during the handshake"
            self.server.problem("tls_handshake", f"TLS handshake failed: {reason}", self.peer)
            self._abort()
            return
        if tls is None or self.gone:
            self._abort()
            return
        self.transport = tls
        ssl_object = tls.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.tls_version = ssl_object.version()
            noted = getattr(ssl_object, SERVER_NAME_ATTRIBUTE, None)
            if noted is not None:
                self.sni = noted[0]
        self._arm(self.server.idle_timeout)
        if self.buf:
            self._process()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # after the answer that closes: read and dropped
        self.buf += data
        if self.transport is not None:
            self._process()
        # else: a request that came with the client's last handshake flight (TLS 1.3), delivered
        # by asyncio before start_tls returned; served once it has (see _handshake).

    def _process(self) -> None:
        try:
            self._advance()
        except _Bad as bad:
            self._refuse(bad)
        except Exception as exc:  # a bug of ours, or a body callable that raised: 500, reported
            self.loop.call_exception_handler(
                {"message": f"{self.server!r}: error serving a request", "exception": exc}
            )
            self._refuse(_Bad(500, f"the server failed: {type(exc).__name__}", "server_error"))

    def eof_received(self) -> bool | None:
        if not self.closing and self.in_request:
            self._incomplete("the client ended its side")
        self.closing = True
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing and self.in_request and not self.server.stopping:
            self._incomplete("the connection was lost")
        self.gone = True
        self.closing = True
        self._disarm()
        if self.handshake is not None and not self.handshake.done():
            self.handshake.cancel()
        self.server.forget(self, exc)

    # -- requests ----------------------------------------------------------

    def _advance(self) -> None:
        """Parse and answer as many whole requests as the buffer holds."""
        server = self.server
        while not self.closing:
            if self.head is None:
                while self.buf[:2] == b"\r\n" or self.buf[:1] == b"\n":  # empty lines before a request
                    del self.buf[: 2 if self.buf[:1] == b"\r" else 1]
                if not self.buf:
                    return
                if not self.in_request:  # the first bytes of a request: it has request_timeout to come
                    self.in_request = True
                    self._arm(server.request_timeout)
                end, sep = self._head_end()
                if end < 0:
                    if len(self.buf) > server.max_head:
                        raise _Bad(431, f"the request head is over {server.max_head} bytes", "too_large")
                    return
                if end > server.max_head:
                    raise _Bad(431, f"the request head is over {server.max_head} bytes", "too_large")
                parsed = parse_head(bytes(self.buf[:end]))
                del self.buf[: end + sep]
                self._begin_body(parsed)
            if not self._read_body():
                return
            head, body = self.head, bytes(self.body)
            assert head is not None
            self.head, self.body, self.chunked, self.continued = None, bytearray(), None, False
            self._answer(head, body)

    def _head_end(self) -> tuple[int, int]:
        """Where the head ends in the buffer and the length of the blank line (-1: not yet)."""
        crlf = self.buf.find(b"\r\n\r\n")
        lf = self.buf.find(b"\n\n")
        if lf >= 0 and (crlf < 0 or lf < crlf):
            return lf, 2
        return (crlf, 4) if crlf >= 0 else (-1, 0)

    def _begin_body(self, head: _Head) -> None:
        server = self.server
        codings = [
            t.strip().lower() for v in head.values("transfer-encoding") for t in v.split(",") if t.strip()
        ]
        lengths = {v.strip() for v in head.values("content-length")}
        if codings and lengths:
            raise _Bad(400, "both Transfer-Encoding and Content-Length")
        if codings:
            if head.version == "HTTP/1.0":
                raise _Bad(400, "Transfer-Encoding in an HTTP/1.0 request")
            if codings != ["chunked"]:
                raise _Bad(501, f"transfer coding {', '.join(codings)} not supported (chunked only)")
            self.chunked = "size"
        elif lengths:
            value = lengths.pop() if len(lengths) == 1 else ""
            if not value.isdigit() or len(value) > 18:
                raise _Bad(400, "a Content-Length that is not one number")
            self.length = int(value)
            if self.length > server.max_body:
                raise _Bad(413, f"a body of {self.length} bytes, over {server.max_body}", "too_large")
        elif head.method == "POST":
            raise _Bad(411, "a POST without Content-Length or chunked body")
        else:
            self.length = 0
        self.head = head
        expect = (head.values("expect") or [""])[0].lower()
        waiting = (self.chunked or self.length) and not self.buf
        if expect == "100-continue" and head.version != "HTTP/1.0" and waiting and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the client waits for it
            self.continued = True

    def _read_body(self) -> bool:
        """Move body bytes from the buffer; True once the body is whole."""
        if self.chunked is None:
            take = min(self.length, len(self.buf))
            self.body += self.buf[:take]
            del self.buf[:take]
            self.length -= take
            return self.length == 0
        server = self.server
        while True:
            if self.chunked == "size":
                i = self.buf.find(b"\n")
                if i < 0:
                    if len(self.buf) > _CHUNK_LINE_LIMIT:
                        raise _Bad(400, "a chunk size line too long")
                    return False
                line = bytes(self.buf[:i]).rstrip(b"\r").split(b";", 1)[0].strip()
                del self.buf[: i + 1]
                if not line or len(line) > 16 or any(c not in b"0123456789abcdefABCDEF" for c in line):
                    raise _Bad(400, f"a malformed chunk size {line[:20]!r}")
                size = int(line, 16)
                if size == 0:
                    self.chunked = "trailer"
                    continue
                if len(self.body) + size > server.max_body:
                    raise _Bad(413, f"a chunked body over {server.max_body} bytes", "too_large")
                self.length = size
                self.chunked = "data"
            elif self.chunked == "data":
                take = min(self.length, len(self.buf))
                self.body += self.buf[:take]
                del self.buf[:take]
                self.length -= take
                if self.length:
                    return False
                self.chunked = "data_end"
            elif self.chunked == "data_end":
                if self.buf[:2] == b"\r\n":
                    del self.buf[:2]
                elif self.buf[:1] == b"\n":
                    del self.buf[:1]
                elif bytes(self.buf) in (b"", b"\r"):
                    return False
                else:
                    raise _Bad(400, "chunk data not followed by CRLF")
                self.chunked = "size"
            else:  # trailer fields, up to an empty line
                i = self.buf.find(b"\n")
                if i < 0:
                    if self.trailer + len(self.buf) > server.max_head:
                        raise _Bad(431, "chunked trailer over the head limit", "too_large")
                    return False
                line = bytes(self.buf[:i]).rstrip(b"\r")
                del self.buf[: i + 1]
                self.trailer += i + 1
                if not line:
                    self.trailer = 0
                    return True
                if self.trailer > server.max_head:
                    raise _Bad(431, "chunked trailer over the head limit", "too_large")

    def _answer(self, head: _Head, body: bytes) -> None:
        server = self.server
        site = server.site
        extra: list[tuple[str, str]] = []
        status, content_type, payload = 404, "text/plain", b"404 Not Found\n"
        route = site.route(head.path)
        kept = False
        if head.method in ("GET", "HEAD"):
            if route is not None:
                status, content_type = route.status, route.content_type
                payload = server.body_of(route)
                extra = list(route.headers)
        elif head.method == "POST" and head.path in site.accept_post:
            status, content_type, payload = site.post_status, "text/plain", b"kept\n"
            kept = True
        else:
            status, content_type = 405, "text/plain"
            payload = f"405 {head.method} not allowed here\n".encode()
            extra = [("Allow", "GET, HEAD, POST" if head.path in site.accept_post else "GET, HEAD")]
        keep = head.keep_alive and not server.stopping
        self.served += 1
        server.record(
            HttpRequest(
                method=head.method,
                target=head.target,
                path=head.path,
                query=head.query,
                version=head.version,
                headers=head.headers,
                body=body,
                peer=self.peer,
                host=head.host,
                sni=self.sni,
                tls_version=self.tls_version,
                time=server.clock(),
                status=status,
                kept=kept,
            )
        )
        self._send(status, content_type, payload, extra, keep=keep, head_only=head.method == "HEAD")
        if keep:
            self.in_request = False
            self._arm(server.idle_timeout)
        else:
            self._finish()

    def _send(
        self,
        status: int,
        content_type: str,
        payload: bytes,
        extra: list[tuple[str, str]],
        *,
        keep: bool,
        head_only: bool = False,
    ) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        lines = [
            f"HTTP/1.1 {status} {reason_phrase(status)}",
            f"Date: {http_date()}",
            f"Server: {SERVER_HEADER}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(payload)}",
            *(f"{n}: {v}" for n, v in extra),
            f"Connection: {'keep-alive' if keep else 'close'}",
        ]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        self.transport.write(data if head_only else data + payload)

    def _refuse(self, bad: _Bad) -> None:
        """Answer a request the server cannot take, record it, and close."""
        if self.closing:
            return
        self.server.problem(bad.kind, bad.detail, self.peer, bad.status)
        self._send(
            bad.status,
            "text/plain",
            f"{bad.status} {reason_phrase(bad.status)}: {bad.detail}\n".encode(),
            [],
            keep=False,
        )
        self._finish()

    def _incomplete(self, why: str) -> None:
        got = len(self.buf) + len(self.body)
        what = "a request body" if self.head is not None else "a request head"
        self.server.problem("incomplete", f"{why} in the middle of {what} ({got} bytes in)", self.peer)

    # -- the end of a connection -------------------------------------------

    def _finish(self) -> None:
        """Close after the answer: FIN once it is sent, then read and drop input a while (plain TCP)."""
        self.closing = True
        self._disarm()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport is self.raw and transport.can_write_eof():
            transport.write_eof()  # after what is buffered; the client's FIN (eof_received) closes
            self.timer = self.loop.call_later(FIN_DRAIN_LIMIT, transport.close)
        else:
            transport.close()  # TLS: close_notify after what is buffered

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.timer = self.loop.call_later(seconds, self._timeout)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timeout(self) -> None:
        self.timer = None
        if self.closing:
            return
        if self.in_request:
            limit = self.server.request_timeout
            self._refuse(_Bad(408, f"the request was not complete within {limit:g} s", "timeout"))
        else:
            if not self.served:
                limit = self.server.idle_timeout
                self.server.problem("timeout", f"no request within {limit:g} s; closed", self.peer)
            self._finish()

    def _abort(self) -> None:
        self.closing = True
        self._disarm()
        if self.raw is not None and not self.raw.is_closing():
            self.raw.abort()
        self.server.forget(self, None)

    def shutdown(self) -> None:
        """The server stops: end this connection now (FIN on the socket)."""
        self.closing = True
        self._disarm()
        if self.handshake is not None and not self.handshake.done():
            self.handshake.cancel()
        if self.raw is not None:
            cut(self.raw, "fin", self.server)
        self.server.forget(self, None)
