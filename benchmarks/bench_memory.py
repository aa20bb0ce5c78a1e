"""What a world keeps per SMTP session, side by side with a bare aiosmtpd server, and whether it stays flat.

For each server: N one-message sessions in plain SMTP (EHLO, MAIL, RCPT,
DATA, QUIT) from a raw client, then the memory the server's side still holds
(tracemalloc, after a full collection) divided by N; then the same for N
DNS queries to the world's DNS server. Then a long run against
one world, as a ``serve`` left running sees it: the sessions come from 50
concurrent clients in another process (bench_throughput.py's client), and
the memory held (tracemalloc after a collection, and the process's resident
size) is printed every chunk of sessions. With the default limits it must
level off once the oldest records start to go (10,000 sessions, 1,000
messages). Under tracemalloc the resident size also counts tracemalloc's
own tables, which grow with the run; ``--untraced`` runs the long part
without it (about three times faster), showing the resident size alone.

    python benchmarks/bench_memory.py [--sessions 1000] [--long 100000] [--clients 50] [--untraced]

Figures, not assertions (this machine is noisy): see the README.
"""

from __future__ import annotations

import argparse
import gc
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from aiosmtpd.controller import Controller
from mailfakes import Limits, World


class _Keep:
    """The smallest handler that keeps each message, as a test server would."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append(envelope.original_content)  # type: ignore[attr-defined]
        return "250 OK"


def one_session(ip: str, port: int, n: int) -> None:
    with socket.create_connection((ip, port), timeout=5) as s:
        f = s.makefile("rwb")
        f.readline()
        for line in (
            "EHLO client.test",
            "MAIL FROM:<a@fabrikam.test>",
            "RCPT TO:<user@contoso.test>",
            "DATA",
        ):
            f.write(line.encode() + b"\r\n")
            f.flush()
            while f.readline()[3:4] == b"-":
                pass
        f.write(f"Subject: message {n}\r\n\r\nhello\r\n.\r\nQUIT\r\n".encode())
        f.flush()
        f.readline()
        f.readline()


def held() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def resident() -> int:
    """The process's resident set size, in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def concurrent_sessions(ip: str, port: int, n: int, clients: int) -> None:
    """``n`` one-message sessions from ``clients`` concurrent connections, in a client process of its own."""
    client = Path(__file__).with_name("bench_throughput.py")
    out = subprocess.run(
        [sys.executable, str(client), "--client", ip, str(port), str(n), str(clients)],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"the client process failed:\n{out.stderr}")


def per_query(dns_ip: str, dns_port: int, name: str, n: int) -> float:
    """The memory a world's DNS keeps per query (n UDP queries for ``name``, one socket each)."""
    import dns.message

    def ask(i: int) -> None:
        query = dns.message.make_query(name, "A" if i % 2 else "MX").to_wire()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(5)
            u.sendto(query, (dns_ip, dns_port))
            u.recv(4096)

    # Warm up first: the server imports dnslib on its first packet, once per process.
    ask(0)
    ask(1)
    base = held()
    for i in range(n):
        ask(i)
    return (held() - base) / n


def per_session(ip_port: tuple[str, int], n: int) -> float:
    # Warm up first, both servers alike: what a process pays once (imports, caches) is not per session.
    for i in range(3):
        one_session(*ip_port, -1 - i)
    base = held()
    for i in range(n):
        one_session(*ip_port, i)
    return (held() - base) / n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--sessions",
        type=int,
        default=1000,
        help="sessions per server for the per-session figure (at most Limits().messages: all kept)",
    )
    p.add_argument("--long", type=int, default=100_000, help="sessions of the long run (0: skip it)")
    p.add_argument("--chunk", type=int, default=0, help="sessions between two figures (default: a tenth)")
    p.add_argument("--clients", type=int, default=50, help="concurrent clients of the long run")
    p.add_argument(
        "--untraced",
        action="store_true",
        help="the long run without tracemalloc: about three times faster, resident size only",
    )
    args = p.parse_args()
    print(f"python {sys.version.split()[0]}; {args.sessions} one-message sessions per server")
    if args.sessions > Limits().messages:
        print(f"  (more than the {Limits().messages} messages a world keeps: the figure leaves some out)")
    tracemalloc.start()

    handler = _Keep()
    with socket.socket() as probe:  # a free port: aiosmtpd's Controller does not report an ephemeral one
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=free)
    controller.start()
    try:
        bare = per_session((controller.hostname, controller.port), args.sessions)
    finally:
        controller.stop()
    with World({"hosts": {"mail.contoso.test": {"tls": "none"}}}) as world:
        ours = per_session((world.address_of("mail.contoso.test"), world.port), args.sessions)
        print(
            f"retained per session: mailfakes {ours / 1024:.2f} KB, bare aiosmtpd (keeping the message) "
            f"{bare / 1024:.2f} KB, ratio {ours / bare:.1f}"
        )
        query = per_query(world.dns_host, world.dns_port, "mail.contoso.test", args.sessions)
        print(f"retained per DNS query (UDP, A and MX in turn): {query:.0f} bytes")
    if args.long:
        if args.untraced:
            tracemalloc.stop()
        print(f"long run, {args.clients} concurrent clients, default limits {Limits()}:")
        with World({"hosts": {"mail.contoso.test": {"tls": "none"}}}) as world:
            ip, port = world.address_of("mail.contoso.test"), world.port
            chunk = args.chunk or max(args.long // 10, 1)
            done, start = 0, time.monotonic()
            while done < args.long:
                n = min(chunk, args.long - done)
                concurrent_sessions(ip, port, n, args.clients)
                done += n
                world.wait_until(lambda: all(t.closed for t in world.sessions), 10)
                print(
                    f"  after {done:>7} sessions ({time.monotonic() - start:4.0f} s): "
                    f"{'' if args.untraced else f'{held() / 2**20:6.1f} MB held, '}"
                    f"{resident() / 2**20:6.1f} MB resident; "
                    f"{len(world.sessions)} sessions, {len(world.messages)} messages kept; "
                    f"dropped {world.dropped}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
