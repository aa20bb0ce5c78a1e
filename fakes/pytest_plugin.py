"""pytest plugin: the catalogue as fixtures, one test per scenario, one-line asserts.

Installed with the package (``pytest11`` entry point ``mailfakes``)::

    @pytest.mark.mail_scenarios("tls-cert-*", "dns-*")
    def test_my_client_reports_the_right_code(mail_scenario):
        report = my_deliver(host=mail_scenario.smart_host, port=mail_scenario.port,
                            dns=(mail_scenario.dns_host, mail_scenario.dns_port),
                            cafile=mail_scenario.ca_file)
        mail_scenario.assert_reported(report)

Besides catalogue ids and globs, the marker (and an indirect parameter of
``mail_scenario``) takes a path to a ``.toml`` file of yours, looked up next
to the test file, then under the rootdir, and a dict with the keys of a
scenario file (:func:`mailfakes.catalogue.from_dict`). An argument that names
no scenario fails the tests that use it, in one line, and nothing else.

A session-scoped runtime owns one event-loop thread and one CA; each
scenario's world starts once per session (per xdist worker) and is reset
before every test that uses it, so a test pays for a reset, not a start.
When a collected test uses a mailfakes fixture or the marker, that runtime
is made at the end of collection (the server stack imported, the thread
started, the CA read from the user's cache or made), so the first test pays
for its own world only; a session without such a test pays nothing.
Errors raised inside the fakes' thread fail the test that was running.

A verdict is earned, not only a code matched: ``assert_reported`` also asks
the witness (:mod:`mailfakes.witness`) whether the client reached the faulty
step and whether the fakes saw another reason for its failure. The marker
adds the healthy baseline (``baseline-delivered``) as a control unless
``control=False`` (or ``--mail-no-control``): when the client fails it, the
passes of that test's failure scenarios are void, and fail.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .codes import CONTROL_SCENARIO, PROFILES, find_code, title
from .facts import ClientFacts
from .spec import enhanced_ok

if TYPE_CHECKING:
    import ssl

    from .attempts import Attempt
    from .catalogue import Scenario
    from .client import DeliveryReport
    from .dsn import Bounce
    from .runtime import Runtime
    from .tlsrpt import TlsReport
    from .transcript import Message, Transcript
    from .world import World

MARKER = "mail_scenarios"
CONTROL = CONTROL_SCENARIO


class FakesError(Exception):
    """Something failed inside the fakes while a test ran."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mailfakes", "mailfakes: fake DNS and SMTP servers on loopback")
    group.addoption(
        "--mail-profile",
        default="eop",
        choices=PROFILES,
        help="code convention the client under test follows (default: eop, the documented "
        "Exchange Online codes)",
    )
    group.addoption(
        "--mail-scenarios",
        default=None,
        metavar="GLOBS",
        help="comma-separated scenario id globs: run mail_scenario tests only for these "
        "(e.g. 'tls-*,dns-nxdomain')",
    )
    group.addoption(
        "--mail-hour",
        default=None,
        metavar="DURATION",
        help="how long one hour of the worlds' clocks lasts in real time (e.g. 2s), for scenarios "
        "whose faults change with time (default: each scenario's own, else real time)",
    )
    group.addoption(
        "--mail-no-control",
        action="store_true",
        help=f"do not add the healthy baseline ({CONTROL}) as a control to marked tests",
    )


def pytest_configure(config: pytest.Config) -> None:
    _hour(config)  # a bad --mail-hour stops the run before any test (a usage error)
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*scenarios, code=None, control=True): run the test once per scenario: catalogue ids "
        "or globs (all when none), paths to .toml files of yours (next to the test file, else under the "
        "rootdir) and dicts with the keys of a scenario file; if given, only those whose code is `code` "
        "(e.g. '4.7.320'); the test receives each as the `mail_scenario` fixture. With control=True "
        f"the healthy baseline ({CONTROL}) runs first: a client that fails it gets its failures void.",
    )
    config.stash[_CONTROLS] = {}
    config.stash[_VOID] = []
    config.stash[_WITH_CONTROL] = set()
    config.pluginmanager.register(_Ledger(config), "mailfakes-ledger")


class MarkerError(Exception):
    """A marker argument that names no scenario; fails the tests that use it, in one line."""


def _marker_call(arg: object = None, *, code: object = None) -> str:
    """How the faulty argument was written, so the user finds it in the source."""
    if code is not None:
        return f"@pytest.mark.{MARKER}(code={code!r})"
    if isinstance(arg, Mapping):
        return f"@pytest.mark.{MARKER}({{'id': {arg.get('id')!r}, ...}})"
    return f"@pytest.mark.{MARKER}({arg!r})"


def resolve_path(arg: str, test_file: Path | None, rootdir: Path) -> list[Path]:
    """The scenario files a ``.toml`` argument names (a glob such as ``cases/*.toml`` allowed).

    An absolute path is taken as it is; a relative one is looked up next to the
    test file first, then under the rootdir (where pytest.ini or pyproject.toml
    is), as a test's data files usually are. Raises MarkerError when neither has it.
    """
    path = Path(arg).expanduser()
    bases = [path.anchor] if path.is_absolute() else [b for b in (test_file, rootdir) if b is not None]
    tried: list[str] = []
    for base in dict.fromkeys(Path(b) for b in bases):
        rel = path.relative_to(path.anchor) if path.is_absolute() else path
        if glob.has_magic(str(rel)):
            found = sorted(p for p in base.glob(str(rel)) if p.is_file())
            if found:
                return found
        elif (base / rel).is_file():
            return [base / rel]
        tried.append(str(base / rel))
    raise MarkerError(f"no scenario file {arg!r}: looked for " + " and ".join(tried))


def _load_path(arg: str, test_file: Path | None, rootdir: Path) -> list[Scenario]:
    from . import catalogue as scenarios

    found = []
    for path in resolve_path(arg, test_file, rootdir):
        try:
            found.append(scenarios.load_file(path))
        except OSError as exc:
            raise MarkerError(f"cannot read {path}: {exc.strerror}") from None
        except ValueError as exc:  # a ScenarioError: file, key, value, what is allowed
            raise MarkerError(str(exc)) from None
    return found


def _one_arg(arg: object, test_file: Path | None, rootdir: Path) -> list[Scenario | str]:
    """What one marker argument selects: catalogue ids (str) or scenarios of the user's."""
    from . import catalogue as scenarios

    if isinstance(arg, scenarios.Scenario):
        return [arg]
    if isinstance(arg, Mapping):
        try:
            return [scenarios.from_dict(arg)]
        except ValueError as exc:
            raise MarkerError(str(exc)) from None
    if not isinstance(arg, str):
        raise MarkerError(
            f"{type(arg).__name__} {arg!r} is not a scenario; expected a catalogue id or glob "
            "('tls-cert-*'), a path to a .toml file, or a dict with the keys of a scenario file"
        )
    if arg.endswith(".toml"):
        return list(_load_path(arg, test_file, rootdir))
    try:
        return [s.id for s in scenarios.select([arg])]
    except LookupError as exc:
        # Only what looks like a path gets the hint; an id's typo has its suggestions.
        hint = "; a scenario file of yours must end in .toml" if "/" in arg or "." in arg else ""
        raise MarkerError(f"{exc.args[0] if exc.args else exc}{hint}") from None


def _selection(
    config: pytest.Config, marker: pytest.Mark | None, test_file: Path | None = None
) -> list[Scenario]:
    """The marker's scenarios; raises MarkerError naming the argument at fault."""
    from . import catalogue as scenarios

    args: tuple[object, ...] = tuple(marker.args) if marker is not None else ()
    code = marker.kwargs.get("code") if marker is not None else None
    if code is not None and (
        not isinstance(code, str) or (code not in scenarios.CODES and not enhanced_ok(code))
    ):
        raise MarkerError(
            f"{_marker_call(code=code)}: unknown code; expected one of "
            + ", ".join(scenarios.CODES)
            + " or an enhanced code like 5.1.1"
        )
    chosen: list[Scenario] = []
    for arg in args or ("*",):
        try:
            picked = _one_arg(arg, test_file, config.rootpath)
        except MarkerError as exc:
            raise MarkerError(f"{_marker_call(arg)}: {exc}") from None
        for item in picked:
            s = scenarios.get(item) if isinstance(item, str) else item
            if all(s is not c for c in chosen) and (
                not isinstance(item, str) or all(c.id != s.id for c in chosen)
            ):
                chosen.append(s)
    if code is not None:
        codes = list(dict.fromkeys(s.expected_code for s in chosen))
        chosen = [s for s in chosen if code in (s.code, s.expected_code)]
        if not chosen:
            raise MarkerError(
                f"{_marker_call(code=code)}: no scenario of this code among the marker's; "
                "their codes: " + ", ".join(codes)
            )
    option = config.getoption("--mail-scenarios")
    if option:
        patterns = [p.strip() for p in option.split(",") if p.strip()]
        chosen = [s for s in chosen if any(fnmatch.fnmatchcase(s.id, p) for p in patterns)]
    return chosen


def _is_catalogue(s: Scenario) -> bool:
    from . import catalogue as scenarios

    try:
        return scenarios.get(s.id) is s
    except LookupError:
        return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mail_scenario" not in metafunc.fixturenames:
        return
    if any(
        "mail_scenario" in getattr(m, "args", ("",))[0]
        for m in metafunc.definition.iter_markers("parametrize")
    ):
        return  # the test chose its scenarios itself (indirect parametrization)
    marker = metafunc.definition.get_closest_marker(MARKER)
    try:
        chosen = _selection(metafunc.config, marker, metafunc.definition.path.parent)
    except MarkerError as exc:
        # One failing case for this test alone: the rest of the session runs.
        metafunc.parametrize("mail_scenario", [exc], ids=["marker-error"], indirect=True)
        return
    # Catalogue scenarios travel by id (readable, and the same on every xdist worker).
    params: list[Scenario | str] = [s.id if _is_catalogue(s) else s for s in chosen]
    ids = [s.id for s in chosen]
    wants_control = marker is not None and marker.kwargs.get("control", True) is not False
    if (
        wants_control
        and not metafunc.config.getoption("--mail-no-control")
        and any(not s.is_success for s in chosen)
    ):
        # First, so that its outcome is known when the failure scenarios assert.
        keep = [i for i, sid in enumerate(ids) if params[i] != CONTROL]
        params = [CONTROL, *(params[i] for i in keep)]
        ids = [CONTROL, *(ids[i] for i in keep)]
        metafunc.config.stash[_WITH_CONTROL].add(metafunc.definition.nodeid)
    metafunc.parametrize("mail_scenario", params, ids=ids, indirect=True)


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    # An inline scenario given to parametrize(..., indirect=True) is named by its id.
    if argname == "mail_scenario" and isinstance(val, Mapping) and isinstance(val.get("id"), str):
        return str(val["id"])
    return None


def _param_id(value: object) -> str:
    """The scenario id of a ``mail_scenario`` parameter (an id, a Scenario, a dict)."""
    if isinstance(value, Mapping):
        return str(value.get("id"))
    return str(getattr(value, "id", value))


def _param_is_failure(value: object) -> bool:
    from . import catalogue as scenarios

    if isinstance(value, str):
        try:
            return not scenarios.get(value).is_success
        except LookupError:
            return True
    if isinstance(value, Mapping):
        return value.get("code") != "success"
    return getattr(value, "code", None) != "success"


# -- the control: the healthy baseline, judged before the failure scenarios -------


@dataclass(frozen=True)
class ControlOutcome:
    """How one test's control case ended."""

    nodeid: str
    passed: bool
    summary: str


_CONTROLS = pytest.StashKey[dict[str, ControlOutcome]]()
_VOID = pytest.StashKey[list[tuple[str, str]]]()  # (nodeid, reason) of passes voided after the fact
_WITH_CONTROL = pytest.StashKey[set[str]]()  # test functions whose marker added the control


def _control_key(item: pytest.Item) -> str | None:
    """The item's test function and its other parameters: the cases that share one control."""
    callspec = getattr(item, "callspec", None)
    function = item.nodeid.split("[", 1)[0]
    if callspec is None or "mail_scenario" not in callspec.params:
        return None
    if function not in item.config.stash.get(_WITH_CONTROL, set()):
        return None
    others = sorted((k, repr(v)) for k, v in callspec.params.items() if k != "mail_scenario")
    return f"{function}{others or ''}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    key = _control_key(item)
    if key is None or not (report.when == "call" or report.failed):
        return
    param = item.callspec.params["mail_scenario"]  # type: ignore[attr-defined]
    scenario_id = _param_id(param)
    role = "control" if param == CONTROL else "case"
    # user_properties travel to the pytest-xdist controller, which sees every worker's reports.
    report.user_properties.append(("mailfakes", (key, role, scenario_id, _param_is_failure(param))))
    if role == "control":
        crash = getattr(report.longrepr, "reprcrash", None)
        text = str(getattr(crash, "message", "") or report.longrepr or "")
        lines = [line.strip() for line in text.split("\n") if line.strip()]
        # assert_reported's second line ("found ... in: <the report>") is the evidence worth quoting.
        summary = next((line for line in lines if line.startswith("found ")), lines[0] if lines else "failed")
        summary = summary if len(summary) <= 240 else summary[:240] + "..."
        item.config.stash[_CONTROLS][key] = ControlOutcome(item.nodeid, report.passed, summary)


def _control_for(item: pytest.Item) -> ControlOutcome | None:
    key = _control_key(item)
    return item.config.stash[_CONTROLS].get(key) if key is not None else None


class _Ledger:
    """What one pytest session saw of its marked cases (a plugin object per config).

    Where the control ran after (or apart from) a failure case, e.g. on another
    xdist worker, the case could not fail itself: it is voided at the end.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        # (nodeid, passed, control key, role, is a failure scenario) of every marked case.
        self.seen: list[tuple[str, bool, str, str, bool]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == "mailfakes" and report.when == "call" and isinstance(value, (list, tuple)):
                key, role, _, failure = value
                self.seen.append((report.nodeid, report.passed, str(key), str(role), bool(failure)))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if hasattr(self.config, "workerinput"):
            return  # an xdist worker: the controller judges
        failed = {
            key: nodeid for nodeid, passed, key, role, _ in self.seen if role == "control" and not passed
        }
        void = self.config.stash.get(_VOID, [])
        for nodeid, passed, key, role, failure in self.seen:
            if role == "case" and passed and key in failed and failure:
                void.append((nodeid, f"the client also fails the healthy baseline ({failed[key]})"))
        if void and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    void = config.stash.get(_VOID, [])
    if not void:
        return
    terminalreporter.section("mailfakes: void verdicts", sep="=", red=True)
    for nodeid, reason in void:
        terminalreporter.line(f"VOID {nodeid}: {reason}, so its failure reports prove nothing")


class MailRuntime:
    """The session's loop thread and CA, and one running world per scenario."""

    def __init__(self) -> None:
        from .runtime import Runtime

        self.runtime: Runtime = Runtime().start()
        self._worlds: dict[tuple[str, str, float | None], World] = {}
        self._extra: list[World] = []

    @classmethod
    def warm(cls) -> MailRuntime:
        """A runtime ready for the first test: what every world needs, done now.

        The modules a world and ``assert_reported`` use are imported, the loop
        thread is running and the CA exists (read from the user's certificate
        cache, or made); what is left for a test is its own world.
        """
        import asyncio

        from . import client, witness, world  # noqa: F401  (imported for their cost, now)

        rt = cls()
        try:
            rt.runtime.ca  # noqa: B018  (made, or read from the cache)
            rt.runtime.run(asyncio.sleep(0))  # the thread is up and its loop turning
        except BaseException:
            rt.close()
            raise
        return rt

    def world_for(self, scenario: Scenario, hour: float | None = None) -> World:
        # By id and world, not id alone: a user's scenario may reuse a catalogue id
        # with a world of its own, and an inline one is parsed afresh for each test.
        key = (scenario.id, repr(scenario.world), hour)
        world = self._worlds.get(key)
        if world is None or not world.running:
            from .world import World

            world = World(scenario.world, runtime=self.runtime, hour=hour).start()
            self._worlds[key] = world
        return world

    def new_world(self, spec: Any, **options: Any) -> World:
        from .world import World

        world = World(spec, runtime=self.runtime, **options).start()
        self._extra.append(world)
        return world

    def forget_world(self, world: World) -> None:
        """Stop a world made by :meth:`new_world` and let go of it."""
        world.stop()
        if world in self._extra:
            self._extra.remove(world)

    def close(self) -> None:
        for world in [*self._worlds.values(), *self._extra]:
            world.stop()
        self._worlds.clear()
        self._extra.clear()
        self.runtime.close()


FIXTURES = ("mail_scenario", "mail_world", "mail_runtime")
_WARM = pytest.StashKey[MailRuntime]()


def _uses_mailfakes(item: pytest.Item) -> bool:
    names = getattr(item, "fixturenames", ())
    return any(name in names for name in FIXTURES) or item.get_closest_marker(MARKER) is not None


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Warm the session's runtime up once the tests to run are known, if one of them needs it."""
    if session.config.option.collectonly or not any(_uses_mailfakes(i) for i in session.items):
        return
    # On failure the fixture makes it again, and fails the test that needs it.
    with contextlib.suppress(Exception):
        session.config.stash[_WARM] = MailRuntime.warm()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    warm = session.config.stash.get(_WARM, None)
    if warm is not None:  # made, but no test asked for it (all skipped, say)
        del session.config.stash[_WARM]
        warm.close()


@pytest.fixture(scope="session")
def mail_runtime(request: pytest.FixtureRequest) -> Iterator[MailRuntime]:
    """The session-scoped runtime behind ``mail_scenario`` and ``mail_world``."""
    rt = request.config.stash.get(_WARM, None)
    if rt is not None:
        del request.config.stash[_WARM]
    else:
        rt = MailRuntime()
    yield rt
    stray = rt.runtime.errors.errors()
    rt.close()
    if stray:
        # No world could be blamed, so no test is failed for them: said once, here.
        warnings.warn(
            "errors inside the mailfakes runtime that no world could be blamed for:\n"
            + "\n".join(map(str, stray)),
            stacklevel=1,
        )


def _check_errors(world: World, runtime: Runtime) -> None:
    # Only this world's errors: another world's fail the tests that use it.
    errors = world.events.errors()
    if errors:
        raise FakesError(
            "errors inside the mailfakes servers during this test:\n" + "\n".join(map(str, errors))
        )


class MailScenario:
    """A running scenario (the catalogue's or yours), with what a client needs and what a test checks."""

    def __init__(
        self,
        scenario: Scenario,
        world: World,
        profile: str,
        *,
        control: Callable[[], ControlOutcome | None] | None = None,
    ) -> None:
        self.scenario = scenario
        self.world = world
        self.profile = profile
        self._control = control

    # -- what the scenario is ------------------------------------------------

    @property
    def id(self) -> str:
        return str(self.scenario.id)

    @property
    def title(self) -> str:
        return str(self.scenario.title["en"])

    @property
    def expected_code(self) -> str:
        """The code the client must report under the active profile."""
        return str(self.scenario.code_for(self.profile))

    code = expected_code

    # -- how to reach it -----------------------------------------------------

    @property
    def facts(self) -> ClientFacts:
        """What a client needs to reach this world: the same value as ``mailfakes serve --json``."""
        return ClientFacts.of(self.scenario, self.world)

    @property
    def smart_host(self) -> str | None:
        """The connector's smart host: a name, an IP (connector set by address), or None (MX lookup)."""
        return self.facts.smart_host

    @property
    def mail_domain(self) -> str:
        return self.scenario.target.mail_domain

    @property
    def port(self) -> int:
        return self.world.port

    @property
    def dns_host(self) -> str:
        return self.world.dns_host

    @property
    def dns_port(self) -> int:
        return self.world.dns_port

    @property
    def ca_file(self) -> str:
        return str(self.world.ca_file)

    @property
    def hosts(self) -> dict[str, str]:
        return dict(self.world.hosts)

    @property
    def require_tls(self) -> bool:
        return self.scenario.target.require_tls

    @property
    def mail_from(self) -> str:
        return self.scenario.target.mail_from

    @property
    def rcpt_to(self) -> list[str]:
        return list(self.scenario.target.rcpt_to)

    @property
    def timeout(self) -> float | None:
        """The timeout (seconds) a slow scenario's client must be configured with
        (``[target] timeout``); None when the scenario leaves it to the test."""
        return self.scenario.target.timeout

    @property
    def crl_file(self) -> str | None:
        """The CA's CRL (PEM) when a certificate of the world is revoked, else None."""
        return self.facts.crl_file

    @property
    def trust_anchor_file(self) -> str | None:
        """DNSSEC: the DS and DNSKEY of the signed world's zone, else None."""
        return self.facts.trust_anchor_file

    @property
    def https_port(self) -> int | None:
        """Where MTA-STS policy hosts and HTTPS report receivers listen (443 in a namespace)."""
        return self.facts.https_port

    @property
    def auth_user(self) -> str | None:
        """The smart host's account (its ``auth`` key) when the client is given one, else None."""
        return self.facts.auth_user

    @property
    def auth_password(self) -> str | None:
        """That account's password, else None."""
        return self.facts.auth_password

    def address_of(self, name: str) -> str:
        return self.world.address_of(name)

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting the world's CA, checking host names."""
        return self.world.client_context()

    def info(self) -> dict[str, Any]:
        """The same facts as ``mailfakes serve --json``."""
        return self.facts.as_json()

    # -- what happened -------------------------------------------------------

    @property
    def transcript(self) -> list[Transcript]:
        """The SMTP sessions of this test, oldest first."""
        return self.world.sessions

    @property
    def messages(self) -> list[Message]:
        return self.world.messages

    @property
    def dns_queries(self) -> list[Any]:
        return self.world.dns_queries

    @property
    def attempts(self) -> list[Attempt]:
        """The delivery attempts the fakes saw in this test, with world times (see
        :func:`mailfakes.attempts.attempts_of`: a refused or unanswered SYN is seen only through the
        lookups before it)."""
        return self.world.attempts

    @property
    def bounces(self) -> list[Bounce]:
        """The non-delivery reports that reached the sender's domain (``sender_domain``) in this test."""
        return self.world.bounces

    def timeline(self) -> list[str]:
        """What the fakes saw, in lines: each attempt with its world time, then each bounce."""
        from .clock import format_duration

        lines = [a.describe() for a in self.attempts]
        for b in self.bounces:
            when = f"+{format_duration(b.at)}" if b.at is not None else "+?"
            lines.append(
                f"{when}: NDR to {', '.join(b.envelope_to) or '?'}: Action {b.action}, Status {b.status}, "
                f"{b.diagnostic_code}"
            )
        for mid, n in self.world.duplicates.items():
            lines.append(f"duplicate: {mid} arrived {n} times")
        return lines or ["(nothing: no lookup, no session, no bounce)"]

    def _fail_with_timeline(self, what: str) -> None:
        __tracebackhide__ = True
        self.world.wait_until(lambda: all(t.closed for t in self.world.sessions), 0.5)
        raise AssertionError(
            f"scenario {self.id} ({self.title}): {what}\nwhat the fakes saw:\n"
            + "\n".join("  " + line for line in self.timeline())
        )

    def assert_retried(self, *, at_least: int | None = None, at_most: int | None = None) -> None:
        """Assert the client tried (at least ``at_least``, at most ``at_most`` attempts, by default
        what the scenario's ``[queue]`` says); the first try counts as one."""
        __tracebackhide__ = True
        q = self.scenario.queue
        lo = at_least if at_least is not None else (q.at_least if q is not None else 2)
        hi = at_most if at_most is not None else (q.at_most if q is not None else None)
        n = len(self.attempts)
        if n < lo or (hi is not None and n > hi):
            span = f"at least {lo}" + (f" and at most {hi}" if hi is not None else "")
            self._fail_with_timeline(f"expected {span} attempts, the fakes saw {n}")

    def assert_delivered_once(self) -> None:
        """Assert the message reached the target exactly once (no loss, no duplicate)."""
        __tracebackhide__ = True
        kept = self.world.deliveries
        if len(kept) != 1:
            what = "never" if not kept else f"{len(kept)} times"
            cut = any(not m.replied for m in kept)
            extra = (
                " (the server kept a copy before a cut that came after the final dot: a client that "
                "does not deduplicate sends it again)"
                if len(kept) > 1 and cut
                else ""
            )
            self._fail_with_timeline(f"expected the message delivered once, it arrived {what}{extra}")

    def _reports(self) -> tuple[list[Bounce], list[Bounce]]:
        """The final reports (``Action: failed``) and the others (``delayed`` warnings, ...)."""
        found = self.bounces
        return [b for b in found if b.action == "failed"], [b for b in found if b.action != "failed"]

    def assert_bounced(
        self,
        *,
        status: str | None = None,
        last_error: str | None = None,
        after: str | float | None = None,
        before: str | float | None = None,
    ) -> None:
        """Assert one non-delivery report reached the sender's domain: an RFC 3464 DSN with
        ``Action: failed`` and an empty envelope sender (a ``delayed`` warning is no bounce, and
        may come before it). ``status``: its Status field; ``last_error``: a code its
        Diagnostic-Code must carry (the last attempt's error); ``after`` / ``before``: durations
        (``"23h"``, seconds) of world time from the first attempt the fakes saw, between which it
        must arrive: the client gave up on time, neither too soon nor too late."""
        __tracebackhide__ = True
        self.world.wait_until(lambda: bool(self._reports()[0]), 0.5)
        failed, others = self._reports()
        if not failed:
            also = (
                f" ({len(others)} other report(s): {', '.join(str(b.action) for b in others)})"
                if others
                else ""
            )
            self._fail_with_timeline("expected a non-delivery report to the sender, none arrived" + also)
        problems = []
        for b in failed:
            if b.envelope_from:
                problems.append(f"its envelope sender is {b.envelope_from!r}, not empty (RFC 3464)")
            if status is not None and b.status != status:
                problems.append(f"its Status is {b.status}, not {status}")
            if last_error is not None and not _carries_code(b.diagnostic_code or "", last_error):
                problems.append(f"its Diagnostic-Code ({b.diagnostic_code}) does not carry {last_error}")
        if len(failed) > 1:
            problems.append(f"{len(failed)} reports arrived, not one")
        window = [_seconds(after, "after"), _seconds(before, "before")]
        if window != [None, None]:
            first = self.attempts[0].at if self.attempts else 0.0
            when = failed[0].at
            lo, hi = window
            if when is None:
                problems.append("its arrival time is unknown")
            elif (lo is not None and when - first < lo) or (hi is not None and when - first > hi):
                from .clock import format_duration

                bounds = [f"after {format_duration(lo)}"] if lo is not None else []
                bounds += [f"before {format_duration(hi)}"] if hi is not None else []
                span = " and ".join(bounds)
                problems.append(
                    f"it arrived {format_duration(when - first)} after the first attempt, expected {span}"
                )
        if problems:
            self._fail_with_timeline(
                "the non-delivery report is wrong: " + "; ".join(dict.fromkeys(problems))
            )

    def assert_not_bounced(self) -> None:
        """Assert no non-delivery report (``Action: failed``) reached the sender's domain."""
        __tracebackhide__ = True
        failed, _ = self._reports()
        if failed:
            self._fail_with_timeline(f"expected no non-delivery report, {len(failed)} arrived")

    @property
    def tls_reports(self) -> list[TlsReport]:
        """The TLS reports (RFC 8460) the world's reporting addresses received."""
        return self.world.tls_reports

    def assert_tls_reported(
        self, *, policy: str | None = None, result: str | None = None, timeout: float = 5.0
    ) -> None:
        """Assert the client sent the domain a TLS report (RFC 8460) that names the policy type
        (``tlsa``, ``sts``) and the failure's result type (``certificate-expired``...), or, for a
        session that succeeded, no failure; defaults from the scenario's ``[tls_report]``."""
        __tracebackhide__ = True
        expected = self.scenario.tls_report
        if expected is None and policy is None:
            raise FakesError(f"scenario {self.id} has no [tls_report]: say which policy= to expect")
        want_policy = policy or (expected.policy if expected is not None else "")
        want_result = result if result is not None else (expected.result if expected is not None else None)
        domain = expected.domain if expected is not None else self.mail_domain
        self.world.wait_until(lambda: any(domain in r.domains for r in self.world.tls_reports), timeout)
        reports = [r for r in self.world.tls_reports if domain in r.domains]
        if not reports:
            self._fail_with_timeline(f"expected a TLS report for {domain}; none arrived")
        problems = []
        for r in reports:
            results = r.results
            if want_policy not in r.policy_types:
                problems.append(f"it names policy {', '.join(r.policy_types)}, expected {want_policy}")
            elif want_result is None and results:
                problems.append(f"it reports failures {results}, expected a successful session only")
            elif want_result is not None and want_result not in results:
                problems.append(f"it reports {results or 'no failure'}, expected {want_result}")
            else:
                return
        self._fail_with_timeline("the TLS report is wrong: " + "; ".join(dict.fromkeys(problems)))

    def deliver(self, **options: Any) -> DeliveryReport:
        """Run the reference delivery client against this scenario.

        A scenario that declares its client's timeout (``[target] timeout``: a slow server) is
        run with it, over any ``timeout`` given here: its verdict depends on it.
        """
        from .client import deliver_scenario

        options.setdefault("profile", self.profile)
        return deliver_scenario(self.scenario, self.world, **options)

    def assert_reported(self, report: object, *, profile: str | None = None) -> None:
        """Assert that ``report`` carries the expected code, for the scenario's reason.

        The code is found by :func:`mailfakes.codes.find_code`. A right code then
        fails when the fakes' witness (:func:`mailfakes.witness.observe`) saw the
        client stop before the faulty step or fail for another reason, and it
        is void (and fails) when this test's control, the healthy baseline,
        failed.
        """
        from .witness import observe

        __tracebackhide__ = True  # the user's test is the place to look, not this frame
        profile = profile or self.profile
        expected = str(self.scenario.code_for(profile))
        found = find_code(report, profile)
        if found != expected:
            raise AssertionError(self._mismatch(report, expected, found, profile))
        testimony = observe(self.scenario, self.world)
        control = self._control() if self._control is not None and not self.scenario.is_success else None
        if testimony.ok and (control is None or control.passed):
            return
        head = f"scenario {self.id} ({self.title}): the client reported {expected}, the expected code"
        lines = []
        if not testimony.ok:
            lines.append(f"{head}, but for the wrong reason: {testimony.reason()}")
        if control is not None and not control.passed:
            lines.append(
                f"{head}, but the verdict is void: the client also fails the healthy baseline "
                f"({control.nodeid}: {control.summary}), so its failure reports prove nothing. Make it "
                f"deliver through {CONTROL} first (or mark the test control=False to judge without it)."
            )
        lines += ["what the fakes witnessed:", *("  " + e for e in testimony.lines())]
        tail = self._tail()
        if tail:
            lines += ["what the fakes saw (last lines):", *("  " + t for t in tail)]
        raise AssertionError("\n".join(lines))

    def _mismatch(self, report: object, expected: str, found: str | None, profile: str) -> str:
        shown = repr(report) if isinstance(report, BaseException) else str(report)
        if len(shown) > 300:
            shown = shown[:300] + "..."
        expected_title = title(expected) or self.title
        lines = [
            f"scenario {self.id} ({self.title}): expected {expected} {expected_title} "
            f"under profile {profile},",
            f"found {found or 'no code'} in: {shown}",
        ]
        tail = self._tail()
        if tail:
            lines += ["what the fakes saw (last lines):", *("  " + t for t in tail)]
        return "\n".join(lines)

    def _tail(self, n: int = 12) -> list[str]:
        # The server may still be reading the client's last words (a TLS
        # alert, a close): give it a moment so the tail is complete.
        self.world.wait_until(lambda: all(t.ended_by for t in self.world.sessions), 0.5)
        out = [f"DNS {q.transport} {q.qtype} {q.name} -> {q.rcode}" for q in self.world.dns_queries[-4:]]
        for t in self.world.sessions[-2:]:
            out += [f"{t.host} #{t.session_id}: {line}" for line in t.tail(n).splitlines()]
            out.append(f"{t.host} #{t.session_id}: (ended by {t.ended_by})")
        return out[-n:]

    def __repr__(self) -> str:
        return f"<MailScenario {self.id} expects {self.expected_code} ({self.profile})>"


def _scenario_param(param: object, request: pytest.FixtureRequest) -> Scenario:
    """The scenario a ``mail_scenario`` parameter names, or a one-line failure of this test."""
    from . import catalogue as scenarios

    __tracebackhide__ = True
    if param is None:
        raise pytest.UsageError(
            "mail_scenario needs scenarios: mark the test with @pytest.mark.mail_scenarios(...) "
            "or parametrize 'mail_scenario' indirectly with scenario ids, .toml paths or dicts"
        )
    if isinstance(param, MarkerError):
        pytest.fail(str(param), pytrace=False)
    if isinstance(param, scenarios.Scenario):
        return param
    problem = f"{type(param).__name__} is not a scenario"
    if isinstance(param, (str, Mapping)):
        try:
            found = _one_arg(param, request.path.parent, request.config.rootpath)
        except MarkerError as exc:
            problem = str(exc)
        else:
            if len(found) == 1:
                return scenarios.get(found[0]) if isinstance(found[0], str) else found[0]
            problem = f"names {len(found)} scenarios; a parameter of mail_scenario names one"
    # Outside the except block: the one line, without the chained exception under it.
    pytest.fail(f"mail_scenario parameter {_param_id(param)!r}: {problem}", pytrace=False)


def _carries_code(text: str, code: str) -> bool:
    """Whether ``text`` holds ``code`` as a code of its own (4.4.3 is not in 4.4.312 nor 127.4.4.3)."""
    import re

    return re.search(rf"(?<![\d.]){re.escape(code)}(?![\d.])", text) is not None


def _seconds(value: str | float | None, name: str) -> float | None:
    from .clock import DURATION_RULE, parse_duration

    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds is None:
        raise ValueError(f"{name}={value!r}: expected {DURATION_RULE}")
    return seconds


def _hour(config: pytest.Config) -> float | None:
    from .clock import DURATION_RULE, parse_duration

    text = config.getoption("--mail-hour")
    if text is None:
        return None
    value = parse_duration(text)
    if value is None or value <= 0:
        raise pytest.UsageError(f"--mail-hour {text!r}: expected {DURATION_RULE}, more than 0")
    return value


@pytest.fixture
def mail_scenario(request: pytest.FixtureRequest, mail_runtime: MailRuntime) -> Iterator[MailScenario]:
    """A running scenario: parametrized by ``@pytest.mark.mail_scenarios`` or indirectly.

    A parameter is a catalogue id, a path to a ``.toml`` file of yours, a dict
    with the keys of a scenario file (see :func:`mailfakes.catalogue.from_dict`)
    or a Scenario::

        @pytest.mark.mail_scenarios("tls-cert-*", "cases/relay-off.toml", {"id": "mine", ...})
        def test_reports(mail_scenario): ...
    """
    scenario = _scenario_param(getattr(request, "param", None), request)
    world = mail_runtime.world_for(scenario, _hour(request.config))
    world.reset()
    node = request.node
    yield MailScenario(
        scenario, world, request.config.getoption("--mail-profile"), control=lambda: _control_for(node)
    )
    _check_errors(world, mail_runtime.runtime)


@pytest.fixture
def mail_world(request: pytest.FixtureRequest, mail_runtime: MailRuntime) -> Iterator[Callable[..., World]]:
    """Start worlds for this test: from a world spec, a scenario id, a ``.toml`` path or a Scenario.

    ``mail_world({"hosts": {...}})``, ``mail_world("tcp-refused-firewall")``,
    ``mail_world("cases/relay-off.toml")`` (next to the test file, else under
    the rootdir). Each call returns a fresh running :class:`mailfakes.World` on
    the session's runtime; all are stopped after the test, and errors inside
    them fail it.
    """
    from . import catalogue as scenarios

    made: list[World] = []

    def start(spec: str | Mapping[str, Any] | Scenario | Any, **options: Any) -> World:
        __tracebackhide__ = True
        if isinstance(spec, str):
            problem = None
            try:
                if spec.endswith(".toml"):
                    found = _load_path(spec, request.path.parent, request.config.rootpath)
                    if len(found) != 1:
                        raise MarkerError(f"names {len(found)} scenario files; mail_world takes one")
                    spec = found[0].world
                else:
                    spec = scenarios.get(spec).world
            except (MarkerError, LookupError) as exc:
                problem = str(exc)
            if problem is not None:  # outside the except block: one line, no chained exception
                pytest.fail(f"mail_world({spec!r}): {problem}", pytrace=False)
        elif isinstance(spec, scenarios.Scenario) or (hasattr(spec, "world") and hasattr(spec, "target")):
            spec = spec.world
        world = mail_runtime.new_world(spec, **options)
        made.append(world)
        return world

    yield start
    try:
        for world in made:
            _check_errors(world, mail_runtime.runtime)
    finally:
        for world in made:
            mail_runtime.forget_world(world)
