"""Start/stop cycles leave nothing behind: neither full ones, nor starts that
time out or are interrupted (Ctrl-C) half-way."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mailfakes import World
from mailfakes.runtime import Runtime
from probe import RawSMTP, client_context, resolve_a

TLS_WORLD = {
    "zone": "test",
    "records": [{"name": "contoso.test", "type": "MX", "value": "mx1.contoso.test", "priority": 10}],
    "hosts": {
        "mx1.contoso.test": {},
        "mx2.contoso.test": {"cert": "wrong_host"},
        "old.contoso.test": {"kind": "refuse"},
    },
}


def full_tls_session(world: World) -> None:
    ip = resolve_a(world.dns_host, world.dns_port, "mx1.contoso.test").addresses[0]
    c = RawSMTP.connect(ip, world.port)
    c.reply()
    c.cmd("EHLO client.test")
    c.cmd("STARTTLS")
    c.starttls(client_context(str(world.ca_file)), "mx1.contoso.test")
    c.cmd("EHLO client.test")
    c.cmd("QUIT")
    c.close()


def test_200_cycles_of_a_tls_world_leak_nothing():
    with World(TLS_WORLD) as warm:  # imports, OpenSSL tables, first-use caches
        full_tls_session(warm)
    # Garbage from earlier tests in this process must not be counted as ours.
    gc.collect()
    fds = len(os.listdir("/proc/self/fd"))
    threads = threading.active_count()
    for _ in range(200):
        with World(TLS_WORLD) as world:
            full_tls_session(world)
    gc.collect()
    assert threading.active_count() <= threads
    assert len(os.listdir("/proc/self/fd")) <= fds


# -- starts that never finish ------------------------------------------------

SMALL_WORLD = {
    "hosts": {
        "mx1.contoso.test": {},
        "mx2.contoso.test": {"tls": "implicit"},
        "old.contoso.test": {"kind": "refuse"},
    }
}


class Interrupted(KeyboardInterrupt):
    """The Ctrl-C this test sends itself."""


class HangingStart(World):
    """A world whose start hangs once its listeners are open: it never finishes by itself.

    ``on_listening`` runs on the loop at that point (the test uses it to
    interrupt the waiting caller). The hang is an asyncio wait, so it can be
    cancelled like any real slow step of a start.
    """

    def __init__(self, spec: Any, on_listening: Callable[[], None] | None = None, **kw: Any) -> None:
        super().__init__(spec, **kw)
        self.on_listening = on_listening
        self.listened = False

    async def _serve(self) -> None:
        await super()._serve()
        self.listened = True
        if self.on_listening is not None:
            self.on_listening()
        await asyncio.Event().wait()


def _socket_inodes() -> set[str]:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed since listdir
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def our_loopback_sockets() -> dict[str, int]:
    """Sockets of this process on 127/8: TCP listeners (and bound, unlistened
    ports) and UDP sockets, read from the kernel's own tables."""
    mine = _socket_inodes()
    counts = {"tcp_listen": 0, "tcp_bound": 0, "udp": 0}
    for table in ("tcp", "udp"):
        with open(f"/proc/net/{table}") as f:
            next(f)
            for row in f:
                cols = row.split()
                local, state, inode = cols[1], cols[3], cols[9]
                # Addresses are little-endian hex: 127.x.y.z ends in "7F".
                if inode not in mine or not local.split(":")[0].endswith("7F"):
                    continue
                if table == "udp":
                    counts["udp"] += 1
                elif state == "0A":
                    counts["tcp_listen"] += 1
                elif state == "07":
                    counts["tcp_bound"] += 1
    return counts


async def _tasks_besides_this_one() -> int:
    return len(asyncio.all_tasks()) - 1


def snapshot(tmp: Path, runtime: Runtime) -> dict[str, Any]:
    gc.collect()
    return {
        "tasks on the shared loop": runtime.run(_tasks_besides_this_one()),
        "threads": sorted(t.name for t in threading.enumerate()),
        "fds": len(os.listdir("/proc/self/fd")),
        "sockets": our_loopback_sockets(),
        "temp_dirs": sorted(p.name for p in tmp.iterdir()),
    }


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # Key directories go here, so other processes' temp dirs are not counted.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    yield tmp_path


@pytest.fixture
def ctrl_c() -> Iterator[Callable[[], None]]:
    """A function that sends this (main) thread a Ctrl-C from any thread."""

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGUSR1, interrupt)
    main = threading.main_thread().ident
    assert main is not None and threading.current_thread() is threading.main_thread()
    try:
        yield lambda: signal.pthread_kill(main, signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_1000_starts_that_time_out_or_are_interrupted_leave_nothing_behind(private_tmp, ctrl_c):
    shared = Runtime().start()
    try:
        # Warm imports, certificate caches and the shared CA before counting.
        World(SMALL_WORLD, runtime=shared).start().stop()
        World(SMALL_WORLD).start().stop()
        before = snapshot(private_tmp, shared)

        outcomes: dict[str, int] = {}
        listened = 0
        for i in range(1000):
            runtime = shared if i % 2 else None  # half on a private thread of their own
            interrupt = i % 4 >= 2
            world = HangingStart(SMALL_WORLD, on_listening=ctrl_c if interrupt else None, runtime=runtime)
            try:
                # A timeout of 0 gives up before the loop even runs the start;
                # a longer one or a Ctrl-C catches it with listeners open.
                world.start(timeout=10.0 if interrupt else (0.0, 0.002)[i % 8 < 4])
            except Interrupted:
                outcome = "interrupted"
            except TimeoutError:
                outcome = "timed out"
            else:
                outcome = "started"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            listened += world.listened
            assert not world.running
            world.stop()  # safe after a failed start, twice too
            world.stop()
        after = snapshot(private_tmp, shared)
    finally:
        shared.close()

    assert outcomes == {"interrupted": 500, "timed out": 500}
    assert listened >= 500  # every interrupted start had opened its listeners
    assert after == before
