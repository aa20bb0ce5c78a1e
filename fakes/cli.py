"""The ``mailfakes`` command: list, show and serve the scenario catalogue.

Exit status: 0 on success, 2 on a usage or configuration error (unknown
scenario, bad flag, port in use), with one clear line on stderr; 128 plus
the signal's number when a signal stops a command (130 for Ctrl-C, 143 for
SIGTERM), the same in every command.

Only the command that runs is imported: ``list`` and ``show`` must not pay
for aiosmtpd, dnslib, OpenSSL and certificate tooling.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import signal
import sys
import textwrap
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

from . import __version__
from .codes import PROFILES as PROFILE_CHOICES
from .spec import SpecError

if TYPE_CHECKING:
    from .world import World

LANGS = ("en", "fr")
T = TypeVar("T")


class UsageError(Exception):
    """A mistake of the user's: reported on one line, exit status 2."""


class Interrupted(BaseException):
    """A signal stops the command: unwinds like KeyboardInterrupt, exit 128 + its number."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the next step is --help.
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _catalogue() -> Any:
    from . import catalogue as scenarios

    return scenarios


def _select(ids: list[str], code: str | None) -> list[Any]:
    """Scenarios by id, glob or path to a .toml file (a trainer's own), optionally of one code."""
    cat = _catalogue()
    files = [i for i in ids if i.endswith(".toml")]
    globs = [i for i in ids if not i.endswith(".toml")]
    chosen = [_load(path) for path in files]
    try:
        if globs or not files:
            chosen += cat.select(globs, code=code)
        elif code:
            chosen = [s for s in chosen if code in (s.code, s.expected_code)]
    except (LookupError, ValueError) as exc:
        raise UsageError(str(exc.args[0] if exc.args else exc)) from None
    if not chosen:
        raise UsageError("no scenario matches")
    return chosen


def _load(path: str) -> Any:
    try:
        return _catalogue().load_file(path)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def _get(scenario_id: str) -> Any:
    cat = _catalogue()
    if scenario_id.endswith(".toml"):
        return _load(scenario_id)
    try:
        return cat.get(scenario_id)
    except LookupError as exc:
        msg = exc.args[0] if exc.args else str(exc)
        raise UsageError(str(msg)) from None


def _code_choices() -> list[str]:
    return sorted({s.code for s in _catalogue().load_catalogue().values()})


# -- list ----------------------------------------------------------------------


def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    cat = _catalogue()
    try:
        items = cat.select(code=args.code) if args.code else list(cat.load_catalogue().values())
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.code and not items:
        raise UsageError(f"no scenario has code {args.code!r}; codes: {', '.join(_code_choices())}")
    if args.json:
        rows = [
            {
                "id": s.id,
                "code": s.expected_code,
                "class": s.code,
                "title": s.title[args.lang],
                "smart_host": s.target.smart_host,
                "mail_domain": s.target.mail_domain,
            }
            for s in items
        ]
        out.write(json.dumps(rows, ensure_ascii=False) + "\n")
        return 0
    width = max(len(s.id) for s in items)
    for s in items:
        out.write(f"{s.id:<{width}}  {s.expected_code:<8}  {s.title[args.lang]}\n")
    return 0


# -- show ----------------------------------------------------------------------


def describe_world(scenario: Any) -> list[str]:
    """Readable lines about a scenario's world (names, records, faults)."""
    world = scenario.world
    lines = [f"zone {world.zone}"]
    for h in world.hosts:
        what = h.kind
        if h.kind == "smtp":
            plan = h.smtp
            bits = [f"tls={plan.tls}"]
            if plan.cert != "valid":
                bits.append(f"cert={plan.cert}")
            if plan.greeting:
                bits.append(f"greeting='{plan.greeting.line()}'")
            bits += [f"{cmd} -> '{r.line()}'" for cmd, r in plan.replies.items()]
            if plan.close_at:
                extra = f" after {plan.close_at.after_bytes} bytes" if plan.close_at.after_bytes else ""
                bits.append(f"cut {plan.close_at.how.upper()} at {plan.close_at.point}{extra}")
            if plan.delays_ms:
                bits.append("delays " + ", ".join(f"{k}={v}ms" for k, v in plan.delays_ms.items()))
            what += " (" + ", ".join(bits) + ")"
        elif h.kind == "close_on_accept":
            what += f" ({h.close.upper()})"
        if h.schedule:
            what += f", faulty for the first {h.schedule.fail_first} session(s)"
        if not h.a_record:
            what += ", no A record"
        lines.append(f"host {h.name}: {what}")
    for r in world.records:
        prio = f" {r.priority}" if r.type == "MX" else ""
        lines.append(f"record {r.name} {r.type}{prio} {r.value}")
    for f in world.dns_faults:
        types = f" ({', '.join(sorted(f.types))} only)" if f.types else ""
        extra = f", {f.delay_ms} ms" if f.delay_ms else ""
        tcp = f", over TCP: {f.tcp}" if f.fault == "truncate" else ""
        lines.append(f"dns fault on {f.name}: {f.fault}{types}{extra}{tcp}")
    return lines


def cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    s = _get(args.id)
    lang = args.lang
    t = s.target
    head = f"{s.id}: {s.title[lang]}"
    w = out.write
    w(head + "\n" + "=" * len(head) + "\n\n")
    label = {
        "en": ("Cause", "Fix", "Expected codes", "World", "Target"),
        "fr": ("Cause", "Correction", "Codes attendus", "Monde", "Cible"),
    }[lang]
    if s.cause[lang] or s.fix[lang]:  # a user's own scenario may have no explanation
        w(f"{label[0]}:\n{_wrap(s.cause[lang])}\n\n{label[1]}:\n{_wrap(s.fix[lang])}\n\n")
    w(f"{label[2]}:\n")
    for profile in ("eop", "eop-observed", "rfc3463", "postfix"):
        w(f"  {profile:<13} {s.code_for(profile)}\n")
    w(f"\n{label[4]}:\n")
    w(
        f"  smart_host   {t.smart_host or '(none: MX lookup of ' + t.mail_domain + ')'}"
        f"{' (by IP)' if t.connect_by_ip else ''}\n"
    )
    w(f"  mail_domain  {t.mail_domain}\n  require_tls  {str(t.require_tls).lower()}\n")
    w(f"  mail_from    {t.mail_from}\n  rcpt_to      {', '.join(t.rcpt_to)}\n")
    w(f"\n{label[3]}:\n")
    for line in describe_world(s):
        w(f"  {line}\n")
    return 0


def _wrap(text: str) -> str:
    return textwrap.fill(" ".join(text.split()), width=78, initial_indent="  ", subsequent_indent="  ")


# -- serve ---------------------------------------------------------------------


def serve_info(scenario: Any, world: World) -> dict[str, Any]:
    """What a client needs to reach a served scenario (the ``--json`` line)."""
    t = scenario.target
    smart_host = t.smart_host
    if smart_host is not None and t.connect_by_ip:
        smart_host = world.address_of(smart_host)
    return {
        "scenario": scenario.id,
        "code": scenario.expected_code,
        "title": scenario.title["en"],
        "smart_host": smart_host,
        "mail_domain": t.mail_domain,
        "port": world.port,
        "dns_host": world.dns_host,
        "dns_port": world.dns_port,
        "ca_file": str(world.ca_file),
        "hosts": dict(world.hosts),
        "require_tls": t.require_tls,
        "mail_from": t.mail_from,
        "rcpt_to": list(t.rcpt_to),
        "expected": {p: scenario.code_for(p) for p in ("eop", "eop-observed", "rfc3463", "postfix")},
    }


def _human_serve(info: dict[str, Any], scenario: Any, out: TextIO, *, interactive: bool = True) -> None:
    w = out.write
    w(f"mailfakes: serving {info['scenario']} ({info['code']} {info['title']})\n")
    for name, ip in info["hosts"].items():
        w(f"  host {name:<28} {ip}:{info['port']}\n")
    w(f"  DNS                                {info['dns_host']}:{info['dns_port']} (udp+tcp)\n")
    w(f"  CA file                            {info['ca_file']}\n")
    target = info["smart_host"] or f"MX of {info['mail_domain']}"
    w(
        f"  deliver to {target}, from {info['mail_from']} to {', '.join(info['rcpt_to'])}"
        f"{', TLS required' if info['require_tls'] else ''}\n"
    )
    w(
        f"  check DNS: dig @{info['dns_host']} -p {info['dns_port']} "
        f"{info['smart_host'] or info['mail_domain']} {'A' if info['smart_host'] else 'MX'}\n"
    )
    if interactive:
        w("Press Ctrl-C to stop.\n")
    out.flush()


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    if args.netns and not args.inside_netns:
        if not args.command_argv:
            raise UsageError(
                "serve --netns needs a command to run inside the namespace: serve ID --netns -- COMMAND"
            )
        return _reexec(args)
    from .world import World

    scenario = _get(args.id)
    resolver_dir = _enter_netns() if args.inside_netns else None
    world: Any = None
    stop: threading.Event = args.stop
    try:
        world = World(
            scenario.world,
            port=args.port if args.port or not args.inside_netns else 25,
            subnet=args.subnet,
            dns_host="127.0.0.1" if args.inside_netns else args.dns_host,
            dns_port=53 if args.inside_netns else args.dns_port,
            allow_non_loopback=args.allow_non_loopback,
        )
        world.start()
        info = serve_info(scenario, world)
        if args.json:
            _human_serve(info, scenario, sys.stderr, interactive=not args.command_argv)
            out.write(json.dumps(info, ensure_ascii=False) + "\n")
            out.flush()
        else:
            _human_serve(
                info,
                scenario,
                out if not args.command_argv else sys.stderr,
                interactive=not args.command_argv,
            )
        if args.follow:
            from .demo import follower

            world.events.subscribe(follower(sys.stderr if args.json else out))
        if args.command_argv:
            return _run_inside(args.command_argv, scenario, world, stop)
        while not stop.wait(0.5):
            pass
        print("mailfakes: stopping", file=sys.stderr)
    finally:
        if world is not None:
            world.stop()
        if resolver_dir is not None:
            _remove(resolver_dir)
    return 0


def _run_inside(command: list[str], scenario: Any, world: Any, stop: threading.Event) -> int:
    """Run the user's command next to a served world; its exit status is ours."""
    import subprocess

    from .check import environment, facts, substitute
    from .netns import die_with_parent

    values = facts(scenario, world, 5.0)
    try:
        proc = subprocess.Popen(
            substitute(command, values),
            env=environment(values, scenario, scenario.expected_code),
            preexec_fn=die_with_parent(),  # even a kill -9 of mailfakes takes the command with it
        )
    except FileNotFoundError:
        raise UsageError(f"command not found: {command[0]}") from None
    while proc.poll() is None:
        if stop.wait(0.2):
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
            break
    status = proc.wait()
    return 128 - status if status < 0 else status  # killed by a signal: the shell's convention


def _remove(directory: str) -> None:
    import shutil

    shutil.rmtree(directory, ignore_errors=True)


def _reexec(args: argparse.Namespace) -> int:
    from .netns import NetnsError, reexec_inside

    try:
        return reexec_inside(args.raw_argv, args.stop)
    except NetnsError as exc:
        raise UsageError(str(exc)) from None


def _enter_netns() -> Any:
    from .netns import NetnsError, enter

    try:
        return enter()
    except (NetnsError, OSError) as exc:
        raise UsageError(f"cannot prepare the network namespace: {exc}") from None


# -- deliver -------------------------------------------------------------------


def cmd_deliver(args: argparse.Namespace, out: TextIO) -> int:
    from .client import deliver_scenario
    from .runtime import Runtime
    from .world import World

    chosen = _select(args.ids, args.code)
    failures = 0
    width = max(len(s.id) for s in chosen)
    with Runtime() as runtime:
        for s in chosen:
            if args.stop.is_set():
                break
            world = World(s.world, runtime=runtime).start()
            try:
                extra = {"require_tls": False} if args.opportunistic else {}
                call = functools.partial(
                    deliver_scenario, s, world, profile=args.profile, timeout=args.timeout, **extra
                )
                report = _unless_stopped(args.stop, call)
            finally:
                world.stop()
            expected = s.code_for(args.profile)
            ok = report.code == expected
            failures += not ok
            if args.json:
                row = {"scenario": s.id, "expected": expected, **report.as_dict(), "ok": ok}
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                mark = "ok  " if ok else "DIFF"
                out.write(f"{mark} {s.id:<{width}}  expected {expected:<8} {report.line()}\n")
                if args.verbose:
                    for line in report.dialogue:
                        out.write(f"       {line}\n")
            out.flush()
    return 1 if failures else 0


# -- check ---------------------------------------------------------------------


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
        if path and not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
            raise UsageError(f"cannot write {path}: its directory is missing or not writable")
    chosen = _select(args.ids, args.code)
    if args.netns and not args.inside_netns:
        return _reexec(args)
    return _check(args, chosen, read, out)


def _check(args: argparse.Namespace, chosen: list[Any], read: Any, out: TextIO) -> int:
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
    resolver_dir = _enter_netns() if args.inside_netns else None
    results = []
    try:
        with Runtime() as runtime:
            for i, s in enumerate(chosen, 1):
                if args.stop.is_set():
                    break
                world = World(
                    s.world,
                    runtime=runtime,
                    port=args.port if args.port or not args.inside_netns else 25,
                    dns_host="127.0.0.1" if args.inside_netns else None,
                    dns_port=53 if args.inside_netns else 0,
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
            _remove(resolver_dir)
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


# -- demo and validate ---------------------------------------------------------


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from .demo import DEFAULT_TOUR, Player, render_html

    chosen = _select(args.ids or ([] if args.code else list(DEFAULT_TOUR)), args.code)
    if args.html and not os.access(os.path.dirname(os.path.abspath(args.html)), os.W_OK):
        raise UsageError(f"cannot write {args.html}: its directory is missing or not writable")
    player = Player(out, lang=args.lang, pace=args.pace, step=args.step, timeout=args.timeout, stop=args.stop)
    results = player.play_all(chosen)
    if args.stop.is_set():
        return 1  # main turns a stop into the signal's exit status
    if args.html:
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(render_html(results, args.lang))
        print(f"mailfakes demo: wrote {args.html}", file=sys.stderr)
    return 0


def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    cat = _catalogue()
    known = cat.load_catalogue()
    bad = 0
    seen: dict[str, str] = {}
    for path in args.files:
        try:
            s = cat.load_file(path)
        except OSError as exc:
            out.write(f"FAIL {path}: cannot read it: {exc.strerror}\n")
            bad += 1
            continue
        except SpecError as exc:
            out.write(f"FAIL {exc}\n")
            bad += 1
            continue
        notes = []
        if s.id in seen:
            notes.append(f"same id as {seen[s.id]}")
            bad += 1
        seen[s.id] = path
        if s.id in known and os.path.abspath(known[s.id].path) != os.path.abspath(path):
            notes.append(f"note: the catalogue already has {s.id}; this file would be used instead of it")
        mark = "FAIL" if notes and notes[0].startswith("same id") else "ok  "
        out.write(
            f"{mark} {path}: {s.id} ({s.expected_code}, {s.title['en']})"
            + "".join(f"; {n}" for n in notes)
            + "\n"
        )
    out.write(f"{len(args.files) - bad} valid, {bad} invalid\n")
    return 1 if bad else 0


# -- send ----------------------------------------------------------------------


def cmd_send(args: argparse.Namespace, out: TextIO) -> int:
    from .client import DeliveryClient
    from .resolver import Answer
    from .spec import LOCAL_PART_RULE, NAME_RULE, local_part_ok, name_ok, normalize_name

    if not args.smart_host and not args.mail_domain:
        raise UsageError("say where to deliver: --smart-host NAME, or --mail-domain DOMAIN for an MX lookup")
    smart_host_ip = args.smart_host_ip
    if smart_host_ip is None and args.smart_host and _is_ip(args.smart_host):
        smart_host_ip = args.smart_host  # a connector set by address: no DNS
    # Refused before any socket is opened, as serve refuses a non-loopback
    # --dns-host: the reference client's traffic must stay on this machine.
    _loopback_only("--dns-host", args.dns_host)
    if smart_host_ip is not None:
        _loopback_only("--smart-host-ip" if args.smart_host_ip else "--smart-host", smart_host_ip)
    for option, name in (("--smart-host", args.smart_host), ("--mail-domain", args.mail_domain)):
        if name and not (option == "--smart-host" and _is_ip(name)) and not name_ok(normalize_name(name)):
            raise UsageError(f"{option} {name!r} is not valid: expected {NAME_RULE}")
    domain = args.mail_domain or args.smart_host.split(".", 1)[-1]
    rcpt_to = args.rcpt_to or [f"user@{domain}"]
    for option, address in [("--mail-from", args.mail_from), *(("--rcpt-to", r) for r in rcpt_to)]:
        local, at, at_domain = address.rpartition("@")
        if not at or not local_part_ok(local) or not name_ok(normalize_name(at_domain)):
            raise UsageError(
                f"{option} {address!r} is not valid: expected an address like user@contoso.test: "
                f"{LOCAL_PART_RULE}, '@', then a DNS name"
            )
    client = DeliveryClient(
        dns_host=args.dns_host,
        dns_port=args.dns_port,
        port=args.port,
        ca_file=args.ca_file,
        require_tls=not args.opportunistic,
        timeout=args.timeout,
        profile=args.profile,
    )

    def loopback_answers(answer: Answer) -> None:
        # The DNS named by --dns-host may be a real resolver (127.0.0.53 often
        # is one): an address it gives must not be connected to either.
        for value in answer.values("A") + answer.values("AAAA"):
            _loopback_only(f"{answer.name} (resolved through {args.dns_host}:{args.dns_port})", value)

    client.resolver.observer = loopback_answers
    report = _unless_stopped(
        args.stop,
        lambda: client.deliver(
            smart_host=args.smart_host,
            mail_domain=domain,
            mail_from=args.mail_from,
            rcpt_to=rcpt_to,
            smart_host_ip=smart_host_ip,
        ),
    )
    out.write(json.dumps(report.as_dict(), ensure_ascii=False) + "\n" if args.json else report.line() + "\n")
    if args.verbose:
        for line in report.dialogue:
            sys.stderr.write(f"  {line}\n")
    return 0 if report.delivered else 1


def _loopback_only(what: str, address: str) -> None:
    from .world import is_loopback

    if not is_loopback(address):
        raise UsageError(
            f"{what} {address!r} is not a loopback address: mailfakes only talks to this machine "
            "(127.0.0.0/8 or ::1), so that no fault traffic leaves it"
        )


# -- entry point ----------------------------------------------------------------


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; given the ``command`` about to run, only what it needs is imported.

    The readers (and OpenSSL with them) are imported only to build ``check``.
    """
    placeholder_names: Sequence[str] = ()
    reader_names: Sequence[str] | None = None
    inside = ""  # the hidden flag of the process inside a namespace: serve and check only
    if command in (None, "serve", "check"):
        from .netns import INSIDE_FLAG as inside
    if command in (None, "check"):
        from .check import PLACEHOLDERS
        from .readers import READERS

        placeholder_names, reader_names = PLACEHOLDERS, sorted(READERS)
    p = _Parser(
        prog="mailfakes",
        description="Fake DNS and SMTP servers on loopback that reproduce every cause of the Exchange "
        "Online mail flow intelligence codes (4.4.312 to 4.7.320), so a delivery client can be "
        "checked to report the right one.",
        epilog="Run 'mailfakes COMMAND --help' for a command's options. Ctrl-C or SIGTERM stops any "
        "command at once, with exit status 130 or 143.",
    )
    p.add_argument("--version", action="version", version=f"mailfakes {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    pl = sub.add_parser("list", help="list the scenarios of the catalogue")
    pl.add_argument("--json", action="store_true", help="print a JSON array of {id, code, title, ...}")
    pl.add_argument(
        "--code", metavar="CODE", help="only scenarios of this class (e.g. 4.4.317, other, success)"
    )
    pl.add_argument("--lang", choices=LANGS, default="en", help="language of the titles (default: en)")

    ps = sub.add_parser("show", help="explain one scenario: cause, fix, world and expected codes")
    ps.add_argument("id", metavar="ID", help="scenario id (see 'mailfakes list')")
    ps.add_argument("--lang", choices=LANGS, default="en", help="language (default: en)")

    pv = sub.add_parser(
        "serve",
        help="serve one scenario on loopback until Ctrl-C or SIGTERM",
        description="Start the scenario's world (DNS, SMTP hosts, certificates) on loopback, print how "
        "to reach it, and serve until SIGINT or SIGTERM; then stop cleanly and exit 130 (SIGINT) or "
        "143 (SIGTERM).",
    )
    pv.add_argument("id", metavar="ID", help="scenario id (see 'mailfakes list')")
    pv.add_argument(
        "--port", type=_port, default=0, help="SMTP port shared by all hosts (default: ephemeral)"
    )
    pv.add_argument(
        "--json",
        action="store_true",
        help="print exactly one JSON line on stdout once ready; human output goes to stderr",
    )
    pv.add_argument("--dns-port", type=_port, default=0, help="DNS port, UDP and TCP (default: ephemeral)")
    pv.add_argument("--dns-host", metavar="ADDR", help="DNS address (default: the world's 127.A.B.1)")
    pv.add_argument("--subnet", metavar="127.A.B", help="put hosts at 127.A.B.2, .3, ... (default: random)")
    pv.add_argument(
        "--allow-non-loopback",
        action="store_true",
        help="allow a non-loopback --subnet/--dns-host (only inside a network namespace of yours)",
    )
    pv.add_argument(
        "--netns",
        action="store_true",
        help="serve inside a private network namespace (DNS on 127.0.0.1:53, SMTP on port 25, a private "
        "resolv.conf) and run COMMAND there: serve ID --netns -- COMMAND",
    )
    if inside:
        pv.add_argument(inside, action="store_true", help=argparse.SUPPRESS)
    pv.add_argument(
        "--follow",
        action="store_true",
        help="show the live dialogue (DNS, TCP, SMTP both ways, TLS, faults) of any client while serving",
    )
    pd = sub.add_parser(
        "deliver",
        help="run the reference delivery client against scenarios and show what it reports",
        description="Serve each selected scenario in turn and deliver one message to it with the reference "
        "client (an outbound connector: DNS through the world's server, MX fallback, STARTTLS required, "
        "certificate checked). Prints the report in the Exchange trace style. Exit status: 0 when every "
        "reported code is the expected one under the profile, 1 otherwise, 2 on a usage error.",
    )
    _selection_arguments(pd)
    pd.add_argument("--json", action="store_true", help="one JSON object per scenario (JSON lines)")
    pd.add_argument(
        "--timeout", type=_seconds, default=1.0, help="connect, read and DNS timeout (default: 1 s)"
    )
    pd.add_argument(
        "--opportunistic",
        action="store_true",
        help="use STARTTLS when offered but deliver in plaintext when it is not (default: TLS required)",
    )
    pd.add_argument("-v", "--verbose", action="store_true", help="show the client's side of the dialogue")
    pc = sub.add_parser(
        "check",
        help="run any delivery client against scenarios and grade the codes it reports",
        usage="mailfakes check [IDS...] [options] -- COMMAND [ARGS...]",
        description="For each selected scenario: serve it, run COMMAND once with placeholders substituted "
        "({" + "} {".join(placeholder_names) + "}; the same values in MAILFAKES_* environment "
        "variables), read the code the client reported and compare it with the scenario's expected code. "
        "A right code for the wrong reason (by what the fakes saw) fails. The healthy baseline runs too, "
        "as a control: when the client fails it, its passes on failure scenarios are VOID. "
        "Prints a matrix; exit status 0 if all pass, 1 if any fails or is void, 2 on a usage or "
        "configuration error.",
        epilog="Example: mailfakes check --netns --reader curl -- curl -sv --ssl-reqd --cacert {ca_file} "
        "--connect-timeout {timeout} --mail-from {mail_from} --mail-rcpt {rcpt_to} -T message.eml "
        "smtp://{smart_host}:{port}",
    )
    _selection_arguments(pc)
    pc.add_argument(
        "--netns",
        action="store_true",
        help="run the worlds and the client in a private network namespace: DNS on 127.0.0.1:53 through "
        "/etc/resolv.conf, SMTP on port 25 (needs root or unprivileged user namespaces)",
    )
    if inside:
        pc.add_argument(inside, action="store_true", help=argparse.SUPPRESS)
    pc.add_argument(
        "--port", type=_port, default=0, help="SMTP port (default: 25 with --netns, else ephemeral)"
    )
    pc.add_argument(
        "--timeout", type=_seconds, default=2.0, help="the {timeout} given to the client (default: 2 s)"
    )
    pc.add_argument(
        "--command-timeout",
        type=_seconds,
        default=60.0,
        help="kill the client after this long (default: 60 s)",
    )
    how = pc.add_mutually_exclusive_group()
    how.add_argument("--reader", choices=reader_names, help="read the outcome of a known client")
    how.add_argument(
        "--code-regex", metavar="RE", help="read the code with this regex (group 1, or the match)"
    )
    pc.add_argument("--junit", metavar="FILE", help="write a JUnit XML report")
    pc.add_argument("--json", metavar="FILE", help="write a JSON report")
    pc.add_argument(
        "--no-control",
        action="store_true",
        help="do not add the healthy baseline (baseline-delivered) as a control",
    )

    pm = sub.add_parser(
        "demo",
        help="play scenarios for a room: cause, live dialogue, reported code, fix (en or fr)",
        description="Play each selected scenario with the reference client: its title and cause, the live "
        "dialogue (DNS, TCP, SMTP both ways, TLS and the certificate, where it breaks), the code reported "
        "in the Exchange trace style, and how to fix it. Without IDS: a short tour, one scenario per code.",
    )
    pm.add_argument(
        "ids", nargs="*", metavar="ID", help="scenario ids, globs or .toml files (default: the tour)"
    )
    pm.add_argument("--code", metavar="CODE", help="only scenarios of this class (e.g. 4.4.317)")
    pm.add_argument("--lang", choices=LANGS, default="en", help="language of the explanations (default: en)")
    pm.add_argument("--step", action="store_true", help="wait for Enter between scenarios")
    pm.add_argument(
        "--pace", type=_pace, default=0.0, metavar="SECONDS", help="pause after each dialogue line"
    )
    pm.add_argument("--timeout", type=_seconds, default=1.0, help="the client's timeouts (default: 1 s)")
    pm.add_argument("--html", metavar="FILE", help="also write one self-contained HTML page of the session")

    pz = sub.add_parser(
        "validate",
        help="check scenario files (your own, before a session)",
        description="Load each scenario file with the catalogue's schema and report, per file, 'ok' or the "
        "first error (file, key, bad value, allowed values). Exit status 0 when all are valid, 1 otherwise.",
    )
    pz.add_argument("files", nargs="+", metavar="FILE", help="scenario TOML files")

    pe = sub.add_parser(
        "send",
        help="deliver one message with the reference client to any target (prints the report line)",
        description="The reference client against an explicit target: resolve through DNS_HOST:DNS_PORT, "
        "connect, EHLO, STARTTLS (required unless --opportunistic), verify against --ca-file, send. "
        "Exit status 0 when delivered, 1 otherwise.",
    )
    pe.add_argument("--smart-host", metavar="NAME", help="the smart host (default: the MX of --mail-domain)")
    pe.add_argument("--smart-host-ip", metavar="IP", help="connect to this address instead of resolving")
    pe.add_argument("--mail-domain", metavar="DOMAIN", help="the recipient domain")
    pe.add_argument("--port", type=_port, default=25, help="SMTP port (default: 25)")
    pe.add_argument("--dns-host", default="127.0.0.1", metavar="ADDR", help="DNS server (default: 127.0.0.1)")
    pe.add_argument("--dns-port", type=_port, default=53, help="DNS port (default: 53)")
    pe.add_argument("--ca-file", metavar="PEM", type=_ca_file, help="CA to trust (default: the system's)")
    pe.add_argument("--mail-from", default="sender@fabrikam.test", metavar="ADDR")
    pe.add_argument("--rcpt-to", action="append", metavar="ADDR", help="recipient (repeatable)")
    pe.add_argument(
        "--timeout", type=_seconds, default=2.0, help="connect, read and DNS timeout (default: 2 s)"
    )
    pe.add_argument(
        "--profile", choices=PROFILE_CHOICES, default="eop", help="code convention (default: eop)"
    )
    pe.add_argument(
        "--opportunistic", action="store_true", help="deliver in plaintext when STARTTLS is missing"
    )
    pe.add_argument("--json", action="store_true", help="print the report as JSON")
    pe.add_argument("-v", "--verbose", action="store_true", help="show the dialogue on stderr")
    return p


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: expected seconds, e.g. 0.5") from None
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError(f"invalid duration {value}: expected more than 0 and at most 600 s")
    return value


def _selection_arguments(p: argparse.ArgumentParser) -> None:
    """IDS, --code and --profile: how deliver and check pick scenarios and codes."""
    p.add_argument("ids", nargs="*", metavar="ID", help="scenario ids, globs or .toml files (default: all)")
    p.add_argument("--code", metavar="CODE", help="only scenarios of this class (e.g. 4.4.317)")
    p.add_argument("--profile", choices=PROFILE_CHOICES, default="eop", help="code convention (default: eop)")


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _pace(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid pace {text!r}: expected seconds, e.g. 0.5") from None
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError(f"invalid pace {value}: expected 0 to 10 seconds")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid port {text!r}: expected a number from 0 to 65535"
        ) from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {value}: expected a number from 0 to 65535")
    return value


COMMANDS = {
    "list": cmd_list,
    "show": cmd_show,
    "serve": cmd_serve,
    "deliver": cmd_deliver,
    "check": cmd_check,
    "send": cmd_send,
    "demo": cmd_demo,
    "validate": cmd_validate,
}


def main(argv: Sequence[str] | None = None) -> int:
    # Signals first, before parsing and the heavy imports: Ctrl-C or SIGTERM
    # at any moment ends in the same exit status. Until the command is known
    # (and in commands with nothing to stop) a signal unwinds at once; a
    # command that runs a world only sees ``stop`` set and stops cleanly.
    stop = threading.Event()
    received: list[int] = []
    unwind = [True]

    def on_signal(signum: int, frame: object) -> None:
        if not received:
            received.append(signum)
        stop.set()
        if unwind[0]:
            raise Interrupted(signum)

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    command = "?"
    status = 1
    try:
        raw = list(sys.argv[1:] if argv is None else argv)
        # For check and serve, everything after the first "--" is the user's command.
        command_argv: list[str] = []
        if raw[:1] in (["check"], ["serve"]) and "--" in raw:
            at = raw.index("--")
            raw, command_argv = raw[:at], raw[at + 1 :]
        args = build_parser(raw[0] if raw else None).parse_args(raw)
        command = args.command
        args.command_argv = command_argv
        if hasattr(args, "inside_netns"):  # serve and check: what a re-run in a namespace is given
            from .netns import INSIDE_FLAG

            args.raw_argv = [a for a in raw if a != INSIDE_FLAG] + (
                ["--", *command_argv] if command_argv else []
            )
        else:
            args.inside_netns = False
        args.stop = stop
        unwind[0] = command in INSTANT_COMMANDS
        status = COMMANDS[command](args, sys.stdout)
    except Interrupted:
        pass
    except Exception as exc:
        if not _is_user_error(exc):
            raise
        print(f"mailfakes {command}: error: {_cli_words(str(exc))}", file=sys.stderr)
        status = 2
    except BrokenPipeError:
        status = 0
    finally:
        unwind[0] = False  # a second signal must not cut the restoring short
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 + received[0] if received else status


# Commands with nothing to stop cleanly: a signal unwinds them at once.
INSTANT_COMMANDS = frozenset({"list", "show", "validate"})

# What the library says to a Python caller, and what the same thing is called
# on the command line.
_CLI_WORDS = (
    (re.compile(r"\ballow_non_loopback=True\b"), "--allow-non-loopback"),
    (re.compile(r"^subnet\b"), "--subnet"),
    (re.compile(r"^dns_host\b"), "--dns-host"),
)


def _cli_words(message: str) -> str:
    for keyword, flag in _CLI_WORDS:
        message = keyword.sub(flag, message)
    return message


def _is_user_error(exc: Exception) -> bool:
    if isinstance(exc, (UsageError, SpecError)):
        return True
    # Not imported to check: a WorldError cannot come from a command that never loaded the world.
    world = sys.modules.get(f"{__package__}.world")
    return world is not None and isinstance(exc, world.WorldError)


def _unless_stopped(stop: threading.Event, call: Callable[[], T]) -> T:
    """``call()`` in a worker thread, abandoned at once when ``stop`` is set.

    For the reference client, whose blocking reads honour only their own
    timeouts: Ctrl-C must not wait for them. The worker is a daemon and holds
    no listener, so leaving it to die with the process leaks nothing.
    """
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # carried to the caller's thread
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="mailfakes-client", daemon=True).start()
    while not done.wait(0.1):  # the bound on how late a stop is seen
        if stop.is_set():
            raise Interrupted()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def _ca_file(path: str) -> str:
    """--ca-file: a readable file of PEM CA certificates, checked before any connection."""
    import ssl

    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError:  # before OSError, of which it is a kind
        raise argparse.ArgumentTypeError(f"{path} holds no PEM CA certificate") from None
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc.strerror or exc}") from None
    return path


if __name__ == "__main__":
    sys.exit(main())
