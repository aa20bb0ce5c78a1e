"""The rate limit under load: 50 concurrent clients, several windows of world time, exact counts.

The world is the catalogue's ``limits-rate-421`` (a message rate limit whose reply is 421 4.7.0,
the close after it), on a virtual clock, with its limit set in turn per connections and per
messages. In each window the clients (a separate process, one asyncio loop, ``--clients``
connections at once) run ``--sessions`` plain SMTP sessions one after the other: a greeting of
421 ends the session (connections), else EHLO and MAIL; a MAIL answered 250 goes on with RCPT, DATA
and the message, a MAIL answered 421 ends it (messages). The first window is the scenario's:
``used`` already fills it, so every session meets the limit; each later window starts when the
world's clock moves on by the window, and exactly ``max`` sessions must pass. The script counts
the 421s of each window, checks them against the configured number (``sessions - max``, or all
of them in the first window) and the messages the world kept, and exits 1 on any difference.

    python benchmarks/bench_rate_limit.py [--windows 5] [--sessions 200] [--clients 50] [--max 20]

Prints one line per (unit, window), then the sessions per second each unit ran at.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

SCENARIO = "limits-rate-421"
HOST = "mail.contoso.test"
MESSAGE = b"From: app@fabrikam.test\r\nTo: ops@contoso.test\r\nSubject: load\r\n\r\nhello\r\n.\r\n"


# -- the client process ----------------------------------------------------------


async def _session(ip: str, port: int) -> str:
    """One session: 'greeting-421', 'mail-421' or 'delivered' (anything else raises)."""
    reader, writer = await asyncio.open_connection(ip, port)

    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("the server closed the connection without a reply")
            if line[3:4] != b"-":
                return line

    async def closed() -> bool:
        return await reader.read() == b""  # after a 421 the server closes (RFC 5321 3.8)

    try:
        greeting = await reply()
        if greeting.startswith(b"421"):
            if not await closed():
                raise RuntimeError("data after the greeting's 421")
            return "greeting-421"
        if not greeting.startswith(b"220"):
            raise RuntimeError(f"greeting {greeting!r}")
        writer.write(b"EHLO client.test\r\n")
        if not (await reply()).startswith(b"250"):
            raise RuntimeError("EHLO refused")
        writer.write(b"MAIL FROM:<app@fabrikam.test>\r\n")
        mail = await reply()
        if mail.startswith(b"421"):
            if not await closed():
                raise RuntimeError("data after MAIL's 421")
            return "mail-421"
        if not mail.startswith(b"250"):
            raise RuntimeError(f"MAIL answered {mail!r}")
        for command, want in ((b"RCPT TO:<ops@contoso.test>\r\n", b"250"), (b"DATA\r\n", b"354")):
            writer.write(command)
            if not (await reply()).startswith(want):
                raise RuntimeError(f"{command!r} refused")
        writer.write(MESSAGE)
        if not (await reply()).startswith(b"250"):
            raise RuntimeError("message refused")
        writer.write(b"QUIT\r\n")
        await reply()
        return "delivered"
    finally:
        writer.close()
        await writer.wait_closed()


async def _clients(ip: str, port: int, sessions: int, clients: int) -> dict[str, Any]:
    left = sessions
    counts: dict[str, int] = {"greeting-421": 0, "mail-421": 0, "delivered": 0}

    async def one_client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            counts[await _session(ip, port)] += 1

    start = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    return {**counts, "elapsed": time.perf_counter() - start}


def client_main(ip: str, port: int, sessions: int, clients: int) -> int:
    print(json.dumps(asyncio.run(_clients(ip, port, sessions, clients))))
    return 0


def _window(ip: str, port: int, sessions: int, clients: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--client", ip, str(port), str(sessions), str(clients)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"the clients failed against {ip}:{port}:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


# -- the world -----------------------------------------------------------------------


def run_unit(per: str, args: argparse.Namespace) -> tuple[bool, float, int]:
    """Every window of one unit: (all counts exact, seconds spent in the windows, sessions run)."""
    from mailfakes import World
    from mailfakes import catalogue as scenarios

    spec = scenarios.get(SCENARIO).world
    world = World(spec, clock="virtual").start()
    try:
        limit = dict(per=per, max=args.max, window="1h", used=args.max, code=421, enhanced="4.7.0")
        limit["text"] = (
            "{host} Error: too many connections from {client}"
            if per == "connections"
            else ("{host} Error: too much mail from {client}")
        )
        world.host(HOST).set(rate_limit=limit)
        ip, port = world.address_of(HOST), world.port
        refused_key = "greeting-421" if per == "connections" else "mail-421"
        exact, spent, kept_before = True, 0.0, len(world.messages)
        for n in range(args.windows):
            got = _window(ip, port, args.sessions, args.clients)
            passed = 0 if n == 0 else args.max  # the first window is full from the start (used)
            want_421 = args.sessions - passed
            kept = len(world.messages) - kept_before
            kept_before = len(world.messages)
            ok = got[refused_key] == want_421 and got["delivered"] == passed and kept == passed
            other = "mail-421" if per == "connections" else "greeting-421"
            ok = ok and got[other] == 0
            exact &= ok
            spent += got["elapsed"]
            print(
                f"{per:11s} window {n} (world {world.now / 3600:.0f}h): {got[refused_key]:4d} x 421 "
                f"(configured {want_421}), {got['delivered']:3d} delivered, {kept:3d} kept, "
                f"{got['elapsed']:.2f} s  {'ok' if ok else 'WRONG'}",
                flush=True,
            )
            world.advance(3600)
        return exact, spent, args.windows * args.sessions
    finally:
        world.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=200, help="sessions per window")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients")
    parser.add_argument("--max", type=int, default=20, help="events allowed per window")
    parser.add_argument(
        "--client", nargs=4, metavar=("IP", "PORT", "SESSIONS", "CLIENTS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.client:
        ip, port, sessions, clients = args.client
        return client_main(ip, int(port), int(sessions), int(clients))
    if not 0 < args.max <= args.sessions:
        parser.error(f"--max must be from 1 to --sessions ({args.sessions}), not {args.max}")
    print(
        f"{SCENARIO}: {args.clients} concurrent clients, {args.sessions} sessions per window, "
        f"{args.windows} windows of 1h world time, max {args.max} per window"
    )
    all_exact = True
    for per in ("connections", "messages"):
        exact, spent, sessions = run_unit(per, args)
        all_exact &= exact
        print(f"{per}: {sessions / spent:.0f} sessions/s over {args.windows} windows; counts exact: {exact}")
    return 0 if all_exact else 1


if __name__ == "__main__":
    sys.exit(main())
