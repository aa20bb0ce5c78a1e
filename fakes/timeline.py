"""A queue run, drawn: the attempts of one message over its lifetime, in English or French.

A run is the ``--json`` row of ``mailfakes deliver ID --queue``::

    {"scenario": "queue-recovers-after-2h", "outcome": "delivered",   # or "bounced", "expired"
     "lifetime": 86400,
     "attempts": [{"at": 0.0, "code": "4.4.316", "line": "450 4.4.316 Connection refused [...]"},
                  {"at": 7200.0, "code": "2.0.0", "line": "250 2.0.0 OK"}],
     "ndr": None}     # or {"to": ..., "status": "4.4.7", "diagnostic": ..., "last_error": "4.4.316"}

``at`` is in seconds since the first attempt. Three renderings, all pure
(no clock, no I/O): :func:`timeline_text` for a terminal, :func:`timeline_svg`
(an inline SVG: a time axis, a dot per attempt coloured by its class, the
end, the NDR going back to the sender) and :func:`queue_summary` (HTML in the
manner of Exchange Online's mail flow intelligence alert: how many messages
were queued, with which code, for how long, what to fix).
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from .codes import title as code_title

Run = Mapping[str, Any]

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "day": "d",
        "attempt_1": "{n} attempt",
        "attempt_n": "{n} attempts",
        "failure_1": "{n} temporary failure",
        "failure_n": "{n} temporary failures",
        "delivered": "delivered",
        "bounced": "bounced",
        "expired": "expired",
        "queued": "still queued",
        "heading": "{scenario}: {outcome}, {attempts}",
        "recovered": "Recovered at {at}: delivered on attempt {n}, after {failures}.",
        "first_time": "Delivered at {at}, on the first attempt.",
        "expiry": (
            "Expired at {at}: the message stayed queued for its whole lifetime ({lifetime}), "
            "over {attempts} (last error {code})."
        ),
        "bounce": "Bounced at {at} on a permanent error ({code}), after {attempts}: no more retries.",
        "still": "Still queued at {at}, after {attempts} (last error {code}).",
        "ndr": "NDR to {to}: {status}",
        "ndr_last": "NDR to {to}: {status}, last error {last_error}",
        "diagnostic": "Diagnostic: {diagnostic}",
        "no_ndr": "No NDR was sent to the sender.",
        "title": "Queue run of {scenario}: {outcome} after {attempts}",
        "temporary": "temporary (4xx)",
        "permanent": "permanent (5xx)",
        "success": "delivered (2xx)",
        "sqrt": "time on a square-root scale",
        "end_delivered": "delivered {at}",
        "end_bounced": "bounced {at}",
        "end_expired": "expired {at} (lifetime)",
        "end_queued": "still queued {at}",
        "ndr_arrow": "NDR {status} to {to}",
        "no_ndr_short": "no NDR sent",
        "sender": "sender",
        "summary": "Queued messages",
        "totals": "Messages that went through the queue: {n}",
        "none": "No message was queued.",
        "count": "Messages queued with this code: {n}, for up to {longest}",
        "count_bounced": "Messages returned at once with this code: {n}",
        "since": "since {since}",
        "scenarios": "Scenarios: {ids}",
        "last_reply": "Last reply:",
        "fix": "What to fix:",
        "n_delivered": "delivered later: {n}",
        "n_bounced": "bounced: {n}",
        "n_expired": "expired: {n}",
        "n_queued": "still queued: {n}",
        "n_all_delivered": "delivered: {n}",
    },
    "fr": {
        "day": "j",
        "attempt_1": "{n} tentative",
        "attempt_n": "{n} tentatives",
        "failure_1": "{n} échec temporaire",
        "failure_n": "{n} échecs temporaires",
        "delivered": "remis",
        "bounced": "rejeté",
        "expired": "expiré",
        "queued": "encore en file d'attente",
        "heading": "{scenario} : {outcome}, {attempts}",
        "recovered": "Rétabli à {at} : remis à la tentative {n}, après {failures}.",
        "first_time": "Remis à {at}, dès la première tentative.",
        "expiry": (
            "Expiré à {at} : le message est resté en file d'attente toute sa durée de vie ({lifetime}), "
            "en {attempts} (dernière erreur {code})."
        ),
        "bounce": (
            "Rejeté à {at} sur une erreur permanente ({code}), après {attempts} : "
            "plus aucune nouvelle tentative."
        ),
        "still": "Encore en file d'attente à {at}, après {attempts} (dernière erreur {code}).",
        "ndr": "Rapport de non-remise (NDR) à {to} : {status}",
        "ndr_last": "Rapport de non-remise (NDR) à {to} : {status}, dernière erreur {last_error}",
        "diagnostic": "Diagnostic : {diagnostic}",
        "no_ndr": "Aucun rapport de non-remise n'a été envoyé à l'expéditeur.",
        "title": "File d'attente de {scenario} : {outcome} après {attempts}",
        "temporary": "temporaire (4xx)",
        "permanent": "permanente (5xx)",
        "success": "remis (2xx)",
        "sqrt": "temps en échelle racine carrée",
        "end_delivered": "remis {at}",
        "end_bounced": "rejeté {at}",
        "end_expired": "expiré {at} (durée de vie)",
        "end_queued": "encore en file {at}",
        "ndr_arrow": "NDR {status} à {to}",
        "no_ndr_short": "aucun NDR envoyé",
        "sender": "expéditeur",
        "summary": "Messages en file d'attente",
        "totals": "Messages passés par la file d'attente : {n}",
        "none": "Aucun message n'a été mis en file d'attente.",
        "count": "Messages mis en file d'attente avec ce code : {n}, jusqu'à {longest}",
        "count_bounced": "Messages rendus aussitôt avec ce code : {n}",
        "since": "depuis le {since}",
        "scenarios": "Scénarios : {ids}",
        "last_reply": "Dernière réponse :",
        "fix": "À corriger :",
        "n_delivered": "remis ensuite : {n}",
        "n_bounced": "rejetés : {n}",
        "n_expired": "expirés : {n}",
        "n_queued": "encore en file : {n}",
        "n_all_delivered": "remis : {n}",
    },
}

# The colour of an attempt's dot, by the class of its code.
COLOURS = {"temporary": "#e8a200", "permanent": "#c92a2a", "success": "#2b8a3e", "unknown": "#868e96"}

# Styles for queue_summary's HTML (the SVG carries its own); a page adds them to its <style>.
CSS = """
.queue-summary .queue-alert{border-left:4px solid #e8a200;background:#fff8e6;padding:.5rem .9rem;
 margin:.7rem 0;border-radius:.3rem}
.queue-summary .queue-alert.permanent{border-color:#c92a2a;background:#fff1f1}
.queue-summary .queue-alert h3{margin:.2rem 0 .4rem;font-size:1rem}
.queue-summary .queue-alert code{font-size:.85rem;overflow-wrap:anywhere}
svg.timeline{display:block;max-width:100%;height:auto}
"""


def _labels(lang: str) -> dict[str, str]:
    return LABELS.get(lang, LABELS["en"])


def code_class(code: str) -> str:
    """``success`` (2.x.x or ``success``), ``temporary`` (4.x.x), ``permanent`` (5.x.x), else ``unknown``."""
    code = str(code)
    if code == "success" or code.startswith("2"):
        return "success"
    if code.startswith("4"):
        return "temporary"
    if code.startswith("5"):
        return "permanent"
    return "unknown"


def duration(seconds: float, lang: str = "en") -> str:
    """A span in hours and minutes: ``0:05``, ``2:00``, ``0:00:30``, ``1 d``, ``1 d 2:00`` (French: ``j``)."""
    whole = max(0, round(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours}:{minutes:02d}" + (f":{secs:02d}" if secs else "")
    if not days:
        return clock
    day = f"{days} {_labels(lang)['day']}"
    return day if not rest and not hours else f"{day} {clock}"


def offset(seconds: float, lang: str = "en") -> str:
    """The time of an attempt since the first one: ``+0:05``, ``+2:00``, ``+1 d``."""
    return "+" + duration(seconds, lang)


def _attempts(run: Run) -> list[Mapping[str, Any]]:
    return sorted(run.get("attempts") or [], key=lambda a: float(a.get("at", 0.0)))


def _count(lab: Mapping[str, str], name: str, n: int) -> str:
    return lab[f"{name}_1" if n == 1 else f"{name}_n"].format(n=n)


def last_error(run: Run) -> str:
    """The code of the run's last failure (the NDR's ``last_error`` when it has one), or ''."""
    ndr = run.get("ndr") or {}
    if ndr.get("last_error"):
        return str(ndr["last_error"])
    failed = [a for a in _attempts(run) if code_class(a.get("code", "")) != "success"]
    return str(failed[-1].get("code", "")) if failed else ""


def _end(run: Run) -> float:
    """When the run ended: the expiry (its lifetime) or the last attempt."""
    attempts = _attempts(run)
    last = float(attempts[-1].get("at", 0.0)) if attempts else 0.0
    if run.get("outcome") == "expired" and run.get("lifetime"):
        return max(last, float(run["lifetime"]))
    return last


def _outcome_word(run: Run, lab: Mapping[str, str]) -> str:
    outcome = str(run.get("outcome", "queued"))
    return lab.get(outcome, outcome) if outcome in ("delivered", "bounced", "expired", "queued") else outcome


def timeline_text(run: Run, lang: str = "en") -> list[str]:
    """Lines for a terminal: a heading, each attempt (time, code, line), how it ended, the NDR."""
    lab = _labels(lang)
    attempts = _attempts(run)
    outcome = str(run.get("outcome", "queued"))
    n = len(attempts)
    out = [
        lab["heading"].format(
            scenario=run.get("scenario", "?"),
            outcome=_outcome_word(run, lab),
            attempts=_count(lab, "attempt", n),
        )
    ]
    width = max([len(offset(float(a.get("at", 0.0)), lang)) for a in attempts] or [0])
    code_width = max([len(str(a.get("code", ""))) for a in attempts] or [0])
    for a in attempts:
        at = offset(float(a.get("at", 0.0)), lang)
        line = str(a.get("line") or "")
        out.append(f"  {at:>{width}}  {a.get('code', '')!s:<{code_width}}  {line}".rstrip())
    last_at = offset(float(attempts[-1].get("at", 0.0)), lang) if attempts else offset(0, lang)
    code = last_error(run) or "-"
    if outcome == "delivered":
        failures = sum(1 for a in attempts if code_class(a.get("code", "")) != "success")
        if failures:
            out.append(lab["recovered"].format(at=last_at, n=n, failures=_count(lab, "failure", failures)))
        else:
            out.append(lab["first_time"].format(at=last_at))
    elif outcome == "expired":
        lifetime = duration(float(run.get("lifetime") or _end(run)), lang)
        out.append(
            lab["expiry"].format(
                at=offset(_end(run), lang), lifetime=lifetime, attempts=_count(lab, "attempt", n), code=code
            )
        )
    elif outcome == "bounced":
        out.append(lab["bounce"].format(at=last_at, code=code, attempts=_count(lab, "attempt", n)))
    else:
        out.append(lab["still"].format(at=last_at, attempts=_count(lab, "attempt", n), code=code))
    ndr = run.get("ndr")
    if ndr:
        template = lab["ndr_last"] if ndr.get("last_error") else lab["ndr"]
        out.append(
            template.format(
                to=ndr.get("to", "?"), status=ndr.get("status", "?"), last_error=ndr.get("last_error", "")
            )
        )
        if ndr.get("diagnostic"):
            out.append("  " + lab["diagnostic"].format(diagnostic=ndr["diagnostic"]))
    elif outcome in ("bounced", "expired"):
        out.append(lab["no_ndr"])
    return out


# -- the SVG ------------------------------------------------------------------------------

_W = 760
_X0, _X1 = 40, 720  # the axis
_AXIS = 84
_R = 6
_CHAR = 6.4  # one character of the 11 px labels
_TICKS = (0, 300, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400, 172800, 259200, 432000, 604800)


def _scale(times: Sequence[float], span: float) -> tuple[Any, bool]:
    """A function from seconds to x, and whether it is a square-root scale (when a linear one would
    put two attempts' dots on each other)."""
    span = span or 1.0
    width = _X1 - _X0

    def linear(t: float) -> float:
        return _X0 + width * min(t, span) / span

    gaps = [b - a for a, b in itertools.pairwise(times)]
    if all(width * g / span >= 2 * _R + 3 for g in gaps):
        return linear, False

    def root(t: float) -> float:
        return _X0 + width * math.sqrt(min(t, span) / span)

    return root, True


def _fits(x: float, text: str, taken: list[tuple[float, float]]) -> tuple[float, float] | None:
    half = len(text) * _CHAR / 2 + 4
    box = (x - half, x + half)
    if box[0] < 2 or box[1] > _W - 2:
        return None
    if any(box[0] < b and a < box[1] for a, b in taken):
        return None
    return box


def timeline_svg(run: Run, lang: str = "en", uid: str = "timeline") -> str:
    """An inline SVG of the run: time axis from 0 to the lifetime (when it expired) or the last attempt,
    a dot per attempt coloured by class, the end marked, the NDR going back to the sender.

    ``uid`` makes the title's id unique on a page that holds several timelines."""
    esc = html.escape
    lab = _labels(lang)
    attempts = _attempts(run)
    times = [float(a.get("at", 0.0)) for a in attempts]
    outcome = str(run.get("outcome", "queued"))
    end = _end(run)
    x_of, rooted = _scale(times, end)
    ndr = run.get("ndr")
    height = 176
    name = lab["title"].format(
        scenario=run.get("scenario", "?"),
        outcome=_outcome_word(run, lab),
        attempts=_count(lab, "attempt", len(attempts)),
    )
    out = [
        f'<svg viewBox="0 0 {_W} {height}" width="{_W}" height="{height}" role="img" class="timeline" '
        f'aria-labelledby="{esc(uid)}-title {esc(uid)}-desc" font-family="system-ui,sans-serif" '
        'font-size="11">',
        f'<title id="{esc(uid)}-title">{esc(name)}</title>',
        f'<desc id="{esc(uid)}-desc">{esc(" ".join(timeline_text(run, lang)))}</desc>',
        f'<rect x="0" y="0" width="{_W}" height="{height}" fill="#ffffff"/>',
    ]
    # The legend, top left.
    x = float(_X0)
    for cls in ("temporary", "permanent", "success"):
        out.append(
            f'<circle cx="{x + 5}" cy="14" r="5" fill="{COLOURS[cls]}"/>'
            f'<text x="{x + 14}" y="18" fill="#1d2330">{esc(lab[cls])}</text>'
        )
        x += 14 + len(lab[cls]) * _CHAR + 18
    if rooted:
        out.append(
            f'<text x="{_X1}" y="18" text-anchor="end" fill="#5b6472" font-style="italic">'
            f"{esc(lab['sqrt'])}</text>"
        )
    # The axis and its ticks.
    axis_end = _X1 if end > 0 else _X0 + 40  # a run of one attempt has no span to draw
    out.append(
        f'<line x1="{_X0}" y1="{_AXIS}" x2="{axis_end}" y2="{_AXIS}" stroke="#5b6472" stroke-width="1.5"/>'
    )
    taken: list[tuple[float, float]] = []
    ticks = [t for t in _TICKS if t < end] + [end]
    for t in [ticks[0], ticks[-1], *ticks[1:-1]]:  # the ends first: they are always labelled
        x = x_of(t)
        text = offset(t, lang)
        box = _fits(x, text, taken)
        if box is None:
            continue
        taken.append(box)
        out.append(
            f'<line x1="{x:.1f}" y1="{_AXIS}" x2="{x:.1f}" y2="{_AXIS + 5}" stroke="#5b6472"/>'
            f'<text x="{x:.1f}" y="{_AXIS + 18}" text-anchor="middle" fill="#5b6472">{esc(text)}</text>'
        )
    # The end: delivered, bounced, expired (or still queued).
    end_x = x_of(end)
    end_colour = COLOURS["success"] if outcome == "delivered" else COLOURS["permanent"]
    if outcome == "queued":
        end_colour = COLOURS["temporary"]
    end_label = lab.get(f"end_{outcome}", lab["end_queued"]).format(at=offset(end, lang))
    anchor = "end" if end_x > _W / 2 else "start"
    out.append(
        f'<g class="end"><line x1="{end_x:.1f}" y1="32" x2="{end_x:.1f}" y2="{_AXIS - 24}" '
        f'stroke="{end_colour}" stroke-width="2" stroke-dasharray="4 3"/>'
        f'<text x="{end_x + (-6 if anchor == "end" else 6):.1f}" y="42" text-anchor="{anchor}" '
        f'fill="{end_colour}" font-weight="bold">{esc(end_label)}</text></g>'
    )
    # The attempts: a dot each, its code above when there is room (the last one first).
    labelled: list[tuple[float, float]] = []
    order = list(range(len(attempts)))
    order = order[-1:] + order[:-1]
    codes_shown: set[int] = set()
    for i in order:
        code = str(attempts[i].get("code", ""))
        box = _fits(x_of(times[i]), code, labelled)
        if box is not None and (i == order[0] or i == 0 or code != str(attempts[i - 1].get("code", ""))):
            labelled.append(box)
            codes_shown.add(i)
    for i, (a, t) in enumerate(zip(attempts, times, strict=True)):
        code = str(a.get("code", ""))
        colour = COLOURS[code_class(code)]
        x = x_of(t)
        tip = f"{offset(t, lang)} {code} {a.get('line') or ''}".rstrip()
        part = [f'<g class="attempt"><title>{esc(tip)}</title>']
        part.append(
            f'<circle cx="{x:.1f}" cy="{_AXIS}" r="{_R}" fill="{colour}" stroke="#ffffff" '
            'stroke-width="1.5"/>'
        )
        if i in codes_shown:
            part.append(
                f'<text x="{x:.1f}" y="{_AXIS - 11}" text-anchor="middle" fill="{colour}">{esc(code)}</text>'
            )
        part.append("</g>")
        out.append("".join(part))
    # The NDR, from the end back to the sender (bottom left, where the message came from).
    if ndr:
        label = lab["ndr_arrow"].format(status=ndr.get("status", "?"), to=ndr.get("to", "?"))
        colour = COLOURS["permanent"]
        sender = lab["sender"]
        box_w = len(sender) * _CHAR + 14
        box_r = 4 + box_w
        top, y = 140.0, 150.0
        part = [
            f'<g class="ndr"><title>{esc(str(ndr.get("diagnostic") or label))}</title>'
            f'<rect x="4" y="{top}" width="{box_w:.1f}" height="20" rx="4" fill="#f1f3f7" stroke="#5b6472"/>'
            f'<text x="{4 + box_w / 2:.1f}" y="{top + 14}" text-anchor="middle" fill="#1d2330">'
            f"{esc(sender)}</text>"
        ]
        room = end_x - box_r - 20
        if room > 0:  # down, then left to the sender
            part.append(
                f'<path d="M{end_x:.1f},{_AXIS + 24} V{y} H{box_r + 9:.1f}" fill="none" stroke="{colour}" '
                'stroke-width="1.6"/>'
                f'<polygon points="{box_r:.1f},{y} {box_r + 10:.1f},{y - 5} {box_r + 10:.1f},{y + 5}" '
                f'fill="{colour}"/>'
            )
        else:  # the sender is right below
            part.append(
                f'<path d="M{end_x:.1f},{_AXIS + 24} V{top - 9}" fill="none" stroke="{colour}" '
                'stroke-width="1.6"/>'
                f'<polygon points="{end_x:.1f},{top} {end_x - 5:.1f},{top - 10} {end_x + 5:.1f},{top - 10}" '
                f'fill="{colour}"/>'
            )
        if room > len(label) * _CHAR + 10:
            part.append(
                f'<text x="{(box_r + end_x) / 2:.1f}" y="{y - 6}" text-anchor="middle" fill="{colour}">'
                f"{esc(label)}</text>"
            )
        else:
            left = max(end_x, box_r) + 10
            part.append(f'<text x="{left:.1f}" y="{y - 6}" fill="{colour}">{esc(label)}</text>')
        part.append("</g>")
        out.append("".join(part))
    elif outcome in ("bounced", "expired"):
        out.append(
            f'<text x="{end_x + (-6 if anchor == "end" else 6):.1f}" y="150" text-anchor="{anchor}" '
            f'fill="{COLOURS["permanent"]}" font-weight="bold">{esc(lab["no_ndr_short"])}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


# -- the alert ------------------------------------------------------------------------------


def _queued_for(run: Run) -> float:
    return _end(run)


def queue_summary(
    runs: Iterable[Run],
    lang: str = "en",
    fixes: Mapping[str, str] | None = None,
    since: datetime | None = None,
) -> str:
    """HTML in the manner of Exchange Online's mail flow intelligence alert.

    One block per code the queue held messages with (a run's last error):
    how many messages, for how long at most, how they ended, the last reply,
    and what to fix (``fixes``: code to text in ``lang``, as the caller has
    it, e.g. the scenario's explanation). ``since``: when the queue run began,
    if the caller knows it. Runs delivered at their first attempt were never
    queued and only count in the totals."""
    esc = html.escape
    lab = _labels(lang)
    runs = list(runs)
    fixes = fixes or {}
    groups: dict[str, list[Run]] = {}
    for run in runs:
        code = last_error(run)
        if code:
            groups.setdefault(code, []).append(run)
    outcomes = {k: sum(1 for r in runs if r.get("outcome") == k) for k in ("delivered", "bounced", "expired")}
    outcomes["queued"] = len(runs) - sum(outcomes.values())
    totals = ", ".join(
        lab["n_all_delivered" if k == "delivered" else f"n_{k}"].format(n=n) for k, n in outcomes.items() if n
    )
    parts = [
        f'<section class="queue-summary" aria-labelledby="queue-summary-title">'
        f'<h2 id="queue-summary-title">{esc(lab["summary"])}</h2>',
        f"<p>{esc(lab['totals'].format(n=len(runs)))}" + (f" ({esc(totals)})" if totals else "") + "</p>",
    ]
    if not groups:
        parts.append(f"<p>{esc(lab['none'])}</p>")
    for code, members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        cls = code_class(code)
        longest = duration(max(_queued_for(r) for r in members), lang)
        ended = {
            k: sum(1 for r in members if r.get("outcome") == k) for k in ("delivered", "bounced", "expired")
        }
        ended["queued"] = len(members) - sum(ended.values())
        how = " · ".join(lab[f"n_{k}"].format(n=n) for k, n in ended.items() if n)
        ids = sorted({str(r.get("scenario", "?")) for r in members})
        last = ""
        for r in members:
            for a in _attempts(r):
                if str(a.get("code", "")) == code and a.get("line"):
                    last = str(a["line"])
        heading = f'<span class="code">{esc(code)}</span>'
        if code_title(code, lang):
            heading += f" {esc(code_title(code, lang))}"
        at_once = all(r.get("outcome") == "bounced" and len(_attempts(r)) == 1 for r in members)
        count = lab["count_bounced" if at_once else "count"].format(n=len(members), longest=longest)
        if since is not None and not at_once:
            count += " " + lab["since"].format(since=f"{since:%Y-%m-%d %H:%M}")
        parts.append(
            f'<div class="queue-alert {cls}" data-code="{esc(code)}" data-count="{len(members)}" role="note">'
            f"<h3>{heading}</h3><p><strong>{esc(count)}</strong>"
            + (f" ({esc(how)})" if how else "")
            + ".</p>"
            f"<p>{esc(lab['scenarios'].format(ids=', '.join(ids)))}</p>"
        )
        if last:
            parts.append(f"<p>{esc(lab['last_reply'])} <code>{esc(last)}</code></p>")
        if fixes.get(code):
            parts.append(
                f'<p class="fix"><strong>{esc(lab["fix"])}</strong> {esc(" ".join(fixes[code].split()))}</p>'
            )
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)
