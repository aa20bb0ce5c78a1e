"""``mailfakes serve --control PORT``: worlds started, read and changed over HTTP/JSON on loopback.

A small HTTP server (the standard library's, one thread per connection) that
runs worlds on one :class:`~mailfakes.runtime.Runtime`, for clients in any
language. The document ``openapi/control-api.json`` of the repository
describes every route; :data:`ROUTES` is this server's list of them. Every
answer is JSON; an error is ``{"error": TEXT, "where": WHERE}`` with a 4xx
status, and changes nothing. Example::

    with ControlServer(port=0) as control:
        print(control.url)       # http://127.0.0.1:PORT
        # POST {url}/worlds {"scenario": "tls-cert-expired"} -> 201 and the world's facts
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final, cast, get_args
from urllib.parse import parse_qs, unquote, urlsplit

from .events import EventKind

if TYPE_CHECKING:
    from .catalogue import Scenario
    from .runtime import Runtime
    from .world import World

MAX_BODY: Final = 1 << 20  # bytes of a request body
MAX_WORLDS: Final = 32  # worlds running at once
READ_TIMEOUT: Final = 10.0  # seconds a client may take to send its request
CALL_TIMEOUT: Final = 10.0  # seconds a world's start, reset or change may take
_DRAIN_LIMIT: Final = 16 << 20  # what is read (and dropped) of a refused body, so the client reads the answer
_WORLD_KEYS: Final = ("scenario", "scenario_toml", "clock", "hour")


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$")


class ApiError(Exception):
    """An answer other than success: its status, text and where in the request it lies."""

    def __init__(self, status: int, error: str, where: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.where = where


def json_safe(value: Any) -> Any:
    """``value`` with every part JSON can hold as is, the rest as text (bytes as base64)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


class Entry:
    """One world of the server, with its id and the facts it was started with."""

    def __init__(self, wid: str, scenario: Scenario, world: World) -> None:
        from .facts import ClientFacts

        self.id = wid
        self.scenario = scenario
        self.world = world
        self.facts = {**ClientFacts.of(scenario, world).as_json(), "id": wid}
        self.lock = threading.Lock()  # one change at a time; a stop waits for it
        self.stopped = False


class ControlServer:
    """The HTTP/JSON control API, bound to a loopback address; worlds on one runtime of its own.

    ``start()`` binds and serves on a thread; ``stop()`` stops every world, the
    runtime and the server, and leaves no thread or socket. A non-loopback
    ``host`` is refused before anything binds (ValueError).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_worlds: int = MAX_WORLDS,
        max_body: int = MAX_BODY,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        from .spec import is_loopback

        if not is_loopback(host):
            raise ValueError(
                f"control address {host!r} is not a loopback address: the control API listens on "
                "this machine only (127.0.0.0/8 or ::1)"
            )
        if not 0 <= port <= 65535:
            raise ValueError(f"invalid port {port}: expected a number from 0 to 65535")
        self.host = host
        self.requested_port = port
        self.max_worlds = max_worlds
        self.max_body = max_body
        self.read_timeout = read_timeout
        self.worlds: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self._starting = 0
        self._next_id = 1
        self._runtime: Runtime | None = None
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    # -- life --------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd is not None else 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ControlServer:
        from .runtime import Runtime

        if self._httpd is not None:
            return self
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        httpd = _HttpServer((self.host, self.requested_port), family, self)
        try:
            self._runtime = Runtime(thread_name="mailfakes-control").start()
        except BaseException:
            httpd.server_close()  # nothing left listening when the runtime cannot start
            raise
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="mailfakes-control-http"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end open connections, stop every world and the runtime. Idempotent."""
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is not None:
            httpd.shutdown()
            httpd.end_connections()
            httpd.server_close()  # joins the connection threads
        if thread is not None:
            thread.join()
        with self._lock:
            entries, self.worlds = list(self.worlds.values()), {}
        for entry in entries:
            self._stop_entry(entry)
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.close()

    def __enter__(self) -> ControlServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- worlds ------------------------------------------------------------

    def add_world(self, scenario: Scenario, **world_args: Any) -> Entry:
        """Start ``scenario``'s world on the server's runtime and give it an id.

        Raises ApiError 409 when :attr:`max_worlds` run already; WorldError or
        SpecError from the world itself."""
        from .world import World

        runtime = self._runtime
        if runtime is None:
            raise ApiError(409, "the control server is not running", "server")
        with self._lock:
            if len(self.worlds) + self._starting >= self.max_worlds:
                raise ApiError(
                    409,
                    f"at most {self.max_worlds} worlds run at once: stop one (DELETE /worlds/ID) first",
                    "worlds",
                )
            self._starting += 1
            wid = f"w{self._next_id}"
            self._next_id += 1
        try:
            world = World(scenario.world, runtime=runtime, **world_args)
            world.start(CALL_TIMEOUT)
            try:
                entry = Entry(wid, scenario, world)
            except BaseException:
                world.stop()
                raise
            with self._lock:
                self.worlds[wid] = entry
        finally:
            with self._lock:
                self._starting -= 1
        return entry

    def entry(self, wid: str) -> Entry:
        with self._lock:
            found = self.worlds.get(wid)
        if found is None or found.stopped:
            raise ApiError(404, f"no world {wid!r} (see GET /worlds)", "path.id")
        return found

    def remove(self, wid: str) -> Entry:
        entry = self.entry(wid)
        with self._lock:
            self.worlds.pop(wid, None)
        self._stop_entry(entry)
        return entry

    @staticmethod
    def _stop_entry(entry: Entry) -> None:
        with entry.lock:
            entry.stopped = True
            entry.world.stop()

    # -- requests ----------------------------------------------------------

    def handle(self, method: str, target: str, body: bytes | None) -> tuple[int, Any, dict[str, str]]:
        """Answer one request: status, JSON value, extra headers. Raises nothing."""
        try:
            return self._route(method, target, body)
        except ApiError as exc:
            return exc.status, {"error": exc.error, "where": exc.where}, {}
        except Exception as exc:  # a bug of ours: said, never raised out of the server
            return 500, {"error": f"internal error: {type(exc).__name__}: {exc}", "where": "server"}, {}

    def _route(self, method: str, target: str, body: bytes | None) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(target)
        path = unquote(parts.path)
        if len(path) > 1:
            path = path.rstrip("/")
        query = parse_qs(parts.query, keep_blank_values=True)
        allowed: list[str] = []
        for m, template, pattern in _COMPILED:
            match = pattern.match(path)
            if match is None:
                continue
            if m != method:
                allowed.append(m)
                continue
            handler = _HANDLERS[(m, template)]
            return handler(self, match.groupdict(), query, body)
        if allowed:
            raise ApiError(
                405, f"{method} is not allowed on {path}: use {', '.join(sorted(set(allowed)))}", "method"
            )
        raise ApiError(404, f"no route {path} (the routes are in openapi/control-api.json)", "path")


# -- reading requests ---------------------------------------------------------


def _json_body(body: bytes | None, *, required: bool = True) -> dict[str, Any]:
    if not body or not body.strip():
        if required:
            raise ApiError(400, "a JSON object is expected in the request body", "body")
        return {}
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"malformed JSON: {exc}", "body") from None
    if not isinstance(value, dict):
        raise ApiError(400, f"a JSON object is expected, not {type(value).__name__}", "body")
    return value


def _one(query: Mapping[str, list[str]], name: str, allowed: tuple[str, ...]) -> str | None:
    for key in query:
        if key not in allowed:
            raise ApiError(
                400,
                f"unknown query parameter {key!r} (known: {', '.join(allowed) or 'none'})",
                f"query.{key}",
            )
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, f"{name} given {len(values)} times", f"query.{name}")
    return values[0]


def _no_query(query: Mapping[str, list[str]]) -> None:
    _one(query, "", ())


# -- what is answered ---------------------------------------------------------


def _scenarios(srv: ControlServer, path: dict[str, str], query: Any, body: bytes | None) -> Any:
    from . import catalogue as cat
    from .spec import enhanced_ok

    code = _one(query, "code", ("code", "lang"))
    lang = _lang(query)
    items = cat.headlines()
    if code is not None:
        if code not in cat.CODES and not enhanced_ok(code):
            raise ApiError(
                400,
                f"unknown code {code!r}; expected one of {', '.join(cat.CODES)} or an enhanced code",
                "query.code",
            )
        items = [h for h in items if code in (h.code, h.expected_code)]
    rows = [
        {
            "id": h.id,
            "code": h.expected_code,
            "class": h.code,
            "title": h.title[lang],
            "smart_host": h.smart_host,
            "mail_domain": h.mail_domain,
        }
        for h in items
    ]
    return 200, rows, {}


def _lang(query: Mapping[str, list[str]]) -> str:
    lang = (query.get("lang") or ["en"])[-1]
    if lang not in ("en", "fr"):
        raise ApiError(400, f"lang {lang!r}: expected en or fr", "query.lang")
    return lang


def _scenario(srv: ControlServer, path: dict[str, str], query: Any, body: bytes | None) -> Any:
    from . import catalogue as cat
    from .browse import describe_world
    from .facts import PROFILES_SHOWN

    _no_query(query)
    try:
        s = cat.get(path["id"])
    except LookupError as exc:
        raise ApiError(404, str(exc.args[0] if exc.args else exc), "path.id") from None
    return 200, scenario_facts(s, describe_world(s), PROFILES_SHOWN), {}


def scenario_facts(s: Scenario, world_lines: list[str], profiles: tuple[str, ...]) -> dict[str, Any]:
    """What ``mailfakes show`` says of a scenario, as JSON."""
    t = s.target
    return {
        "id": s.id,
        "code": s.expected_code,
        "class": s.code,
        "title": dict(s.title),
        "cause": dict(s.cause),
        "fix": dict(s.fix),
        "expected": {p: s.code_for(p) for p in profiles},
        "target": {
            "smart_host": t.smart_host,
            "connect_by_ip": t.connect_by_ip,
            "mail_domain": t.mail_domain,
            "require_tls": t.require_tls,
            "mail_from": t.mail_from,
            "rcpt_to": list(t.rcpt_to),
        },
        "world": world_lines,
        "queue": {"outcome": s.queue.outcome} if s.queue is not None else None,
        "sources": list(s.sources),
    }


def _worlds(srv: ControlServer, path: dict[str, str], query: Any, body: bytes | None) -> Any:
    _no_query(query)
    with srv._lock:
        entries = [e for e in srv.worlds.values() if not e.stopped]
    return 200, [e.facts for e in entries], {}


def _new_world(srv: ControlServer, path: dict[str, str], query: Any, body: bytes | None) -> Any:
    from . import catalogue as cat
    from .clock import DURATION_RULE, parse_duration
    from .spec import MIN_HOUR, SpecError
    from .world import WorldError

    _no_query(query)
    data = _json_body(body)
    for key in data:
        if key not in _WORLD_KEYS:
            raise ApiError(400, f"unknown field {key!r} (known: {', '.join(_WORLD_KEYS)})", f"body.{key}")
    given = [k for k in ("scenario", "scenario_toml") if k in data]
    if len(given) != 1:
        raise ApiError(400, "give exactly one of scenario (an id or an object) and scenario_toml", "body")
    clock = data.get("clock", "real")
    if clock not in ("real", "virtual"):
        raise ApiError(400, f"clock {clock!r}: expected 'real' or 'virtual'", "body.clock")
    args: dict[str, Any] = {"clock": clock}
    if "hour" in data:
        if clock == "virtual":
            raise ApiError(400, "a virtual clock has no hour length: it moves only by /advance", "body.hour")
        hour = parse_duration(data["hour"])
        if hour is None or hour < MIN_HOUR:
            raise ApiError(
                400,
                f"hour {data['hour']!r}: expected {DURATION_RULE}, at least {MIN_HOUR * 1000:g} ms",
                "body.hour",
            )
        args["hour"] = hour
    where = f"body.{given[0]}"
    raw = data[given[0]]
    try:
        if given[0] == "scenario_toml":
            if not isinstance(raw, str):
                raise ApiError(400, "scenario_toml: the text of a scenario file (a string)", where)
            scenario = _from_toml(raw)
        elif isinstance(raw, str):
            try:
                scenario = cat.get(raw)
            except LookupError as exc:
                raise ApiError(422, str(exc.args[0] if exc.args else exc), where) from None
        elif isinstance(raw, dict):
            scenario = cat.from_dict(raw, where="posted scenario")
        else:
            raise ApiError(400, "scenario: a catalogue id (a string) or a scenario (an object)", where)
        entry = srv.add_world(scenario, **args)
    except SpecError as exc:
        raise ApiError(422, str(exc), where) from None
    except WorldError as exc:
        raise ApiError(409, f"the world could not start: {exc}", "world") from None
    return 201, entry.facts, {"Location": f"/worlds/{entry.id}"}


def _from_toml(text: str) -> Scenario:
    import tomllib

    from . import catalogue as cat

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise cat.ScenarioError(
            "scenario_toml", "(text)", None, "valid TOML", message=f"scenario_toml: invalid TOML: {exc}"
        ) from None
    return cat.from_dict(data, where="scenario_toml")


def _world(srv: ControlServer, path: dict[str, str], query: Any, body: bytes | None) -> Any:
    _no_query(query)
    return 200, srv.entry(path["id"]).facts, {}


def _delete(srv: ControlServer, path: dict[str, str], query: Any, body: bytes | None) -> Any:
    _no_query(query)
    entry = srv.remove(path["id"])
    return 200, {"id": entry.id, "stopped": True}, {}


def _world_time(world: World, mono: float | None) -> float | None:
    return None if mono is None else round(world.clock.at(mono), 6)


def _sessions(srv: ControlServer, path: dict[str, str], query: Any, body: bytes | None) -> Any:
    _no_query(query)
    w = srv.entry(path["id"]).world
    out = [
        {
            "session_id": t.session_id,
            "host": t.host,
            "address": t.address,
            "peer": t.peer,
            "at": _world_time(w, t.opened),
            "lines": [{"direction": ln.direction, "text": ln.text} for ln in t.lines],
            "ended_by": t.ended_by,
            "closed": t.closed,
            "faulted": t.faulted,
            "tls_attempted": t.tls_attempted,
            "tls_version": t.tls_version,
            "tls_error": t.tls_error,
            "sni": t.sni,
            "client_verified": t.client_verified,
        }
        for t in w.sessions
    ]
    return 200, out, {}


def _messages(srv: ControlServer, path: dict[str, str], query: Any, body: bytes | None) -> Any:
    from email.parser import BytesHeaderParser
    from email.policy import compat32

    _no_query(query)
    w = srv.entry(path["id"]).world
    out = []
    for m in w.messages:
        head = BytesHeaderParser(policy=compat32).parsebytes(m.content)
        out.append(
            {
                "session_id": m.session_id,
                "host": m.host,
                "mail_from": m.mail_from,
                "rcpt_to": list(m.rcpt_tos),
                "size": len(m.content),
                "tls_version": m.tls_version,
                "replied": m.replied,
                "headers": [[name, str(value)] for name, value in head.items()],
                "content_base64": base64.b64encode(m.content).decode("ascii"),
            }
        )
    return 200, out, {}


def _bounces(srv: ControlServer, path: dict[str, str], query: Any, body: bytes | None) -> Any:
    _no_query(query)
    w = srv.entry(path["id"]).world
    out = [
        {
            "action": b.action,
            "status": b.status,
            "final_recipient": b.final_recipient,
            "diagnostic_code": b.diagnostic_code,
            "remote_mta": b.remote_mta,
            "reporting_mta": b.reporting_mta,
            "original_headers": dict(b.original_headers),
            "envelope_from": b.envelope_from,
            "envelope_to": list(b.envelope_to),
            "at": b.at,
        }
        for b in w.bounces
    ]
    return 200, out, {}


def _dns(srv: ControlServer, path: dict[str, str], query: Any, body: bytes | None) -> Any:
    _no_query(query)
    w = srv.entry(path["id"]).world
    out = [
        {
            "name": q.name,
            "qtype": q.qtype,
            "transport": q.transport,
            "rcode": q.rcode,
            "answers": list(q.answers),
            "fault": q.fault,
            "peer": q.peer,
            "delay_ms": q.delay_ms,
            "flags": list(q.flags),
            "dnssec": q.dnssec,
            "ad": q.ad,
            "at": _world_time(w, q.time),
        }
        for q in w.dns_queries
    ]
    return 200, out, {}


_KINDS: Final = get_args(EventKind)


def _events(srv: ControlServer, path: dict[str, str], query: Any, body: bytes | None) -> Any:
    kind = _one(query, "kind", ("kind",))
    if kind is not None and kind not in _KINDS:
        raise ApiError(400, f"kind {kind!r}: expected one of {', '.join(_KINDS)}", "query.kind")
    wanted = cast("EventKind | None", kind)
    w = srv.entry(path["id"]).world
    out = [
        {
            "kind": e.kind,
            "host": e.host,
            "text": e.text,
            "at": _world_time(w, e.time),
            "data": json_safe(e.data),
        }
        for e in w.events.events(wanted)
    ]
    return 200, out, {}


def _tls_reports(srv: ControlServer, path: dict[str, str], query: Any, body: bytes | None) -> Any:
    _no_query(query)
    w = srv.entry(path["id"]).world
    out = [
        {
            "organization": r.organization,
            "report_id": r.report_id,
            "start": r.start,
            "end": r.end,
            "policies": json_safe(r.policies),
            "via": r.via,
            "to": r.to,
            "at": r.at,
        }
        for r in w.tls_reports
    ]
    return 200, out, {}


def _reset(srv: ControlServer, path: dict[str, str], query: Any, body: bytes | None) -> Any:
    _no_query(query)
    _json_body(body, required=False)
    entry = srv.entry(path["id"])
    with entry.lock:
        if entry.stopped:
            raise ApiError(404, f"no world {entry.id!r} (see GET /worlds)", "path.id")
        entry.world.reset(CALL_TIMEOUT)
    return 200, {"id": entry.id, "now": entry.world.now}, {}


def _advance(srv: ControlServer, path: dict[str, str], query: Any, body: bytes | None) -> Any:
    from .clock import VirtualClock

    _no_query(query)
    data = _json_body(body)
    for key in data:
        if key != "seconds":
            raise ApiError(400, f"unknown field {key!r} (known: seconds)", f"body.{key}")
    seconds = data.get("seconds")
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 <= seconds <= 10 * 366 * 86400
    ):
        raise ApiError(400, f"seconds {seconds!r}: a number of seconds from 0 to ten years", "body.seconds")
    entry = srv.entry(path["id"])
    if not isinstance(entry.world.clock, VirtualClock):
        raise ApiError(
            409,
            "this world's clock is real: only a world made with clock 'virtual' is moved by hand",
            "path.id",
        )
    with entry.lock:
        if entry.stopped:
            raise ApiError(404, f"no world {entry.id!r} (see GET /worlds)", "path.id")
        now = entry.world.advance(float(seconds), CALL_TIMEOUT)
    return 200, {"id": entry.id, "now": now}, {}


def _change(
    srv: ControlServer, path: dict[str, str], what: str, call: Callable[[Any], Any]
) -> tuple[int, Any, dict[str, str]]:
    """Apply ``call`` to the host's control; the SpecError or ValueError of a refused fault is a 422."""
    from .spec import SpecError

    entry = srv.entry(path["id"])
    name = path["name"]
    with entry.lock:
        if entry.stopped:
            raise ApiError(404, f"no world {entry.id!r} (see GET /worlds)", "path.id")
        try:
            control = entry.world.host(name)
        except KeyError as exc:
            raise ApiError(404, str(exc.args[0] if exc.args else exc), "path.name") from None
        except ValueError as exc:
            raise ApiError(409, str(exc), "path.name") from None
        try:
            call(control)
        except (SpecError, ValueError, TypeError) as exc:
            raise ApiError(422, str(exc), "body") from None
    events = [
        e for e in entry.world.events.events("fault") if e.data.get("control") and e.host == control.name
    ]
    said = events[-1].text if events else ""
    return 200, {"id": entry.id, "host": control.name, "change": what, "said": said}, {}


def _keys(data: Mapping[str, Any]) -> dict[str, Any]:
    if "self" in data:  # a keyword of the methods themselves, never a fault key
        raise ApiError(422, "self: unknown key of an SMTP host", "body.self")
    return dict(data)


def _fail_next(srv: ControlServer, path: dict[str, str], query: Any, body: bytes | None) -> Any:
    _no_query(query)
    data = _keys(_json_body(body))
    n = data.pop("n", None)
    if isinstance(n, bool) or not isinstance(n, int):
        raise ApiError(400, f"n {n!r}: the number of sessions that fail (an integer from 1)", "body.n")
    reply = data.pop("reply", None)
    if reply is not None and not isinstance(reply, str | dict):
        raise ApiError(
            400, "reply: a reply line like '451 4.3.0 Try again later', or an object", "body.reply"
        )
    at = data.pop("at", "MAIL")
    if not isinstance(at, str):
        raise ApiError(400, "at: the command the reply answers, like MAIL, RCPT or DATA", "body.at")
    return _change(srv, path, "fail-next", lambda c: c.fail_next(n, reply, at=at.upper(), **data))


def _set(srv: ControlServer, path: dict[str, str], query: Any, body: bytes | None) -> Any:
    _no_query(query)
    data = _keys(_json_body(body))
    return _change(srv, path, "set", lambda c: c.set(**data))


def _heal(srv: ControlServer, path: dict[str, str], query: Any, body: bytes | None) -> Any:
    _no_query(query)
    _json_body(body, required=False)
    return _change(srv, path, "heal", lambda c: c.heal())


def _restore(srv: ControlServer, path: dict[str, str], query: Any, body: bytes | None) -> Any:
    _no_query(query)
    _json_body(body, required=False)
    return _change(srv, path, "restore", lambda c: c.restore())


Handler = Callable[[ControlServer, dict[str, str], Any, "bytes | None"], tuple[int, Any, dict[str, str]]]
_HANDLERS: Final[dict[tuple[str, str], Handler]] = {
    ("GET", "/scenarios"): _scenarios,
    ("GET", "/scenarios/{id}"): _scenario,
    ("GET", "/worlds"): _worlds,
    ("POST", "/worlds"): _new_world,
    ("GET", "/worlds/{id}"): _world,
    ("DELETE", "/worlds/{id}"): _delete,
    ("GET", "/worlds/{id}/sessions"): _sessions,
    ("GET", "/worlds/{id}/messages"): _messages,
    ("GET", "/worlds/{id}/bounces"): _bounces,
    ("GET", "/worlds/{id}/dns"): _dns,
    ("GET", "/worlds/{id}/events"): _events,
    ("GET", "/worlds/{id}/tls-reports"): _tls_reports,
    ("POST", "/worlds/{id}/reset"): _reset,
    ("POST", "/worlds/{id}/advance"): _advance,
    ("POST", "/worlds/{id}/hosts/{name}/fail-next"): _fail_next,
    ("PUT", "/worlds/{id}/hosts/{name}/faults"): _set,
    ("POST", "/worlds/{id}/hosts/{name}/heal"): _heal,
    ("POST", "/worlds/{id}/hosts/{name}/restore"): _restore,
}
# Every route: method, path template. The OpenAPI document has exactly these.
ROUTES: Final = tuple(_HANDLERS)
_COMPILED: Final = [(method, template, _pattern(template)) for method, template in ROUTES]


# -- the HTTP side --------------------------------------------------------------


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins them: no thread is left behind
    block_on_close = True

    def __init__(
        self, address: tuple[str, int], family: socket.AddressFamily, control: ControlServer
    ) -> None:
        self.address_family = family
        self.control = control
        self.open: set[socket.socket] = set()
        self.open_lock = threading.Lock()
        try:
            super().__init__(address, _Handler)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {address[0]}:{address[1]}: {exc.strerror}") from None

    def end_connections(self) -> None:
        with self.open_lock:
            socks = list(self.open)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up, or sent garbage: never a traceback on the operator's terminal


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    server_version = "mailfakes-control"
    sys_version = ""
    error_content_type = "application/json"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.control.read_timeout)
        with self.server.open_lock:
            self.server.open.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.open_lock:
            self.server.open.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # What http.server refuses itself (a garbled request line, too long a header): JSON too.
        text = message or HTTPStatus(code).phrase
        self._send(code, {"error": text, "where": "request"}, {"Connection": "close"})

    def _send(self, status: int, value: Any, headers: Mapping[str, str]) -> None:
        data = (json.dumps(value, ensure_ascii=False) + "\n").encode("utf-8")
        if self.request_version == "HTTP/0.9":  # a garbled request line: headers all the same
            self.request_version = "HTTP/1.0"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, text in headers.items():
            self.send_header(name, text)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _dispatch(self) -> None:
        control = self.server.control
        body: bytes | None = None
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._send(
                411, {"error": "send the body with a Content-Length, not chunked", "where": "body"}, {}
            )
            self.close_connection = True
            return
        length_text = self.headers.get("Content-Length")
        if length_text is not None:
            try:
                length = int(length_text)
                if length < 0:
                    raise ValueError
            except ValueError:
                self._send(
                    400, {"error": f"Content-Length {length_text!r}: not a length", "where": "headers"}, {}
                )
                return
            if length > control.max_body:
                self._send(
                    413,
                    {
                        "error": f"a request body holds at most {control.max_body} bytes, not {length}",
                        "where": "body",
                    },
                    {},
                )
                self.wfile.flush()
                self._drain(length)
                return
            body = self.rfile.read(length)
            if len(body) < length:
                return  # the client went away mid-body: nobody to answer
        status, value, headers = control.handle(self.command, self.path, body)
        self._send(status, value, headers)

    def _drain(self, length: int) -> None:
        """Read (and drop) a refused body, so that closing does not reset the answer away."""
        left = min(length, _DRAIN_LIMIT)
        with contextlib.suppress(OSError):
            self.connection.settimeout(2.0)
            while left > 0:
                chunk = self.rfile.read1(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch
