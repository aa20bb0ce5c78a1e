"""How fast the fake DNS answers, and how close a `delay` fault is to its setting.

The tests prove the DNS behaviours by the order of events (a delayed answer
comes after a later fast one, a dropped query gets nothing before a later
answer); they never time them. This script prints the timings instead, as
figures, with no pass or fail:

- round trip of one A query, UDP and TCP (one connection per query, as a stub
  resolver's TCP retry does), median and 99th percentile over N queries;
- the same for a query that gets FORMERR (a 256-octet name) and BADVERS (EDNS
  version 1), the protocol edges the fake answers without its record lookup;
- for `delay` faults of 50 and 200 ms: the observed delay (median and worst
  excess over the setting), UDP and TCP;
- the round trip of a fast query while K delayed answers are pending (they
  must not hold it up).

Every socket wait is bounded by a timeout. Usage:
python benchmarks/bench_dns.py [--queries 500] [--delayed 20]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable

from mailfakes import World

SPEC = {
    "zone": "test",
    "hosts": {"mail.contoso.test": {}},
    "dns_faults": [
        {"name": "slow50.contoso.test", "fault": "delay", "delay_ms": 50},
        {"name": "slow200.contoso.test", "fault": "delay", "delay_ms": 200},
    ],
}
TIMEOUT = 5.0


def query(name: str, qid: int, *, edns_version: int | None = None) -> bytes:
    labels = [label.encode() for label in name.split(".")]
    qname = b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"
    opt = b""
    if edns_version is not None:
        opt = b"\x00" + struct.pack("!HHIH", 41, 1232, edns_version << 16, 0)
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1 if opt else 0)
    return header + qname + struct.pack("!HH", 1, 1) + opt


def long_name_query(qid: int) -> bytes:
    qname = b"".join(bytes([63]) + bytes([c]) * 63 for c in b"abc") + bytes([49]) + b"d" * 49
    qname += b"\x07contoso\x04test\x00"  # 256 octets in all
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed by the server")
        data += chunk
    return data


def udp_round_trip(w: World, packet: bytes) -> float:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect((w.dns_host, w.dns_port))
        t0 = time.perf_counter()
        sock.send(packet)
        reply = sock.recv(65535)
        elapsed = time.perf_counter() - t0
    assert reply[:2] == packet[:2], "answer to another query"
    return elapsed


def tcp_round_trip(w: World, packet: bytes) -> float:
    t0 = time.perf_counter()
    with socket.create_connection((w.dns_host, w.dns_port), timeout=TIMEOUT) as sock:
        sock.sendall(struct.pack("!H", len(packet)) + packet)
        (length,) = struct.unpack("!H", recv_exactly(sock, 2))
        reply = recv_exactly(sock, length)
    elapsed = time.perf_counter() - t0
    assert reply[:2] == packet[:2], "answer to another query"
    return elapsed


def figures(label: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    median = statistics.median(ordered)
    print(f"  {label:<40} median {median * 1e6:8.0f} us   p99 {p99 * 1e6:8.0f} us   ({len(samples)} queries)")


def measure(n: int, fn: Callable[[int], float]) -> list[float]:
    return [fn(i) for i in range(n)]


def pending_then_fast(w: World, delayed: int) -> float:
    """Send ``delayed`` queries for the 200 ms name, then time a fast one on the same socket."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect((w.dns_host, w.dns_port))
        for i in range(delayed):
            sock.send(query("slow200.contoso.test", 1000 + i))
        t0 = time.perf_counter()
        sock.send(query("mail.contoso.test", 7))
        while True:
            reply = sock.recv(65535)
            if reply[:2] == struct.pack("!H", 7):
                elapsed = time.perf_counter() - t0
                break
        for _ in range(delayed):  # collect the late ones, so that the next round starts clean
            reply = sock.recv(65535)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=500, help="queries per figure (default 500)")
    parser.add_argument("--delayed", type=int, default=20, help="delayed answers pending (default 20)")
    args = parser.parse_args()
    if not 1 <= args.queries <= 100_000 or not 0 <= args.delayed <= 1000:
        parser.error("--queries must be 1 to 100000 and --delayed 0 to 1000")
    n = args.queries
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    with World(SPEC) as w:
        print(f"fake DNS on {w.dns_host}:{w.dns_port}")
        print("round trips:")
        figures("A, UDP", measure(n, lambda i: udp_round_trip(w, query("mail.contoso.test", i))))
        figures(
            "A, TCP (a connection each)",
            measure(n, lambda i: tcp_round_trip(w, query("mail.contoso.test", i))),
        )
        figures("256-octet name (FORMERR), UDP", measure(n, lambda i: udp_round_trip(w, long_name_query(i))))
        figures(
            "EDNS version 1 (BADVERS), UDP",
            measure(n, lambda i: udp_round_trip(w, query("mail.contoso.test", i, edns_version=1))),
        )
        print("delay faults (observed delay; excess = observed - configured):")
        rounds = max(5, min(n // 20, 50))
        for delay_ms in (50, 200):
            name = f"slow{delay_ms}.contoso.test"
            for transport, trip in (("UDP", udp_round_trip), ("TCP", tcp_round_trip)):
                seen = [trip(w, query(name, i)) for i in range(rounds)]
                excess = [s - delay_ms / 1000 for s in seen]
                print(
                    f"  {delay_ms:>3} ms, {transport}: median {statistics.median(seen) * 1000:7.1f} ms, "
                    f"excess median {statistics.median(excess) * 1000:5.1f} ms, "
                    f"worst {max(excess) * 1000:5.1f} ms, least {min(excess) * 1000:5.1f} ms "
                    f"({rounds} queries)"
                )
        if args.delayed:
            seen = [pending_then_fast(w, args.delayed) for _ in range(rounds)]
            figures(f"A, UDP, {args.delayed} delayed answers pending", seen)
        errors = w.events.errors()
    print(f"errors inside the fake: {len(errors)}")
    for e in errors:
        print(f"  {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
