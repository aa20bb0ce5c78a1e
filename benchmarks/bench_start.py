"""How fast a world is ready: in-process start, and ``mailfakes serve --json``.

Prints the figures and compares them with the targets of issue #2:

- in-process: time from ``World(...).start()`` to ready (DNS and every host
  listening, certificates issued) for a full TLS scenario, median of N runs
  (target <= 5 ms);
- CLI: time from starting ``mailfakes serve ID --json`` to its JSON line on
  stdout, median of M runs (target <= 1 s).

Also checks that the cycles leave thread and fd counts unchanged.

With ``--commands`` (or alone with ``--commands-only``): ``python -c pass``,
``mailfakes list`` and ``mailfakes show ID`` side by side, interleaved in one
run, median of N runs each, and their ratios to ``python -c pass`` (target of
issue #9: at most 2 times). Wall time, and the CPU time of the process
(user + system), which the other load of a shared machine disturbs less.

A default ``World()`` (its own thread, the CA, leaves and key files) start
and stop, beside an aiosmtpd ``Controller`` that reuses one TLS context,
interleaved (target of issue #9: at most the Controller's cost); also alone
with ``--world-only``.

``mailfakes serve ID --json`` to its JSON line beside a peer, a fresh Python
process that imports aiosmtpd, loads a TLS context from a certificate made
beforehand (files, as a test fixture would have), starts a ``Controller``
and prints a JSON line with the same keys; interleaved, median of N runs
each (target of issue #9: at most 1.1 times the peer), and the median of
each round's own ratio; also alone with ``--serve-only``. Both pay for what
they do: the peer for aiosmtpd and one TLS context, mailfakes for its DNS
(UDP and TCP), its CA and certificates (read from the user's certificate
cache, made by the warm-up run; the same command with
``MAILFAKES_CERT_CACHE=off``, which makes them afresh as a first run does,
is timed beside them).

Usage: python benchmarks/bench_start.py [--runs 200] [--cli-runs 10] [--scenario baseline-delivered]
       python benchmarks/bench_start.py --commands-only [--command-runs 15]
       python benchmarks/bench_start.py --world-only [--world-runs 100]
       python benchmarks/bench_start.py --serve-only [--serve-runs 15]
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

from mailfakes import World
from mailfakes import catalogue as scenarios

TARGET_START_MS = 5.0
TARGET_CLI_S = 1.0
TARGET_COMMAND_RATIO = 2.0
TARGET_SERVE_RATIO = 1.1


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_in_process(scenario_id: str, runs: int) -> list[float]:
    spec = scenarios.get(scenario_id).world
    with World(spec):  # warm-up: imports, OpenSSL tables
        pass
    fds, threads = len(os.listdir("/proc/self/fd")), threading.active_count()
    times = []
    for _ in range(runs):
        world = World(spec)
        started = time.perf_counter()
        world.start()
        times.append((time.perf_counter() - started) * 1000)
        world.stop()
    leaked_fds = len(os.listdir("/proc/self/fd")) - fds
    leaked_threads = threading.active_count() - threads
    print(f"  leaks after {runs} cycles: {leaked_fds} fds, {leaked_threads} threads")
    return times


def _free_port() -> int:
    with socket.socket() as probe:  # aiosmtpd's Controller does not report an ephemeral port
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def bench_world_vs_controller(scenario_id: str, runs: int) -> None:
    """A default World() start+stop beside an aiosmtpd Controller (TLS context reused), interleaved."""
    from aiosmtpd.controller import Controller
    from mailfakes.certs import CertAuthority

    spec = scenarios.get(scenario_id).world
    with CertAuthority() as ca:
        tls = ca.server_context("mx.contoso.test")  # made once, as a test suite would

        class Sink:
            async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
                return "250 OK"

        def controller_cycle() -> None:
            controller = Controller(
                Sink(), hostname="127.0.0.1", port=_free_port(), server_kwargs={"tls_context": tls}
            )
            controller.start()
            controller.stop()

        def world_cycle() -> None:
            World(spec).start().stop()

        def world_ca_file_cycle() -> None:
            world = World(spec).start()
            assert world.ca_file.is_file()  # its key directory and CA file, made when asked for
            world.stop()

        cycles = {
            "World() start+stop": world_cycle,
            "World() start+ca_file+stop": world_ca_file_cycle,
            "aiosmtpd Controller start+stop": controller_cycle,
        }
        for cycle in cycles.values():  # warm-up: imports, OpenSSL tables, the shared CA
            cycle()
        times: dict[str, list[float]] = {name: [] for name in cycles}
        for _ in range(runs):
            for name, cycle in cycles.items():
                started = time.perf_counter()
                cycle()
                times[name].append((time.perf_counter() - started) * 1000)
    peer = statistics.median(times["aiosmtpd Controller start+stop"])
    print(f"default World() against aiosmtpd Controller with a reused TLS context, median of {runs} each")
    print("(target: World() at most the Controller's cost):")
    for name, t in times.items():
        med = statistics.median(t)
        print(f"  {name:<32} median {med:6.2f} ms ({med / peer:4.2f}x)  p90 {pct(t, 0.9):6.2f} ms")


def bench_cli(scenario_id: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailfakes", "serve", scenario_id, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        if not ready:
            proc.kill()
            raise SystemExit("mailfakes serve printed nothing within 30 s")
        proc.stdout.readline()
        times.append(time.perf_counter() - started)
        proc.send_signal(signal.SIGTERM)
        if proc.wait(10) != 128 + signal.SIGTERM:  # the shell's convention, in every command
            raise SystemExit(f"mailfakes serve exited {proc.returncode} after SIGTERM")
    return times


# The peer of `mailfakes serve --json`: what a test suite's own aiosmtpd fixture
# would do in a fresh process, given a certificate made beforehand (files): import
# aiosmtpd, load the TLS context, start a Controller on a free port, print one
# JSON line with the keys of ours. It has no DNS, so its DNS fields are null.
PEER_SERVE = """\
import json, signal, socket, ssl, sys
from aiosmtpd.controller import Controller
cert, key, ca, keys = sys.argv[1:5]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.minimum_version = ssl.TLSVersion.TLSv1_2
ctx.load_cert_chain(cert, key)
class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
controller = Controller(Sink(), hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True)
controller.start()
info = dict.fromkeys(keys.split(","))
info.update(port=port, ca_file=ca, hosts={"mail.contoso.test": "127.0.0.1"}, require_tls=True)
sys.stdout.write(json.dumps(info) + "\\n")
sys.stdout.flush()
signal.sigwait({signal.SIGTERM})
controller.stop()
"""


def _ready_time(argv: list[str], env: dict[str, str]) -> tuple[float, dict[str, object]]:
    """Seconds from starting argv to its first stdout line (a JSON object); then SIGTERM."""
    import json

    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    if not ready:
        proc.kill()
        raise SystemExit(f"{' '.join(argv[:4])} printed nothing within 30 s")
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - started
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    return elapsed, json.loads(line)


def bench_serve_vs_peer(scenario_id: str, runs: int) -> None:
    """`mailfakes serve ID --json` beside an aiosmtpd-with-TLS peer printing the same line, interleaved."""
    import shutil
    import tempfile
    from pathlib import Path

    from mailfakes.certs import CertAuthority

    ours = [sys.executable, "-m", "mailfakes", "serve", scenario_id, "--json"]
    _, sample = _ready_time(ours, COMMAND_ENV)  # warm-up: .pyc files, page cache, the certificate cache
    keys = ",".join(sample)
    tmp = Path(tempfile.mkdtemp(prefix="mailfakes-bench-peer-"))
    try:
        with CertAuthority() as ca:  # the peer's certificate, made beforehand as a fixture would
            issued = ca.issue("mail.contoso.test")
            files = [tmp / "cert.pem", tmp / "key.pem", tmp / "ca.pem"]
            for src, dst in zip((issued.cert_file, issued.key_file, ca.ca_file), files, strict=True):
                shutil.copyfile(src, dst)
        peer = [sys.executable, "-c", PEER_SERVE, *map(str, files), keys]
        _, peer_sample = _ready_time(peer, COMMAND_ENV)
        if set(peer_sample) != set(sample):
            raise SystemExit(f"the peer's JSON line has other keys: {sorted(set(peer_sample) ^ set(sample))}")
        no_cache = {**COMMAND_ENV, "MAILFAKES_CERT_CACHE": "off"}
        cold = "serve --json, no cert cache"
        times: dict[str, list[float]] = {"aiosmtpd+TLS peer": [], "mailfakes serve --json": [], cold: []}
        for i in range(runs):
            trio = [("mailfakes serve --json", ours, COMMAND_ENV), ("aiosmtpd+TLS peer", peer, COMMAND_ENV)]
            trio.append((cold, ours, no_cache))  # what a first run (or MAILFAKES_CERT_CACHE=off) pays
            for name, argv, env in trio if i % 2 else trio[::-1]:  # alternate who goes first
                times[name].append(_ready_time(argv, env)[0] * 1000)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(times["aiosmtpd+TLS peer"])
    print(
        f"'serve {scenario_id} --json' to its JSON line against an aiosmtpd-with-TLS peer printing the "
        f"same line, median of {runs} interleaved runs each (target <= {TARGET_SERVE_RATIO:g}x the peer):"
    )
    peer = times["aiosmtpd+TLS peer"]
    for name, t in times.items():
        med = statistics.median(t)
        ratio = med / base
        verdict = ""
        if name == "mailfakes serve --json":
            verdict = " OK" if ratio <= TARGET_SERVE_RATIO else " OVER TARGET"
        # Each round's own ratio (its runs are back to back): less moved by the
        # load of a shared machine drifting between rounds.
        rounds = statistics.median(ours / theirs for ours, theirs in zip(t, peer, strict=True))
        print(
            f"  {name:<28} median {med:6.1f} ms ({ratio:4.2f}x)  p90 {pct(t, 0.9):6.1f} ms  "
            f"median of round ratios {rounds:4.2f}x{verdict}"
        )


# The commands run as a user's would: with .pyc files (and the catalogue's
# cache) written by the warm-up, even when this shell sets PYTHONDONTWRITEBYTECODE.
COMMAND_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed_run(argv: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of argv to its exit, output discarded."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=COMMAND_ENV)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def bench_commands(scenario_id: str, runs: int) -> None:
    """python -c pass, mailfakes list and show, interleaved so that they share the machine's load."""
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "mailfakes list": [sys.executable, "-m", "mailfakes", "list"],
        f"mailfakes show {scenario_id}": [sys.executable, "-m", "mailfakes", "show", scenario_id],
    }
    for argv in commands.values():  # warm-up: the page cache and the .pyc files
        timed_run(argv)
    wall: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            w, c = timed_run(argv)
            wall[name].append(w)
            cpu[name].append(c)
    base_wall = statistics.median(wall["python -c pass"])
    base_cpu = statistics.median(cpu["python -c pass"])
    print(
        f"commands, median of {runs} interleaved runs each "
        f"(target <= {TARGET_COMMAND_RATIO:g}x python -c pass):"
    )
    for name in commands:
        mw, mc = statistics.median(wall[name]), statistics.median(cpu[name])
        ratio = mw / base_wall
        verdict = (
            "" if name == "python -c pass" else (" OK" if ratio <= TARGET_COMMAND_RATIO else " OVER TARGET")
        )
        print(
            f"  {name:<36} wall {mw * 1000:6.1f} ms ({ratio:4.2f}x)  "
            f"cpu {mc * 1000:6.1f} ms ({mc / base_cpu:4.2f}x){verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="in-process start/stop cycles (default 200)")
    parser.add_argument("--cli-runs", type=int, default=10, help="CLI runs (default 10)")
    parser.add_argument(
        "--scenario", default="baseline-delivered", help="scenario to start (default: baseline-delivered)"
    )
    parser.add_argument(
        "--commands", action="store_true", help="also time python -c pass, mailfakes list and show"
    )
    parser.add_argument("--commands-only", action="store_true", help="only time the commands")
    parser.add_argument(
        "--world-only",
        action="store_true",
        help="only time a default World() start+stop against an aiosmtpd Controller",
    )
    parser.add_argument(
        "--serve-only",
        action="store_true",
        help="only time 'serve --json' against an aiosmtpd-with-TLS peer printing the same line",
    )
    parser.add_argument("--serve-runs", type=int, default=15, help="runs of each (default 15)")
    parser.add_argument("--world-runs", type=int, default=100, help="cycles of each (default 100)")
    parser.add_argument("--command-runs", type=int, default=15, help="runs of each command (default 15)")
    args = parser.parse_args()
    if args.commands_only:
        bench_commands(args.scenario, args.command_runs)
        return
    if args.world_only:
        bench_world_vs_controller(args.scenario, args.world_runs)
        return
    if args.serve_only:
        bench_serve_vs_peer(args.scenario, args.serve_runs)
        return

    s = scenarios.get(args.scenario)
    tls_hosts = sum(1 for h in s.world.hosts if h.kind == "smtp" and h.smtp.uses_tls)
    python = sys.version.split()[0]
    print(f"scenario {s.id}: {len(s.world.hosts)} host(s), {tls_hosts} with TLS; ", end="")
    print(f"python {python}, {os.cpu_count()} cpus")

    t = bench_in_process(args.scenario, args.runs)
    med = statistics.median(t)
    verdict = "OK" if med <= TARGET_START_MS else "OVER TARGET"
    print(
        f"in-process start to ready: median {med:.2f} ms, p90 {pct(t, 0.9):.2f} ms, "
        f"min {min(t):.2f} ms over {args.runs} runs (target <= {TARGET_START_MS} ms: {verdict})"
    )

    c = bench_cli(args.scenario, args.cli_runs)
    med_c = statistics.median(c)
    verdict = "OK" if med_c <= TARGET_CLI_S else "OVER TARGET"
    print(
        f"CLI 'mailfakes serve --json' to JSON line: median {med_c * 1000:.0f} ms, "
        f"max {max(c) * 1000:.0f} ms "
        f"over {args.cli_runs} runs (target <= {TARGET_CLI_S * 1000:.0f} ms: {verdict})"
    )
    bench_serve_vs_peer(args.scenario, args.serve_runs)
    bench_world_vs_controller(args.scenario, args.world_runs)
    if args.commands:
        bench_commands(args.scenario, args.command_runs)


if __name__ == "__main__":
    main()
