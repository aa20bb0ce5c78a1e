"""What the commands share: the user's mistakes, a stop, and picking scenarios.

Each command module (:mod:`.browse`, :mod:`.serve`, :mod:`.check_cmd`,
:mod:`.deliver_cmd`, :mod:`.demo_cmd`) raises :class:`UsageError` for a
mistake of the user's; :func:`mailfakes.cli.main` turns it into one line and
exit status 2. This module imports no server stack: ``list`` pays for nothing.
"""

from __future__ import annotations

import argparse
import gc
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pathlib import Path

    from .catalogue import Scenario

T = TypeVar("T")


class UsageError(Exception):
    """A mistake of the user's: reported on one line, exit status 2."""


class Interrupted(BaseException):
    """A signal stops the command: unwinds like KeyboardInterrupt, exit 128 + its number."""


# While the ``mailfakes`` process starts a command it makes long-lived objects
# (modules, classes, the scenario, the world) and next to no garbage, yet the
# cyclic collector would walk them again and again: about 40 passes, 4 ms of
# the time to `serve --json`'s ready line. So :func:`pause_collector` stops it
# at the start of the process's command and :func:`started` freezes what the
# start made (gc.freeze: no later pass walks it; the few hundred objects of
# garbage already made stay) and lets the collector run again, from there on
# as usual. The pattern is the one gc.freeze's documentation gives.
_collector_paused = False


def pause_collector() -> None:
    """No cyclic collection until :func:`started` (only for the process's own command)."""
    global _collector_paused
    if gc.isenabled():
        gc.disable()
        _collector_paused = True


def started() -> None:
    """The command's start is over: what it made is frozen and the collector runs again."""
    global _collector_paused
    if _collector_paused:
        _collector_paused = False
        gc.freeze()
        gc.enable()


def select(ids: list[str], code: str | None) -> list[Scenario]:
    """Scenarios by id, glob or path to a .toml file (a trainer's own), optionally of one code."""
    from . import catalogue as cat

    files = [i for i in ids if i.endswith(".toml")]
    globs = [i for i in ids if not i.endswith(".toml")]
    chosen = [load(path) for path in files]
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


def load(path: str) -> Scenario:
    from . import catalogue as cat

    try:
        return cat.load_file(path)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def get(scenario_id: str) -> Scenario:
    from . import catalogue as cat

    if scenario_id.endswith(".toml"):
        return load(scenario_id)
    try:
        return cat.get(scenario_id)
    except LookupError as exc:
        msg = exc.args[0] if exc.args else str(exc)
        raise UsageError(str(msg)) from None


def smtp_port(args: argparse.Namespace, scenario: Scenario) -> int:
    """The port a served world's SMTP hosts listen on: ``--port``, else a free one (0), and inside
    ``--netns`` the one real clients use: 25, or 587 (465 for implicit TLS) when the smart host
    asks for authentication, as a submission server does (RFC 6409, RFC 8314)."""
    if args.port or not args.inside_netns:
        return int(args.port or 0)
    from .auth import submission_port

    return submission_port(scenario.world, scenario.target.smart_host) or 25


def check_writable(path: str) -> None:
    """A report file's directory must exist and be writable before any world starts."""
    import os

    if not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
        raise UsageError(f"cannot write {path}: its directory is missing or not writable")


def unless_stopped(stop: threading.Event, call: Callable[[], T]) -> T:
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


def loopback_only(what: str, address: str) -> None:
    from .spec import is_loopback

    if not is_loopback(address):
        raise UsageError(
            f"{what} {address!r} is not a loopback address: mailfakes only talks to this machine "
            "(127.0.0.0/8 or ::1), so that no fault traffic leaves it"
        )


def remove(directory: Path) -> None:
    import shutil

    shutil.rmtree(directory, ignore_errors=True)


def reexec(args: argparse.Namespace) -> int:
    from .netns import NetnsError, reexec_inside

    try:
        return reexec_inside(args.raw_argv, args.stop)
    except NetnsError as exc:
        raise UsageError(str(exc)) from None


def enter_netns() -> Path:
    from .netns import NetnsError, enter

    try:
        return enter()
    except (NetnsError, OSError) as exc:
        raise UsageError(f"cannot prepare the network namespace: {exc}") from None
