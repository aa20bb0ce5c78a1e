"""What a world keeps per SMTP session, side by side with a bare aiosmtpd server, and whether it stays flat.

For each server: N one-message sessions in plain SMTP (EHLO, MAIL, RCPT,
DATA, QUIT) from a raw client, then the memory the server's side still holds
(tracemalloc, after a full collection) divided by N. Then a long run against
one world, printing the memory held every chunk of sessions: with the
default limits it must level off once the oldest records start to go.

    python benchmarks/bench_memory.py [--sessions 2000] [--long 30000]

Figures, not assertions (this machine is noisy): see the README.
"""

from __future__ import annotations

import argparse
import gc
import socket
import sys
import tracemalloc

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


def per_session(ip_port: tuple[str, int], n: int) -> float:
    base = held()
    for i in range(n):
        one_session(*ip_port, i)
    return (held() - base) / n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--sessions", type=int, default=2000, help="sessions per server for the per-session figure"
    )
    p.add_argument("--long", type=int, default=30000, help="sessions of the long run (0: skip it)")
    args = p.parse_args()
    print(f"python {sys.version.split()[0]}; {args.sessions} one-message sessions per server")
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
            f"retained per session: mailfakes {ours / 1024:.1f} KB, bare aiosmtpd (keeping the message) "
            f"{bare / 1024:.2f} KB, ratio {ours / bare:.1f}"
        )
    if args.long:
        print(f"long run, default limits {Limits()}:")
        with World({"hosts": {"mail.contoso.test": {"tls": "none"}}}) as world:
            ip, port = world.address_of("mail.contoso.test"), world.port
            chunk = max(args.long // 10, 1)
            for done in range(chunk, args.long + 1, chunk):
                for i in range(chunk):
                    one_session(ip, port, done + i)
                world.wait_until(lambda: all(t.closed for t in world.sessions), 10)
                print(
                    f"  after {done:>7} sessions: {held() / 2**20:7.1f} MB held, "
                    f"{len(world.sessions)} sessions kept, dropped {world.dropped}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
