"""World lifecycle: addresses, ports, sync and async start/stop, no leaks."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import threading

import pytest
from probe import RawSMTP, connect_outcome, resolve_a

from fakes import PortInUse, World, WorldError, parse_world

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
