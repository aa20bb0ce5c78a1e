"""The reference connector's queue: retry, recover, expire, and send the non-delivery report.

An outbound connector that cannot deliver keeps the message and tries again
on a schedule; a permanent error (a 5.x.x code under the profile) bounces it
at once; a message still queued when its lifetime ends expires. Either way
the sender gets a non-delivery report: an RFC 3464 DSN (:mod:`mailfakes.dsn`)
delivered over SMTP, with an empty envelope sender, to the MX of the
sender's domain, which a world can hold (``sender_domain``).

The default schedule is Exchange-like: retries 5, 10, 15 and 30 minutes
apart, then every hour, for 24 hours (Exchange Online keeps a message 24
hours; its expiry NDRs show some twenty-odd attempts). Each attempt is a
full delivery by :mod:`mailfakes.client`, over real sockets; on a world's
virtual clock the waits between attempts take no time, so 24 hours pass in
milliseconds.

The NDR under each profile:

- ``eop`` and ``eop-observed``: on expiry ``Status: 4.4.7`` and a diagnostic
  ``550 4.4.7 QUEUE.Expired; message expired`` followed by the last error,
  as Exchange Online writes it (Microsoft, "Email non-delivery reports and
  SMTP errors in Exchange Online": 4.4.7 Message expired; "Fix error code
  550 4.4.7 in Exchange Online"); a bounce carries the server's code;
- ``rfc3463``: on expiry ``Status: 4.4.7`` (RFC 3463 3.5, delivery time
  expired), the diagnostic is the last error;
- ``postfix``: the status of the last attempt (Postfix keeps it, with
  ``Action: failed``), the diagnostic is the last error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .client import DeliveryReport, deliver, deliver_scenario
from .clock import format_duration, parse_duration
from .dsn import Failed, compose

if TYPE_CHECKING:
    from .catalogue import Scenario
    from .world import World

DAY = 86400.0
EXCHANGE_RETRY = (300.0, 600.0, 900.0, 1800.0, 3600.0)  # then the last one, again and again
EXPIRED_STATUS = "4.4.7"
EOP_EXPIRED = "550 4.4.7 QUEUE.Expired; message expired"
REPORTING_MTA = "connector.mailfakes.test"
MIN_RETRY = 1.0  # world seconds: a queue that retries faster than that hammers the server
MAX_ATTEMPTS = 10_000  # a policy that would make more within its lifetime is refused


def parse_retry(text: str) -> tuple[float, ...]:
    """``"5m,10m,1h"`` -> (300.0, 600.0, 3600.0); the last interval repeats. ValueError when bad."""
    out = []
    for part in text.split(","):
        seconds = parse_duration(part)
        if seconds is None or seconds <= 0:
            raise ValueError(f"{part.strip()!r} is not a duration like 5m, 1h or 90s")
        if seconds < MIN_RETRY:
            raise ValueError(f"{part.strip()!r} is shorter than {MIN_RETRY:g} s between attempts")
        out.append(seconds)
    if not out:
        raise ValueError("at least one interval")
    return tuple(out)


@dataclass(frozen=True)
class QueuePolicy:
    """How long a message stays queued (``lifetime``) and how long to wait between tries (``retry``:
    the intervals in order, the last one repeated). World seconds."""

    lifetime: float = DAY
    retry: tuple[float, ...] = EXCHANGE_RETRY

    def __post_init__(self) -> None:
        if not self.retry or min(self.retry) < MIN_RETRY:
            raise ValueError(f"retry intervals of at least {MIN_RETRY:g} s, not {self.retry!r}")
        if self.lifetime <= 0:
            raise ValueError(f"a lifetime of more than 0 s, not {self.lifetime!r}")
        if self.lifetime / self.retry[-1] > MAX_ATTEMPTS:
            raise ValueError(
                f"a retry every {format_duration(self.retry[-1])} for {format_duration(self.lifetime)} makes "
                f"more than {MAX_ATTEMPTS} attempts: retry less often, or shorten the lifetime"
            )

    def next_after(self, tries: int) -> float:
        """The wait after the ``tries``-th attempt (1-based)."""
        return self.retry[min(tries, len(self.retry)) - 1]


@dataclass
class QueueAttempt:
    """One attempt of the queue: when (world seconds since the first), the code, the report line."""

    at: float
    code: str
    line: str
    report: DeliveryReport

    def as_dict(self) -> dict[str, Any]:
        return {"at": round(self.at, 3), "code": self.code, "line": self.line}


@dataclass
class Ndr:
    """The non-delivery report the queue sent: to whom, its Status, its Diagnostic-Code, the last
    error's code, and whether the sender domain's MX took it (``sent``) or why not."""

    to: str
    status: str
    diagnostic: str
    last_error: str
    sent: bool = False
    send_report: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "to": self.to,
            "status": self.status,
            "diagnostic": self.diagnostic,
            "last_error": self.last_error,
            "sent": self.sent,
        }


@dataclass
class QueueRun:
    """What the queue did with one message."""

    outcome: str  # delivered, bounced, expired, or stopped (interrupted: no NDR was sent)
    attempts: list[QueueAttempt]
    ndr: Ndr | None
    profile: str
    policy: QueuePolicy
    scenario: str | None = None
    tls_reports: list[str] = field(default_factory=list)  # one line per TLS report sent at the end

    @property
    def last_error(self) -> str | None:
        failed = [a for a in self.attempts if not a.report.delivered]
        return failed[-1].code if failed else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "outcome": self.outcome,
            "profile": self.profile,
            "lifetime": self.policy.lifetime,
            "attempts": [a.as_dict() for a in self.attempts],
            "ndr": self.ndr.as_dict() if self.ndr is not None else None,
            "tls_reports": list(self.tls_reports),
        }

    def timeline(self) -> list[str]:
        """The run in lines for people: each attempt with its time and code, then the end."""
        out = [f"+{format_duration(a.at)}  {a.code:<8} {a.line}" for a in self.attempts]
        if self.outcome == "stopped":
            out.append(f"stopped after {len(self.attempts)} attempt(s): no outcome, no NDR")
        elif self.outcome == "delivered":
            out.append(f"delivered after {len(self.attempts)} attempt(s)")
        elif self.outcome == "bounced":
            out.append("bounced at once: a permanent error is not retried")
        else:
            lifetime = format_duration(self.policy.lifetime)
            out.append(f"expired after {lifetime} ({len(self.attempts)} attempts)")
        if self.ndr is not None:
            ndr = self.ndr
            state = "delivered to the sender's domain" if ndr.sent else f"not delivered: {ndr.send_report}"
            out.append(f"NDR to {self.ndr.to}: Status {self.ndr.status}, {self.ndr.diagnostic} ({state})")
        return out


def permanent(report: DeliveryReport) -> bool:
    """Whether a failed attempt is final: its code under the profile is of class 5."""
    return not report.delivered and report.code.startswith("5.")


def ndr_for(run_outcome: str, last: DeliveryReport, profile: str, sender: str) -> Ndr:
    """The NDR's fields for the last attempt's report, under ``profile`` (see the module's text)."""
    line = last.line()
    if run_outcome == "bounced":
        status = last.code
        diagnostic = f"smtp; {line}"
    elif profile in ("eop", "eop-observed"):
        status = EXPIRED_STATUS
        diagnostic = f"smtp; {EOP_EXPIRED} -> {line}"
    elif profile == "rfc3463":
        status = EXPIRED_STATUS
        diagnostic = f"smtp; {line}"
    else:  # postfix: the last status, kept; its own diagnostic type when no server refused it
        status = last.code
        refused = last.reply[:1] in ("4", "5")  # the server's own reply said no
        diagnostic = f"smtp; {line}" if refused else f"X-Postfix; {line}"
    return Ndr(to=sender, status=status, diagnostic=diagnostic, last_error=last.code)


Attempter = Callable[[], DeliveryReport]


def run(
    attempt: Attempter,
    *,
    profile: str,
    sender: str,
    recipients: tuple[str, ...] | list[str],
    wait_until: Callable[[float], bool],
    policy: QueuePolicy | None = None,
    send_ndr: Callable[[bytes], DeliveryReport] | None = None,
    original: bytes = b"",
    remote_mta: str | None = None,
    now: Callable[[], float] | None = None,
) -> QueueRun:
    """Queue one message: try, wait, try again, until delivered, bounced or expired; then the NDR.

    ``attempt`` delivers once (a fresh connection each time); ``wait_until(t)`` waits until world
    time ``t`` (seconds since the first attempt) and returns False when the run must stop;
    ``send_ndr`` delivers the DSN's bytes to the sender's domain; ``now()`` (seconds since the first
    attempt) stamps each attempt with the time it really began, else with the time it was due.
    """
    policy = policy or QueuePolicy()
    attempts: list[QueueAttempt] = []
    at = 0.0
    outcome = "expired"
    while True:
        if not wait_until(at):
            outcome = "stopped"
            break
        began = now() if now is not None else at
        report = attempt()
        attempts.append(QueueAttempt(began, report.code, report.line(), report))
        if report.delivered:
            outcome = "delivered"
            break
        if permanent(report):
            outcome = "bounced"
            break
        following = at + policy.next_after(len(attempts))
        if following >= policy.lifetime:
            if not wait_until(policy.lifetime):
                outcome = "stopped"
            break
        at = following
    result = QueueRun(outcome, attempts, None, profile, policy)
    if outcome in ("delivered", "stopped") or not attempts:
        return result
    last = attempts[-1].report
    ndr = ndr_for(outcome, last, profile, sender)
    result.ndr = ndr
    if send_ndr is not None:
        text = (
            "Your message could not be delivered"
            + (": the receiving server refused it." if outcome == "bounced" else " before it expired.")
            + f" Last error: {last.line()}"
        )
        # Remote-MTA only when a server was reached (not for a lookup that failed).
        remote = remote_mta or (last.server if last.failure.cls != "dns" else None)
        ended = attempts[-1].at if outcome == "bounced" else policy.lifetime
        started = time.time()  # the NDR's dates: the world time that passed, on the wall clock
        dsn = compose(
            reporting_mta=REPORTING_MTA,
            sender=sender,
            recipients=[Failed(r, ndr.status, ndr.diagnostic, remote) for r in recipients],
            original=original,
            text=text,
            arrival=started - ended,
            last_attempt=started - ended + attempts[-1].at,
            date=started,
        )
        sent = send_ndr(dsn)
        ndr.sent = sent.delivered
        ndr.send_report = sent.line()
    return result


def run_scenario(
    scenario: Scenario,
    world: World,
    *,
    profile: str = "eop",
    policy: QueuePolicy | None = None,
    timeout: float = 2.0,
    stop: threading.Event | None = None,
    require_tls: bool | None = None,
) -> QueueRun:
    """Queue the scenario's message in its served ``world``. On a virtual clock the waits are
    instant (the world's clock is moved); on a real one they are real (as scaled by its hour)."""
    from .client import build_message

    t = scenario.target
    message = build_message(t.mail_from, list(t.rcpt_to))
    from .tlsrpt import ReportBook

    # One record of TLS sessions over the whole run: its report goes out once, at the end (RFC 8460 4.1).
    book = ReportBook()
    options: dict[str, Any] = {
        "profile": profile,
        "timeout": timeout,
        "message": message,
        "reports": book,
        "tls_reports": False,
    }
    if require_tls is not None:
        options["require_tls"] = require_tls
    stop = stop or threading.Event()
    origin = world.now
    import datetime as dt

    began = dt.datetime.now(dt.UTC)  # world time `origin`, as a report's period starts

    def wait_until(at: float) -> bool:
        if stop.is_set():
            return False
        if world.clock.virtual:
            world.advance_to(max(world.now, origin + at))
            return True
        while world.now < origin + at:
            delay = world.clock.real_delay(origin + at - world.now) or 0.0
            if stop.wait(min(max(delay, 0.001), 1.0)):
                return False
        return True

    def send_ndr(dsn: bytes) -> DeliveryReport:
        sender_domain = t.mail_from.rpartition("@")[2]
        return deliver(
            dns_host=world.dns_host,
            dns_port=world.dns_port,
            port=world.port,
            mail_domain=sender_domain,
            ca_file=str(world.ca_file),
            require_tls=True,
            mail_from="",
            rcpt_to=[t.mail_from],
            timeout=timeout,
            profile=profile,
            message=dsn,
        )

    result = run(
        lambda: deliver_scenario(scenario, world, **options),
        profile=profile,
        sender=t.mail_from,
        recipients=t.rcpt_to,
        wait_until=wait_until,
        policy=policy,
        send_ndr=send_ndr if world.sender_mx is not None else None,
        original=message,
        now=lambda: world.now - origin,
    )
    result.scenario = scenario.id
    if book.domains and any(r.domain == t.mail_domain for r in world.spec.tls_rpt) and not stop.is_set():
        from .client import DeliveryClient

        reporter = DeliveryClient(
            dns_host=world.dns_host,
            dns_port=world.dns_port,
            port=world.port,
            ca_file=str(world.ca_file),
            timeout=timeout,
            profile=profile,
            https_port=world.https_port or 443,
            reports=book,
        )
        # The report covers the run on the world's clock: from its first attempt to its end.
        span = dt.timedelta(seconds=max(world.now - origin, 1.0))
        result.tls_reports = reporter.send_tls_reports(start=began, end=began + span)
    return result
