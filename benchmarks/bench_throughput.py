"""Messages per second under 50 concurrent clients: a default world beside a bare aiosmtpd server.

Both servers run in this process, each on its own event-loop thread: the
``baseline-delivered`` world of the catalogue (STARTTLS offered, not used by
the client) and an aiosmtpd ``Controller`` whose handler keeps each message,
as a test server would. The clients run in a separate process (one asyncio
loop, ``--clients`` connections at once), each one doing one-message plain
SMTP sessions (EHLO, MAIL, RCPT, DATA, QUIT) one after the other until the
round's sessions are done. Rounds alternate between the two servers, so
both see the same machine; the figure is the median of each one's rounds
and their ratio, and the median of each round's ratio (its two figures
taken back to back). Each server's loop thread is also timed on its own
CPU clock: its CPU time a session is the steadier figure when other
processes load the machine. The client process reports how busy it was: if
it used nearly all of one core, it, not the server, set the pace.

    python benchmarks/bench_throughput.py [--rounds 5] [--sessions 2000] [--clients 50] [--profile]

``--profile`` then runs one more round against the world with cProfile on
its loop thread and prints where that thread spent its time.

Figures, not assertions (this machine is noisy): see the README.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

COMMANDS = (b"EHLO client.test\r\n", b"MAIL FROM:<app@fabrikam.test>\r\n", b"RCPT TO:<ops@contoso.test>\r\n")
MESSAGE = b"From: app@fabrikam.test\r\nTo: ops@contoso.test\r\nSubject: load\r\n\r\nhello\r\n.\r\n"


# -- the client process ----------------------------------------------------------


async def _session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("the server closed the connection")
            if line[3:4] != b"-":
                return line

    await reply()  # the greeting
    for command in COMMANDS:
        writer.write(command)
        if not (await reply()).startswith(b"250"):
            raise RuntimeError(f"refused: {command!r}")
    writer.write(b"DATA\r\n")
    if not (await reply()).startswith(b"354"):
        raise RuntimeError("DATA refused")
    writer.write(MESSAGE)
    if not (await reply()).startswith(b"250"):
        raise RuntimeError("message refused")
    writer.write(b"QUIT\r\n")
    await reply()


async def _clients(ip: str, port: int, sessions: int, clients: int) -> float:
    left = sessions

    async def one_client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            reader, writer = await asyncio.open_connection(ip, port)
            try:
                await _session(reader, writer)
            finally:
                writer.close()
                await writer.wait_closed()

    start = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    return time.perf_counter() - start


def client_main(ip: str, port: int, sessions: int, clients: int) -> int:
    cpu = time.process_time()
    elapsed = asyncio.run(_clients(ip, port, sessions, clients))
    cpu = time.process_time() - cpu
    print(json.dumps({"sessions": sessions, "elapsed": elapsed, "client_cpu": cpu}))
    return 0


# -- the servers -------------------------------------------------------------------


class _Keep:
    """The smallest handler that keeps each message, as a test server would."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append(envelope.original_content)  # type: ignore[attr-defined]
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as probe:  # aiosmtpd's Controller does not report an ephemeral port
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _round(ip: str, port: int, sessions: int, clients: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--client", ip, str(port), str(sessions), str(clients)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"the client failed against {ip}:{port}:\n{out.stderr}")
    result: dict[str, float] = json.loads(out.stdout)
    return result


def _thread_clock(loop: asyncio.AbstractEventLoop) -> int:
    """The CPU-time clock of the thread that runs ``loop``."""
    ident: list[int] = []
    got = threading.Event()

    def which() -> None:
        ident.append(threading.get_ident())
        got.set()

    loop.call_soon_threadsafe(which)
    if not got.wait(5):
        raise SystemExit("a server's loop thread does not answer")
    return time.pthread_getcpuclockid(ident[0])


def _profiled_round(
    loop: asyncio.AbstractEventLoop, ip: str, port: int, sessions: int, clients: int
) -> pstats.Stats:
    """A round with cProfile on the server's loop thread (it profiles the thread that enables it)."""
    profiler = cProfile.Profile()
    switched = threading.Event()

    def switch(on: bool) -> None:
        profiler.enable() if on else profiler.disable()
        switched.set()

    loop.call_soon_threadsafe(switch, True)
    switched.wait(5)
    _round(ip, port, sessions, clients)
    switched.clear()
    loop.call_soon_threadsafe(switch, False)
    switched.wait(5)
    return pstats.Stats(profiler)


def _rows(stats: pstats.Stats) -> list[tuple[float, float, str]]:
    rows = []
    for (path, line, name), (_cc, _nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        folder, _, base = path.rpartition("/")
        if folder.endswith(("/fakes", "/mailfakes")):
            short = base  # a module of ours
        elif "/site-packages/" in path:
            short = path.split("/site-packages/")[-1]
        else:
            short = path.split("/lib/python")[-1]
        rows.append((tt, ct, f"{short}:{line}({name})"))
    return rows


def _profile(world: Any, address: tuple[str, int], controller: Any, sessions: int, clients: int) -> None:
    fake = _profiled_round(world._loop, *address, sessions, clients)
    bare = _profiled_round(controller.loop, controller.hostname, controller.port, sessions, clients)
    f_total, b_total = fake.total_tt, bare.total_tt  # type: ignore[attr-defined]
    print(
        f"\nprofiled round of {sessions} sessions: the world's loop thread {f_total / sessions * 1e3:.2f} ms "
        f"a session, bare aiosmtpd's {b_total / sessions * 1e3:.2f} ms (profiling slows both)"
    )
    rows = _rows(fake)
    print("  the world's thread, by own time (share of its time):")
    for tt, ct, where in sorted(rows, reverse=True)[:15]:
        print(f"    {tt / f_total:6.1%} own {ct / f_total:6.1%} with callees  {where}")
    recording = sum(tt for tt, _ct, where in rows if where.split(":")[0] in ("transcript.py", "events.py"))
    smtp = sum(tt for tt, _ct, where in rows if where.split(":")[0] == "smtp.py")
    print(f"  own time in the recording (transcript.py, events.py): {recording / f_total:.1%}")
    print(f"  own time in the SMTP fake (smtp.py): {smtp / f_total:.1%}; its functions with callees:")
    in_smtp = sorted(((ct, w) for _tt, ct, w in rows if w.startswith("smtp.py")), reverse=True)
    for ct, where in in_smtp[:8]:
        print(f"    {ct / f_total:6.1%}  {where}")
    print("  bare aiosmtpd's thread, by own time:")
    for tt, ct, where in sorted(_rows(bare), reverse=True)[:8]:
        print(f"    {tt / b_total:6.1%} own {ct / b_total:6.1%} with callees  {where}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="rounds per server, interleaved")
    p.add_argument("--sessions", type=int, default=2000, help="one-message sessions per round")
    p.add_argument("--clients", type=int, default=50, help="concurrent client connections")
    p.add_argument("--profile", action="store_true", help="then profile the world's loop thread for a round")
    p.add_argument("--client", nargs=4, metavar=("IP", "PORT", "SESSIONS", "CLIENTS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        ip, port, sessions, clients = args.client
        return client_main(ip, int(port), int(sessions), int(clients))

    from aiosmtpd.controller import Controller
    from mailfakes import World, scenario

    s = scenario("baseline-delivered")
    print(
        f"python {sys.version.split()[0]}; {args.rounds} rounds of {args.sessions} one-message sessions "
        f"per server, {args.clients} concurrent clients in a separate process"
    )
    handler = _Keep()
    controller = Controller(handler, hostname="127.0.0.1", port=_free_port())
    controller.start()
    world = World(s.world).start()
    try:
        fake = (world.address_of(s.target.smart_host), world.port)
        bare = (controller.hostname, controller.port)
        _round(*fake, 100, args.clients)  # warm both up (imports, caches, certificates)
        _round(*bare, 100, args.clients)
        rates: dict[str, list[float]] = {"mailfakes": [], "aiosmtpd": []}
        cpu: dict[str, list[float]] = {"mailfakes": [], "aiosmtpd": []}  # server thread, s a session
        clocks = {"mailfakes": _thread_clock(world._loop), "aiosmtpd": _thread_clock(controller.loop)}
        for n in range(args.rounds):
            order = [("mailfakes", fake), ("aiosmtpd", bare)]
            if n % 2:
                order.reverse()
            for name, (ip, port) in order:
                world.reset()
                used = time.clock_gettime(clocks[name])
                r = _round(ip, port, args.sessions, args.clients)
                used = time.clock_gettime(clocks[name]) - used
                rate = r["sessions"] / r["elapsed"]
                rates[name].append(rate)
                cpu[name].append(used / r["sessions"])
                print(
                    f"  round {n + 1} {name:9}: {rate:7.0f} messages/s, its loop thread "
                    f"{used / r['sessions'] * 1e6:4.0f} us CPU a session, busy {used / r['elapsed']:.0%} "
                    f"(client process busy {r['client_cpu'] / r['elapsed']:.0%} of a core)"
                )
                if name == "mailfakes" and len(world.messages) != min(args.sessions, world.limits.messages):
                    raise SystemExit(f"the world kept {len(world.messages)} messages: some went missing")
        ours, theirs = statistics.median(rates["mailfakes"]), statistics.median(rates["aiosmtpd"])
        # Each round's two figures were taken back to back: their ratio is the steadier one
        # on a machine whose load changes (other processes).
        pairs = statistics.median(f / b for f, b in zip(rates["mailfakes"], rates["aiosmtpd"], strict=True))
        print(
            f"median: mailfakes {ours:.0f} messages/s, bare aiosmtpd {theirs:.0f} messages/s, "
            f"ratio {ours / theirs:.2f}; median of the rounds' ratios {pairs:.2f}"
        )
        f_cpu, b_cpu = statistics.median(cpu["mailfakes"]), statistics.median(cpu["aiosmtpd"])
        print(
            f"server loop thread CPU a session: mailfakes {f_cpu * 1e6:.0f} us, bare aiosmtpd "
            f"{b_cpu * 1e6:.0f} us (bare/mailfakes {b_cpu / f_cpu:.2f}: above 1, the fake is cheaper)"
        )
        if args.profile:
            world.reset()
            _profile(world, fake, controller, args.sessions, args.clients)
    finally:
        world.stop()
        controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
