"""World lifecycle: addresses, ports, sync and async start/stop, no leaks."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import struct
import threading

import dns.message
import pytest
from mailfakes import PortInUse, World, WorldError, parse_world
from mailfakes.events import EventLog
from mailfakes.runtime import Runtime, default_runtime
from mailfakes.smtp import FaultySMTP
from mailfakes.transcript import Message, Recorder, Transcript
from probe import Closed, RawSMTP, connect_outcome, resolve_a

SPEC = {
    "hosts": {
        "mx1.contoso.test": {},
        "mx2.contoso.test": {"cert": "expired"},
        "down.contoso.test": {"kind": "refuse"},
        "hole.contoso.test": {"kind": "blackhole"},
    }
}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_each_host_has_its_own_loopback_address_and_one_shared_port(make_world):
    world = make_world(SPEC)
    addresses = list(world.hosts.values())
    assert len(set(addresses)) == 4
    assert all(a.startswith("127.") for a in addresses)
    assert world.dns_host.startswith("127.") and world.dns_port > 0
    for name in ("mx1.contoso.test", "mx2.contoso.test"):
        c = RawSMTP.connect(world.address_of(name), world.port)
        assert c.reply().lines[0].startswith(f"220 {name} ")
    # The world's DNS gives the same addresses.
    assert resolve_a(world.dns_host, world.dns_port, "mx2.contoso.test").addresses == [
        world.hosts["mx2.contoso.test"]
    ]


def test_a_chosen_port_and_subnet(make_world):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    world = make_world(SPEC, port=port, subnet="127.77.1")
    assert world.port == port
    assert world.address_of("mx1.contoso.test") == "127.77.1.2"


def test_port_in_use_is_a_clear_error_and_leaves_nothing_running():
    blocker = socket.socket()
    blocker.bind(("127.88.1.2", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    default_runtime()  # the process's shared loop thread is not the world's to undo
    threads = threading.active_count()
    try:
        world = World(SPEC, port=port, subnet="127.88.1")
        with pytest.raises(PortInUse, match=f"port {port} is already in use"):
            world.start()
        assert threading.active_count() == threads
        world.stop()  # still safe
    finally:
        blocker.close()


@pytest.mark.parametrize("kwargs", [{"subnet": "192.168.1"}, {"dns_host": "8.8.8.8"}])
def test_a_non_loopback_bind_is_refused_without_the_explicit_flag(kwargs):
    with pytest.raises(WorldError, match="not a loopback address"):
        World(SPEC, **kwargs)


def test_stop_is_idempotent_and_frees_every_port():
    world = World(SPEC).start()
    ip, port = world.address_of("mx1.contoso.test"), world.port
    dns = (world.dns_host, world.dns_port)
    ca_dir = world.ca_file.parent
    world.stop()
    world.stop()
    assert connect_outcome(ip, port) == "refused"
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        s.bind(dns)  # free again
        s.close()
    assert not ca_dir.exists()
    with pytest.raises(WorldError):
        world.start()


def test_several_worlds_at_once_do_not_collide(make_world):
    worlds = [make_world(SPEC) for _ in range(4)]
    pairs = {(w.address_of("mx1.contoso.test"), w.port) for w in worlds}
    assert len(pairs) == 4
    for w in worlds:
        c = RawSMTP.connect(w.address_of("mx1.contoso.test"), w.port)
        assert c.reply().code == 220
        c.close()


def test_async_start_and_stop_on_the_callers_loop():
    async def main() -> tuple[int, list[str]]:
        async with World(SPEC) as world:
            ip, port = world.address_of("mx1.contoso.test"), world.port
            reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 2)
            greeting = await asyncio.wait_for(reader.readline(), 2)
            writer.close()
            await writer.wait_closed()
        return port, [greeting.decode()]

    threads = threading.active_count()
    _port, greeting = asyncio.run(main())
    assert greeting[0].startswith("220 mx1.contoso.test")
    assert threading.active_count() == threads


def test_a_world_from_an_inline_spec_object(make_world):
    world = make_world(parse_world({"zone": "contoso.test", "hosts": {"smtp.contoso.test": {"tls": "none"}}}))
    assert world.spec.zone == "contoso.test"


def test_start_stop_cycles_leave_no_thread_or_fd_behind():
    # A short version of the 200-cycle leak check in benchmarks/ (run in CI too).
    def cycle() -> None:
        with World(SPEC) as world:
            c = RawSMTP.connect(world.address_of("mx1.contoso.test"), world.port)
            c.reply()
            c.close()

    cycle()  # warm imports and caches
    gc.collect()  # garbage of earlier tests is not ours
    fds, threads = open_fds(), threading.active_count()
    for _ in range(20):
        cycle()
    gc.collect()
    assert threading.active_count() <= threads
    assert open_fds() <= fds


# -- reset: a test sees only its own sessions --------------------------------

PLAIN = {"hosts": {"mx1.contoso.test": {"tls": "none"}}}


def start_a_message(ip: str, port: int) -> RawSMTP:
    """A client half-way through a message: DATA accepted, part of the content sent."""
    c = RawSMTP.connect(ip, port)
    c.reply()
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<app@client.test>").code == 250
    assert c.cmd("RCPT TO:<ops@contoso.test>").code == 250
    assert c.cmd("DATA").code == 354
    c.send("Subject: sent before the reset")
    return c


def finish_the_message(c: RawSMTP) -> str:
    """Send the rest and the final dot; returns the reply, or how the connection ended."""
    try:
        c.send("")
        c.send("body written after the reset")
        c.send(".")
        return str(c.reply("after the final dot").code)
    except Closed as closed:
        return f"closed ({closed.how})"
    except OSError as exc:
        return f"closed ({exc.__class__.__name__})"


def deliver_one(ip: str, port: int, subject: str) -> None:
    c = RawSMTP.connect(ip, port)
    c.reply()
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<app@client.test>").code == 250
    assert c.cmd("RCPT TO:<ops@contoso.test>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(f"Subject: {subject}")
    c.send("")
    assert c.cmd(".").code == 250
    c.cmd("QUIT")
    c.close()


def test_a_session_open_across_a_reset_adds_nothing_after_it(make_world):
    world = make_world(PLAIN)
    ip, port = world.address_of("mx1.contoso.test"), world.port
    c = start_a_message(ip, port)
    (before,) = world.sessions
    world.reset()
    lines_at_reset = list(before.lines)
    assert world.sessions == [] and world.messages == [] and world.events.events() == []

    # The reset ended the session: the client cannot get its message accepted.
    assert finish_the_message(c).startswith("closed")
    c.close()
    deliver_one(ip, port, "the next test's message")

    # Only the next session is on record; nothing of the old one arrived late.
    (after,) = world.sessions
    assert after.session_id != before.session_id
    assert [m.session_id for m in world.messages] == [after.session_id]
    assert b"the next test's message" in world.messages[0].content
    sessions_in_events = {e.data.get("session") for e in world.events.events()}
    assert sessions_in_events == {after.session_id}
    assert before.lines == lines_at_reset


def test_reset_on_an_async_world_runs_on_its_loop():
    async def main() -> tuple[list[int], list[bytes], list[str]]:
        async with World(PLAIN) as world:
            ip, port = world.address_of("mx1.contoso.test"), world.port
            c = await asyncio.to_thread(start_a_message, ip, port)
            with pytest.raises(WorldError, match=r"await world\.areset"):
                world.reset()  # from the loop's own thread it would deadlock
            await world.areset()
            ended = await asyncio.to_thread(finish_the_message, c)
            c.close()
            await asyncio.to_thread(deliver_one, ip, port, "after")
            return [t.session_id for t in world.sessions], [m.content for m in world.messages], [ended]

    sessions, contents, ended = asyncio.run(main())
    assert ended[0].startswith("closed")
    assert len(sessions) == 1 and len(contents) == 1 and b"Subject: after" in contents[0]


def test_reset_starts_the_schedule_count_again_on_the_loop(make_world):
    spec = {
        "hosts": {
            "mx1.contoso.test": {"tls": "none", "greeting": {"code": 421}, "schedule": {"fail_first": 1}}
        }
    }
    world = make_world(spec)
    ip, port = world.address_of("mx1.contoso.test"), world.port
    codes = []
    for _ in range(2):
        c = RawSMTP.connect(ip, port)
        codes.append(c.reply().code)
        c.close()
    held = RawSMTP.connect(ip, port)  # open while the reset runs
    assert held.reply().code == 220
    world.reset()
    c = RawSMTP.connect(ip, port)
    codes.append(c.reply().code)
    c.close()
    assert codes == [421, 220, 421]
    assert [t.faulted for t in world.sessions] == [True]
    assert held.wait_closed() in ("fin", "rst")  # the reset ended the open session


def test_what_a_retired_session_still_records_is_dropped():
    events = EventLog()
    recorder = Recorder(events)
    old = recorder.open_session("mx1.contoso.test", "127.9.9.2", "?", False)
    recorder.reset()
    new = recorder.open_session("mx1.contoso.test", "127.9.9.2", "?", False)

    def message(t: Transcript) -> Message:
        return Message("mx1.contoso.test", t.session_id, "a@b.test", ("c@d.test",), b"x", None, True)

    assert recorder.emit(old, "smtp_in", "mx1.contoso.test", "late line") is None
    assert recorder.keep_message(old, message(old)) is False
    old.add("C", "late line")
    assert recorder.emit(new, "smtp_in", "mx1.contoso.test", "EHLO x") is not None
    assert recorder.keep_message(new, message(new)) is True

    assert [e.data["session"] for e in events.events()] == [new.session_id]
    assert [m.session_id for m in recorder.messages] == [new.session_id]
    assert old.lines == [] and old.retired and not new.retired


# -- errors go to the world they came from ------------------------------------


def break_data_received(monkeypatch: pytest.MonkeyPatch, victim: World) -> None:
    """Make the SMTP fake of ``victim`` fail three ways when a client speaks:
    in the protocol callback, in a callback it schedules, in a task it starts."""
    original = FaultySMTP.data_received

    async def failing_task() -> None:
        raise RuntimeError("boom in a task")

    def boom() -> None:
        raise RuntimeError("boom in a callback")

    def data_received(self: FaultySMTP, data: bytes) -> None:
        if self.host.recorder is victim.recorder and b"NOOP" in data:
            loop = asyncio.get_running_loop()
            loop.call_soon(boom)
            loop.create_task(failing_task())  # noqa: RUF006 - dropped on purpose: its error goes unretrieved
            raise RuntimeError("boom in data_received")
        original(self, data)

    monkeypatch.setattr(FaultySMTP, "data_received", data_received)


def noop(world: World) -> None:
    c = RawSMTP.connect(world.address_of("mx1.contoso.test"), world.port)
    c.reply()
    c.send("NOOP")
    c.close()


def error_texts(events: EventLog) -> list[str]:
    return sorted(e.text.rsplit(": ", 1)[-1] for e in events.errors())


BOOMS = [
    "RuntimeError('boom in a callback')",
    "RuntimeError('boom in a task')",
    "RuntimeError('boom in data_received')",
]


def test_an_error_in_one_worlds_server_is_reported_by_that_world_only(monkeypatch):
    with Runtime() as runtime:
        a = World(PLAIN, runtime=runtime).start()
        b = World(PLAIN, runtime=runtime).start()
        try:
            break_data_received(monkeypatch, a)
            noop(a)
            noop(b)
            deliver_one(b.address_of("mx1.contoso.test"), b.port, "b keeps working")
            # Not the world's doing: a callback the test thread puts on the loop.
            runtime.loop.call_soon_threadsafe(lambda: 1 / 0)  # type: ignore[union-attr]
            assert a.wait_until(lambda: len(a.events.errors()) == 3, 5)
            assert a.wait_until(lambda: len(runtime.errors.errors()) == 1, 5)
            assert error_texts(a.events) == BOOMS
            assert b.events.errors() == []
            assert len(b.messages) == 1
            assert error_texts(runtime.errors) == ["ZeroDivisionError('division by zero')"]
        finally:
            a.stop()
            b.stop()


def test_async_worlds_on_one_loop_keep_their_errors_apart(monkeypatch):
    seen: list[str] = []

    async def main() -> tuple[list[str], list[str]]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, ctx: seen.append(repr(ctx.get("exception"))))
        async with World(PLAIN) as a, World(PLAIN) as b:
            break_data_received(monkeypatch, a)
            await asyncio.to_thread(noop, a)
            await asyncio.to_thread(noop, b)
            loop.call_soon(lambda: 1 / 0)  # the caller's own bug: neither world's
            await asyncio.to_thread(a.wait_until, lambda: len(a.events.errors()) == 3, 5)
            await asyncio.to_thread(a.wait_until, lambda: len(seen) == 4, 5)
            return error_texts(a.events), error_texts(b.events)

    a_errors, b_errors = asyncio.run(main())
    assert a_errors == BOOMS
    assert b_errors == []
    # The caller's handler still saw every error, its own included.
    assert sorted(seen) == sorted([*BOOMS, "ZeroDivisionError('division by zero')"])


# -- starts that are cancelled --------------------------------------------------


class HangingStart(World):
    """A world whose start hangs, listeners open, until it is cancelled."""

    async def _serve(self) -> None:
        await super()._serve()
        await asyncio.Event().wait()


def test_a_cancelled_async_start_leaves_nothing_and_astop_is_safe():
    async def main() -> World:
        world = HangingStart(PLAIN)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(world.astart(), 0.2)
        await world.astop()
        return world

    threads = threading.active_count()
    world = asyncio.run(main())
    assert not world.running
    assert connect_outcome(world.address_of("mx1.contoso.test"), world.port) == "refused"
    assert world.ca is not None and not world.ca.directory.exists()
    assert threading.active_count() == threads


def test_a_timed_out_start_on_a_shared_runtime_is_undone():
    with Runtime() as runtime:
        world = HangingStart(PLAIN, runtime=runtime)
        with pytest.raises(TimeoutError, match=r"did not finish within 0\.2 s"):
            world.start(timeout=0.2)
        assert not world.running
        assert connect_outcome(world.address_of("mx1.contoso.test"), world.port) == "refused"
        world.stop()
        # The runtime goes on serving other worlds.
        with World(PLAIN, runtime=runtime) as other:
            deliver_one(other.address_of("mx1.contoso.test"), other.port, "still fine")


def test_reset_closes_the_dns_tcp_connections_of_the_last_test(make_world):
    world = make_world({"hosts": {"mail.contoso.test": {}}})
    s = socket.create_connection((world.dns_host, world.dns_port), timeout=5)
    query = dns.message.make_query("mail.contoso.test", "A").to_wire()
    s.sendall(struct.pack("!H", len(query)) + query)
    (length,) = struct.unpack("!H", s.recv(2))  # answered: the server holds the connection
    while length:
        length -= len(s.recv(length))
    world.reset()
    assert s.recv(1) == b""  # closed by the reset (bounded by the socket timeout)
    s.close()


def test_what_a_world_keeps_is_bounded_and_what_it_lets_go_is_counted(make_world):
    from mailfakes import Limits

    limits = Limits(sessions=3, lines_per_session=4, messages=2, dns_queries=2, events=10)
    # Each DNS answer held back a moment: its "fault" event is one the log keeps itself.
    slow = {"name": "mail.contoso.test", "fault": "delay", "delay_ms": 1}
    world = make_world({"hosts": {"mail.contoso.test": {"tls": "none"}}, "dns_faults": [slow]}, limits=limits)
    ip, port = world.address_of("mail.contoso.test"), world.port
    for n in range(5):  # five sessions, each with a message and more than four lines
        s = socket.create_connection((ip, port), timeout=5)
        f = s.makefile("rwb")
        f.readline()
        for line in ("EHLO x", "MAIL FROM:<a@b.test>", "RCPT TO:<u@contoso.test>", "DATA"):
            f.write(line.encode() + b"\r\n")
            f.flush()
            while f.readline()[3:4] == b"-":
                pass
        f.write(f"Subject: {n}\r\n\r\nhi\r\n.\r\nQUIT\r\n".encode())
        f.flush()
        assert f.readline().startswith(b"250 ") and f.readline().startswith(b"221 ")
        s.close()
    for _ in range(12):
        query = dns.message.make_query("mail.contoso.test", "A").to_wire()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(5)
        u.sendto(query, (world.dns_host, world.dns_port))
        u.recv(512)
        u.close()
    assert world.wait_until(lambda: len(world.dns_queries) == 2 and all(t.closed for t in world.sessions), 5)
    assert [t.session_id for t in world.sessions] == [3, 4, 5]  # the newest three
    assert all(len(t.lines) == 4 and t.lines_dropped > 0 for t in world.sessions)
    assert "more lines not kept" in world.sessions[-1].text()
    assert [m.content.split(b"\r\n")[0] for m in world.messages] == [b"Subject: 3", b"Subject: 4"]
    # The events are those of what is kept: the three sessions (their four lines each,
    # connect, message, close), the two queries, and the newest ten delayed answers.
    assert [e.data["session"] for e in world.events.events("connect")] == [3, 4, 5]
    assert [e.data["session"] for e in world.events.events("close")] == [3, 4, 5]
    assert len(world.events.events("smtp_in")) + len(world.events.events("smtp_out")) == 3 * 4
    assert len(world.events.events("dns")) == 2
    assert len(world.events.events("fault")) == 10
    dropped = world.dropped
    assert dropped["sessions"] == 2 and dropped["messages"] == 3 and dropped["dns_queries"] == 10
    assert dropped["lines"] > 0 and dropped["events"] == 2
    world.reset()
    assert world.dropped == {}


def test_limits_are_checked():
    from mailfakes import Limits

    with pytest.raises(ValueError, match=r"Limits\(sessions=0\)"):
        Limits(sessions=0)
