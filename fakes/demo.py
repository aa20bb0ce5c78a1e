"""``mailfakes demo``: play scenarios for a room, in English or French.

For each scenario: its title and cause, the dialogue live as the reference
client meets the fault (DNS, TCP, SMTP both ways, TLS and the certificate
presented, the point where it breaks), the code the client reports in the
Exchange trace style, and how to fix it. Colour in a terminal, plain text
elsewhere; ``render_html`` turns the same results into one self-contained
page to share after a session.
"""

from __future__ import annotations

import html
import os
import queue
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, TextIO

from .client import DeliveryReport, deliver_scenario
from .codes import title as eop_title
from .faults import key
from .markdown import wire_summary

if TYPE_CHECKING:
    from .catalogue import Scenario
    from .events import Event
    from .runtime import Runtime
    from .world import World

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "cause": "Cause",
        "fix": "How to fix it",
        "dialogue": "What happens",
        "reported": "The client reports",
        "expected": "expected",
        "ok": "as expected",
        "diff": "NOT the expected code",
        "press": "Press Enter for the next scenario",
        "tour": "mailfakes demo",
        "certificate": "certificate presented",
        "issuer": "issued by",
        "valid": "valid",
        "server": "server",
        "scenario": "scenario",
        "wire": "The fakes",
    },
    "fr": {
        "cause": "Cause",
        "fix": "Comment corriger",
        "dialogue": "Ce qui se passe",
        "reported": "Le client signale",
        "expected": "attendu",
        "ok": "conforme",
        "diff": "PAS le code attendu",
        "press": "Appuyez sur Entrée pour le scénario suivant",
        "tour": "démonstration mailfakes",
        "certificate": "certificat présenté",
        "issuer": "émis par",
        "valid": "valide",
        "server": "serveur",
        "scenario": "scénario",
        "wire": "Les faux serveurs",
    },
}

# The short tour of ``make demo``: one scenario per code, then a delivery.
DEFAULT_TOUR = (
    "dns-nxdomain",
    "tcp-timeout-server-down",
    "tcp-refused-firewall",
    "tls-starttls-missing",
    "close-mid-data",
    "tls-cert-expired",
    "baseline-delivered",
)

# What a dialogue line is, by the prefix the client gives it.
KINDS = {"DNS: ": "dns", "S: ": "server", "C: ": "client", "*: ": "note"}
MARKS = {
    "dns": "DNS",
    "server": "S <",
    "client": "C >",
    "note": " * ",
    "tls": "TLS",
    "fault": " ! ",
    "cert": "CRT",
}


@dataclass
class DemoLine:
    kind: str  # dns, client, server, note, tls, cert, fault
    text: str


@dataclass
class DemoResult:
    scenario: Scenario
    lang: str
    lines: list[DemoLine] = field(default_factory=list)
    report: DeliveryReport | None = None

    @property
    def expected(self) -> str:
        return str(self.scenario.code_for(self.report.profile if self.report else "eop"))

    @property
    def reported(self) -> str:
        return self.report.code if self.report else "-"


class Style:
    """ANSI colour when writing to a terminal (and NO_COLOR is unset); nothing otherwise."""

    CODES: ClassVar[dict[str, str]] = {
        "bold": "1",
        "dim": "2",
        "red": "31",
        "green": "32",
        "yellow": "33",
        "blue": "34",
        "magenta": "35",
        "cyan": "36",
    }

    def __init__(self, out: TextIO, colour: bool | None = None) -> None:
        if colour is None:
            colour = out.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        self.colour = colour

    def __call__(self, text: str, *styles: str) -> str:
        if not self.colour or not styles:
            return text
        return f"\033[{';'.join(self.CODES[s] for s in styles)}m{text}\033[0m"


LINE_STYLES = {
    "dns": ("cyan",),
    "client": ("blue",),
    "server": ("magenta",),
    "note": ("dim",),
    "tls": ("yellow",),
    "cert": ("yellow",),
    "fault": ("red", "bold"),
}


def _kind_of(line: str) -> tuple[str, str]:
    for prefix, kind in KINDS.items():
        if line.startswith(prefix):
            text = line[len(prefix) :]
            if kind == "note" and ("TLS" in text or "certificate" in text):
                kind = "fault" if ("rejected" in text or "failed" in text) else "tls"
            elif kind == "note" and text.startswith("connecting"):
                kind = "note"
            return kind, text
    return "note", line


class Player:
    """Plays scenarios one after the other on one runtime and prints them."""

    def __init__(
        self,
        out: TextIO = sys.stdout,
        *,
        lang: str = "en",
        pace: float = 0.0,
        step: bool = False,
        timeout: float = 1.0,
        profile: str = "eop",
        colour: bool | None = None,
        wait_for_enter: Callable[[], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.out = out
        self.lang = lang
        self.labels = LABELS[lang]
        self.pace = pace
        self.step = step
        self.timeout = timeout
        self.profile = profile
        self.style = Style(out, colour)
        self.stop = stop or threading.Event()
        self.wait_for_enter = wait_for_enter or self._enter

    def w(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def play_all(self, scenarios: list[Scenario]) -> list[DemoResult]:
        from .runtime import Runtime

        results = []
        with Runtime() as runtime:
            for i, s in enumerate(scenarios, 1):
                if self.stop.is_set():
                    break
                if i > 1 and self.step:
                    self.w(self.style(f"[{self.labels['press']}]", "dim"))
                    self.wait_for_enter()
                    if self.stop.is_set():
                        break
                results.append(self.play(s, runtime, i, len(scenarios)))
        return results

    def play(self, scenario: Scenario, runtime: Runtime, index: int = 1, total: int = 1) -> DemoResult:
        from .world import World

        st, lab, lang = self.style, self.labels, self.lang
        code = scenario.expected_code
        heading = f" {index}/{total}  {scenario.id}  ·  {code} {eop_title(code, lang)}".rstrip() + " "
        self.w()
        self.w(st("━" * 3 + heading + "━" * max(3, 76 - len(heading)), "bold"))
        self.w(st(scenario.title[lang], "bold"))
        if scenario.cause[lang]:  # a user's own scenario may have no explanation
            self.w(st(f"{lab['cause']}:", "bold"))
            self.w(_wrap(scenario.cause[lang]))
        if lang == "en":  # the fault table's descriptions are in English
            self.w(st(f"{lab['wire']}:", "bold"))
            self.w(_wrap(wire_summary(scenario).replace("`", "")))
        self.w()
        self.w(st(f"{lab['dialogue']}:", "bold"))
        result = DemoResult(scenario, lang)
        world = World(scenario.world, runtime=runtime).start()
        lines: queue.Queue[DemoLine | None] = queue.Queue()
        seen_hosts: dict[str, str] = {ip: name for name, ip in world.hosts.items()}
        current = {"host": ""}

        def observe(line: str) -> None:
            kind, text = _kind_of(line)
            if kind == "note" and text.startswith("connecting to "):
                ip = text.split()[-1].rsplit(":", 1)[0]
                current["host"] = seen_hosts.get(ip, ip)
                kind = "note"
                text = f"TCP {text}" + (f" ({current['host']})" if current["host"] != ip else "")
            lines.put(DemoLine(kind, text))
            if kind == "server" and text.startswith("220") and "TLS" in text:
                cert = self._certificate(world, current["host"])
                if cert:
                    lines.put(DemoLine("cert", cert))

        def server_event(event: Event) -> None:
            if event.kind == "fault":
                lines.put(DemoLine("fault", f"{lab['server']}: {event.text}"))

        unsubscribe = world.events.subscribe(server_event)
        box: dict[str, DeliveryReport] = {}

        def run() -> None:
            try:
                box["report"] = deliver_scenario(
                    scenario, world, timeout=self.timeout, profile=self.profile, observer=observe
                )
            finally:
                lines.put(None)

        worker = threading.Thread(target=run, name="mailfakes-demo-client", daemon=True)
        worker.start()
        try:
            while True:
                try:
                    item = lines.get(timeout=0.2)
                except queue.Empty:
                    if self.stop.is_set():
                        break  # Ctrl-C: the client finishes within its own timeouts
                    continue
                if item is None:
                    break
                result.lines.append(item)
                self.w(
                    "  " + st(f"{MARKS.get(item.kind, '   ')}  {item.text}", *LINE_STYLES.get(item.kind, ()))
                )
                if self.pace and self.stop.wait(self.pace):  # pacing for a room, not synchronisation
                    break
            worker.join(10)
            # The server may still be recording the end of the session (a cut, an alert).
            world.wait_until(lambda: all(t.ended_by for t in world.sessions), 1.0)
            while not lines.empty():
                item = lines.get_nowait()
                if item is not None:
                    result.lines.append(item)
                    self.w(
                        "  "
                        + st(f"{MARKS.get(item.kind, '   ')}  {item.text}", *LINE_STYLES.get(item.kind, ()))
                    )
        finally:
            unsubscribe()
            world.stop()
        report = box.get("report")
        result.report = report
        self.w()
        if report is not None:
            ok = report.code == scenario.code_for(self.profile)
            verdict = st(lab["ok"], "green") if ok else st(lab["diff"], "red", "bold")
            self.w(st(f"{lab['reported']}:", "bold"))
            self.w("  " + st(report.line(), "bold", "green" if ok else "red"))
            self.w(f"  ({lab['expected']} {scenario.code_for(self.profile)}: {verdict})")
        if scenario.fix[lang]:
            self.w(st(f"{lab['fix']}:", "bold"))
            self.w(_wrap(scenario.fix[lang]))
        return result

    def _enter(self) -> None:
        """Wait for Enter on stdin, or for Ctrl-C (checked every 0.2 s)."""
        import select

        while not self.stop.is_set():
            try:
                ready, _, _ = select.select([sys.stdin], [], [], 0.2)
            except (OSError, ValueError):
                return
            if ready:
                sys.stdin.readline()
                return

    def _certificate(self, world: World, host: str) -> str:
        try:
            spec = world.spec.host(host)
            if spec.smtp.tls_offer != "current" or world.ca is None:
                return ""  # the server refuses the handshake before any certificate is sent
            info = world.ca.describe(host, spec.smtp.cert)
        except (KeyError, ValueError, AttributeError, RuntimeError):
            return ""
        lab = self.labels
        return (
            f"{lab['certificate']}: {info['subject']}, {lab['issuer']} {info['issuer']}, "
            f"{info['sans']}, {lab['valid']} {info['not_before'][:10]} → {info['not_after'][:10]}"
            + (f" ({key('cert').effect(spec.smtp.cert)})" if self.lang == "en" else "")
        )


def _wrap(text: str) -> str:
    return textwrap.fill(
        " ".join(text.split()), width=80, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False
    )


# -- the shareable page -----------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
 color:#1d2330;background:#fbfbfd;line-height:1.45}
h1{font-size:1.6rem}
section{border:1px solid #d8dbe3;border-radius:.6rem;padding:1rem 1.3rem;margin:1.4rem 0;background:#fff}
h2{font-size:1.2rem;margin:.2rem 0 .6rem}
h3{font-size:1rem;margin:.9rem 0 .3rem}
nav a{margin-right:.6rem}
.code{font-family:ui-monospace,monospace;background:#eef1f7;padding:.1rem .35rem;border-radius:.3rem}
.dialogue{font-family:ui-monospace,monospace;font-size:.85rem;background:#10131a;color:#e6e9ef;
 padding:.8rem;border-radius:.4rem;overflow-x:auto;white-space:pre-wrap}
.dns{color:#7fd4e8}.client{color:#8fb4ff}.server{color:#e3a3f0}.note{color:#9aa1ad}
.tls,.cert{color:#f0d27a}.fault{color:#ff7b7b;font-weight:bold}
.report{font-family:ui-monospace,monospace;font-size:.9rem;padding:.5rem;border-left:4px solid #2f9e44;
 background:#f1faf3}
.report.diff{border-color:#e03131;background:#fff1f1}
"""


def render_html(results: list[DemoResult], lang: str = "en") -> str:
    """One self-contained HTML page (no external assets) for the played scenarios."""
    lab = LABELS[lang]
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="{lang}"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(lab['tour'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(lab['tour'])}</h1>",
        "<nav>"
        + "".join(f'<a href="#{esc(r.scenario.id)}">{esc(r.scenario.id)}</a>' for r in results)
        + "</nav>",
    ]
    for r in results:
        s = r.scenario
        code = s.expected_code
        ok = r.report is not None and r.reported == r.expected
        parts.append(f'<section id="{esc(s.id)}" data-scenario="{esc(s.id)}" data-code="{esc(r.reported)}">')
        parts.append(
            f'<h2>{esc(s.title[lang])} <span class="code">{esc(code)}</span></h2>'
            f'<p><span class="code">{esc(s.id)}</span> · {esc(eop_title(code, lang))}</p>'
        )
        if s.cause[lang]:  # a user's own scenario may have no explanation
            parts.append(f"<h3>{esc(lab['cause'])}</h3><p>{esc(' '.join(s.cause[lang].split()))}</p>")
        parts.append(f'<h3>{esc(lab["dialogue"])}</h3><div class="dialogue">')
        for line in r.lines:
            parts.append(
                f'<div class="{esc(line.kind)}">{esc(MARKS.get(line.kind, ""))}  {esc(line.text)}</div>'
            )
        parts.append("</div>")
        if r.report is not None:
            verdict = lab["ok"] if ok else lab["diff"]
            parts.append(
                f'<h3>{esc(lab["reported"])}</h3><p class="report{"" if ok else " diff"}">'
                f"{esc(r.report.line())}<br>{esc(lab['expected'])} {esc(r.expected)}: {esc(verdict)}</p>"
            )
        if s.fix[lang]:
            parts.append(f"<h3>{esc(lab['fix'])}</h3><p>{esc(' '.join(s.fix[lang].split()))}</p>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# -- serve --follow ------------------------------------------------------------------

FOLLOW_MARKS = {
    "dns": ("DNS", ("cyan",)),
    "connect": ("TCP", ("dim",)),
    "close": ("TCP", ("dim",)),
    "smtp_in": ("C >", ("blue",)),
    "smtp_out": ("S <", ("magenta",)),
    "tls": ("TLS", ("yellow",)),
    "fault": (" ! ", ("red", "bold")),
    "message": ("MSG", ("green",)),
    "error": ("ERR", ("red", "bold")),
}


def follower(out: TextIO, colour: bool | None = None) -> Callable[[Event], None]:
    """An event subscriber that prints the live dialogue of a served world."""
    style = Style(out, colour)
    lock = threading.Lock()

    def show(event: Event) -> None:
        mark, styles = FOLLOW_MARKS.get(event.kind, ("   ", ()))
        session = event.data.get("session")
        where = f"{event.host}" + (f" #{session}" if session else "")
        with lock:
            out.write(style(f"{time.strftime('%H:%M:%S')} {mark} {where}: {event.text}", *styles) + "\n")
            out.flush()

    return show
