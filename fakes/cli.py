"""The ``mailfakes`` command: its parser and a dispatch to the module of each command.

Exit status: 0 on success, 2 on a usage or configuration error (unknown
scenario, bad flag, port in use), with one clear line on stderr; 128 plus
the signal's number when a signal stops a command (130 for Ctrl-C, 143 for
SIGTERM), the same in every command.

Only the command that runs is imported (:data:`COMMANDS` names its module):
``list`` and ``show`` must not pay for aiosmtpd, dnslib, OpenSSL and
certificate tooling. What each command does lives in its module: catalogue
reading in :mod:`.browse`, serving in :mod:`.serve`, checking in
:mod:`.check_cmd`, the reference client in :mod:`.deliver_cmd`, the demo in
:mod:`.demo_cmd`.
"""

from __future__ import annotations

import argparse
import importlib
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from . import __version__
from .codes import PROFILES as PROFILE_CHOICES
from .command import Interrupted, UsageError, pause_collector, started
from .spec import SpecError

LANGS = ("en", "fr")
Command = Callable[[argparse.Namespace, TextIO], int]

__all__ = ["COMMANDS", "Interrupted", "UsageError", "build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    # add_argument() makes a formatter only to check the new argument's
    # metavar; a formatter asks shutil for the terminal's width, and shutil
    # (with bz2, lzma and zlib) costs about 2 ms to import. So that check gets
    # a formatter of a fixed width; help and usage text still get the terminal's.
    _checking = False

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        self._checking = True
        try:
            return super().add_argument(*args, **kwargs)
        finally:
            self._checking = False

    def _get_formatter(self) -> argparse.HelpFormatter:
        if self._checking:
            return argparse.HelpFormatter(prog=self.prog, width=80)
        return super()._get_formatter()

    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: the next step is --help.
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


if TYPE_CHECKING:
    _Subparsers = argparse._SubParsersAction[_Parser]  # what add_subparsers() gives


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``mailfakes``; given the ``command`` about to run, only that command's.

    With a ``command`` of :data:`COMMANDS` the top-level parser holds that one
    command's parser and nothing else is built or imported (the readers, and
    OpenSSL with them, only for ``check``): no other command can run, and the
    messages of a command's parser never list the others. With ``None`` every
    command is built in full; with anything else (``--help``, ``--version``, a
    wrong name) every command is there for the help and the error, without what
    only running ``serve`` or ``check`` needs (each builder's ``full``).
    """
    p = _Parser(
        prog="mailfakes",
        description="Fake DNS and SMTP servers on loopback that reproduce every cause of the Exchange "
        "Online mail flow intelligence codes (4.4.312 to 4.7.320), so a delivery client can be "
        "checked to report the right one.",
        epilog="Run 'mailfakes COMMAND --help' for a command's options. Ctrl-C or SIGTERM stops any "
        "command at once, with exit status 130 or 143.",
    )
    p.add_argument("--version", action="version", version=f"mailfakes {__version__}")
    # prog given, as argparse would compute it: computing it needs a formatter (see _Parser).
    sub = p.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser, prog="mailfakes"
    )
    only = command if command in _SUBPARSERS else None
    for name, add in _SUBPARSERS.items():
        if only is None or name == only:
            add(sub, command in (None, name))
    return p


def _list_parser(sub: _Subparsers, full: bool) -> None:
    pl = sub.add_parser("list", help="list the scenarios of the catalogue")
    pl.add_argument("--json", action="store_true", help="print a JSON array of {id, code, title, ...}")
    pl.add_argument(
        "--code", metavar="CODE", help="only scenarios of this class (e.g. 4.4.317, other, success)"
    )
    pl.add_argument("--lang", choices=LANGS, default="en", help="language of the titles (default: en)")


def _show_parser(sub: _Subparsers, full: bool) -> None:
    ps = sub.add_parser("show", help="explain one scenario: cause, fix, world and expected codes")
    ps.add_argument("id", metavar="ID", help="scenario id (see 'mailfakes list')")
    ps.add_argument("--lang", choices=LANGS, default="en", help="language (default: en)")


def _faults_parser(sub: _Subparsers, full: bool) -> None:
    pf = sub.add_parser(
        "faults",
        help="the fault table: every key a scenario's [world] may hold, its values and effects",
        description="Print the fault table that validation, 'show' and the README read: for each key "
        "of a scenario's [world] table, where it goes, how it is written, what it does and what each "
        "value makes a client meet; then which fault wins when two apply at one point.",
    )
    pf.add_argument("key", nargs="?", metavar="KEY", help="only this key (e.g. tls, close_at, replies.CMD)")
    pf.add_argument(
        "--json", action="store_true", help="print a JSON array of {scope, key, form, doc, values}"
    )


def _serve_parser(sub: _Subparsers, full: bool) -> None:
    pv = sub.add_parser(
        "serve",
        help="serve one scenario on loopback until Ctrl-C or SIGTERM",
        description="Start the scenario's world (DNS, SMTP hosts, certificates) on loopback, print how "
        "to reach it, and serve until SIGINT or SIGTERM; then stop cleanly and exit 130 (SIGINT) or "
        "143 (SIGTERM). With --control PORT, serve the HTTP/JSON control API (openapi/control-api.json) "
        "that starts, reads, changes and stops worlds; ID is then optional.",
    )
    pv.add_argument(
        "id", metavar="ID", nargs="?", help="scenario id (see 'mailfakes list'); optional with --control"
    )
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
        "--hour",
        type=_duration,
        metavar="D",
        help="how long one hour of the world's clock lasts (e.g. 2s), for faults scheduled by time "
        "(default: the scenario's, else real time)",
    )
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
    if full:  # the hidden flag of the process inside a namespace
        from .netns import INSIDE_FLAG

        pv.add_argument(INSIDE_FLAG, action="store_true", help=argparse.SUPPRESS)
    pv.add_argument(
        "--follow",
        action="store_true",
        help="show the live dialogue (DNS, TCP, SMTP both ways, TLS, faults) of any client while serving",
    )
    pv.add_argument(
        "--control",
        type=_port,
        metavar="PORT",
        help="serve the HTTP/JSON control API on this port (0: ephemeral); its URL is printed once ready",
    )
    pv.add_argument(
        "--control-host",
        metavar="ADDR",
        default="127.0.0.1",
        help="loopback address of the control API (default: 127.0.0.1)",
    )


def _deliver_parser(sub: _Subparsers, full: bool) -> None:
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
    q = pd.add_argument_group(
        "queue",
        "with --queue the client queues the message like an outbound connector: it retries temporary "
        "failures on an Exchange-like schedule (5, 10, 15, 30 minutes apart, then hourly), bounces a "
        "permanent one (5.x.x) at once, lets the message expire after --lifetime and then sends the "
        "non-delivery report to the sender's domain. It is graded on the scenario's expected outcome "
        "and last error. The world runs on a virtual clock (24 hours in milliseconds) unless --clock real",
    )
    q.add_argument("--queue", action="store_true", help="queue, retry and expire (see above)")
    q.add_argument("--lifetime", type=_duration, metavar="D", help="queue lifetime (default: 24h)")
    q.add_argument(
        "--retry",
        type=_retry,
        metavar="D,D,...",
        help="intervals between attempts, the last one repeated (default: 5m,10m,15m,30m,1h)",
    )
    q.add_argument(
        "--clock",
        choices=("virtual", "real"),
        help="virtual: the queue moves the world's clock (default); real: it waits, as scaled by --hour",
    )
    q.add_argument(
        "--hour",
        type=_duration,
        metavar="D",
        help="with --clock real: how long a world hour lasts (default: the scenario's, else 1h)",
    )


def _check_parser(sub: _Subparsers, full: bool) -> None:
    placeholder_names: Sequence[str] = ()
    reader_names: Sequence[str] | None = None
    if full:  # the readers (and OpenSSL with them): only to run check or show its help
        from .check import PLACEHOLDERS
        from .readers import READERS

        placeholder_names, reader_names = PLACEHOLDERS, sorted(READERS)
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
    if full:
        from .netns import INSIDE_FLAG

        pc.add_argument(INSIDE_FLAG, action="store_true", help=argparse.SUPPRESS)
    pc.add_argument(
        "--port",
        type=_port,
        default=0,
        help="SMTP port (default: 25 with --netns, 587 for a smart host with auth; else ephemeral)",
    )
    pc.add_argument(
        "--timeout",
        type=_seconds,
        default=2.0,
        help="the {timeout} given to the client (default: 2 s); a scenario that declares its own "
        "([target] timeout: a slow server) gives that one instead",
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
    pc.add_argument(
        "--hour",
        type=_duration,
        metavar="D",
        help="how long one hour of each world's clock lasts (e.g. 1s), so a client with a short "
        "queue meets faults scheduled by time (default: each scenario's, else real time)",
    )
    pc.add_argument("--junit", metavar="FILE", help="write a JUnit XML report")
    pc.add_argument("--json", metavar="FILE", help="write a JSON report")
    pc.add_argument(
        "--no-control",
        action="store_true",
        help="do not add the healthy baseline (baseline-delivered) as a control",
    )


def _demo_parser(sub: _Subparsers, full: bool) -> None:
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


def _validate_parser(sub: _Subparsers, full: bool) -> None:
    pz = sub.add_parser(
        "validate",
        help="check scenario files (your own, before a session)",
        description="Load each scenario file with the catalogue's schema and report, per file, 'ok' or the "
        "first error (file, key, bad value, allowed values). Exit status 0 when all are valid, 1 otherwise.",
    )
    pz.add_argument("files", nargs="+", metavar="FILE", help="scenario TOML files")


def _send_parser(sub: _Subparsers, full: bool) -> None:
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
    pe.add_argument(
        "--crl-file",
        metavar="PEM",
        type=_crl_file,
        help="check the certificate against this CRL (a world's crl_file; empty: no check)",
    )
    pe.add_argument(
        "--https-port",
        type=_port,
        default=443,
        help="where MTA-STS policy hosts and HTTPS report receivers listen (default: 443)",
    )
    pe.add_argument("--no-dane", action="store_true", help="do not use DANE (TLSA records) on MX delivery")
    pe.add_argument("--no-mta-sts", action="store_true", help="do not use MTA-STS policies on MX delivery")
    pe.add_argument(
        "--tls-report",
        action="store_true",
        help="then send the TLS report (RFC 8460) of each policy domain to its _smtp._tls addresses",
    )
    pe.add_argument(
        "--auth-user",
        metavar="USER",
        help="authenticate (AUTH PLAIN, or LOGIN) as USER when the host offers AUTH (RFC 4954)",
    )
    pe.add_argument(
        "--auth-password",
        metavar="PASSWORD",
        help="the password of --auth-user (default: $MAILFAKES_AUTH_PASSWORD, kept off the command line)",
    )
    pe.add_argument(
        "--implicit-tls",
        action="store_true",
        help="TLS from the first byte (RFC 8314, a submissions port such as 465) instead of STARTTLS",
    )
    pe.add_argument("--json", action="store_true", help="print the report as JSON")
    pe.add_argument("-v", "--verbose", action="store_true", help="show the dialogue on stderr")


# Each command's parser, in the order --help lists them.
_SUBPARSERS: dict[str, Callable[[_Subparsers, bool], None]] = {
    "list": _list_parser,
    "show": _show_parser,
    "faults": _faults_parser,
    "serve": _serve_parser,
    "deliver": _deliver_parser,
    "check": _check_parser,
    "demo": _demo_parser,
    "validate": _validate_parser,
    "send": _send_parser,
}


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: expected seconds, e.g. 0.5") from None
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError(f"invalid duration {value}: expected more than 0 and at most 600 s")
    return value


def _duration(text: str) -> float:
    from .clock import DURATION_RULE, parse_duration

    value = parse_duration(text)
    if value is None or value <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: expected {DURATION_RULE}, more than 0")
    return value


def _retry(text: str) -> tuple[float, ...]:
    from .queue import parse_retry

    try:
        return parse_retry(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid retry intervals {text!r}: {exc}") from None


def _selection_arguments(p: argparse.ArgumentParser) -> None:
    """IDS, --code and --profile: how deliver and check pick scenarios and codes."""
    p.add_argument("ids", nargs="*", metavar="ID", help="scenario ids, globs or .toml files (default: all)")
    p.add_argument("--code", metavar="CODE", help="only scenarios of this class (e.g. 4.4.317)")
    p.add_argument("--profile", choices=PROFILE_CHOICES, default="eop", help="code convention (default: eop)")


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


# Each command's module and function, imported only when it runs.
COMMANDS = {
    "list": ("browse", "cmd_list"),
    "show": ("browse", "cmd_show"),
    "validate": ("browse", "cmd_validate"),
    "faults": ("browse", "cmd_faults"),
    "serve": ("serve", "cmd_serve"),
    "deliver": ("deliver_cmd", "cmd_deliver"),
    "send": ("deliver_cmd", "cmd_send"),
    "check": ("check_cmd", "cmd_check"),
    "demo": ("demo_cmd", "cmd_demo"),
}


def _command(name: str) -> Command:
    module, function = COMMANDS[name]
    run: Command = getattr(importlib.import_module(f".{module}", __package__), function)
    return run


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
    if argv is None:  # the process's own command (not a caller's): see command.pause_collector
        pause_collector()
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
        if command not in STARTING_COMMANDS:
            started()
        status = _command(command)(args, sys.stdout)
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
        started()  # no-op unless the command ended before saying so
        unwind[0] = False  # a second signal must not cut the restoring short
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 + received[0] if received else status


# Commands with nothing to stop cleanly: a signal unwinds them at once.
INSTANT_COMMANDS = frozenset({"list", "show", "validate", "faults"})

# Commands that run with the cyclic collector paused (command.pause_collector)
# until they call command.started(): serve, once its ready line is out, and
# the instant ones, whose whole run is a start.
STARTING_COMMANDS = INSTANT_COMMANDS | {"serve"}

# What the library says to a Python caller, and what the same thing is called
# on the command line. Patterns, compiled (by re, once) only when an error is
# reported: compiling them costs a command's start about 0.2 ms.
_CLI_WORDS = (
    (r"\ballow_non_loopback=True\b", "--allow-non-loopback"),
    (r"^subnet\b", "--subnet"),
    (r"^dns_host\b", "--dns-host"),
)


def _cli_words(message: str) -> str:
    for keyword, flag in _CLI_WORDS:
        message = re.sub(keyword, flag, message)
    return message


def _is_user_error(exc: Exception) -> bool:
    if isinstance(exc, (UsageError, SpecError)):
        return True
    # Not imported to check: a WorldError cannot come from a command that never loaded the world.
    world = sys.modules.get(f"{__package__}.world")
    return world is not None and isinstance(exc, world.WorldError)


def _crl_file(path: str) -> str | None:
    """--crl-file: a readable PEM CRL, or empty for none (a {crl_file} placeholder of a world without one)."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN X509 CRL-----" not in head:
        raise argparse.ArgumentTypeError(f"{path} holds no PEM CRL (-----BEGIN X509 CRL-----)")
    return path


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
