"""200 start/stop cycles of a full TLS world leave threads and fds unchanged."""

from __future__ import annotations

import gc
import os
import threading

from probe import RawSMTP, client_context, resolve_a

from fakes import World

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
