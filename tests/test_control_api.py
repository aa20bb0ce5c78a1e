"""The HTTP/JSON control API (serve --control): every route over real sockets, checked against the
OpenAPI document.

Requests go through http.client, mail through smtplib, DNS through dnspython: never through
mailfakes. Every answer of these tests is validated against openapi/control-api.json by a small
JSON Schema checker written here (the subset the document uses).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import re
import select
import signal
import smtplib
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import pytest
from mailfakes.control_api import ROUTES, ControlServer

ROOT = Path(__file__).resolve().parent.parent
DOC = json.loads((ROOT / "openapi" / "control-api.json").read_text(encoding="utf-8"))
HOST = "mail.contoso.test"
INLINE = {
    "id": "api-plain",
    "code": "success",
    "server_code": "2.0.0",
    "rfc3463": "2.0.0",
    "title": {"en": "Plain server for the API tests"},
    "target": {
        "smart_host": HOST,
        "mail_domain": "contoso.test",
        "require_tls": False,
        "mail_from": "a@fabrikam.test",
    },
    "world": {"zone": "test", "hosts": {HOST: {"tls": "none"}}},
}
HIT: set[tuple[str, str]] = set()  # documented operations answered so far


# -- a minimal JSON Schema check (the subset the document uses) ---------------------------------


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = DOC
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _type_ok(value: Any, name: str) -> bool:
    return {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }[name]


def validate(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    schema = _resolve(schema)
    errors: list[str] = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(value, t) for t in types):
            return [f"{where}: {value!r} is not of type {types}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and _type_ok(value, "number") and value < schema["minimum"]:
        errors.append(f"{where}: {value} < {schema['minimum']}")
    if "oneOf" in schema:
        good = sum(not validate(value, s, where) for s in schema["oneOf"])
        if good != 1:
            errors.append(f"{where}: matches {good} of oneOf")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        errors += [f"{where}: missing {k}" for k in schema.get("required", []) if k not in value]
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                errors += validate(v, props[k], f"{where}.{k}")
            elif extra is False:
                errors.append(f"{where}: unexpected key {k!r}")
            elif isinstance(extra, dict):
                errors += validate(v, extra, f"{where}.{k}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{where}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{where}: more than {schema['maxItems']} items")
        for i, v in enumerate(value):
            errors += validate(v, schema.get("items", {}), f"{where}[{i}]")
    return errors


def _template_of(path: str) -> str | None:
    for template in DOC["paths"]:
        pattern = "^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            return template
    return None


def check_against_document(method: str, path: str, status: int, ctype: str, body: Any) -> None:
    """The answer is one the document describes: its path, method, status and schema."""
    assert ctype == "application/json", ctype
    template = _template_of(path.split("?")[0])
    if template is None or method.lower() not in DOC["paths"][template]:
        # Not a documented operation: the answer must still be the document's Error.
        assert status in (404, 405, 400, 501), (method, path, status)
        assert validate(body, {"$ref": "#/components/schemas/Error"}) == []
        return
    responses = DOC["paths"][template][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {template}: {status} is not documented"
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    assert validate(body, schema) == [], (method, path, status, body)
    HIT.add((method, template))


# -- a client of the API ------------------------------------------------------------------------


class Api:
    def __init__(self, url: str) -> None:
        m = re.fullmatch(r"http://([\d.]+):(\d+)", url)
        assert m, url
        self.host, self.port = m.group(1), int(m.group(2))

    def raw(
        self, method: str, path: str, data: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(method, path, body=data, headers=headers or {})
            resp = conn.getresponse()
            text = resp.read()
            body = json.loads(text)
            check_against_document(method, path, resp.status, resp.getheader("Content-Type", ""), body)
            return resp.status, body
        finally:
            conn.close()

    def __call__(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        return self.raw(method, path, data, {"Content-Type": "application/json"} if data else None)


@pytest.fixture(scope="module")
def server() -> Iterator[ControlServer]:
    with ControlServer(port=0) as srv:
        yield srv


@pytest.fixture
def api(server: ControlServer) -> Api:
    return Api(server.url)


@pytest.fixture
def world(api: Api) -> Iterator[dict[str, Any]]:
    status, facts = api("POST", "/worlds", {"scenario": INLINE})
    assert status == 201
    yield facts
    api("DELETE", f"/worlds/{facts['id']}")


def mail_reply(facts: dict[str, Any], message: bytes | None = None) -> int:
    """One smtplib session to the world's host: the reply to MAIL (or a refusing greeting's code)."""
    try:
        with smtplib.SMTP(facts["hosts"][HOST], facts["port"], timeout=5) as smtp:
            smtp.ehlo("client.fabrikam.test")
            code, _ = smtp.mail("a@fabrikam.test")
            if code == 250 and message is not None:
                smtp.rcpt("user@contoso.test")
                smtp.data(message)
            return code
    except smtplib.SMTPConnectError as exc:
        return exc.smtp_code


def refused(ip: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(3)
        return s.connect_ex((ip, port)) != 0


# -- the routes, happy path ---------------------------------------------------------------------


def test_the_document_lists_exactly_the_routes_of_the_server():
    documented = {(m.upper(), p) for p, ops in DOC["paths"].items() for m in ops}
    assert documented == set(ROUTES)
    assert DOC["openapi"].startswith("3.1")
    for p, ops in DOC["paths"].items():  # every path parameter is declared
        for op in ops.values():
            declared = {q["name"] for q in op["parameters"] if q["in"] == "path"}
            assert declared == set(re.findall(r"\{(\w+)\}", p)), p


def test_the_catalogue_as_the_files_say(api):
    status, rows = api("GET", "/scenarios")
    files = {
        p.stem: tomllib.loads(p.read_text(encoding="utf-8")) for p in (ROOT / "scenarios").glob("*.toml")
    }
    assert status == 200 and {r["id"] for r in rows} == set(files)
    status, rows = api("GET", "/scenarios?code=4.7.320&lang=fr")
    assert {r["id"] for r in rows} == {i for i, d in files.items() if d["code"] == "4.7.320"}
    assert {r["title"] for r in rows} == {d["title"]["fr"] for d in files.values() if d["code"] == "4.7.320"}
    status, one = api("GET", "/scenarios/tls-cert-expired")
    data = files["tls-cert-expired"]
    assert status == 200 and one["code"] == data["code"] and one["expected"]["rfc3463"] == data["rfc3463"]
    assert one["title"] == {"en": data["title"]["en"], "fr": data["title"]["fr"]}
    assert one["target"]["smart_host"] == data["target"]["smart_host"] and one["world"]


def test_every_route_with_smtplib_and_dnspython(api):
    HIT.clear()
    status, facts = api("POST", "/worlds", {"scenario": INLINE})
    assert status == 201
    wid = facts["id"]
    base = f"/worlds/{wid}"
    assert facts in api("GET", "/worlds")[1]
    assert api("GET", base) == (200, facts)
    assert api("GET", "/scenarios")[0] == 200 and api("GET", "/scenarios/baseline-delivered")[0] == 200

    # A message delivered by smtplib, read back through the API.
    sent = b"From: a@fabrikam.test\r\nTo: user@contoso.test\r\nSubject: through the API\r\n\r\nhello\r\n"
    assert mail_reply(facts, sent) == 250
    [msg] = api("GET", f"{base}/messages")[1]
    assert msg["mail_from"] == "a@fabrikam.test" and msg["rcpt_to"] == ["user@contoso.test"]
    assert ["Subject", "through the API"] in msg["headers"]
    assert base64.b64decode(msg["content_base64"]).replace(b"\r\n", b"\n") == sent.replace(b"\r\n", b"\n")
    assert msg["size"] == len(base64.b64decode(msg["content_base64"]))
    [session] = api("GET", f"{base}/sessions")[1]
    client = [ln["text"] for ln in session["lines"] if ln["direction"] == "C"]
    assert any(t.upper().startswith("MAIL FROM:<A@FABRIKAM.TEST>") for t in client), client
    assert session["host"] == HOST and session["ended_by"] == "client" and session["tls_version"] is None

    # A DNS query of dnspython's, in the query log.
    q = dns.message.make_query(HOST, "A")
    answer = dns.query.udp(q, facts["dns_host"], port=facts["dns_port"], timeout=5)
    assert [r.to_text() for rr in answer.answer for r in rr] == [facts["hosts"][HOST]]
    [logged] = api("GET", f"{base}/dns")[1]
    assert (logged["name"], logged["qtype"], logged["rcode"]) == (HOST, "A", "NOERROR")
    kinds = {e["kind"] for e in api("GET", f"{base}/events")[1]}
    assert {"connect", "smtp_in", "message", "dns"} <= kinds
    assert all(e["kind"] == "message" for e in api("GET", f"{base}/events?kind=message")[1])
    assert api("GET", f"{base}/bounces") == (200, []) and api("GET", f"{base}/tls-reports") == (200, [])

    # Faults changed through the API, as smtplib meets them.
    hosts = f"{base}/hosts/{HOST}"
    status, change = api("POST", f"{hosts}/fail-next", {"n": 2, "reply": "451 4.3.0 Try again later"})
    assert status == 200 and change["change"] == "fail-next" and "the next 2 session(s)" in change["said"]
    assert [mail_reply(facts) for _ in range(3)] == [451, 451, 250]
    assert (
        api("PUT", f"{hosts}/faults", {"tls": "none", "greeting": "421 4.3.2 Service not available"})[0]
        == 200
    )
    assert [mail_reply(facts) for _ in range(2)] == [421, 421]
    assert api("POST", f"{hosts}/heal")[0] == 200
    assert mail_reply(facts) == 250
    api("PUT", f"{hosts}/faults", {"tls": "none", "replies": {"MAIL": "550 5.7.1 Relaying denied"}})
    assert mail_reply(facts) == 550
    assert api("POST", f"{hosts}/restore", {})[0] == 200
    assert mail_reply(facts) == 250
    changes = [e for e in api("GET", f"{base}/events?kind=fault")[1] if e["data"].get("control")]
    assert len(changes) == 5

    # Reset: a new record, the scenario's faults again.
    api("POST", f"{hosts}/fail-next", {"n": 5, "reply": "451 4.3.0 Later"})
    status, reset = api("POST", f"{base}/reset")
    assert set(reset) == {"id", "now"} and reset["id"] == wid
    assert isinstance(reset["now"], float) and reset["now"] >= 0  # the world time of the new record
    assert status == 200 and api("GET", f"{base}/sessions") == (200, [])
    assert mail_reply(facts) == 250

    # A virtual clock, moved by hand.
    status, virtual = api("POST", "/worlds", {"scenario": "baseline-delivered", "clock": "virtual"})
    assert status == 201 and virtual["hour"] is None
    assert api("POST", f"/worlds/{virtual['id']}/advance", {"seconds": 7200}) == (
        200,
        {"id": virtual["id"], "now": 7200.0},
    )
    assert api("DELETE", f"/worlds/{virtual['id']}") == (200, {"id": virtual["id"], "stopped": True})

    # Stopped: its listeners are closed and the API forgets it.
    assert api("DELETE", base)[0] == 200
    assert refused(facts["hosts"][HOST], facts["port"])
    assert api("GET", base)[0] == 404
    assert wid not in {w["id"] for w in api("GET", "/worlds")[1]}
    assert {(m, t) for m, t in ROUTES} == HIT, set(ROUTES) - HIT


def test_a_world_from_toml_text_and_a_scaled_hour(api):
    text = (ROOT / "scenarios" / "smtp-421-greeting.toml").read_text(encoding="utf-8")
    status, facts = api("POST", "/worlds", {"scenario_toml": text, "hour": "2s"})
    try:
        assert status == 201 and facts["scenario"] == "smtp-421-greeting" and facts["hour"] == 2.0
        with pytest.raises(smtplib.SMTPConnectError) as err:
            smtplib.SMTP(facts["hosts"][facts["smart_host"]], facts["port"], timeout=5)
        assert err.value.smtp_code == 421
    finally:
        api("DELETE", f"/worlds/{facts['id']}")


# -- bad input: a clear JSON error, a 4xx status, nothing changed -------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "where", "needle"),
    [
        ("GET", "/worlds/w999", None, 404, "path.id", "no world 'w999'"),
        ("GET", "/worlds/w999/sessions", None, 404, "path.id", "no world"),
        ("DELETE", "/worlds/w999", None, 404, "path.id", "no world"),
        ("POST", "/worlds/w999/hosts/x.test/heal", None, 404, "path.id", "no world"),
        ("GET", "/scenarios/no-such-thing", None, 404, "path.id", "unknown scenario"),
        ("GET", "/nowhere", None, 404, "path", "no route /nowhere"),
        ("PATCH", "/worlds", b"{}", 405, "method", "use GET, POST"),
        ("GET", "/worlds/w1/hosts/x/heal", None, 405, "method", "use POST"),
        ("POST", "/worlds", b"{not json", 400, "body", "malformed JSON"),
        ("POST", "/worlds", b"[1, 2]", 400, "body", "a JSON object is expected"),
        ("POST", "/worlds", b"", 400, "body", "a JSON object is expected"),
        (
            "POST",
            "/worlds",
            b'{"scenario": "baseline-delivered", "colour": 1}',
            400,
            "body.colour",
            "unknown field",
        ),
        ("POST", "/worlds", b'{"scenario": 3}', 400, "body.scenario", "a catalogue id"),
        ("POST", "/worlds", b'{"scenario": "x", "scenario_toml": "y"}', 400, "body", "exactly one"),
        (
            "POST",
            "/worlds",
            b'{"scenario": "baseline-delivered", "clock": "sundial"}',
            400,
            "body.clock",
            "sundial",
        ),
        ("POST", "/worlds", b'{"scenario": "baseline-delivered", "hour": "soon"}', 400, "body.hour", "soon"),
        (
            "POST",
            "/worlds",
            b'{"scenario": "nope-nope"}',
            422,
            "body.scenario",
            "unknown scenario 'nope-nope'",
        ),
        ("POST", "/worlds", b'{"scenario_toml": "id = [1,"}', 422, "body.scenario_toml", "invalid TOML"),
        ("GET", "/scenarios?code=9.9.9.9", None, 400, "query.code", "unknown code"),
        ("GET", "/scenarios?colour=red", None, 400, "query.colour", "unknown query parameter"),
    ],
)
def test_bad_requests_get_the_documented_error(api, server, method, path, body, status, where, needle):
    before = len(server.worlds)
    got, error = api.raw(method, path, body)
    assert (got, error["where"]) == (status, where), error
    assert needle in error["error"]
    assert len(server.worlds) == before


def test_a_malformed_scenario_gets_422_with_the_spec_error(api, server):
    bad = {**INLINE, "world": {"zone": "test", "hosts": {HOST: {"cert": "expird"}}}}
    before = len(server.worlds)
    status, error = api("POST", "/worlds", {"scenario": bad})
    assert status == 422 and error["where"] == "body.scenario"
    assert "cert: 'expird' is not valid; expected one of" in error["error"]
    assert len(server.worlds) == before


@pytest.mark.parametrize(
    ("route", "method", "body", "status", "where", "needle"),
    [
        ("faults", "PUT", {"tls": "maybe"}, 422, "body", "tls: 'maybe' is not valid"),
        ("faults", "PUT", {"colour": "red"}, 422, "body", "colour: unknown key"),
        ("faults", "PUT", {"self": 1}, 422, "body.self", "unknown key"),
        ("fail-next", "POST", {"n": 0, "reply": "451 4.3.0 x"}, 422, "body", "a number of sessions from 1"),
        ("fail-next", "POST", {"n": 2}, 422, "body", "say what fails"),
        ("fail-next", "POST", {"n": 2, "reply": "hello"}, 422, "body", "expected a code and text"),
        ("fail-next", "POST", {"n": "2", "reply": "451 4.3.0 x"}, 400, "body.n", "an integer"),
        ("fail-next", "POST", {"n": 1, "reply": 451}, 400, "body.reply", "a reply line"),
    ],
)
def test_a_bad_fault_is_refused_and_changes_nothing(api, world, route, method, body, status, where, needle):
    got, error = api(method, f"/worlds/{world['id']}/hosts/{HOST}/{route}", body)
    assert (got, error["where"]) == (status, where), error
    assert needle in error["error"]
    assert mail_reply(world) == 250  # the host is as it was
    events = api("GET", f"/worlds/{world['id']}/events?kind=fault")[1]
    assert [e for e in events if e["data"].get("control")] == []


def test_unknown_host_host_of_another_kind_and_a_real_clock(api):
    spec = {
        **INLINE,
        "world": {"zone": "test", "hosts": {HOST: {"tls": "none"}, "mx2.contoso.test": {"kind": "refuse"}}},
    }
    status, facts = api("POST", "/worlds", {"scenario": spec})
    assert status == 201
    try:
        base = f"/worlds/{facts['id']}"
        status, error = api(
            "POST", f"{base}/hosts/nope.contoso.test/fail-next", {"n": 1, "reply": "451 4.3.0 x"}
        )
        assert (status, error["where"]) == (404, "path.name") and "no host 'nope.contoso.test'" in error[
            "error"
        ]
        status, error = api("POST", f"{base}/hosts/mx2.contoso.test/heal")
        assert status == 409 and "of kind refuse" in error["error"]
        status, error = api("POST", f"{base}/advance", {"seconds": 60})
        assert status == 409 and "clock is real" in error["error"]
        assert api("POST", f"{base}/advance", {"seconds": -1})[0] == 400
        assert mail_reply(facts) == 250
    finally:
        api("DELETE", f"/worlds/{facts['id']}")


def test_too_large_a_body_gets_413(api, server):
    before = len(server.worlds)
    big = json.dumps({"scenario_toml": "#" * (1 << 20)}).encode()
    status, error = api.raw("POST", "/worlds", big, {"Content-Type": "application/json"})
    assert status == 413 and error["where"] == "body" and str(1 << 20) in error["error"]
    assert len(server.worlds) == before
    assert api("GET", "/worlds")[0] == 200  # still serving


def test_at_most_max_worlds_run_at_once():
    with ControlServer(port=0, max_worlds=2) as srv:
        api = Api(srv.url)
        ids = [api("POST", "/worlds", {"scenario": INLINE})[1]["id"] for _ in range(2)]
        status, error = api("POST", "/worlds", {"scenario": INLINE})
        assert status == 409 and "at most 2 worlds" in error["error"]
        assert len(api("GET", "/worlds")[1]) == 2
        api("DELETE", f"/worlds/{ids[0]}")
        assert api("POST", "/worlds", {"scenario": INLINE})[0] == 201


def test_garbage_on_the_socket_never_stops_the_server(api, server):
    for junk in (
        b"\x00\xff\xfe garbage\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"\x16\x03\x01\x00",
    ):
        with socket.create_connection((api.host, api.port), timeout=5) as s:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        if data:  # an answer, when it gets one, is the document's error
            head, _, body = data.partition(b"\r\n\r\n")
            assert b"application/json" in head
            assert validate(json.loads(body), {"$ref": "#/components/schemas/Error"}) == []
    with socket.create_connection((api.host, api.port), timeout=5):
        pass  # a client that says nothing and leaves
    assert api("GET", "/worlds")[0] == 200


def test_a_non_loopback_control_address_is_refused_before_binding():
    with pytest.raises(ValueError, match="not a loopback address"):
        ControlServer("8.8.8.8", 0)  # refused before binding: nothing is sent


# -- the command line ---------------------------------------------------------------------------


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no line on stdout"
    return proc.stdout.readline()


def test_serve_control_json_then_sigint_leaves_nothing():
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailfakes", "serve", "baseline-delivered", "--control", "0", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = json.loads(read_line(proc, 20))
        api = Api(ready["control"])
        [first] = ready["worlds"]
        assert first["scenario"] == "baseline-delivered" and first["id"] == "w1"
        assert api("GET", "/worlds") == (200, [first])
        status, second = api("POST", "/worlds", {"scenario": INLINE})
        assert status == 201 and mail_reply(second) == 250
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(10)
    assert proc.returncode == 130, err  # the shell's status for SIGINT, as every command's
    assert "Traceback" not in err
    assert refused(api.host, api.port)
    assert refused(second["hosts"][HOST], second["port"])
    assert refused(first["hosts"][first["smart_host"]], first["port"])
    assert refused(first["dns_host"], first["dns_port"])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["serve"], "the following arguments are required: ID"),
        (
            ["serve", "--control", "0", "--control-host", "8.8.8.8"],
            "--control-host '8.8.8.8' is not a loopback",
        ),
        (["serve", "--control", "0", "--port", "2525"], "--port set the world of ID"),
        (["serve", "--control", "0", "--netns"], "--control does not combine"),
        (["serve", "no-such-scenario", "--control", "0"], "unknown scenario"),
    ],
)
def test_serve_control_errors_are_one_line_and_exit_2(args, needle):
    done = subprocess.run(
        [sys.executable, "-m", "mailfakes", *args], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert needle in done.stderr and done.stdout == ""
