"""The pytest plugin as a user meets it: a throwaway project outside this repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mailfakes import catalogue as scenarios

REPO = Path(__file__).resolve().parent.parent


def run_pytest(directory: Path, test_file: str, *args: str) -> subprocess.CompletedProcess[str]:
    assert REPO not in directory.resolve().parents, "the throwaway project must live outside the repo"
    (directory / "test_user.py").write_text(textwrap.dedent(test_file))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def counts(output: str) -> dict[str, int]:
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|errors?|skipped)", output)}


USER_TEST = """
    import pytest

    @pytest.mark.mail_scenarios("tcp-refused-*", "tls-cert-expired", "baseline-delivered")
    def test_my_client_reports_the_right_code(mail_scenario):
        report = mail_scenario.deliver(timeout=0.5)
        mail_scenario.assert_reported(str(report))
"""


def test_a_user_project_gets_one_test_per_selected_scenario(tmp_path):
    result = run_pytest(tmp_path, USER_TEST)
    assert result.returncode == 0, result.stdout + result.stderr
    assert counts(result.stdout) == {"passed": 4}
    for sid in (
        "tcp-refused-firewall",
        "tcp-refused-decommissioned",
        "tls-cert-expired",
        "baseline-delivered",
    ):
        assert f"PASSED test_user.py::test_my_client_reports_the_right_code[{sid}]" in result.stdout


def test_a_wrong_report_fails_with_scenario_expected_found_and_transcript(tmp_path):
    result = run_pytest(
        tmp_path,
        """
        import pytest

        @pytest.mark.mail_scenarios("tls-cert-expired")
        def test_wrong(mail_scenario):
            mail_scenario.deliver(timeout=0.5)  # something for the transcript
            mail_scenario.assert_reported("450 4.4.316 Connection refused [LastAttemptedServerName=x]")
        """,
    )
    assert result.returncode == 1
    out = result.stdout
    assert "scenario tls-cert-expired (Server certificate expired)" in out
    assert "expected 4.7.320 Certificate validation failed under profile eop" in out
    assert "found 4.4.316 in: 450 4.4.316 Connection refused" in out
    assert "what the fakes saw" in out
    assert "mail.contoso.test #1: S: 220 2.0.0 Ready to start TLS" in out
    assert "CERTIFICATE_EXPIRED" in out  # the server saw the client's alert


def test_profile_and_scenario_options(tmp_path):
    test_file = """
        import pytest

        @pytest.mark.mail_scenarios(code="4.7.320")
        def test_codes(mail_scenario):
            print("EXPECTED", mail_scenario.id, mail_scenario.expected_code)
            mail_scenario.assert_reported(mail_scenario.deliver(timeout=0.5))
    """
    result = run_pytest(
        tmp_path,
        test_file,
        "-s",
        "--mail-profile",
        "eop-observed",
        "--mail-scenarios",
        "tls-cert-ex*,tls-cert-wrong-host",
    )
    assert result.returncode == 0, result.stdout
    assert counts(result.stdout) == {"passed": 3}  # and the control, whatever the filter
    assert "EXPECTED baseline-delivered 2.0.0" in result.stdout
    assert "EXPECTED tls-cert-expired 4.4.317" in result.stdout
    assert "EXPECTED tls-cert-wrong-host 4.4.317" in result.stdout


def test_errors_inside_the_fakes_fail_the_test(tmp_path):
    result = run_pytest(
        tmp_path,
        """
        import pytest

        @pytest.mark.mail_scenarios("baseline-delivered")
        def test_fakes_break(mail_scenario):
            def broken(event):
                raise RuntimeError("boom in the fakes' thread")
            mail_scenario.world.events.subscribe(broken)
            mail_scenario.deliver(timeout=0.5)
        """,
    )
    assert result.returncode == 1
    assert "FakesError: errors inside the mailfakes servers during this test" in result.stdout
    assert "boom in the fakes' thread" in result.stdout


def test_mail_world_from_an_inline_spec_and_from_a_scenario_id(tmp_path):
    result = run_pytest(
        tmp_path,
        """
        import smtplib

        def test_inline(mail_world):
            world = mail_world({"hosts": {"mx.contoso.test": {"greeting": {"code": 421, "enhanced": "4.3.2", "text": "busy"}}}})
            code, text = smtplib.SMTP().connect(world.address_of("mx.contoso.test"), world.port)
            assert (code, text) == (421, b"4.3.2 busy")

        def test_by_id(mail_world):
            world = mail_world("tcp-refused-firewall")
            try:
                smtplib.SMTP(world.address_of("mail.contoso.test"), world.port, timeout=1)
            except ConnectionRefusedError:
                pass
            else:
                raise AssertionError("not refused")
        """,
    )
    assert result.returncode == 0, result.stdout
    assert counts(result.stdout) == {"passed": 2}


def test_a_marker_that_matches_nothing_fails_that_test_in_one_line(tmp_path):
    # Not a usage error that stops the session: the other tests run (see
    # test_plugin_own_scenarios.py for every kind of typo).
    result = run_pytest(
        tmp_path,
        """
        import pytest

        @pytest.mark.mail_scenarios("no-such-*")
        def test_nothing(mail_scenario):
            pass

        def test_other():
            pass
        """,
    )
    assert result.returncode == 1
    assert counts(result.stdout) == {"passed": 1, "error": 1}, result.stdout
    assert "@pytest.mark.mail_scenarios('no-such-*'): unknown scenario 'no-such-*'" in result.stdout


def test_the_plugin_is_registered_by_the_entry_point():
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert names.get("mailfakes") == "mailfakes.pytest_plugin"


@pytest.mark.mail_scenarios("dns-nxdomain", control=False)
def test_mail_scenario_exposes_what_a_client_needs(mail_scenario):
    s = scenarios.get("dns-nxdomain")
    assert mail_scenario.smart_host == s.target.smart_host
    assert mail_scenario.expected_code == "4.4.312"
    assert Path(mail_scenario.ca_file).exists()
    assert mail_scenario.ssl_context().check_hostname
    assert mail_scenario.info()["dns_port"] == mail_scenario.dns_port
    report = mail_scenario.deliver(timeout=0.5)
    assert [q.rcode for q in mail_scenario.dns_queries] == ["NXDOMAIN"]
    mail_scenario.assert_reported(report)


@pytest.mark.mail_scenarios("tcp-timeout-wrong-ip", control=False)
def test_a_connector_set_by_ip_gets_the_ip(mail_scenario):
    assert mail_scenario.smart_host == mail_scenario.address_of("old-ip.contoso.test")


FAILS_EVERYTHING = """
    import pytest

    @pytest.mark.mail_scenarios("tcp-refused-firewall", "smtp-421-greeting"{options})
    def test_a_client_that_always_says_refused(mail_scenario):
        mail_scenario.deliver(timeout=0.5)  # what the fakes see is a real client's
        mail_scenario.assert_reported("450 4.4.316 connection refused")
"""


def test_the_control_runs_first_and_voids_the_passes_of_a_client_that_fails_it(tmp_path):
    result = run_pytest(tmp_path, FAILS_EVERYTHING.format(options=""))
    assert result.returncode == 1
    out = result.stdout
    assert out.index("[baseline-delivered]") < out.index("[tcp-refused-firewall]")
    assert counts(out) == {"failed": 3}
    assert "expected 2.0.0" in out and "found 4.4.316" in out  # the control itself
    assert (
        f"scenario tcp-refused-firewall ({scenarios.get('tcp-refused-firewall').title['en']}): the client reported 4.4.316, "
        "the expected code, but the verdict is void: the client also fails the healthy baseline "
        "(test_user.py::test_a_client_that_always_says_refused[baseline-delivered]: found 4.4.316 in: "
        "450 4.4.316 connection refused)"
    ) in out
    # smtp-421-greeting fails on its own: a wrong code stays wrong whatever the control says.
    assert "expected 4.4.317 Cannot connect to remote server under profile eop" in out


def test_the_control_can_be_left_out(tmp_path):
    for options, args in ((", control=False", ()), ("", ("--mail-no-control",))):
        result = run_pytest(tmp_path, FAILS_EVERYTHING.format(options=options), *args)
        assert result.returncode == 1
        assert counts(result.stdout) == {"failed": 1, "passed": 1}, result.stdout[-2000:]
        assert "baseline-delivered" not in result.stdout


def test_a_control_that_ran_elsewhere_still_voids_the_passes_at_the_end(tmp_path):
    # Under pytest-xdist a case may run on another worker than its control, or before it:
    # it cannot fail itself, so the session lists it as void and fails.
    result = run_pytest(tmp_path, FAILS_EVERYTHING.format(options=""), "-p", "xdist", "-n", "2")
    assert result.returncode == 1, result.stdout[-2000:]
    node = "test_user.py::test_a_client_that_always_says_refused[tcp-refused-firewall]"
    voided_in_test = f"FAILED {node}" in result.stdout
    voided_at_end = f"VOID {node}: the client also fails the healthy baseline" in result.stdout
    assert voided_in_test != voided_at_end, result.stdout[-3000:]


def test_a_right_code_for_the_wrong_reason_fails_with_the_evidence(tmp_path):
    result = run_pytest(
        tmp_path,
        """
        import pytest

        @pytest.mark.mail_scenarios("dns-servfail", control=False)
        def test_reports_without_asking(mail_scenario):
            mail_scenario.assert_reported("450 4.4.312 DNS query failed")  # no lookup at all
        """,
    )
    assert result.returncode == 1
    assert (
        f"scenario dns-servfail ({scenarios.get('dns-servfail').title['en']}): the client reported 4.4.312, the expected code, but for "
        "the wrong reason: the client never asked the world's DNS for mail.contoso.test"
    ) in result.stdout
    assert "[WRONG] dns query (strict)" in result.stdout


def test_a_project_with_its_own_fakes_and_scenarios_modules_keeps_working(tmp_path):
    # Two names test suites often use for themselves: mailfakes installs neither.
    (tmp_path / "fakes.py").write_text("def fake_user():\n    return 'alice'\n")
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "__init__.py").write_text("CASES = ['login', 'logout']\n")
    result = run_pytest(
        tmp_path,
        """
        import fakes
        import pytest
        import scenarios
        from mailfakes import World

        def test_own_helpers():
            assert fakes.fake_user() == "alice" and scenarios.CASES == ["login", "logout"]

        @pytest.mark.mail_scenarios("baseline-delivered", control=False)
        def test_mailfakes_alongside(mail_scenario):
            assert mail_scenario.world.running and isinstance(mail_scenario.world, World)
        """,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert counts(result.stdout) == {"passed": 2}
    assert "Error while loading plugin" not in result.stdout + result.stderr
