"""``mailfakes check``: run any delivery client against the catalogue and grade it.

For each scenario: serve it, run the user's command with the scenario's
facts substituted for placeholders (and in ``MAILFAKES_*`` variables), read
the code the client reported (the first enhanced status code in its output,
a custom regex, or a reader for a known client), and compare it with the
scenario's expected code under the chosen profile, then hear the fakes'
witness (:mod:`mailfakes.witness`): a right code for the wrong reason fails.
The healthy baseline runs as a control (:func:`with_control`); when the
client fails it, its passes on failure scenarios are void
(:func:`apply_control`). The results make a matrix, a JSON report and a
JUnit XML file; a void cell is neither a pass nor a fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from .codes import CONTROL_SCENARIO, code_for, first_enhanced_code
from .facts import ClientFacts
from .readers import READERS
from .witness import observe

if TYPE_CHECKING:
    from .catalogue import Scenario
    from .world import World

PLACEHOLDERS = (
    "smart_host",
    "mail_domain",
    "port",
    "ip",
    "dns_host",
    "dns_port",
    "ca_file",
    "mail_from",
    "rcpt_to",
    "timeout",
    "crl_file",
    "trust_anchor_file",
    "https_port",
    "auth_user",
    "auth_password",
    "implicit_tls",
)
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
OUTPUT_KEPT = 4000  # characters of stdout/stderr kept per scenario in reports
CONTENT_KEPT = 65536  # characters of each received message's content kept in reports
CONTROL = CONTROL_SCENARIO
VOID_REASON = "the client also fails the healthy baseline, so its failure reports prove nothing"


class CheckError(Exception):
    """A configuration mistake (bad regex, missing command): exit status 2."""


@dataclass
class CheckResult:
    scenario: str
    title: str
    expected: str
    reported: str | None
    verdict: str  # "pass", "fail", "void"
    seconds: float
    exit_status: int | None
    command: list[str]
    how: str  # how the code was read
    stdout: str = ""
    stderr: str = ""
    facts: dict[str, str] = field(default_factory=dict)
    # Why the verdict is not a pass beyond the code: the witness's contradiction, or the void.
    reason: str = ""
    witness: list[dict[str, Any]] = field(default_factory=list)
    expects_failure: bool = True
    # The messages the world's hosts kept while the client ran (a queue's non-delivery report too).
    received: list[dict[str, Any]] = field(default_factory=list)


def with_control(chosen: Sequence[Scenario], *, control: bool = True) -> list[Scenario]:
    """The selection plus the healthy baseline, when it holds a failure scenario and not the baseline."""
    from . import catalogue as scenarios

    out = list(chosen)
    if control and any(not s.is_success for s in out) and all(s.id != CONTROL for s in out):
        out.append(scenarios.get(CONTROL))
    return out


def apply_control(results: list[CheckResult]) -> int:
    """Void the passes on failure scenarios when the control did not pass; returns how many."""
    control = next((r for r in results if r.scenario == CONTROL), None)
    if control is None or control.verdict == "pass":
        return 0
    said = f"reported {control.reported or 'nothing'} where {control.expected} was expected"
    if control.reason:
        said += f"; {control.reason}"
    voided = 0
    for r in results:
        if r.expects_failure and r.verdict == "pass":
            r.verdict = "void"
            r.reason = f"{VOID_REASON} ({CONTROL}: {said})"
            voided += 1
    return voided


def substitute(command: Sequence[str], values: dict[str, str]) -> list[str]:
    """Replace ``{name}`` placeholders; other braces are left alone."""
    return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in command]


def environment(values: dict[str, str], scenario: Scenario, expected: str) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in values.items():
        env[f"MAILFAKES_{key.upper()}"] = value
    env["MAILFAKES_RCPT_TO_ALL"] = ",".join(scenario.target.rcpt_to)
    env["MAILFAKES_SCENARIO"] = scenario.id
    env["MAILFAKES_REQUIRE_TLS"] = "1" if scenario.target.require_tls else "0"
    return env


Read = Callable[[int, str, str], tuple[str | None, str, str | None]]


def make_reader(reader: str | None, code_regex: str | None, profile: str) -> Read:
    """A function (status, stdout, stderr) -> (code or None, how it was read, failure class).

    The class is the code under ``eop``, whose codes name the failure classes
    (4.4.315 timed out, 4.4.316 refused, ...): only a reader can tell it, and
    with it a timeout reported where a refusal is expected fails even under a
    profile that gives both one code (Postfix's 4.4.1). Without a reader it is None.
    """
    if reader is not None and code_regex is not None:
        raise CheckError("choose --reader or --code-regex, not both")
    if reader is not None:
        if reader not in READERS:
            raise CheckError(f"unknown reader {reader!r}; readers: {', '.join(READERS)}")
        read = READERS[reader]

        def by_reader(status: int, out: str, err: str) -> tuple[str | None, str, str | None]:
            failure = read(status, out, err)
            if failure is None:
                return None, f"{reader} reader: exit {status} not understood", None
            how = f"{reader} reader: {failure.cls}/{failure.detail or '-'}"
            return code_for(failure, profile), how, code_for(failure, "eop")

        return by_reader
    if code_regex is not None:
        try:
            pattern = re.compile(code_regex, re.M)
        except re.error as exc:
            raise CheckError(f"bad --code-regex {code_regex!r}: {exc}") from None

        def by_regex(status: int, out: str, err: str) -> tuple[str | None, str, str | None]:
            m = pattern.search(out) or pattern.search(err)
            if m is None:
                return None, "--code-regex matched nothing", None
            found = (m.group(1) if m.groups() else m.group(0)) or ""
            if not found:
                return None, "--code-regex matched, but its group captured nothing", None
            return first_enhanced_code(found) or found, "--code-regex", None

        return by_regex

    def first_code(status: int, out: str, err: str) -> tuple[str | None, str, str | None]:
        code = first_enhanced_code(out) or first_enhanced_code(err)
        return code, "first enhanced code in the output" if code else "no enhanced code in the output", None

    return first_code


def run_one(
    scenario: Scenario,
    world: World,
    command: Sequence[str],
    *,
    profile: str,
    timeout: float,
    command_timeout: float,
    read: Read,
    stop: threading.Event | None = None,
) -> CheckResult:
    values = ClientFacts.of(scenario, world).placeholders(timeout)
    argv = substitute(command, values)
    expected = scenario.code_for(profile)
    started = time.monotonic()
    from .netns import die_with_parent  # here: check.py is otherwise free of the netns module

    try:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=environment(values, scenario, expected),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: a timeout kills what it started too
            preexec_fn=die_with_parent(),  # and a kill -9 of mailfakes kills the client
        )
    except FileNotFoundError:
        raise CheckError(f"command not found: {argv[0]}") from None
    except PermissionError:
        raise CheckError(f"command not executable: {argv[0]}") from None
    status: int | None
    while True:
        try:
            out, err = proc.communicate(timeout=0.2)
            status = proc.returncode
            code, how, klass = read(status, out, err)
            break
        except subprocess.TimeoutExpired:
            over = time.monotonic() - started > command_timeout
            if not over and not (stop is not None and stop.is_set()):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            status, code, klass = None, None, None
            how = f"the command ran over {command_timeout:g} s and was killed" if over else "interrupted"
            break
    seconds = time.monotonic() - started
    testimony = observe(scenario, world)
    wrong_class = code == expected and klass is not None and klass != scenario.code_for("eop")
    right = code == expected and testimony.ok and not wrong_class
    return CheckResult(
        scenario=scenario.id,
        title=scenario.title["en"],
        expected=expected,
        reported=code,
        verdict="pass" if right else "fail",
        seconds=seconds,
        exit_status=status,
        command=argv,
        how=how,
        stdout=out[-OUTPUT_KEPT:],
        stderr=err[-OUTPUT_KEPT:],
        facts=values,
        reason=(
            f"right code, wrong failure: the client's report reads as {klass}, "
            f"not {scenario.code_for('eop')} ({how})"
            if wrong_class
            else ""
            if testimony.ok
            else f"right code, wrong reason: {testimony.reason()}"
        ),
        witness=testimony.as_dicts(),
        expects_failure=not scenario.is_success,
        received=received(world),
    )


def received(world: World) -> list[dict[str, Any]]:
    """What the world's hosts kept, oldest first, for the JSON report.

    ``content`` is the message as text (bytes that are no UTF-8 replaced),
    at most :data:`CONTENT_KEPT` characters; ``size`` is its length in bytes.
    """
    return [
        {
            "host": m.host,
            "session_id": m.session_id,
            "mail_from": m.mail_from,
            "rcpt_tos": list(m.rcpt_tos),
            "tls_version": m.tls_version,
            "replied": m.replied,
            "size": len(m.content),
            "content": m.content.decode("utf-8", "replace")[:CONTENT_KEPT],
        }
        for m in world.messages
    ]


_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(text: str) -> str:
    """What XML 1.0 can carry: a client's colours and control bytes are dropped."""
    return _XML_FORBIDDEN.sub("", text)


_SHOWN = {"pass": "PASS", "fail": "FAIL", "void": "VOID"}


def _count(results: list[CheckResult]) -> tuple[int, int, int]:
    passed = sum(r.verdict == "pass" for r in results)
    void = sum(r.verdict == "void" for r in results)
    return passed, len(results) - passed - void, void


def summary_line(results: list[CheckResult]) -> str:
    passed, failed, void = _count(results)
    return f"{passed} passed, {failed} failed" + (f", {void} void" if void else "")


def matrix(results: list[CheckResult]) -> str:
    """The verdict table: scenario, expected, reported, verdict (PASS, FAIL, VOID), time."""
    width = max([len("scenario"), *(len(r.scenario) for r in results)])
    lines = [f"{'scenario':<{width}}  {'expected':<8}  {'reported':<8}  verdict  time"]
    lines.append("-" * len(lines[0]))
    for r in results:
        lines.append(
            f"{r.scenario:<{width}}  {r.expected:<8}  {r.reported or '-':<8}  "
            f"{_SHOWN.get(r.verdict, r.verdict.upper()):<7}  {r.seconds:5.2f}s"
        )
    lines.append("")
    lines.append(summary_line(results))
    return "\n".join(lines) + "\n"


def explain_failures(results: list[CheckResult], out: TextIO) -> None:
    for r in results:
        if r.verdict == "pass":
            continue
        out.write(
            f"\n{r.scenario}: {'VOID: ' if r.verdict == 'void' else ''}expected {r.expected}, "
            f"reported {r.reported or 'nothing'} ({r.how}; exit {r.exit_status})\n"
        )
        if r.reason:
            out.write(f"  {r.reason}\n")
        out.write(f"  command: {' '.join(r.command)}\n")
        tail = (r.stdout.strip() + "\n" + r.stderr.strip()).strip().splitlines()[-6:]
        for line in tail:
            out.write(f"  | {line[:200]}\n")


def json_report(results: list[CheckResult], command: Sequence[str], profile: str) -> str:
    passed, failed, void = _count(results)
    return json.dumps(
        {
            "command": list(command),
            "profile": profile,
            "passed": passed,
            "failed": failed,
            "void": void,
            "results": [asdict(r) for r in results],
        },
        indent=2,
        ensure_ascii=False,
    )


def junit_xml(results: list[CheckResult], command: Sequence[str], profile: str) -> str:
    _, failed, void = _count(results)
    suite = ET.Element(
        "testsuite",
        name="mailfakes check",
        tests=str(len(results)),
        failures=str(failed),
        errors=str(void),
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="command", value=" ".join(command))
    ET.SubElement(props, "property", name="profile", value=profile)
    for r in results:
        case = ET.SubElement(
            suite, "testcase", classname="mailfakes.check", name=r.scenario, time=f"{r.seconds:.3f}"
        )
        detail = f"{r.title}\n{r.how}; exit status {r.exit_status}\ncommand: {' '.join(r.command)}"
        if r.verdict == "void":
            # An error, not a failure nor a skip: the verdict could not be earned, and CI must not go green.
            error = ET.SubElement(case, "error", message=f"void: {r.reason}", type="VoidVerdict")
            error.text = detail
        elif r.verdict != "pass":
            wrong_code = r.reported != r.expected
            failure = ET.SubElement(
                case,
                "failure",
                message=f"expected {r.expected}, reported {r.reported or 'nothing'}"
                + ("" if wrong_code else f": {r.reason}"),
                type="WrongCode" if wrong_code else "WrongReason",
            )
            failure.text = detail
        ET.SubElement(case, "system-out").text = _xml_text(r.stdout)
        ET.SubElement(case, "system-err").text = _xml_text(r.stderr)
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
