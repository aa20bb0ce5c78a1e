"""mailfakes demo, serve --follow and validate, as a trainer uses them."""

from __future__ import annotations

import html
import io
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from mailfakes import catalogue as scenarios
from mailfakes import demo
from mailfakes.demo import DEFAULT_TOUR, LABELS, DemoResult, Player, render_html
from prerequisites import require

CMD = [sys.executable, "-m", "mailfakes"]
CODES = sorted({s.code for s in scenarios.load_catalogue().values()})


def play(ids: list[str], lang: str) -> tuple[str, list]:
    out = io.StringIO()
    player = Player(out, lang=lang, timeout=0.3, colour=False)
    results = player.play_all([scenarios.get(i) for i in ids])
    return out.getvalue(), results


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("lang", ["en", "fr"])
@pytest.mark.parametrize("code", CODES)
def test_demo_shows_title_reported_code_and_fix_in_the_right_language(code, lang):
    chosen = [s for s in scenarios.load_catalogue().values() if s.code == code]
    text, results = play([s.id for s in chosen], lang)
    other = "fr" if lang == "en" else "en"
    words = flat(text)
    for s, r in zip(chosen, results, strict=True):
        assert s.title[lang] in text
        assert flat(s.fix[lang]) in words
        assert flat(s.cause[lang]) in words
        assert flat(s.fix[other]) not in words  # not the other language's text
        assert r.reported == s.expected_code
        assert re.search(rf"^  [245]\d\d {re.escape(s.expected_code)} ", text, re.M), s.id
    label = {"en": "How to fix it:", "fr": "Comment corriger:"}[lang]
    assert text.count(label) == len(chosen)


def test_the_dialogue_shows_where_it_breaks():
    text, _ = play(["tls-cert-expired", "close-after-ehlo"], "en")
    assert "C >  STARTTLS" in text
    assert "CRT  certificate presented: CN=mail.contoso.test" in text
    assert "certificate rejected: certificate has expired (10)" in text
    assert " !   server: cut (fin) after EHLO, before its reply" in text
    assert "the server closed the connection (FIN) during EHLO" in text


def test_plain_text_when_not_a_terminal_and_colour_in_one():
    plain, _ = play(["dns-nxdomain"], "en")
    assert "\033[" not in plain
    out = io.StringIO()
    Player(out, colour=True, timeout=0.3).play_all([scenarios.get("dns-nxdomain")])
    assert "\033[1m" in out.getvalue()


def test_demo_cli_tour_runs_without_waiting_for_input():
    result = subprocess.run(
        [*CMD, "demo", "--timeout", "0.3"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    for sid in DEFAULT_TOUR:
        assert sid in result.stdout
    assert "\033[" not in result.stdout


def test_demo_step_waits_for_enter_in_a_terminal():
    pid, fd = pty.fork()
    if pid == 0:  # the child: the demo on a pseudo-terminal
        os.execv(
            sys.executable,
            [*CMD, "demo", "dns-nxdomain", "tcp-refused-firewall", "--step", "--timeout", "0.3"],
        )
    seen = b""

    def read_until(needle: bytes, timeout: float = 20) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while needle not in seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{needle!r} never came; got {seen[-500:]!r}"
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    chunk = b""
                assert chunk, f"the demo ended before {needle!r}; got {seen[-500:]!r}"
                seen += chunk

    try:
        read_until(b"Press Enter for the next scenario")
        assert b"tcp-refused-firewall" not in seen.split(b"Press Enter")[0]
        assert b"\x1b[" in seen  # a terminal gets colour
        # It waits: nothing of the second scenario comes until Enter.
        ready, _, _ = select.select([fd], [], [], 0.3)
        if ready:
            seen += os.read(fd, 4096)
        assert b"2/2" not in seen
        os.write(fd, b"\r")
        read_until(b"2/2")
        read_until(b"Connection refused")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        with __import__("contextlib").suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


def test_html_report_is_self_contained_and_has_each_scenario(tmp_path):
    ids = ["dns-nxdomain", "tls-cert-expired", "baseline-delivered"]
    _, results = play(ids, "fr")
    page = render_html(results, "fr")
    assert '<html lang="fr">' in page
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)  # no external assets
    for sid in ids:
        assert f'<section id="{sid}"' in page
    assert "Comment corriger" in page and "4.7.320" in page


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    require({"chromium": "chromium"}, netns=False)
    raise AssertionError("unreachable")


def headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            browser,
            "--headless",
            *(["--no-sandbox"] if os.geteuid() == 0 else []),  # Chromium refuses its sandbox as root
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def rendered_page(browser: str, tmp_path: Path, html_file: Path, *args: str) -> str:
    """The demo's French page for ``args`` (ids, options), as headless Chromium builds its DOM."""
    result = subprocess.run(
        [*CMD, "demo", *args, "--lang", "fr", "--html", str(html_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    dom = headless(browser, tmp_path / "profile", "--dump-dom", html_file.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout


def test_html_report_in_headless_chromium(tmp_path):
    browser = chromium()
    html_file = tmp_path / "demo.html"
    ids = [
        "dns-nxdomain",
        "tcp-timeout-server-down",
        "tls-starttls-missing",
        "tls-cert-expired",
        "baseline-delivered",
    ]
    page = rendered_page(browser, tmp_path, html_file, *ids, "--timeout", "0.3")
    summary = re.search(r'<section class="summary" id="summary"[^>]*>(.*?)</section>', page, re.S)
    assert summary, "no summary block in the rendered page"
    words = flat(re.sub(r"<[^>]+>", " ", summary.group(1)))
    assert "Résumé" in words and "Scénarios joués" in words and "conformes : 5" in words
    assert all(f'href="#{sid}"' in summary.group(1) for sid in ids)
    for sid in ids:
        s = scenarios.get(sid)
        section = re.search(
            rf'<section id="{sid}" data-scenario="{sid}"[^>]*data-code="([^"]+)"[^>]*>(.*?)</section>',
            page,
            re.S,
        )
        assert section, f"no section for {sid} in the rendered page"
        assert section.group(1) == s.expected_code
        body = flat(re.sub(r"<[^>]+>", " ", section.group(2)))
        assert s.expected_code in body and s.title["fr"] in body
        # The browser built the diagram as SVG elements: lifelines' heads, arrows, where it broke.
        svg = re.search(r"<svg [^>]*role=\"img\"[^>]*>(.*?)</svg>", section.group(2), re.S)
        assert svg, f"no SVG diagram in the section of {sid}"
        assert svg.group(1).count("<line ") >= 4 and "<polygon " in svg.group(1)
        assert ">DNS</text>" in svg.group(1) and ">serveur</text>" in svg.group(1)
        assert ('<g class="break">' in svg.group(1)) == (sid != "baseline-delivered")


def test_tls_policy_page_in_headless_chromium(tmp_path):
    """DANE and MTA-STS in the page Chromium builds: DNSSEC on the DNS arrows, the policy host's
    lifeline and its HTTPS fetch, the TLS report, where validation broke."""
    browser = chromium()
    ids = ["dane-tlsa-mismatch", "mta-sts-mx-mismatch", "mta-sts-policy-cert-invalid"]
    page = rendered_page(browser, tmp_path, tmp_path / "policy.html", *ids, "--timeout", "0.3")
    sections = {}
    for sid in ids:
        found = re.search(rf'<section id="{sid}" data-scenario="{sid}"[^>]*>(.*?)</section>', page, re.S)
        assert found, f"no section for {sid} in the rendered page"
        sections[sid] = found.group(1)
    dane, mismatch, cert_invalid = sections.values()
    for sid, body in sections.items():
        svg = re.search(r'<svg [^>]*role="img"[^>]*>(.*?)</svg>', body, re.S)
        assert svg, sid
        diagram = svg.group(1)
        assert ('<g class="break">' in diagram) == (sid != "mta-sts-policy-cert-invalid"), sid
        assert (">HTTPS</text>" in diagram) == sid.startswith("mta-sts"), sid
        if sid.startswith("mta-sts"):
            assert ">HTTPS GET https://mta-sts.contoso.test/.well-known/mta-sts.txt</text>" in diagram
        words = flat(html.unescape(re.sub(r"<[^>]+>", " ", body)))
        assert "rapport TLS reçu à mailto:tls-reports@fabrikam.test (par courrier)" in words, sid
    assert ">NOERROR AD → 3 1 1 628887af7c01…</text>" in dane
    assert "[DNSSEC secure ; bit AD présent]" in html.unescape(dane)
    assert (
        '<div class="web">WEB  politique servie : version: STSv1 | mode: enforce | mx: mx9.contoso.test'
        in (html.unescape(mismatch))
    )
    assert "hôte de la politique : échec de la négociation TLS" in html.unescape(cert_invalid)


def test_queue_timelines_in_headless_chromium(tmp_path):
    """The page of two queue scenarios, as Chromium builds it: the alert, a timeline per scenario."""
    browser = chromium()
    html_file = tmp_path / "queue.html"
    page = rendered_page(browser, tmp_path, html_file, "queue-down-refused", "queue-recovers-after-2h")
    alert = re.search(r'<section class="queue-summary"[^>]*>(.*?)</section>', page, re.S)
    assert alert, "no queue alert in the rendered page"
    # Both messages ended their queue on a refused connection (the one that recovered, too).
    assert re.search(r'class="queue-alert[^"]*" data-code="4\.4\.316" data-count="2"', alert.group(1))
    # 27 tries in 24 hours for the host that never comes back, 6 for the one back after 2 hours.
    for sid, tries in (("queue-down-refused", 27), ("queue-recovers-after-2h", 6)):
        section = re.search(rf'<section id="{sid}" data-scenario="{sid}"[^>]*>(.*?)</section>', page, re.S)
        assert section, sid
        timeline = re.search(r'<svg [^>]*class="timeline"[^>]*>(.*?)</svg>', section.group(1), re.S)
        assert timeline, f"no timeline in the section of {sid}"
        assert timeline.group(1).count('<g class="attempt">') == tries
    expired = re.search(r'<section id="queue-down-refused".*?</section>', page, re.S)
    assert expired and '<g class="ndr">' in expired.group(0)


def test_serve_follow_shows_the_live_dialogue_of_any_client():
    proc = subprocess.Popen(
        [*CMD, "serve", "tls-cert-expired", "--json", "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready
        import json

        info = json.loads(proc.stdout.readline())
        send = subprocess.run(
            [
                *CMD,
                "send",
                "--smart-host",
                info["smart_host"],
                "--port",
                str(info["port"]),
                "--dns-host",
                info["dns_host"],
                "--dns-port",
                str(info["dns_port"]),
                "--ca-file",
                info["ca_file"],
                "--timeout",
                "2",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "4.7.320" in send.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 143  # SIGTERM, as for every command (128 + 15)
    assert "DNS mail.contoso.test: A mail.contoso.test -> NOERROR" in err
    assert "C > mail.contoso.test #1: EHLO mailfakes-client.test" in err
    assert "S < mail.contoso.test #1: 220 2.0.0 Ready to start TLS" in err
    assert "TLS mail.contoso.test #1: TLS handshake failed: SSLV3_ALERT_CERTIFICATE_EXPIRED" in err


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_validate_good_and_bad_files(tmp_path):
    good = write(
        tmp_path / "my-training-case.toml",
        (Path(scenarios.get("tls-cert-expired").path))
        .read_text()
        .replace('id = "tls-cert-expired"', 'id = "my-training-case"'),
    )
    bad = write(
        tmp_path / "broken.toml",
        good.read_text()
        .replace('id = "my-training-case"', 'id = "broken"')
        .replace('cert = "expired"', 'cert = "expird"'),
    )
    ok = subprocess.run([*CMD, "validate", str(good)], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "ok   " in ok.stdout and "1 valid, 0 invalid" in ok.stdout
    mixed = subprocess.run(
        [*CMD, "validate", str(good), str(bad), str(tmp_path / "missing.toml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert mixed.returncode == 1
    assert "cert: 'expird' is not valid; expected one of valid, expired" in mixed.stdout
    assert "missing.toml: cannot read it" in mixed.stdout
    assert "1 valid, 2 invalid" in mixed.stdout
    # A validated file can be played and served directly.
    demo = subprocess.run(
        [*CMD, "demo", str(good), "--timeout", "0.3"], capture_output=True, text=True, timeout=60
    )
    assert demo.returncode == 0 and "my-training-case" in demo.stdout and "4.7.320" in demo.stdout
    usage = subprocess.run([*CMD, "validate"], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2


# -- French: every word the demo writes itself ---------------------------------------------

FRENCH_TOUR = [
    "auth-bad-credentials",
    "dns-nxdomain",
    "dns-timeout",
    "dns-nodata",
    "dns-truncated-tcp-fails",
    "tcp-timeout-server-down",
    "tcp-refused-firewall",
    "tls-starttls-missing",
    "tls-handshake-failure",
    "tls-cert-expired",
    "close-after-ehlo",
    "close-mid-data",
    "close-after-final-dot",
    "smtp-rcpt-550-unknown-user",
    "tls-cert-revoked",
    "dane-tlsa-mismatch",
    "dane-host-mismatch",
    "mta-sts-mx-mismatch",
    "mta-sts-policy-cert-invalid",
    "mta-sts-policy-unreachable",
    "mta-sts-testing-cert-invalid",
    "baseline-delivered",
]


def english_phrases() -> list[str]:
    """The demo's own English, from its tables (not from any output): labels and sentences."""
    out = []
    for name, en in LABELS["en"].items():
        if en != LABELS["fr"][name]:
            out += [p.strip() for p in re.split(r"\{\w+\}", en) if re.search("[a-z]{3}", p)]
    for table in (demo.NOTES, demo.CONTENT, demo.DNS_ANSWERS, demo.SERVER_FAULTS, demo.WIRE):
        out += table.english()
    for en in demo.SUMMARY["en"].values():
        out += [p.strip() for p in re.split(r"\{\w+\}", en) if re.search("[a-z]{3}", p)]
    return sorted(set(out))


def english_in(text: str) -> list[str]:
    found = []
    for phrase in english_phrases():
        head = r"(?<!\w)" if phrase[0].isalnum() else ""
        tail = r"(?!\w)" if phrase[-1].isalnum() else ""
        if re.search(head + re.escape(phrase) + tail, text):
            found.append(phrase)
    return found


def own_words(text: str, ids: list[str]) -> str:
    """The demo's output without what it quotes: the wire, the client's report line, certificate
    names, OpenSSL's messages, scenario ids."""
    kept = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        # The client's own accounts (its content, its masked credentials) are the demo's words.
        if line.startswith(("  S <  ", "  C >  ")) and not re.search(
            r"<(contenu du message|\w.*masqu)", line
        ):
            continue
        if i and lines[i - 1].startswith("Le client signale"):
            continue  # the report, in Exchange's trace style
        kept.append(line)
    out = "\n".join(kept)
    out = re.sub(r"\b(CN|OU|O)=[^,]*", "", out)
    out = re.sub(r"\(OpenSSL : .*?, \d+\)", "", out)
    for sid in ids:
        out = out.replace(sid, "")
    return out


def test_the_phrase_list_finds_the_english_it_is_made_of():
    # The check below can fail: it finds the demo's English sentences and labels.
    assert "the server closed the connection (" in english_phrases()
    found = english_in("  *   the server closed the connection (FIN) during EHLO\nHow to fix it:")
    assert "the server closed the connection (" in found and "How to fix it" in found
    assert english_in("le serveur a fermé la connexion (FIN) pendant EHLO") == []


def test_the_demo_in_french_writes_no_english_of_its_own():
    text, results = play(FRENCH_TOUR, "fr")
    assert [r.scenario.id for r in results] == FRENCH_TOUR
    own = own_words(text, FRENCH_TOUR)
    assert english_in(own) == []
    # What was translated is there, in French (the filter above did not remove it all).
    for phrase in [
        "Les faux serveurs:",
        "TCP connexion à 127.",
        "connecté",
        "aucune réponse de 127.",
        "connexion à 127.",
        "refusée (RST)",
        "STARTTLS est absent de la réponse à EHLO, alors que TLS est exigé : abandon",
        "certificat refusé : certificat expiré",
        "échec de la négociation TLS : SSLV3_ALERT_HANDSHAKE_FAILURE",
        "le serveur a fermé la connexion (FIN) pendant EHLO",
        "le serveur a fermé la connexion (FIN) pendant le point final",
        "serveur: coupure (fin) après EHLO, avant sa réponse",
        "serveur: alerte TLS handshake_failure envoyée",
        "AUTH PLAIN <identifiants masqués>",
        "<contenu du message, ",
        "A mail.contoso.test : NXDOMAIN par UDP",
        "A mail.contoso.test : aucune réponse (délai dépassé) par UDP",
        "A smtp.contoso.test : aucun enregistrement (NODATA) par UDP",
        "A mail.contoso.test : connexion fermée (CLOSED) par TCP après une réponse UDP tronquée",
        "(certificat expiré, sa validité a pris fin hier)",
        "TLS TLSv1.3 établi, certificat vérifié pour mail.contoso.test",
        "certificat refusé : certificat révoqué",
        "[DNSSEC secure ; bit AD présent]",
        "TLS et une correspondance exigés",
        "comparé à l'autorité qui l'a émis (clé publique, SHA-256 ",
        ") : correspond",
        "DANE : le certificat de mx1.contoso.test échoue : certificate-host-mismatch",
        "politique servie : version: STSv1 | mode: enforce | mx: mx9.contoso.test | max_age: 86400",
        "hôte de la politique : échec de la négociation TLS : SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "mta-sts.contoso.test : aucune requête reçue",
        "MTA-STS (mode testing) : certificate-expired ; signalé, remis malgré tout",
        "rapport TLS reçu à mailto:tls-reports@fabrikam.test (par courrier)",
    ]:
        assert phrase in own, phrase
    assert "certificat refusé : certificat expiré (OpenSSL : certificate has expired, 10)" in text
    # The wire stays as it came.
    assert "S <  220 2.0.0 Ready to start TLS" in text and "C >  EHLO mailfakes-client.test" in text
    # Every note the client or a fake wrote in English was given in French.
    for r in results:
        for line in r.lines:
            if line.step and line.raw and line.step not in ("answer", "cert"):
                assert line.text != line.raw, line


def test_the_html_page_in_french_has_no_english_labels():
    ids = ["tcp-refused-firewall", "tls-cert-expired", "dane-tlsa-mismatch", "mta-sts-policy-cert-invalid"]
    _, results = play(ids, "fr")
    page = render_html(results, "fr", generated=datetime(2025, 3, 4, 5, 6, tzinfo=UTC))
    text = html_text(page)
    assert english_in(own_words(text, ids)) == []
    for phrase in [
        "Résumé",
        "version de mailfakes",
        "Scénarios joués",
        "Diagramme de séquence",
        "Le client signale",
    ]:
        assert phrase in text


def html_text(page: str) -> str:
    """The page's words, each element on its own line, without the wire lines of the dialogue."""
    page = re.sub(r"<style>.*?</style>", "", page, flags=re.S)
    page = re.sub(r'<div class="(server|client)">[^<]*</div>', "", page)
    page = re.sub(r"<title>[^<]*</title>", "", page)  # tooltips repeat the dialogue's lines
    page = re.sub(r'<text [^>]*fill="(#2f62c9|#8e44ad)"[^>]*>[^<]*</text>', "", page)  # SMTP arrows
    page = re.sub(r'<p class="report[^"]*">[^<]*', "", page)
    return re.sub(r"<[^>]+>", "\n", page).replace("&#x27;", "'").replace("&gt;", ">").replace("&lt;", "<")


def test_french_sentences_written_by_hand():
    cases = {
        (demo.NOTES, "the server closed the connection (RST) during the final dot"): (
            "le serveur a fermé la connexion (RST) pendant le point final"
        ),
        (demo.NOTES, "no reply to the greeting in 0.3 s"): "aucune réponse à l'accueil en 0.3 s",
        (demo.NOTES, "no reply to DATA in 1 s"): "aucune réponse à DATA en 1 s",
        (demo.NOTES, "connection lost during MAIL: [Errno 32] Broken pipe"): (
            "connexion perdue pendant MAIL : [Errno 32] Broken pipe"
        ),
        (demo.NOTES, "certificate rejected: self-signed certificate (18)"): (
            "certificat refusé : certificat auto-signé (OpenSSL : self-signed certificate, 18)"
        ),
        (demo.NOTES, "certificate rejected: something new (99)"): "certificat refusé : something new (99)",
        (demo.DNS_ANSWERS, "MX contoso.test: NOERROR over UDP -> 10 mx1.contoso.test"): (
            "MX contoso.test : NOERROR par UDP -> 10 mx1.contoso.test"
        ),
        (demo.SERVER_FAULTS, "cut (rst) after 17 bytes of message content"): (
            "coupure (rst) après 17 octets du contenu du message"
        ),
        (
            demo.SERVER_FAULTS,
            "cut (fin) after MAIL, before its reply",
        ): "coupure (fin) après MAIL, avant sa réponse",
        (demo.SERVER_FAULTS, "message rate limit: 421"): "limite de débit de messages atteinte : 421",
        (demo.SERVER_FAULTS, "connection rate limit: connection refused"): (
            "limite de débit de connexions atteinte : connexion refusée"
        ),
        (demo.SERVER_FAULTS, "concurrency limit: connection refused"): (
            "limite de sessions simultanées : connexion refusée"
        ),
        (
            demo.SERVER_FAULTS,
            "client sent 'RCPT TO:<a@contoso.test>' before the reply to its last command (PIPELINING is off)",
        ): "le client a envoyé 'RCPT TO:<a@contoso.test>' avant la réponse à sa commande précédente (PIPELINING absent)",
        (demo.CONTENT, "<password, masked>"): "<mot de passe masqué>",
        (demo.SERVER_FAULTS, "DNS answer to A mail.contoso.test (NOERROR) sent after 800 ms"): (
            "réponse DNS à A mail.contoso.test (NOERROR) envoyée après 800 ms"
        ),
        (demo.WIRE, "closes instead of answering MAIL (RST)"): "ferme au lieu de répondre à MAIL (RST)",
        (demo.WIRE, "final dot → `451 4.3.0 Local error` then closes (FIN)"): (
            "point final → `451 4.3.0 Local error` puis ferme (FIN)"
        ),
        (demo.WIRE, "DATA_END delayed 300 ms"): "DATA_END : réponse retardée de 300 ms",
        (demo.WIRE, "final dot delayed 300 ms"): "point final : réponse retardée de 300 ms",
        (demo.WIRE, "every other reply delayed 50 ms"): "toute autre réponse retardée de 50 ms",
        (demo.WIRE, "DNS mail.contoso.test A → NXDOMAIN after 200 ms"): (
            "DNS mail.contoso.test A → NXDOMAIN après 200 ms"
        ),
        (demo.WIRE, "DNS mail.contoso.test → UDP answer truncated, TCP retry gets SERVFAIL"): (
            "DNS mail.contoso.test → réponse UDP tronquée, la reprise sur TCP reçoit SERVFAIL"
        ),
        (demo.WIRE, "DNS mail.contoso.test → SERVFAIL (from 2m until 1d2h)"): (
            "DNS mail.contoso.test → SERVFAIL (de 2m à 1j2h)"
        ),
        (demo.WIRE, "for its first 3 session(s) only"): "pour ses 3 premières sessions seulement",
    }
    for (table, en), fr in cases.items():
        assert table.say(en, "fr") == fr, en
        assert table.say(en, "en") == en
    assert demo.NOTES.say("a sentence nobody wrote", "fr") == "a sentence nobody wrote"


def test_every_fault_description_of_the_catalogue_has_its_french():
    from mailfakes.faults import describe_dns_fault, describe_host
    from mailfakes.markdown import wire_summary

    for s in scenarios.load_catalogue().values():
        assert demo.wire_summary(s, "en") == wire_summary(s), s.id
        phrases = [d for h in s.world.hosts for d in describe_host(h)]
        phrases += [describe_dns_fault(f) for f in s.world.dns_faults]
        for phrase in phrases:
            assert demo.WIRE.match(phrase) is not None, f"{s.id}: no French for {phrase!r}"
        french = re.sub(r"`[^`]*`", "", demo.wire_summary(s, "fr"))  # replies as the fake sends them
        assert english_in(french) == [], s.id
    for (key, value), fr in demo.EFFECTS_FR.items():
        assert fr and demo.cert_effect(value, "fr") == fr if key == "cert" else fr


def test_every_value_of_the_described_keys_has_its_french():
    from mailfakes.faults import key

    for name in (
        "kind",
        "tls",
        "cert",
        "close_at",
        "dns_faults",
        "dns_faults.tcp",
        "auth.fault",
        "extensions_off",
    ):
        for value in key(name).values:
            assert (name, value) in demo.EFFECTS_FR, (name, value)


# -- the page: summary and sequence diagrams --------------------------------------------------


def svgs(page: str) -> list[ET.Element]:
    return [ET.fromstring(m) for m in re.findall(r"<svg .*?</svg>", page, re.S)]


def texts(svg: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in svg.iter("text")]


def test_html_page_opens_with_a_summary_and_draws_each_dialogue():
    ids = ["dns-nxdomain", "tcp-refused-firewall", "tls-cert-expired", "baseline-delivered"]
    _, results = play(ids, "en")
    # One result claims another scenario's report: a code that is not the expected one.
    wrong = DemoResult(scenarios.get("tcp-timeout-server-down"), "en", results[1].lines, results[1].report)
    when = datetime(2025, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=1)))
    page = render_html([*results, wrong], "en", generated=when)
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page) and "<script" not in page
    summary = page[page.index('<section class="summary"') : page.index("</section>")]
    assert page.index('<section class="summary"') < page.index('<section id="dns-nxdomain"')
    words = flat(re.sub(r"<[^>]+>", " ", summary))
    assert "Date 2025-03-04 06:06" not in words and "2025-03-04 05:06" in words
    assert 'datetime="2025-03-04T05:06:00+01:00"' in summary
    assert f"mailfakes version {__import__('mailfakes').__version__}" in words
    assert (
        "Scenarios played 5 · dns-nxdomain tcp-refused-firewall tls-cert-expired baseline-delivered" in words
    )
    assert "as expected: 4 , not as expected: 1 :" in words
    assert "tcp-timeout-server-down (reported 4.4.316, expected 4.4.315)" in words
    assert '<a href="#tcp-timeout-server-down">' in summary
    assert 'data-as-expected="no"' in page and page.count('data-as-expected="yes"') == 4

    diagrams = svgs(page)
    assert len(diagrams) == 5
    for svg in diagrams:
        assert svg.get("role") == "img" and svg.find("title") is not None
        assert texts(svg)[:3] == ["DNS", "client", "server"]  # the lifelines' heads
    nxdomain, refused, expired, delivered, _ = diagrams
    assert "A mail.contoso.test ?" in texts(nxdomain)
    assert breaks(nxdomain) == ["NXDOMAIN"]
    assert any(t.startswith("TCP connecting to 127.") for t in texts(refused))
    assert breaks(refused) == [next(t for t in texts(refused) if t.startswith("connection to 127."))]
    assert breaks(expired) == ["certificate rejected: certificate has expired (10)"]
    assert "STARTTLS" in texts(expired) and "220 2.0.0 Ready to start TLS" in texts(expired)
    assert any(
        t.startswith("certificate presented: CN=mail.contoso.test (expired certificate")
        for t in texts(expired)
    )
    assert breaks(delivered) == []
    assert "250 2.0.0 Ok: queued as MF000001" in texts(delivered) or any(
        t.startswith("250 2.0.0") for t in texts(delivered)
    )
    assert texts(delivered)[-1] == "The client reports: 2.0.0"


def breaks(svg: ET.Element) -> list[str]:
    """The labels of the rows marked as where the delivery broke."""
    return ["".join(t.itertext()) for g in svg.iter("g") if g.get("class") == "break" for t in g.iter("text")]


def test_the_diagram_draws_a_timeout_as_an_arrow_that_never_arrives():
    _, results = play(["dns-timeout", "tcp-timeout-server-down"], "fr")
    dns, tcp = (ET.fromstring(demo.sequence_svg(r, f"t{i}")) for i, r in enumerate(results))
    # The client asks A, then AAAA: both go unanswered, and the last is where it gave up.
    assert breaks(dns) == ["AAAA mail.contoso.test : aucune réponse (délai dépassé) par UDP"]
    assert texts(dns)[:3] == ["DNS", "client", "serveur"]
    # No answer comes back: one arrow (the query) and no arrowhead on it.
    assert len(dns.findall(".//polygon")) == 0
    assert [t for t in texts(tcp) if t.startswith("aucune réponse de 127.")] == breaks(tcp)


QUEUE_RUN = {
    "scenario": "tcp-refused-firewall",
    "outcome": "expired",
    "lifetime": 7200,
    "attempts": [
        {"at": 0.0, "code": "4.4.316", "line": "450 4.4.316 Connection refused"},
        {"at": 3600.0, "code": "4.4.316", "line": "450 4.4.316 Connection refused"},
    ],
    "ndr": {"to": "sender@fabrikam.test", "status": "4.4.7", "diagnostic": "", "last_error": "4.4.316"},
}


def test_a_played_queue_run_shows_in_the_terminal_and_on_the_page():
    _, (result,) = play(["tcp-refused-firewall"], "fr")
    result.queue = QUEUE_RUN
    page = render_html([result], "fr")
    alert = re.search(
        r'<div class="queue-alert temporary" data-code="4.4.316" data-count="1"[^>]*>(.*?)</div>', page, re.S
    )
    assert alert, "no queue alert for 4.4.316"
    # What to fix is the scenario's own fix, in the page's language.
    assert html.escape(flat(scenarios.get("tcp-refused-firewall").fix["fr"])) in alert.group(1)
    section = page[page.index('<section id="tcp-refused-firewall"') :]
    assert "<h3>La file d&#x27;attente</h3>" in section
    (timeline,) = [
        ET.fromstring(s) for s in re.findall(r'<svg [^>]*class="timeline".*?</svg>', section, re.S)
    ]
    assert len([g for g in timeline.iter("g") if g.get("class") == "attempt"]) == 2
    out = io.StringIO()
    Player(out, lang="fr", colour=False).show_queue(QUEUE_RUN)
    assert out.getvalue().splitlines() == [
        "La file d'attente:",
        "  +0:00  4.4.316  450 4.4.316 Connection refused",
        "  +1:00  4.4.316  450 4.4.316 Connection refused",
        "  Expiré à +2:00 : le message est resté en file d'attente toute sa durée de vie (2:00), "
        "en 2 tentatives (dernière erreur 4.4.316).",
        "  Rapport de non-remise (NDR) à sender@fabrikam.test : 4.4.7, dernière erreur 4.4.316",
    ]


# -- a queue scenario in the demo: the first attempt live, then the whole cycle --------------


@pytest.mark.parametrize(
    ("lang", "expired", "delivered"), [("en", "expired", "delivered"), ("fr", "expiré", "remis")]
)
def test_the_demo_plays_a_queue_scenario_as_a_timeline(
    tmp_path: Path, lang: str, expired: str, delivered: str
):
    page = tmp_path / "demo.html"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailfakes",
            "demo",
            "queue-down-refused",
            "queue-recovers-after-2h",
            "--lang",
            lang,
            "--html",
            str(page),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    queue_word = {"en": "The queue:", "fr": "La file d'attente:"}[lang]
    assert out.count(queue_word) == 2
    # 27 tries of a host that never comes back (0, 5m, 15m, 30m, 1h, then hourly to 23h), one NDR.
    assert out.count("4.4.316  450 4.4.316") == 27 + 5
    assert f"{expired} (" in out and f"{delivered} (" in out
    assert "4.4.7" in out and "QUEUE.Expired" in out
    text = page.read_text(encoding="utf-8")
    for sid in ("queue-down-refused", "queue-recovers-after-2h"):
        section = text.split(f'data-scenario="{sid}"', 1)[1].split("</section>", 1)[0]
        assert 'class="queue-lines"' in section and section.count("<svg") == 2  # dialogue and queue
    assert 'class="report diff"' not in text


# -- TLS policy: DNSSEC, DANE, MTA-STS and TLS-RPT in the dialogue -----------------------------

# The TLSA data dane-tlsa-mismatch publishes: a SHA-256 over bytes no certificate holds.
MISMATCHED_TLSA = "628887af7c013ad75ae987d37919ead2505420a7e567ec4bbe4129bd6d8ccff4"


def without_scenario_texts(text: str, ids: list[str], lang: str) -> str:
    """``text`` without the scenarios' own title, cause and fix (they quote servers' English)."""
    words = flat(text)
    for sid in ids:
        s = scenarios.get(sid)
        for part in (s.title[lang], s.cause[lang], s.fix[lang]):
            words = words.replace(flat(part), "")
    return words


def served_certificate(world, host: str) -> bytes:
    """The leaf ``host`` presents after STARTTLS, read by smtplib with a context that checks nothing."""
    import smtplib
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP(world.address_of(host), world.port, timeout=5) as smtp:
        smtp.starttls(context=context)
        der = smtp.sock.getpeercert(binary_form=True)
    assert der
    return der


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_a_dane_scenario_shows_its_tlsa_record_and_where_it_broke(tmp_path, monkeypatch, lang):
    import dns.flags
    import dns.message
    import dns.query
    from dane_probe import association
    from mailfakes.runtime import Runtime
    from mailfakes.world import World

    # The demo's CA and ours, from one cache: the same certificates (the process's own CA may
    # come from another cache, made before this test).
    monkeypatch.setenv("MAILFAKES_CERT_CACHE", str(tmp_path / "certs"))
    sid = "dane-tlsa-mismatch"
    text, (result,) = play([sid], lang)
    # What the world publishes and presents, read by other clients: dnspython and smtplib.
    s = scenarios.get(sid)
    with Runtime() as runtime:
        world = World(s.world, runtime=runtime).start()
        try:
            query = dns.message.make_query("_25._tcp.mx1.contoso.test", "TLSA", want_dnssec=True)
            query.flags |= dns.flags.AD
            answer = dns.query.udp(query, world.dns_host, port=world.dns_port, timeout=5)
            assert answer.flags & dns.flags.AD
            (tlsa,) = [r.to_text() for rrset in answer.answer if rrset.rdtype == 52 for r in rrset]
            key = association(served_certificate(world, "mx1.contoso.test"), 1, 1).hex()
        finally:
            world.stop()
    assert tlsa == f"3 1 1 {MISMATCHED_TLSA}" and key != MISMATCHED_TLSA
    facts = {
        "en": [
            "The fakes:",
            "DNSSEC-signed zones test, contoso.test",
            "mx1.contoso.test: TLSA 3 1 1 (DANE-EE: its own certificate), matching no key it holds",
            "TLS reports of contoso.test to mailto:tls-reports@fabrikam.test",
            "DNS  MX contoso.test: NOERROR (secure) over UDP -> 10 mx1.contoso.test  "
            "[DNSSEC secure; AD bit set]",
            f"DNS  TLSA _25._tcp.mx1.contoso.test: NOERROR (secure) over UDP -> 3 1 1 {MISMATCHED_TLSA}  "
            "[DNSSEC secure; AD bit set]",
            "POL  DANE: 1 secure TLSA record(s) for mx1.contoso.test: TLS and a match required",
            f" !   TLSA 3 1 1 {MISMATCHED_TLSA[:12]}… against the certificate presented "
            f"(public key, SHA-256 {key[:12]}…): no match",
            " !   DANE: the certificate of mx1.contoso.test fails: tlsa-invalid",
            "RPT  TLS report received at mailto:tls-reports@fabrikam.test (by mail): policy tlsa of "
            "contoso.test, 0 successful and 1 failed session(s): tlsa-invalid ×1",
        ],
        "fr": [
            "Les faux serveurs:",
            "zones signées (DNSSEC) test, contoso.test",
            "mx1.contoso.test : TLSA 3 1 1 (DANE-EE : son propre certificat), qui ne correspond à aucune "
            "de ses clés",
            "rapports TLS de contoso.test à mailto:tls-reports@fabrikam.test",
            "DNS  MX contoso.test : NOERROR (sécurisée, AD) par UDP -> 10 mx1.contoso.test  "
            "[DNSSEC secure ; bit AD présent]",
            "DNS  TLSA _25._tcp.mx1.contoso.test : NOERROR (sécurisée, AD) par UDP -> 3 1 1 "
            f"{MISMATCHED_TLSA}  [DNSSEC secure ; bit AD présent]",
            "POL  DANE : 1 enregistrement(s) TLSA sécurisé(s) pour mx1.contoso.test : TLS et une "
            "correspondance exigés",
            f" !   TLSA 3 1 1 {MISMATCHED_TLSA[:12]}… comparé au certificat présenté "
            f"(clé publique, SHA-256 {key[:12]}…) : ne correspond pas",
            " !   DANE : le certificat de mx1.contoso.test échoue : tlsa-invalid",
            "RPT  rapport TLS reçu à mailto:tls-reports@fabrikam.test (par courrier) : politique tlsa de "
            "contoso.test, 0 session(s) réussie(s) et 1 en échec : tlsa-invalid ×1",
        ],
    }[lang]
    words = flat(text)
    for fact in facts:
        assert flat(fact) in words, fact
    assert result.reported == "4.7.323"
    # The diagram breaks at the DANE failure, the TLSA answer carrying its AD bit.
    svg = ET.fromstring(demo.sequence_svg(result))
    assert break_titles(svg) == [flat(facts[8]).removeprefix("! ")]
    assert any(t.startswith("NOERROR AD → 3 1 1 628887af7c01…") for t in texts(svg))
    if lang == "fr":
        assert english_in(without_scenario_texts(own_words(text, [sid]), [sid], lang)) == []


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_an_mta_sts_scenario_shows_the_policy_it_fetched_and_where_it_broke(lang):
    import socket
    import ssl

    from mailfakes.world import World

    sid = "mta-sts-mx-mismatch"
    text, (result,) = play([sid], lang)
    # The policy as a plain TLS client gets it from the world's policy host.
    world = World(scenarios.get(sid).world).start()
    try:
        context = ssl.create_default_context(cafile=str(world.ca_file))
        host = "mta-sts.contoso.test"
        with (
            socket.create_connection((world.address_of(host), world.https_port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.sendall(
                f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            got = b""
            while chunk := tls.recv(4096):
                got += chunk
    finally:
        world.stop()
    head, _, body = got.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200")
    policy = " | ".join(line for line in body.split("\r\n") if line)
    assert policy == "version: STSv1 | mode: enforce | mx: mx9.contoso.test | max_age: 86400"
    facts = {
        "en": [
            "MTA-STS policy of contoso.test: enforce mode, MX hosts mx9.contoso.test",
            "DNS  TXT _mta-sts.contoso.test: NOERROR over UDP -> v=STSv1; id=20261201T000000",
            "WEB  HTTPS GET https://mta-sts.contoso.test/.well-known/mta-sts.txt",
            "CRT  certificate presented: CN=mta-sts.contoso.test",
            "WEB  answer 200 (TLSv1.",
            ", SNI mta-sts.contoso.test)",
            f"WEB  policy served: {policy}",
            "POL  MTA-STS: policy 20261201T000000 for contoso.test: mode enforce, mx mx9.contoso.test",
            " !   MTA-STS: mx1.contoso.test is not an MX host the policy of contoso.test names",
            "RPT  TLS report received at mailto:tls-reports@fabrikam.test (by mail): policy sts of "
            "contoso.test, 0 successful and 1 failed session(s): validation-failure ×1",
        ],
        "fr": [
            "politique MTA-STS de contoso.test en mode enforce, hôtes MX mx9.contoso.test",
            "DNS  TXT _mta-sts.contoso.test : NOERROR par UDP -> v=STSv1; id=20261201T000000",
            "WEB  HTTPS GET https://mta-sts.contoso.test/.well-known/mta-sts.txt",
            "CRT  certificat présenté: CN=mta-sts.contoso.test",
            "WEB  réponse 200 (TLSv1.",
            ", SNI mta-sts.contoso.test)",
            f"WEB  politique servie : {policy}",
            "POL  MTA-STS : politique 20261201T000000 pour contoso.test en mode enforce, hôtes MX "
            "mx9.contoso.test",
            " !   MTA-STS : mx1.contoso.test n'est pas un hôte MX que nomme la politique de contoso.test",
            "RPT  rapport TLS reçu à mailto:tls-reports@fabrikam.test (par courrier) : politique sts de "
            "contoso.test, 0 session(s) réussie(s) et 1 en échec : validation-failure ×1",
        ],
    }[lang]
    words = flat(text)
    for fact in facts:
        assert flat(fact) in words, fact
    assert result.reported == "4.4.8"
    # The diagram has the policy host's lifeline, the GET to it, and breaks at the MX mismatch.
    svg = ET.fromstring(demo.sequence_svg(result))
    assert texts(svg)[:4] == ["DNS", "client", {"en": "server", "fr": "serveur"}[lang], "HTTPS"]
    assert "HTTPS GET https://mta-sts.contoso.test/.well-known/mta-sts.txt" in texts(svg)
    assert break_titles(svg) == [flat(facts[8]).removeprefix("! ")]
    if lang == "fr":
        assert english_in(without_scenario_texts(own_words(text, [sid]), [sid], lang)) == []


def test_a_failed_policy_fetch_and_a_bogus_answer_are_told_as_the_world_saw_them():
    ids = ["mta-sts-policy-cert-invalid", "mta-sts-policy-unreachable", "dane-dnssec-invalid"]
    text, results = play(ids, "en")
    words = flat(text)
    for fact in [
        # The policy host presented an expired certificate; the connector refused it, so did its log.
        "CRT certificate presented: CN=mta-sts.contoso.test,OU=mailfakes expired certificate",
        "(expired certificate, its validity ended yesterday)",
        "! policy host: TLS handshake failed: SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "! MTA-STS: no policy for contoso.test: mta-sts.contoso.test: certificate rejected: certificate has "
        "expired (sts-webpki-invalid)",
        "policy sts of contoso.test, 0 successful and 1 failed session(s): sts-webpki-invalid ×1",
        # Nothing listens at the unreachable one: no request arrived.
        "! mta-sts.contoso.test: no request arrived",
        "(sts-policy-fetch-error)",
        # The bogus TLSA answer: SERVFAIL, the reason from the fake's query log, no AD.
        "DNS TLSA _25._tcp.mx1.contoso.test: SERVFAIL over UDP [DNSSEC bogus: the RRSIG does not verify; "
        "no AD bit]",
        "! DANE: TLSA lookup error for mx1.contoso.test:25 (TLSA _25._tcp.mx1.contoso.test: SERVFAIL over "
        "UDP)",
        "policy tlsa of contoso.test, 0 successful and 1 failed session(s): dnssec-invalid ×1",
        "[DNSSEC: zone not signed; no AD bit]",  # the MX of an unsigned world, asked with AD
    ]:
        assert flat(fact) in words, fact
    cert_invalid, unreachable, bogus = (
        ET.fromstring(demo.sequence_svg(r, f"p{i}")) for i, r in enumerate(results)
    )
    assert breaks(cert_invalid) == [] and breaks(unreachable) == []  # delivered as without MTA-STS
    assert "SERVFAIL (bogus)" in texts(bogus)
    assert break_titles(bogus) == [
        "DANE: TLSA lookup error for mx1.contoso.test:25 (TLSA _25._tcp.mx1.contoso.test: SERVFAIL over UDP)"
    ]
    # The GET that nothing answered never arrives: no arrowhead at the policy host's lifeline.
    get = next(
        g
        for g in unreachable.iter("g")
        if any(
            t.text == "HTTPS GET https://mta-sts.contoso.test/.well-known/mta-sts.txt" for t in g.iter("text")
        )
    )
    assert get.find("polygon") is None and get.find("path") is not None


def break_titles(svg: ET.Element) -> list[str]:
    """The whole text (the tooltip) of the rows marked as where the delivery broke."""
    return [g.findtext("title") or "" for g in svg.iter("g") if g.get("class") == "break"]


def test_the_summary_words_have_their_french():
    from mailfakes.markdown import SUMMARY_WORDS

    assert set(demo.SUMMARY["fr"]) == set(SUMMARY_WORDS)
    for name, en in SUMMARY_WORDS.items():
        fr = demo.SUMMARY["fr"][name]
        assert sorted(re.findall(r"\{\w+\}", fr)) == sorted(re.findall(r"\{\w+\}", en)), name
        assert fr != en, name


def test_tls_policy_sentences_written_by_hand():
    cases = {
        (demo.DNS_ANSWERS, "MX contoso.test: NOERROR (secure) over UDP -> 10 mx1.contoso.test"): (
            "MX contoso.test : NOERROR (sécurisée, AD) par UDP -> 10 mx1.contoso.test"
        ),
        (demo.NOTES, "certificate rejected: certificate revoked (23)"): (
            "certificat refusé : certificat révoqué (OpenSSL : certificate revoked, 23)"
        ),
        (
            demo.NOTES,
            "DANE: TLSA lookup error for mx1.contoso.test:25 (TLSA _25._tcp.mx1.contoso.test: SERVFAIL over UDP)",
        ): (
            "DANE : erreur de recherche TLSA pour mx1.contoso.test:25 (TLSA _25._tcp.mx1.contoso.test : "
            "SERVFAIL par UDP)"
        ),
        (demo.NOTES, "TLS TLSv1.3 established, DANE: authenticated by TLSA for mx1.contoso.test"): (
            "TLS TLSv1.3 établi, DANE : authentifié par TLSA pour mx1.contoso.test"
        ),
        (
            demo.NOTES,
            "MTA-STS: no policy for contoso.test: cannot connect to mta-sts.contoso.test (127.0.0.4:443): "
            "[Errno 111] Connection refused (sts-policy-fetch-error)",
        ): (
            "MTA-STS : pas de politique pour contoso.test : connexion impossible à mta-sts.contoso.test "
            "(127.0.0.4:443) : [Errno 111] Connection refused (sts-policy-fetch-error)"
        ),
        (
            demo.NOTES,
            "MTA-STS: no policy for contoso.test: mta-sts.contoso.test: HTTP 404 Not Found (sts-policy-fetch-error)",
        ): "MTA-STS : pas de politique pour contoso.test : mta-sts.contoso.test : HTTP 404 Not Found "
        "(sts-policy-fetch-error)",
        (demo.NOTES, "MTA-STS (testing): certificate-expired; reported, delivered anyway"): (
            "MTA-STS (mode testing) : certificate-expired ; signalé, remis malgré tout"
        ),
        (
            demo.NOTES,
            "TLS-RPT: contoso.test: report to https://rua.contoso.test/tlsrpt: HTTP/1.1 201 Created",
        ): (
            "TLS-RPT : contoso.test : rapport envoyé à https://rua.contoso.test/tlsrpt : HTTP/1.1 201 Created"
        ),
        (
            demo.WIRE,
            "DNS _25._tcp.mx1.contoso.test TLSA → signed zone: the RRSIG expired yesterday (bogus): SERVFAIL, "
            "the records to a query with CD set",
        ): (
            "DNS _25._tcp.mx1.contoso.test TLSA → zone signée : la signature RRSIG a expiré hier (bogus) : "
            "SERVFAIL, les enregistrements à une requête qui pose CD"
        ),
    }
    for (table, en), fr in cases.items():
        assert table.say(en, "fr") == fr, en
        assert table.say(en, "en") == en
