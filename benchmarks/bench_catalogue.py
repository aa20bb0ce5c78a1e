"""The whole catalogue through the reference delivery client, in-process and via the CLI (issue #3).

In-process, as ``mailfakes deliver`` does (fakes/deliver_cmd.py): one
shared :class:`mailfakes.runtime.Runtime`; for every scenario of the catalogue, start
its :class:`mailfakes.world.World`, run :func:`mailfakes.client.deliver_scenario` with a
short timeout, stop the world. Prints the total, the five slowest scenarios
and whether every reported code is the expected one under the profile
(target: whole catalogue <= 3 s). Imports are done before the clock starts.

Then times the CLI end to end, ``python -m mailfakes deliver --timeout T`` in a
subprocess (interpreter start and imports included), and checks its exit status
and its ``ok``/``DIFF`` lines.

Exit status: 0 when every code matched, 1 on a mismatch or a CLI failure (a
missed time target is reported, and fails only with ``--check``).

Usage: python benchmarks/bench_catalogue.py [--timeout 0.25] [--profile eop] [--cli-runs 1] [--check]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from mailfakes import catalogue as scenarios
from mailfakes.client import deliver_scenario
from mailfakes.codes import PROFILES
from mailfakes.runtime import Runtime
from mailfakes.world import World

TARGET_S = 3.0


@dataclass
class Row:
    scenario: str
    expected: str
    found: str
    seconds: float
    deliver_seconds: float
    report: str

    @property
    def ok(self) -> bool:
        return self.found == self.expected


def run_in_process(timeout: float, profile: str) -> tuple[float, list[Row]]:
    rows: list[Row] = []
    started = time.perf_counter()
    with Runtime() as runtime:
        for s in scenarios.select():
            t0 = time.perf_counter()
            world = World(s.world, runtime=runtime).start()
            try:
                report = deliver_scenario(s, world, profile=profile, timeout=timeout)
            finally:
                world.stop()
            rows.append(
                Row(
                    scenario=s.id,
                    expected=s.code_for(profile),
                    found=report.code,
                    seconds=time.perf_counter() - t0,
                    deliver_seconds=report.seconds,
                    report=report.line(),
                )
            )
    return time.perf_counter() - started, rows


def run_cli(timeout: float, profile: str) -> tuple[list[str], float, int, list[str]]:
    cmd = [sys.executable, "-m", "mailfakes", "deliver", "--timeout", f"{timeout:g}"]
    if profile != "eop":
        cmd += ["--profile", profile]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    lines = done.stdout.splitlines()
    if done.returncode not in (0, 1):
        sys.stderr.write(done.stderr)
    return cmd, elapsed, done.returncode, lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 when every reported code matched, 1 otherwise (or, with --check, "
        "when the time target is missed).",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=0.25,
        help="the client's connect, read and DNS timeout in seconds (default 0.25)",
    )
    parser.add_argument("--profile", choices=PROFILES, default="eop", help="code profile (default: eop)")
    parser.add_argument(
        "--cli-runs", type=int, default=1, help="times to run the CLI end to end, 0 to skip (default 1)"
    )
    parser.add_argument("--check", action="store_true", help="also exit 1 when the 3 s target is missed")
    args = parser.parse_args()
    if not 0 < args.timeout <= 600:
        parser.error("--timeout must be more than 0 and at most 600 seconds")

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; timeout {args.timeout:g} s, ", end="")
    print(f"profile {args.profile}")

    total, rows = run_in_process(args.timeout, args.profile)
    mismatches = [r for r in rows if not r.ok]
    per = sum(r.seconds for r in rows)
    print(
        f"in-process: {len(rows)} scenarios in {total:.2f} s "
        f"(runtime start and close included; start + deliver + stop per scenario add up to {per:.2f} s, "
        f"the client itself {sum(r.deliver_seconds for r in rows):.2f} s)"
    )
    print("slowest 5 (start + deliver + stop):")
    width = max(len(r.scenario) for r in rows)
    for r in sorted(rows, key=lambda r: r.seconds, reverse=True)[:5]:
        why = r.report.partition("[Message=")[2].partition("]")[0] or r.report.partition(" [")[0]
        print(f"  {r.scenario:<{width}}  {r.seconds * 1000:7.1f} ms  {r.found:<8} {why}")
    waits = sum(1 for r in rows if r.seconds >= args.timeout)
    print(f"  ({waits} scenario(s) wait out one --timeout by design: the fault is that nothing answers)")
    print(f"  median scenario {statistics.median(r.seconds for r in rows) * 1000:.1f} ms")
    if mismatches:
        print(f"reported codes: {len(mismatches)} of {len(rows)} DID NOT MATCH:")
        for r in mismatches:
            print(f"  {r.scenario}: expected {r.expected}, found {r.found}: {r.report}")
    else:
        print(f"reported codes: all {len(rows)} matched the expected code under {args.profile}")
    ok_time = total <= TARGET_S
    print(f"target: whole catalogue <= {TARGET_S:g} s: {total:.2f} s, {'OK' if ok_time else 'MISSED'}")

    failed = bool(mismatches)
    cli_times: list[float] = []
    for _ in range(args.cli_runs):
        cmd, elapsed, rc, lines = run_cli(args.timeout, args.profile)
        cli_times.append(elapsed)
        oks = sum(1 for line in lines if line.startswith("ok "))
        diffs = [line for line in lines if line.startswith("DIFF")]
        shown = " ".join(["python", *cmd[1:]])
        print(
            f"CLI '{shown}': {elapsed:.2f} s end to end, exit {rc}, "
            f"{oks} ok, {len(diffs)} DIFF of {len(lines)} lines"
        )
        for line in diffs:
            print(f"  {line}")
        if rc != 0 or diffs or oks != len(rows):
            failed = True
    if len(cli_times) > 1:
        print(f"CLI median {statistics.median(cli_times):.2f} s over {len(cli_times)} runs")
    if failed:
        return 1
    if args.check and not ok_time:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
