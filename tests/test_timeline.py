"""mailfakes.timeline: a queue run as terminal lines, an SVG and an alert, from hand-written runs."""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET
from datetime import datetime

import pytest
from mailfakes.timeline import (
    LABELS,
    code_class,
    duration,
    offset,
    queue_summary,
    timeline_svg,
    timeline_text,
)

REFUSED = "450 4.4.316 Connection refused [Message=connection to 127.0.0.2:2525 refused (RST)]"

RECOVERED = {
    "scenario": "queue-recovers-after-2h",
    "outcome": "delivered",
    "lifetime": 86400,
    "attempts": [
        {"at": 0.0, "code": "4.4.316", "line": REFUSED},
        {"at": 300.0, "code": "4.4.316", "line": REFUSED},
        {"at": 1800.0, "code": "4.4.316", "line": REFUSED},
        {"at": 7200.0, "code": "2.0.0", "line": "250 2.0.0 Ok: queued as MF000001"},
    ],
    "ndr": None,
}

EXPIRED = {
    "scenario": "queue-down-refused",
    "outcome": "expired",
    "lifetime": 86400,
    "attempts": [
        {"at": 0.0, "code": "4.4.316", "line": REFUSED},
        {"at": 300.0, "code": "4.4.316", "line": REFUSED},
        {"at": 900.0, "code": "4.4.316", "line": REFUSED},
        {"at": 3600.0, "code": "4.4.316", "line": REFUSED},
        {"at": 43200.0, "code": "4.4.316", "line": REFUSED},
        {"at": 82800.0, "code": "4.4.316", "line": REFUSED},
    ],
    "ndr": {
        "to": "sender@fabrikam.test",
        "status": "4.4.7",
        "diagnostic": "smtp; 450 4.4.316 Connection refused",
        "last_error": "4.4.316",
    },
}

BOUNCED = {
    "scenario": "queue-permanent-550",
    "outcome": "bounced",
    "lifetime": 86400,
    "attempts": [{"at": 0.0, "code": "5.1.1", "line": "550 5.1.1 User unknown"}],
    "ndr": {"to": "sender@fabrikam.test", "status": "5.1.1", "diagnostic": "smtp; 550 5.1.1 User unknown"},
}

SILENT_EXPIRY = {  # a client that gives up and tells nobody
    "scenario": "queue-down-timeout",
    "outcome": "expired",
    "lifetime": 7200,
    "attempts": [
        {"at": 0.0, "code": "4.4.315", "line": "450 4.4.315 Connection timed out"},
        {"at": 3600.0, "code": "4.4.315", "line": "450 4.4.315 Connection timed out"},
    ],
    "ndr": None,
}

AT_ONCE = {
    "scenario": "baseline-delivered",
    "outcome": "delivered",
    "lifetime": 86400,
    "attempts": [{"at": 0.0, "code": "success", "line": "250 2.0.0 OK"}],
    "ndr": None,
}


@pytest.mark.parametrize(
    ("seconds", "en", "fr"),
    [
        (0, "+0:00", "+0:00"),
        (300, "+0:05", "+0:05"),
        (7200, "+2:00", "+2:00"),
        (86400, "+1 d", "+1 j"),
        (90000, "+1 d 1:00", "+1 j 1:00"),
        (172800 + 45, "+2 d 0:00:45", "+2 j 0:00:45"),
        (30, "+0:00:30", "+0:00:30"),
        (5430.4, "+1:30:30", "+1:30:30"),
    ],
)
def test_offsets(seconds, en, fr):
    assert offset(seconds, "en") == en
    assert offset(seconds, "fr") == fr
    assert duration(seconds, "en") == en[1:]


def test_code_classes():
    assert [code_class(c) for c in ("2.0.0", "success", "4.4.316", "5.1.1", "x")] == [
        "success",
        "success",
        "temporary",
        "permanent",
        "unknown",
    ]


def test_text_of_a_run_that_recovers():
    assert timeline_text(RECOVERED, "en") == [
        "queue-recovers-after-2h: delivered, 4 attempts",
        f"  +0:00  4.4.316  {REFUSED}",
        f"  +0:05  4.4.316  {REFUSED}",
        f"  +0:30  4.4.316  {REFUSED}",
        "  +2:00  2.0.0    250 2.0.0 Ok: queued as MF000001",
        "Recovered at +2:00: delivered on attempt 4, after 3 temporary failures.",
    ]
    assert timeline_text(RECOVERED, "fr")[0] == "queue-recovers-after-2h : remis, 4 tentatives"
    assert (
        timeline_text(RECOVERED, "fr")[-1]
        == "Rétabli à +2:00 : remis à la tentative 4, après 3 échecs temporaires."
    )


def test_text_of_a_run_that_expires_in_french():
    assert timeline_text(EXPIRED, "fr") == [
        "queue-down-refused : expiré, 6 tentatives",
        f"   +0:00  4.4.316  {REFUSED}",
        f"   +0:05  4.4.316  {REFUSED}",
        f"   +0:15  4.4.316  {REFUSED}",
        f"   +1:00  4.4.316  {REFUSED}",
        f"  +12:00  4.4.316  {REFUSED}",
        f"  +23:00  4.4.316  {REFUSED}",
        "Expiré à +1 j : le message est resté en file d'attente toute sa durée de vie (1 j), "
        "en 6 tentatives (dernière erreur 4.4.316).",
        "Rapport de non-remise (NDR) à sender@fabrikam.test : 4.4.7, dernière erreur 4.4.316",
        "  Diagnostic : smtp; 450 4.4.316 Connection refused",
    ]


def test_text_of_a_bounce_a_silent_expiry_and_a_first_time_delivery():
    assert timeline_text(BOUNCED, "en")[1:] == [
        "  +0:00  5.1.1  550 5.1.1 User unknown",
        "Bounced at +0:00 on a permanent error (5.1.1), after 1 attempt: no more retries.",
        "NDR to sender@fabrikam.test: 5.1.1",
        "  Diagnostic: smtp; 550 5.1.1 User unknown",
    ]
    assert timeline_text(SILENT_EXPIRY, "en")[-2:] == [
        "Expired at +2:00: the message stayed queued for its whole lifetime (2:00), "
        "over 2 attempts (last error 4.4.315).",
        "No NDR was sent to the sender.",
    ]
    assert (
        timeline_text(SILENT_EXPIRY, "fr")[-1] == "Aucun rapport de non-remise n'a été envoyé à l'expéditeur."
    )
    assert timeline_text(AT_ONCE, "fr")[-1] == "Remis à +0:00, dès la première tentative."


# -- the SVG ---------------------------------------------------------------------------------

AMBER, RED, GREEN = "#e8a200", "#c92a2a", "#2b8a3e"


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML, as it stands
    assert root.tag == "svg"
    return root


def groups(root: ET.Element, cls: str) -> list[ET.Element]:
    return [g for g in root.iter("g") if g.get("class") == cls]


def words(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter("text")]


def english_in(text: str) -> list[str]:
    """The English labels in ``text``, once addresses and scenario ids (not words) are left out."""
    text = re.sub(r"\S+@\S+|\bqueue-[\w-]+", "", text)
    return [w for w in english_labels() if re.search(rf"(?<!\w){re.escape(w)}(?!\w)", text)]


def english_labels() -> list[str]:
    """The English labels the French must not use (those that differ), without their slots."""
    out = []
    for name, en in LABELS["en"].items():
        if en != LABELS["fr"][name]:
            out += [p.strip() for p in re.split(r"\{\w+\}", en) if re.search("[a-z]{3}", p)]
    return out


@pytest.mark.parametrize(
    "run", [RECOVERED, EXPIRED, BOUNCED, SILENT_EXPIRY, AT_ONCE], ids=lambda r: r["scenario"]
)
@pytest.mark.parametrize("lang", ["en", "fr"])
def test_svg_is_self_contained_accessible_xml_with_a_dot_per_attempt(run, lang):
    svg = timeline_svg(run, lang, uid="t1")
    root = parse(svg)
    assert root.get("role") == "img"
    title = root.find("title")
    assert title is not None and title.get("id") == "t1-title" and run["scenario"] in title.text
    assert "t1-title" in root.get("aria-labelledby").split()
    assert root.find("desc") is not None
    for bad in ("http:", "https:", "xlink:href", "href=", "<image", "<script", "url("):
        assert bad not in svg
    attempts = groups(root, "attempt")
    assert len(attempts) == len(run["attempts"])
    assert all(len(g.findall("circle")) == 1 for g in attempts)
    assert len(root.findall(".//circle")) == len(run["attempts"]) + 3  # and the legend's three


def test_svg_colours_each_attempt_by_its_class():
    fills = [g.find("circle").get("fill") for g in groups(parse(timeline_svg(RECOVERED)), "attempt")]
    assert fills == [AMBER, AMBER, AMBER, GREEN]
    fills = [g.find("circle").get("fill") for g in groups(parse(timeline_svg(BOUNCED)), "attempt")]
    assert fills == [RED]
    fills = [g.find("circle").get("fill") for g in groups(parse(timeline_svg(AT_ONCE)), "attempt")]
    assert fills == [GREEN]


def test_svg_labels_are_in_the_chosen_language():
    fr = parse(timeline_svg(EXPIRED, "fr"))
    shown = words(fr)
    for label in ["temporaire (4xx)", "permanente (5xx)", "remis (2xx)", "expiré +1 j (durée de vie)"]:
        assert label in shown
    assert "expéditeur" in shown and "NDR 4.4.7 à sender@fabrikam.test" in shown
    assert "+1 j" in shown and "+0:00" in shown
    text = " ".join(shown) + " " + fr.find("title").text + " " + fr.find("desc").text
    assert english_in(text) == []
    en = words(parse(timeline_svg(EXPIRED, "en")))
    assert "expired +1 d (lifetime)" in en and "sender" in en and "NDR 4.4.7 to sender@fabrikam.test" in en


def test_svg_marks_the_end_and_the_ndr():
    recovered = parse(timeline_svg(RECOVERED, "en"))
    assert [words(g) for g in groups(recovered, "end")] == [["delivered +2:00"]]
    assert groups(recovered, "ndr") == []
    bounced = parse(timeline_svg(BOUNCED, "fr"))
    assert [words(g) for g in groups(bounced, "end")] == [["rejeté +0:00"]]
    (ndr,) = groups(bounced, "ndr")
    assert ndr.find("title").text == "smtp; 550 5.1.1 User unknown"
    assert ndr.find("polygon") is not None  # the arrow's head, at the sender
    silent = parse(timeline_svg(SILENT_EXPIRY, "fr"))
    assert groups(silent, "ndr") == [] and "aucun NDR envoyé" in words(silent)


def test_svg_axis_runs_to_the_lifetime_on_expiry_and_to_the_last_attempt_otherwise():
    def axis_end(root: ET.Element) -> str:
        """The tick label at the axis's right end (x = 720)."""
        (label,) = [t.text for t in root.iter("text") if t.get("x") == "720.0" and t.text.startswith("+")]
        return label

    assert axis_end(parse(timeline_svg(EXPIRED, "en"))) == "+1 d"  # the last attempt was at +23:00
    assert axis_end(parse(timeline_svg(RECOVERED, "en"))) == "+2:00"
    assert axis_end(parse(timeline_svg(SILENT_EXPIRY, "en"))) == "+2:00"


def test_svg_spreads_crowded_attempts_on_a_square_root_scale_and_says_so():
    def xs(root: ET.Element) -> list[float]:
        return [float(g.find("circle").get("cx")) for g in groups(root, "attempt")]

    crowded = parse(timeline_svg(EXPIRED, "en"))  # +0:05 and +0:15 of a day: 3 px apart if linear
    assert "time on a square-root scale" in words(crowded)
    positions = xs(crowded)
    assert all(b - a >= 14 for a, b in itertools.pairwise(positions))
    spaced = parse(timeline_svg(SILENT_EXPIRY, "en"))
    assert "time on a square-root scale" not in words(spaced)
    assert xs(spaced) == [40.0, 380.0]  # linear: +1:00 halfway along the axis (40 to 720) of 2:00


def test_svg_labels_do_not_overlap():
    for run in (RECOVERED, EXPIRED, BOUNCED, SILENT_EXPIRY):
        root = parse(timeline_svg(run, "fr"))
        rows: dict[str, list[tuple[float, float]]] = {}
        for t in root.iter("text"):
            text = "".join(t.itertext())
            if t.get("text-anchor") != "middle":
                continue
            half = len(text) * 6.4 / 2
            x = float(t.get("x"))
            rows.setdefault(t.get("y"), []).append((x - half, x + half))
        for boxes in rows.values():
            boxes.sort()
            assert all(a[1] <= b[0] for a, b in itertools.pairwise(boxes)), (run["scenario"], boxes)


# -- the alert -------------------------------------------------------------------------------


def test_queue_summary_in_french_groups_by_code_with_the_fix():
    runs = [RECOVERED, EXPIRED, BOUNCED, SILENT_EXPIRY, AT_ONCE]
    fixes = {"4.4.316": "Ouvrez le port 25 sur le pare-feu.", "5.1.1": "Corrigez l'adresse du destinataire."}
    page = queue_summary(runs, "fr", fixes=fixes, since=datetime(2025, 3, 4, 5, 6))
    root = ET.fromstring(page)
    assert root.tag == "section" and root.get("class") == "queue-summary"
    assert root.find("h2").text == "Messages en file d'attente"
    text = " ".join(" ".join(root.itertext()).split())
    assert "Messages passés par la file d'attente : 5 (remis : 2, rejetés : 1, expirés : 2)" in text
    alerts = [d for d in root.iter("div") if "queue-alert" in d.get("class", "")]
    assert [(a.get("data-code"), a.get("data-count")) for a in alerts] == [
        ("4.4.316", "2"),
        ("4.4.315", "1"),
        ("5.1.1", "1"),
    ]  # the baseline delivered at once was never queued
    refused, timed_out, unknown = (" ".join(" ".join(a.itertext()).split()) for a in alerts)
    assert "4.4.316 Connexion refusée" in refused
    assert (
        "Messages mis en file d'attente avec ce code : 2, jusqu'à 1 j depuis le 2025-03-04 05:06 "
        "(remis ensuite : 1 · expirés : 1)." in refused
    )
    assert "Scénarios : queue-down-refused, queue-recovers-after-2h" in refused
    assert f"Dernière réponse : {REFUSED}" in refused
    assert "À corriger : Ouvrez le port 25 sur le pare-feu." in refused
    assert "À corriger" not in timed_out and "jusqu'à 2:00" in timed_out
    assert "5.1.1" in unknown and "À corriger : Corrigez l'adresse du destinataire." in unknown
    assert "Messages rendus aussitôt avec ce code : 1 (rejetés : 1)." in unknown  # never queued
    assert "permanent" in alerts[2].get("class") and "temporary" in alerts[0].get("class")
    assert english_in(text) == []


def test_queue_summary_in_english_and_with_nothing_queued():
    root = ET.fromstring(queue_summary([AT_ONCE], "en"))
    text = " ".join(" ".join(root.itertext()).split())
    assert (
        text
        == "Queued messages Messages that went through the queue: 1 (delivered: 1) No message was queued."
    )
    text = " ".join(" ".join(ET.fromstring(queue_summary([EXPIRED], "en")).itertext()).split())
    assert "Messages queued with this code: 1, for up to 1 d (expired: 1)." in text
    assert "What to fix" not in text


def test_every_label_has_both_languages():
    assert LABELS["en"].keys() == LABELS["fr"].keys()
    assert all(LABELS["fr"].values())
