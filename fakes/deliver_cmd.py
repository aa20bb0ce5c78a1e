"""``mailfakes deliver`` and ``send``: the reference client, against the catalogue or any target.

``deliver`` serves each chosen scenario and grades what the reference client
(:mod:`mailfakes.client`) reports; ``send`` points the same client at an
address the user names, refused unless it is on loopback.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from .command import UsageError, loopback_only, select, unless_stopped

if TYPE_CHECKING:
    from .catalogue import Scenario
    from .world import World


def cmd_deliver(args: argparse.Namespace, out: TextIO) -> int:
    from .client import deliver_scenario

    if args.queue:
        return _deliver_queued(args, out)
    for option in ("hour", "retry", "lifetime", "clock"):
        if getattr(args, option) is not None:
            raise UsageError(f"--{option} only with --queue")
    chosen = select(args.ids, args.code)
    width = max(len(s.id) for s in chosen)

    def one(s: Scenario, world: World) -> bool:
        extra = {"require_tls": False} if args.opportunistic else {}
        call = functools.partial(
            deliver_scenario, s, world, profile=args.profile, timeout=args.timeout, **extra
        )
        report = unless_stopped(args.stop, call)
        expected = s.code_for(args.profile)
        ok = report.code == expected
        if args.json:
            row = {"scenario": s.id, "expected": expected, **report.as_dict(), "ok": ok}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            mark = "ok  " if ok else "DIFF"
            out.write(f"{mark} {s.id:<{width}}  expected {expected:<8} {report.line()}\n")
            if args.verbose:
                for line in report.dialogue:
                    out.write(f"       {line}\n")
        return ok

    return _each(chosen, args, out, one)


def _each(
    chosen: list[Scenario],
    args: argparse.Namespace,
    out: TextIO,
    one: Callable[[Scenario, World], bool],
    **world: Any,
) -> int:
    """Serve each chosen scenario in turn (``world``: World's options) and run ``one`` on it while
    it runs; the exit status: 0 when every one was ok, 1 otherwise (a stop ends the loop)."""
    from .runtime import Runtime
    from .world import World

    failures = 0
    with Runtime() as runtime:
        for s in chosen:
            if args.stop.is_set():
                break
            served = World(s.world, runtime=runtime, **world).start()
            try:
                failures += not one(s, served)
            finally:
                served.stop()
            out.flush()
    return 1 if failures else 0


def _deliver_queued(args: argparse.Namespace, out: TextIO) -> int:
    """deliver --queue: each scenario's message through the reference connector's queue."""
    from .queue import DAY, EXCHANGE_RETRY, QueuePolicy, run_scenario

    if args.hour is not None and args.clock != "real":
        raise UsageError("--hour only with --clock real (a virtual clock has no hour length)")
    chosen = select(args.ids, args.code)
    try:
        policy = QueuePolicy(lifetime=args.lifetime or DAY, retry=args.retry or EXCHANGE_RETRY)
    except ValueError as exc:
        raise UsageError(f"--retry / --lifetime: {exc}") from None
    width = max(len(s.id) for s in chosen)

    def one(s: Scenario, world: World) -> bool:
        call = functools.partial(
            run_scenario,
            s,
            world,
            profile=args.profile,
            policy=policy,
            timeout=args.timeout,
            stop=args.stop,
            require_tls=False if args.opportunistic else None,
        )
        result = unless_stopped(args.stop, call)
        expected = s.queue.outcome if s.queue is not None else ("delivered" if s.is_success else None)
        last = s.last_error_for(args.profile)
        recovers = s.queue is not None and s.queue.outcome == "delivered"
        ok = (
            result.outcome != "stopped"
            and (expected is None or result.outcome == expected)
            and (s.is_success or recovers or result.last_error == last)
        )
        row = result.as_dict()
        row.update(
            {
                "expected": {"outcome": expected, "last_error": None if s.is_success else last},
                # What the fakes saw: the NDR as the sender's domain received it.
                "received_ndr": [
                    {
                        "action": b.action,
                        "status": b.status,
                        "diagnostic_code": b.diagnostic_code,
                        "final_recipient": b.final_recipient,
                        "envelope_from": b.envelope_from,
                    }
                    for b in world.bounces
                ],
                "duplicates": world.duplicates,
                "ok": ok,
            }
        )
        if args.json:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            mark = "ok  " if ok else "DIFF"
            summary = f"{result.outcome} after {len(result.attempts)} attempt(s)"
            if result.ndr is not None:
                summary += f", NDR {result.ndr.status}"
            out.write(f"{mark} {s.id:<{width}}  expected {expected or '-':<9} {summary}\n")
            if args.verbose:
                for line in result.timeline():
                    out.write(f"       {line}\n")
        return ok

    clock = None if args.clock == "real" else "virtual"
    return _each(chosen, args, out, one, clock=clock, hour=args.hour)


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
    loopback_only("--dns-host", args.dns_host)
    if smart_host_ip is not None:
        loopback_only("--smart-host-ip" if args.smart_host_ip else "--smart-host", smart_host_ip)
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
    password = args.auth_password
    if args.auth_user is not None and password is None:
        password = os.environ.get("MAILFAKES_AUTH_PASSWORD")
        if password is None:
            raise UsageError(
                "--auth-user needs --auth-password (or MAILFAKES_AUTH_PASSWORD in the environment)"
            )
    if args.auth_password is not None and args.auth_user is None:
        raise UsageError("--auth-password needs --auth-user")
    client = DeliveryClient(
        dns_host=args.dns_host,
        dns_port=args.dns_port,
        port=args.port,
        ca_file=args.ca_file,
        require_tls=not args.opportunistic,
        timeout=args.timeout,
        profile=args.profile,
        dane=not args.no_dane,
        mta_sts=not args.no_mta_sts,
        crl_file=args.crl_file,
        https_port=args.https_port,
        auth_user=args.auth_user,
        auth_password=password if args.auth_user is not None else None,
        implicit_tls=args.implicit_tls,
    )

    def loopback_answers(answer: Answer) -> None:
        # The DNS named by --dns-host may be a real resolver (127.0.0.53 often
        # is one): an address it gives must not be connected to either.
        for value in answer.values("A") + answer.values("AAAA"):
            loopback_only(f"{answer.name} (resolved through {args.dns_host}:{args.dns_port})", value)

    client.resolver.observer = loopback_answers
    report = unless_stopped(
        args.stop,
        lambda: client.deliver(
            smart_host=args.smart_host,
            mail_domain=domain,
            mail_from=args.mail_from,
            rcpt_to=rcpt_to,
            smart_host_ip=smart_host_ip,
        ),
    )
    if args.tls_report and not args.stop.is_set():
        for line in client.send_tls_reports():
            report.dialogue.append(f"*: TLS-RPT: {line}")
    out.write(json.dumps(report.as_dict(), ensure_ascii=False) + "\n" if args.json else report.line() + "\n")
    if args.verbose:
        for line in report.dialogue:
            sys.stderr.write(f"  {line}\n")
    return 0 if report.delivered else 1


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
