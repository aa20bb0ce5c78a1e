"""``mailfakes check``: serve each chosen scenario in turn, run the user's client, print the matrix.

The grading itself (placeholders, readers, the witness, the control, the
reports) is :mod:`mailfakes.check`; this module is the command around it:
options, the namespace, the progress lines and the report files.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

from .command import UsageError, check_writable, enter_netns, reexec, remove, select, smtp_port

if TYPE_CHECKING:
    from .catalogue import Scenario
    from .check import Read


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    if not args.command_argv:
        raise UsageError(
            "check needs the client command after '--': mailfakes check [IDS...] -- COMMAND [ARGS...]"
        )
    from .check import CheckError, make_reader

    try:
        read = make_reader(args.reader, args.code_regex, args.profile)
    except CheckError as exc:
        raise UsageError(str(exc)) from None
    for path in (args.junit, args.json):
        if path:
            check_writable(path)
    chosen = select(args.ids, args.code)
    if args.netns and not args.inside_netns:
        return reexec(args)
    return _check(args, chosen, read, out)


def _check(args: argparse.Namespace, chosen: list[Scenario], read: Read, out: TextIO) -> int:
    from .check import (
        CheckError,
        apply_control,
        explain_failures,
        json_report,
        junit_xml,
        matrix,
        run_one,
        with_control,
    )
    from .runtime import Runtime
    from .world import World

    chosen = with_control(chosen, control=not args.no_control)
    resolver_dir = enter_netns() if args.inside_netns else None
    results = []
    try:
        with Runtime() as runtime:
            for i, s in enumerate(chosen, 1):
                if args.stop.is_set():
                    break
                world = World(
                    s.world,
                    runtime=runtime,
                    port=smtp_port(args, s),
                    dns_host="127.0.0.1" if args.inside_netns else None,
                    dns_port=53 if args.inside_netns else 0,
                    hour=args.hour,
                    # Inside a namespace the web hosts take the ports real clients use (MTA-STS: 443).
                    https_port=443 if args.inside_netns else 0,
                    http_port=80 if args.inside_netns else 0,
                )
                world.start()
                try:
                    r = run_one(
                        s,
                        world,
                        args.command_argv,
                        profile=args.profile,
                        timeout=args.timeout,
                        command_timeout=args.command_timeout,
                        read=read,
                        stop=args.stop,
                    )
                except CheckError as exc:
                    raise UsageError(str(exc)) from None
                finally:
                    world.stop()
                if args.stop.is_set():
                    break  # the client was killed: its outcome says nothing about it
                results.append(r)
                mark = "ok" if r.verdict == "pass" else "FAIL"
                print(
                    f"[{i}/{len(chosen)}] {s.id}: {mark} "
                    f"(expected {r.expected}, reported {r.reported or '-'}, "
                    f"{r.seconds:.2f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if resolver_dir is not None:
            remove(resolver_dir)
    if args.stop.is_set():
        # No matrix and no report files: a partial run must not read as a verdict.
        print(
            f"mailfakes check: interrupted after {len(results)} of {len(chosen)} scenario(s)",
            file=sys.stderr,
        )
        return 1
    if apply_control(results):
        print("mailfakes check: the client fails the healthy baseline: passes are void", file=sys.stderr)
    out.write(matrix(results))
    explain_failures(results, out)
    if args.json:
        with open(args.json, "w") as f:
            f.write(json_report(results, args.command_argv, args.profile))
    if args.junit:
        with open(args.junit, "w") as f:
            f.write(junit_xml(results, args.command_argv, args.profile))
    return 0 if results and all(r.verdict == "pass" for r in results) and len(results) == len(chosen) else 1
