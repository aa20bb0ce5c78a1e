"""A user's own scenarios in the pytest plugin: .toml paths, inline dicts, and typos that stay local.

Each test is a throwaway project outside this repository, run by a pytest
subprocess, as a user meets the plugin.
"""

from __future__ import annotations

import re
from pathlib import Path

from test_plugin import counts as _counts
from test_plugin import run_pytest


def counts(output: str) -> dict[str, int]:
    # pytest says "1 error" and "2 errors": one key for both.
    return {("errors" if k == "error" else k): n for k, n in _counts(output).items()}


RELAY_OFF = """\
id = "relay-off"
code = "4.4.316"
rfc3463 = "4.4.1"

[title]
en = "Our relay is switched off"

[target]
smart_host = "relay.contoso.test"
mail_domain = "contoso.test"

[world]
zone = "test"

[world.hosts."relay.contoso.test"]
kind = "refuse"
"""

# One line, so that it drops into a test file at any indent.
INLINE = repr(
    {
        "id": "inline-421",
        "code": "4.4.317",
        "rfc3463": "4.3.2",
        "title": {"en": "Relay busy at the greeting"},
        "target": {"smart_host": "relay.contoso.test", "mail_domain": "contoso.test"},
        "world": {
            "zone": "test",
            "hosts": {
                "relay.contoso.test": {
                    "greeting": {"code": 421, "enhanced": "4.3.2", "text": "busy", "close": "fin"}
                }
            },
        },
    }
)


def _project(tmp_path: Path) -> Path:
    # pytest.ini marks the rootdir; the test file sits one level down, in tests/.
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "cases").mkdir()
    (tmp_path / "cases" / "relay-off.toml").write_text(RELAY_OFF)
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "near").mkdir()
    (tests / "near" / "relay-off.toml").write_text(RELAY_OFF)
    return tests


def _passed(out: str, name: str) -> bool:
    return re.search(rf"^PASSED \S*{re.escape(name)}$", out, re.M) is not None


def test_the_marker_takes_toml_paths_relative_to_the_test_file_the_rootdir_or_absolute(tmp_path):
    tests = _project(tmp_path)
    absolute = tmp_path / "cases" / "relay-off.toml"
    result = run_pytest(
        tests,
        f"""
        import pytest

        @pytest.mark.mail_scenarios("near/relay-off.toml")
        def test_next_to_the_test_file(mail_scenario):
            mail_scenario.assert_reported(mail_scenario.deliver(timeout=0.5))

        @pytest.mark.mail_scenarios("cases/relay-off.toml", control=False)
        def test_under_the_rootdir(mail_scenario):
            assert mail_scenario.title == "Our relay is switched off"
            mail_scenario.assert_reported(mail_scenario.deliver(timeout=0.5))

        @pytest.mark.mail_scenarios({str(absolute)!r}, "tcp-refused-firewall", control=False)
        def test_absolute_beside_the_catalogue(mail_scenario):
            mail_scenario.assert_reported(mail_scenario.deliver(timeout=0.5))

        def test_mail_world_takes_a_path(mail_world):
            import socket
            world = mail_world("near/relay-off.toml")
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((world.address_of("relay.contoso.test"), world.port), timeout=1)
        """,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert counts(out) == {"passed": 6}, out
    assert _passed(out, "test_next_to_the_test_file[baseline-delivered]")  # the control came along
    assert _passed(out, "test_next_to_the_test_file[relay-off]")
    assert _passed(out, "test_under_the_rootdir[relay-off]")
    assert _passed(out, "test_absolute_beside_the_catalogue[relay-off]")
    assert _passed(out, "test_absolute_beside_the_catalogue[tcp-refused-firewall]")


def test_a_wrong_report_on_a_users_own_scenario_fails_like_a_catalogue_one(tmp_path):
    tests = _project(tmp_path)
    result = run_pytest(
        tests,
        f"""
        import pytest

        @pytest.mark.mail_scenarios("near/relay-off.toml", control=False)
        def test_wrong_code(mail_scenario):
            mail_scenario.deliver(timeout=0.5)
            mail_scenario.assert_reported("450 4.4.318 Connection was closed abruptly")

        @pytest.mark.mail_scenarios({INLINE}, control=False)
        def test_right_code_without_trying(mail_scenario):
            mail_scenario.assert_reported("450 4.4.317 relay busy")
        """,
    )
    out = result.stdout
    assert result.returncode == 1
    assert counts(out) == {"failed": 2}, out
    assert "scenario relay-off (Our relay is switched off): expected 4.4.316" in out
    assert "found 4.4.318 in: 450 4.4.318 Connection was closed abruptly" in out
    # The witness judges an inline scenario too: the client never connected.
    assert (
        "scenario inline-421 (Relay busy at the greeting): the client reported 4.4.317, the expected code, "
        "but for the wrong reason"
    ) in out


def test_an_inline_scenario_in_the_marker_and_in_indirect_parametrize(tmp_path):
    result = run_pytest(
        tmp_path,
        f"""
        import pytest

        INLINE = {INLINE}

        @pytest.mark.mail_scenarios(INLINE)
        def test_marker(mail_scenario):
            assert mail_scenario.expected_code == {{"inline-421": "4.4.317"}}.get(mail_scenario.id, "2.0.0")
            mail_scenario.assert_reported(mail_scenario.deliver(timeout=0.5))

        @pytest.mark.parametrize("mail_scenario", [INLINE, "tcp-refused-firewall"], indirect=True)
        def test_indirect(mail_scenario):
            mail_scenario.assert_reported(mail_scenario.deliver(timeout=0.5))
        """,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert counts(out) == {"passed": 4}, out
    for name in (
        "test_marker[baseline-delivered]",
        "test_marker[inline-421]",
        "test_indirect[inline-421]",
        "test_indirect[tcp-refused-firewall]",
    ):
        assert _passed(out, name), (name, out)


def test_the_control_voids_an_inline_scenarios_pass_too(tmp_path):
    result = run_pytest(
        tmp_path,
        f"""
        import pytest

        @pytest.mark.mail_scenarios({INLINE})
        def test_always_busy(mail_scenario):
            mail_scenario.deliver(timeout=0.5)
            mail_scenario.assert_reported("450 4.4.317 relay busy")
        """,
    )
    out = result.stdout
    assert result.returncode == 1
    assert counts(out) == {"failed": 2}, out
    assert (
        "scenario inline-421 (Relay busy at the greeting): the client reported 4.4.317, the expected code, "
        "but the verdict is void: the client also fails the healthy baseline"
    ) in out


TYPOS = [
    # (marker arguments, what the one line must say)
    ('"tls-cert-expird"', "unknown scenario 'tls-cert-expird'; did you mean tls-cert-expired, "),
    ('"dns-nxdomian*"', "unknown scenario 'dns-nxdomian*'"),
    ('code="4.4.x"', "unknown code; expected one of 4.4.312, 4.4.315"),
    ('"tls-cert-*", code="4.7.32"', "no scenario of this code among the marker's; their codes: 4.7.320"),
    ('"cases/no-such.toml"', "no scenario file 'cases/no-such.toml': looked for "),
    ('"cases/broken.toml"', "cases/broken.toml: line 2, column 16: invalid TOML"),
    ('"cases/no-title.toml"', "title: missing; expected a table with an English text (en)"),
    ('{"id": "mine", "code": "4.4.316"}', "inline scenario 'mine': rfc3463: missing"),
]


def test_a_typo_in_the_marker_fails_that_test_alone_in_one_line(tmp_path):
    (tmp_path / "cases").mkdir()
    (tmp_path / "cases" / "broken.toml").write_text('id = "broken"\ncode = "4.4.316\n')
    (tmp_path / "cases" / "no-title.toml").write_text(
        RELAY_OFF.replace('[title]\nen = "Our relay is switched off"\n', "").replace("relay-off", "no-title")
    )
    bad = "".join(
        f"""
        @pytest.mark.mail_scenarios({args})
        def test_typo_{i}(mail_scenario):
            pass
        """
        for i, (args, _) in enumerate(TYPOS)
    )
    result = run_pytest(
        tmp_path,
        """
        import pytest

        @pytest.mark.mail_scenarios("tcp-refused-firewall", control=False)
        def test_good(mail_scenario):
            mail_scenario.assert_reported(mail_scenario.deliver(timeout=0.5))
        """
        + bad,
    )
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert _passed(out, "test_good[tcp-refused-firewall]"), out
    assert counts(out) == {"passed": 1, "errors": len(TYPOS)}, out
    assert "Traceback" not in out and "INTERNALERROR" not in out + result.stderr
    for i, (_args, said) in enumerate(TYPOS):
        assert f"ERROR test_user.py::test_typo_{i}[marker-error]" in out
        # The report of that test is one line: the marker argument, what is wrong, what is allowed.
        (line,) = _report(out, f"test_typo_{i}[marker-error]")
        assert line.startswith("@pytest.mark.mail_scenarios("), line
        assert said in line, (said, line)


def _report(out: str, name: str) -> list[str]:
    """The non-empty lines of one test's section in the ERRORS or FAILURES part of the output."""
    m = re.search(
        rf"^_+ (?:ERROR at setup of )?{re.escape(name)} _+\n(.*?)(?=^_{{3,}} |^={{3,}} )", out, re.M | re.S
    )
    assert m, (name, out)
    return [line for line in m.group(1).splitlines() if line.strip()]


def test_a_typo_in_mail_world_or_an_indirect_parameter_is_one_line_too(tmp_path):
    result = run_pytest(
        tmp_path,
        """
        import pytest

        def test_world_typo(mail_world):
            mail_world("tcp-refused-firewal")

        def test_world_path_typo(mail_world):
            mail_world("nowhere.toml")

        @pytest.mark.parametrize("mail_scenario", ["tls-cert-expird"], indirect=True)
        def test_indirect_typo(mail_scenario):
            pass
        """,
    )
    out = result.stdout
    assert result.returncode == 1
    assert counts(out) == {"failed": 2, "errors": 1}, out
    (line,) = _report(out, "test_world_typo")
    assert line == (
        "mail_world('tcp-refused-firewal'): unknown scenario 'tcp-refused-firewal'; "
        "did you mean tcp-refused-firewall?"
    )
    (line,) = _report(out, "test_world_path_typo")
    assert line.startswith("mail_world('nowhere.toml'): no scenario file 'nowhere.toml': looked for "), line
    (line,) = _report(out, "test_indirect_typo[tls-cert-expird]")
    assert line.startswith(
        "mail_scenario parameter 'tls-cert-expird': unknown scenario 'tls-cert-expird'; "
    ), line
    assert "Traceback" not in out


def test_a_french_demo_of_an_english_only_scenario_shows_the_english_text(tmp_path):
    import subprocess
    import sys

    explained = RELAY_OFF.replace("relay-off", "relay-off-explained") + (
        '\n[explain.en]\ncause = "The relay was switched off. Nothing listens."\nfix = "Switch it on."\n'
    )
    (tmp_path / "relay-off.toml").write_text(RELAY_OFF)
    (tmp_path / "relay-off-explained.toml").write_text(explained)
    files = ["relay-off.toml", "relay-off-explained.toml"]
    result = subprocess.run(
        [sys.executable, "-m", "mailfakes", "demo", *files, "--lang", "fr", "--timeout", "0.3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    first, second = out.split("relay-off-explained  ·")
    assert "Our relay is switched off" in first and "Le client signale:" in first
    # No explanation written: no empty Cause / Comment corriger headings.
    assert "Cause:" not in first and "Comment corriger:" not in first
    # An English explanation stands in for the French one, under the demo's French labels.
    assert "Cause:\n  The relay was switched off. Nothing listens." in second
    assert "Comment corriger:\n  Switch it on." in second
