"""``mailfakes serve``: one scenario's world on loopback until a signal, or around a command.

``serve`` prints the world's :class:`~mailfakes.facts.ClientFacts` (a
human block, or one JSON line with ``--json``), optionally follows the live
dialogue, and with ``--netns -- COMMAND`` runs the user's command inside a
private network namespace, its exit status becoming ours.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import TYPE_CHECKING, Any, TextIO

from .command import UsageError, enter_netns, get, reexec, remove, smtp_port, started
from .facts import ClientFacts

if TYPE_CHECKING:
    from .catalogue import Scenario
    from .world import World


def serve_info(scenario: Scenario, world: World) -> dict[str, Any]:
    """What a client needs to reach a served scenario (the ``--json`` line)."""
    return ClientFacts.of(scenario, world).as_json()


def _human_serve(info: dict[str, Any], scenario: Scenario, out: TextIO, *, interactive: bool = True) -> None:
    w = out.write
    w(f"mailfakes: serving {info['scenario']} ({info['code']} {info['title']})\n")
    for name, ip in info["hosts"].items():
        w(f"  host {name:<28} {ip}:{info['port']}\n")
    w(f"  DNS                                {info['dns_host']}:{info['dns_port']} (udp+tcp)\n")
    w(f"  CA file                            {info['ca_file']}\n")
    for name, key in (("CRL file", "crl_file"), ("DNSSEC trust anchor", "trust_anchor_file")):
        if info.get(key):
            w(f"  {name:<34} {info[key]}\n")
    if info.get("https_port"):
        w(f"  HTTPS port (MTA-STS, reports)      {info['https_port']}\n")
    if info.get("crl_url"):
        w(f"  CRL distribution point             {info['crl_url']} (port {info.get('http_port')})\n")
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
    if getattr(args, "control", None) is not None:
        return _serve_control(args, out)
    if args.id is None:  # the parser's own words, as before ID became optional (with --control)
        raise UsageError("the following arguments are required: ID (see 'mailfakes serve --help')")
    if args.netns and not args.inside_netns:
        if not args.command_argv:
            raise UsageError(
                "serve --netns needs a command to run inside the namespace: serve ID --netns -- COMMAND"
            )
        return reexec(args)
    from .world import World

    scenario = get(args.id)
    resolver_dir = enter_netns() if args.inside_netns else None
    world: World | None = None
    stop: threading.Event = args.stop
    try:
        world = World(
            scenario.world,
            port=smtp_port(args, scenario),
            subnet=args.subnet,
            dns_host="127.0.0.1" if args.inside_netns else args.dns_host,
            dns_port=53 if args.inside_netns else args.dns_port,
            allow_non_loopback=args.allow_non_loopback,
            hour=args.hour,
            # Inside a namespace the web hosts take the ports real clients use (MTA-STS: 443).
            https_port=443 if args.inside_netns else 0,
            http_port=80 if args.inside_netns else 0,
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
        # What answering a DNS query needs (dnslib) is imported now, once the
        # world is announced, not before: the line comes about 3 ms sooner, and
        # a client that asks at once waits for the rest of this import only.
        from .dns import prepare

        prepare()
        started()  # the cyclic collector runs again (see command.pause_collector)
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
            remove(resolver_dir)
    return 0


def _serve_control(args: argparse.Namespace, out: TextIO) -> int:
    """``serve [ID] --control PORT``: the HTTP/JSON control API, and ID's world on it, until a signal."""
    from .command import loopback_only
    from .control_api import ControlServer

    if args.netns or args.command_argv:
        raise UsageError("--control does not combine with --netns or a command: serve [ID] --control PORT")
    if args.id is None:
        given = [
            flag
            for flag, value in (
                ("--port", args.port),
                ("--dns-port", args.dns_port),
                ("--dns-host", args.dns_host),
                ("--subnet", args.subnet),
                ("--hour", args.hour),
                ("--follow", args.follow),
                ("--allow-non-loopback", args.allow_non_loopback),
            )
            if value
        ]
        if given:
            raise UsageError(
                f"{', '.join(given)} set the world of ID: serve ID --control PORT {given[0]} ... "
                "(worlds started through the API take ephemeral ports and addresses)"
            )
    loopback_only("--control-host", args.control_host)
    scenario = get(args.id) if args.id is not None else None
    stop: threading.Event = args.stop
    control = ControlServer(args.control_host, args.control)
    try:
        try:
            control.start()
        except OSError as exc:
            raise UsageError(str(exc.strerror or exc)) from None
        worlds = []
        if scenario is not None:
            entry = control.add_world(
                scenario,
                port=args.port,
                subnet=args.subnet,
                dns_host=args.dns_host,
                dns_port=args.dns_port,
                allow_non_loopback=args.allow_non_loopback,
                hour=args.hour,
            )
            worlds.append(entry.facts)
            if args.follow:
                from .demo import follower

                entry.world.events.subscribe(follower(sys.stderr if args.json else out))
        human = sys.stderr if args.json else out
        human.write(f"mailfakes: control API on {control.url} (routes: openapi/control-api.json)\n")
        for facts in worlds:
            human.write(f"  world {facts['id']}:\n")
            assert scenario is not None
            _human_serve({k: v for k, v in facts.items() if k != "id"}, scenario, human, interactive=False)
        human.write("Press Ctrl-C to stop.\n")
        human.flush()
        if args.json:
            out.write(json.dumps({"control": control.url, "worlds": worlds}, ensure_ascii=False) + "\n")
            out.flush()
        from .dns import prepare

        prepare()
        started()
        while not stop.wait(0.5):
            pass
        print("mailfakes: stopping", file=sys.stderr)
    finally:
        control.stop()
    return 0


def _run_inside(command: list[str], scenario: Scenario, world: World, stop: threading.Event) -> int:
    """Run the user's command next to a served world; its exit status is ours."""
    import subprocess

    from .check import environment, substitute
    from .netns import die_with_parent

    values = ClientFacts.of(scenario, world).placeholders(5.0)
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
