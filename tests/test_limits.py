"""Limits that follow the traffic: a rate window, a concurrency cap, on the wire.

Every reply is read byte for byte by a raw client on loopback, three times
(three windows, or three clients over the cap). The windows run on a virtual
clock, moved by ``world.advance()``: no test waits for time to pass, and the
concurrent ones wait on their threads with a bound.
"""

from __future__ import annotations

import socket
import threading

import pytest
from mailfakes.spec import SpecError, parse_world

H = "mail.contoso.test"
TIMEOUT = 5.0
CONNS = b"421 4.7.0 mail.contoso.test Error: too many connections from 127.0.0.1\r\n"
TOO_MUCH = b"450 4.7.1 Error: too much mail from 127.0.0.1\r\n"


class Raw:
    """A plain socket and its reader: the bytes exactly as the server sent them."""

    def __init__(self, world) -> None:
        self.sock = socket.create_connection((world.address_of(H), world.port), timeout=TIMEOUT)
        self.f = self.sock.makefile("rb")

    def line(self) -> bytes:
        return self.f.readline()

    def reply(self) -> list[bytes]:
        lines = [self.f.readline()]
        while lines[-1][3:4] == b"-":
            lines.append(self.f.readline())
        return lines

    def cmd(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()[-1]

    def ehlo(self) -> None:
        assert self.line().startswith(b"220 ")
        assert self.cmd(b"EHLO client.fabrikam.test").startswith(b"250 ")

    def at_eof(self) -> bool:
        """The server closed: what follows is the end of the stream (FIN), nothing else."""
        return self.f.read() == b""

    def close(self) -> None:
        self.f.close()
        self.sock.close()


def limited(make_world, **keys):
    return make_world({"hosts": {H: {"tls": "none", **keys}}}, clock="virtual")


# -- the message rate -------------------------------------------------------------


def test_the_mail_over_the_message_rate_gets_450_and_the_session_goes_on_each_window(make_world):
    w = limited(make_world, rate_limit={"per": "messages", "max": 2, "window": "1m"})
    c = Raw(w)
    c.ehlo()
    for window in range(3):
        for _ in range(2):
            assert c.cmd(b"MAIL FROM:<a@fabrikam.test>") == b"250 2.1.0 OK\r\n"
            assert c.cmd(b"RSET") == b"250 2.0.0 OK\r\n"
        # Over the limit, and again until the window empties.
        assert c.cmd(b"MAIL FROM:<a@fabrikam.test>") == TOO_MUCH
        w.advance(59)
        assert c.cmd(b"MAIL FROM:<a@fabrikam.test>") == TOO_MUCH, window
        assert c.cmd(b"NOOP") == b"250 2.0.0 OK\r\n"  # 450 keeps the session
        w.advance(1)  # the window's first MAIL is now 60 s old: it leaves
    c.close()
    assert sum("message rate limit reached" in ln.text for t in w.sessions for ln in t.lines) == 6


def test_a_421_message_rate_closes_after_its_reply(make_world):
    w = limited(
        make_world,
        rate_limit={"per": "messages", "max": 1, "window": "1h", "code": 421, "text": "Throttled"},
    )
    first = Raw(w)
    first.ehlo()
    assert first.cmd(b"MAIL FROM:<a@fabrikam.test>") == b"250 2.1.0 OK\r\n"
    for _ in range(3):
        c = Raw(w)
        c.ehlo()
        assert c.cmd(b"MAIL FROM:<a@fabrikam.test>") == b"421 4.7.0 Throttled\r\n"
        assert c.at_eof()
        c.close()
    first.close()


def test_without_enhancedstatuscodes_the_limit_reply_carries_no_enhanced_code(make_world):
    w = limited(
        make_world,
        rate_limit={"per": "messages", "max": 1, "window": "1h"},
        extensions_off=["ENHANCEDSTATUSCODES"],
    )
    c = Raw(w)
    c.ehlo()
    assert c.cmd(b"MAIL FROM:<a@fabrikam.test>") == b"250 OK\r\n"
    assert c.cmd(b"RSET") == b"250 OK\r\n"
    assert c.cmd(b"MAIL FROM:<a@fabrikam.test>") == b"450 Error: too much mail from 127.0.0.1\r\n"
    c.close()


def test_a_refused_mail_is_not_counted_nor_is_a_malformed_one(make_world):
    w = limited(make_world, rate_limit={"per": "messages", "max": 1, "window": "1h"})
    c = Raw(w)
    c.ehlo()
    assert c.cmd(b"MAIL TO:<a@fabrikam.test>").startswith(b"501 ")  # a syntax error: not a message
    assert c.cmd(b"MAIL FROM:<a@fabrikam.test>") == b"250 2.1.0 OK\r\n"
    assert c.cmd(b"RSET") == b"250 2.0.0 OK\r\n"
    for _ in range(3):
        assert c.cmd(b"MAIL FROM:<a@fabrikam.test>") == TOO_MUCH
    w.advance(3600)
    assert c.cmd(b"MAIL FROM:<a@fabrikam.test>") == b"250 2.1.0 OK\r\n"
    c.close()


# -- the connection rate ----------------------------------------------------------


def test_the_connection_over_the_connection_rate_gets_421_at_the_greeting_then_fin(make_world):
    w = limited(make_world, rate_limit={"per": "connections", "max": 2, "window": "10m"})
    for _ in range(3):
        held = [Raw(w), Raw(w)]
        for c in held:
            assert c.line() == b"220 mail.contoso.test ESMTP mailfakes\r\n"
        over = Raw(w)
        assert over.line() == CONNS
        assert over.at_eof()
        over.close()
        for c in held:
            c.close()
        w.advance(600)


def test_used_starts_the_window_full_and_it_empties_window_seconds_later(make_world):
    w = limited(make_world, rate_limit={"per": "connections", "max": 3, "window": "1h", "used": 3})
    for _ in range(3):
        c = Raw(w)
        assert c.line() == CONNS
        assert c.at_eof()
        c.close()
    w.advance(3600)
    c = Raw(w)
    assert c.line().startswith(b"220 ")
    c.close()
    w.reset()  # the window is as the scenario says again: full
    c = Raw(w)
    assert c.line() == CONNS
    c.close()


def test_reset_empties_the_window(make_world):
    w = limited(make_world, rate_limit={"per": "messages", "max": 1, "window": "1d"})
    for _ in range(3):
        c = Raw(w)
        c.ehlo()
        assert c.cmd(b"MAIL FROM:<a@fabrikam.test>") == b"250 2.1.0 OK\r\n"
        assert c.cmd(b"RSET") == b"250 2.0.0 OK\r\n"
        assert c.cmd(b"MAIL FROM:<a@fabrikam.test>") == TOO_MUCH
        c.close()
        w.reset()


# -- concurrency ------------------------------------------------------------------


def test_the_connection_above_max_sessions_gets_421_and_the_next_after_an_end_is_served(make_world):
    w = limited(make_world, max_sessions=2)
    held = [Raw(w), Raw(w)]
    for c in held:
        c.ehlo()
    for _ in range(3):
        over = Raw(w)
        assert over.line() == CONNS
        assert over.at_eof()
        over.close()
    assert held[0].cmd(b"QUIT").startswith(b"221 ")
    held[0].close()
    first = w.sessions[0]
    assert w.wait_until(lambda: first.closed, TIMEOUT)  # the server saw the end
    c = Raw(w)
    c.ehlo()
    c.close()
    held[1].close()


def _concurrently(n: int, work) -> list[object]:
    results: list[object] = [None] * n
    go = threading.Barrier(n)

    def run(i: int) -> None:
        go.wait(TIMEOUT)
        try:
            results[i] = work()
        except OSError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 2)
    assert not any(t.is_alive() for t in threads)
    return results


def test_twenty_concurrent_clients_get_exactly_max_messages_in_one_window(make_world):
    w = limited(make_world, rate_limit={"per": "messages", "max": 5, "window": "1h"})

    def one() -> bytes:
        c = Raw(w)
        try:
            c.ehlo()
            return c.cmd(b"MAIL FROM:<a@fabrikam.test>")
        finally:
            c.close()

    for _ in range(3):
        replies = _concurrently(20, one)
        assert replies.count(b"250 2.1.0 OK\r\n") == 5
        assert replies.count(TOO_MUCH) == 15
        w.advance(3600)


def test_twenty_concurrent_connections_get_exactly_max_greetings_in_one_window(make_world):
    w = limited(make_world, rate_limit={"per": "connections", "max": 7, "window": "1h"})

    def one() -> bytes:
        c = Raw(w)
        try:
            return c.line()
        finally:
            c.close()

    for _ in range(3):
        greetings = _concurrently(20, one)
        assert greetings.count(b"220 mail.contoso.test ESMTP mailfakes\r\n") == 7
        assert greetings.count(CONNS) == 13
        w.advance(3600)


# -- changed while the world runs -------------------------------------------------


def test_limits_set_while_the_world_runs_apply_from_the_next_session(make_world):
    w = limited(make_world)
    w.host(H).set(tls="none", max_sessions=1)
    held = Raw(w)
    held.ehlo()
    over = Raw(w)
    assert over.line() == CONNS
    over.close()
    held.close()
    w.host(H).set(tls="none", rate_limit={"per": "messages", "max": 1, "window": "1m", "code": 451})
    c = Raw(w)
    c.ehlo()
    assert c.cmd(b"MAIL FROM:<a@fabrikam.test>") == b"250 2.1.0 OK\r\n"
    assert c.cmd(b"RSET") == b"250 2.0.0 OK\r\n"
    assert c.cmd(b"MAIL FROM:<a@fabrikam.test>") == b"451 4.7.1 Error: too much mail from 127.0.0.1\r\n"
    c.close()
    with pytest.raises(SpecError, match=r"rate_limit\.per: 'bytes' is not valid"):
        w.host(H).set(rate_limit={"per": "bytes", "max": 1, "window": "1m"})


def test_the_control_api_sets_a_rate_limit():
    import json
    import urllib.request

    from mailfakes.control_api import ControlServer

    with ControlServer(port=0) as srv:

        def call(method: str, path: str, body: object = None) -> tuple[int, dict]:
            data = json.dumps(body).encode() if body is not None else None
            req = urllib.request.Request(srv.url + path, data=data, method=method)
            req.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        status, facts = call("POST", "/worlds", {"scenario": "baseline-delivered", "clock": "virtual"})
        assert status == 201, facts
        wid = facts["id"]
        path = f"/worlds/{wid}/hosts/{H}/faults"
        status, said = call(
            "PUT", path, {"tls": "none", "rate_limit": {"per": "connections", "max": 1, "window": "1h"}}
        )
        assert status == 200 and "at most 1 connections per 1h" in said["said"]
        addr = (facts["hosts"][H], facts["port"])
        for expected in (b"220 ", CONNS, CONNS, CONNS):
            with socket.create_connection(addr, timeout=TIMEOUT) as s:
                assert s.makefile("rb").readline().startswith(expected)
        status, err = call(
            "PUT", path, {"rate_limit": {"per": "connections", "max": 1, "window": "1h", "code": 450}}
        )
        assert status == 422 and "rate_limit.code: 450 is not valid" in err["error"]
        call("DELETE", f"/worlds/{wid}")


# -- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "needle"),
    [
        ({"rate_limit": {"per": "messages", "window": "1m"}}, r"rate_limit\.max: missing; expected a number"),
        ({"rate_limit": {"per": "messages", "max": 1}}, r"rate_limit\.window: missing; expected a duration"),
        ({"rate_limit": {"max": 1, "window": "1m"}}, r"rate_limit\.per: missing; expected one of messages"),
        ({"rate_limit": {"per": "messages", "max": 0, "window": "1m"}}, r"rate_limit\.max: 0 is not valid"),
        (
            {"rate_limit": {"per": "messages", "max": 2, "window": "1m", "used": 3}},
            r"used: 3 is not valid; expected a number from 0 to max \(2\)",
        ),
        (
            {"rate_limit": {"per": "messages", "max": 2, "window": "1m", "code": 550}},
            r"code: 550 is not valid; expected a 4xx",
        ),
        (
            {"rate_limit": {"per": "connections", "max": 2, "window": "1m", "code": 450}},
            r"code: 450 is not valid; expected 421",
        ),
        ({"rate_limit": {"per": "messages", "max": 2, "window": "1m", "colour": 1}}, r"colour: unknown key"),
        (
            {"rate_limit": {"per": "messages", "max": 2, "window": "1m"}, "replies": {"MAIL": {"code": 550}}},
            r"beside replies\.MAIL",
        ),
        (
            {"rate_limit": {"per": "connections", "max": 2, "window": "1m"}, "greeting": {"code": 554}},
            r"beside a greeting fault",
        ),
        ({"max_sessions": 0}, r"max_sessions: 0 is not valid; expected an integer from 1"),
        (
            {"max_sessions": 2, "close_at": {"point": "before_greeting"}},
            r"max_sessions: 2 is not valid; expected no concurrency limit",
        ),
    ],
)
def test_a_bad_limit_is_refused_naming_the_key(keys, needle):
    with pytest.raises(SpecError, match=needle):
        parse_world({"hosts": {H: keys}})


def test_a_limit_on_a_host_that_is_not_smtp_is_refused():
    with pytest.raises(
        SpecError, match=r"max_sessions: 2 is not valid; expected no SMTP settings on a host of kind refuse"
    ):
        parse_world({"hosts": {H: {"kind": "refuse", "max_sessions": 2}}})
