"""mailfakes demo, serve --follow and validate, as a trainer uses them."""

from __future__ import annotations

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
from pathlib import Path

import pytest
from mailfakes import catalogue as scenarios
from mailfakes.demo import DEFAULT_TOUR, Player, render_html
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
    result = subprocess.run(
        [*CMD, "demo", *ids, "--lang", "fr", "--timeout", "0.3", "--html", str(html_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            html_file.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    for sid in ids:
        s = scenarios.get(sid)
        section = re.search(rf'<section id="{sid}"[^>]*data-code="([^"]+)"[^>]*>(.*?)</section>', page, re.S)
        assert section, f"no section for {sid} in the rendered page"
        assert section.group(1) == s.expected_code
        body = flat(re.sub(r"<[^>]+>", " ", section.group(2)))
        assert s.expected_code in body and s.title["fr"] in body


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
