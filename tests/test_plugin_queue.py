"""The plugin's queue assertions, as a user meets them: a throwaway project with its own queue.

The user's queue (smtplib, dnspython, a retry timer of its own) runs against the queue scenarios
on worlds whose hour lasts a quarter of a second (``--mail-hour 0.25s``); right clients pass,
wrong ones fail with the timeline of what the fakes saw.
"""

from __future__ import annotations

import re

from test_plugin import counts, run_pytest

USER_QUEUE = """
    import smtplib, ssl, threading, time

    import dns.resolver
    import pytest

    HOUR = 0.25

    def resolve(ms, name, rtype="A"):
        r = dns.resolver.Resolver(configure=False)
        r.nameservers, r.port, r.lifetime = [ms.dns_host], ms.dns_port, 1.0
        answer = r.resolve(name, rtype)
        if rtype == "MX":
            return str(sorted(answer, key=lambda rr: rr.preference)[0].exchange).rstrip(".")
        return answer[0].address

    def send(ms, host, sender, rcpt, data):
        try:
            ip = resolve(ms, host)
            with smtplib.SMTP(ip, ms.port, timeout=2) as s:
                s._host = host
                s.starttls(context=ssl.create_default_context(cafile=ms.ca_file))
                s.sendmail(sender, [rcpt], data)
            return "sent", "250"
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return ("permanent" if code >= 500 else "temporary"), f"{code} {text.decode()}"
        except smtplib.SMTPResponseException as exc:
            return ("permanent" if exc.smtp_code >= 500 else "temporary"), f"{exc.smtp_code} {exc.smtp_error.decode()}"
        except Exception as exc:
            return "temporary", f"{type(exc).__name__}: {exc}"

    def report(ms, last, original, action="failed"):
        headers = original.split(b"\\r\\n\\r\\n", 1)[0].decode()
        return "\\r\\n".join([
            "From: MAILER-DAEMON@fabrikam.test", f"To: {ms.mail_from}", "Subject: Undeliverable",
            "MIME-Version: 1.0",
            'Content-Type: multipart/report; report-type=delivery-status; boundary="r"', "",
            "--r", "Content-Type: text/plain", "", f"Undeliverable: {last}",
            "--r", "Content-Type: message/delivery-status", "", "Reporting-MTA: dns; app.fabrikam.test", "",
            f"Final-Recipient: rfc822; {ms.rcpt_to[0]}", f"Action: {action}",
            f"Status: {'4.4.7' if action == 'failed' else '4.4.1'}",
            f"Diagnostic-Code: smtp; {last}", "",
            "--r", "Content-Type: text/rfc822-headers", "", headers, "--r--", "",
        ]).encode()

    def ndr(ms, last, data, action="failed"):
        mx = resolve(ms, ms.mail_from.split("@")[1], "MX")
        assert send(ms, mx, "", ms.mail_from, report(ms, last, data, action))[0] == "sent"

    def my_queue(ms, *, retries=True, bounces=True, lifetime=4 * HOUR, backoff=0.6 * HOUR, warn=None):
        data = (f"From: {ms.mail_from}\\r\\nTo: {ms.rcpt_to[0]}\\r\\nSubject: queued\\r\\n"
                f"Message-ID: <{time.monotonic_ns()}@fabrikam.test>\\r\\n\\r\\nhello\\r\\n").encode()
        gives_up, timer = time.monotonic() + lifetime, threading.Event()
        while True:
            kind, last = send(ms, ms.smart_host, ms.mail_from, ms.rcpt_to[0], data)
            if kind == "sent":
                return
            if kind == "permanent" or not retries or time.monotonic() + backoff > gives_up:
                break
            if warn is not None:  # a "delayed" warning, as Exchange sends one after some hours
                ndr(ms, last, data, "delayed")
                warn = None
            timer.wait(backoff)
        if bounces:
            ndr(ms, last, data)

    @pytest.mark.mail_scenarios("queue-recovers-after-2h", "queue-greylisted", control=False)
    def test_recovers(mail_scenario):
        my_queue(mail_scenario, lifetime=12 * HOUR)
        mail_scenario.assert_delivered_once()
        mail_scenario.assert_not_bounced()
        mail_scenario.assert_retried()

    @pytest.mark.mail_scenarios("queue-down-421", control=False)
    def test_down(mail_scenario):
        my_queue(mail_scenario, lifetime=6 * HOUR, warn=True)
        mail_scenario.assert_retried(at_least=2)
        mail_scenario.assert_bounced(status="4.4.7", last_error="4.3.2", after="5h")

    @pytest.mark.mail_scenarios("queue-down-421", control=False)
    def test_gives_up_too_soon(mail_scenario):
        my_queue(mail_scenario, lifetime=1 * HOUR)
        mail_scenario.assert_bounced(status="4.4.7", after="5h")

    @pytest.mark.mail_scenarios("queue-down-421", control=False)
    def test_gives_up_too_late(mail_scenario):
        my_queue(mail_scenario, lifetime=4 * HOUR)
        mail_scenario.assert_bounced(status="4.4.7", before="1h")

    @pytest.mark.mail_scenarios("queue-down-421", control=False)
    def test_only_a_warning(mail_scenario):
        my_queue(mail_scenario, lifetime=2 * HOUR, warn=True, bounces=False)
        mail_scenario.assert_bounced()

    @pytest.mark.mail_scenarios("queue-down-421", control=False)
    def test_wrong_last_error(mail_scenario):
        my_queue(mail_scenario, lifetime=2 * HOUR)
        mail_scenario.assert_bounced(last_error="4.3")  # a prefix of 4.3.2 is not that code

    @pytest.mark.mail_scenarios("queue-recovers-after-2h", control=False)
    def test_no_retry(mail_scenario):
        my_queue(mail_scenario, retries=False, bounces=False)
        mail_scenario.assert_delivered_once()

    @pytest.mark.mail_scenarios("queue-down-421", control=False)
    def test_no_ndr(mail_scenario):
        my_queue(mail_scenario, bounces=False)
        mail_scenario.assert_bounced()
"""


def test_queue_assertions_pass_a_right_queue_and_fail_a_wrong_one_with_a_timeline(tmp_path):
    result = run_pytest(tmp_path, USER_QUEUE, "--mail-hour", "0.25s")
    out = result.stdout
    assert counts(out) == {"passed": 3, "failed": 6}, out + result.stderr
    for name in (
        "test_recovers[queue-recovers-after-2h]",
        "test_recovers[queue-greylisted]",
        "test_down[queue-down-421]",
    ):
        assert f"PASSED test_user.py::{name}" in out
    assert "FAILED test_user.py::test_no_retry[queue-recovers-after-2h]" in out
    assert "expected the message delivered once, it arrived never" in out
    # The timeline: one attempt at world time 0, seen through its lookup (a refused SYN is unseen).
    assert re.search(r"\+[0-9dhms.]+: lookups only: no session came", out)
    assert "FAILED test_user.py::test_no_ndr[queue-down-421]" in out
    assert "expected a non-delivery report to the sender, none arrived" in out
    assert "mail.contoso.test: 421 4.3.2 Service not available" in out
    # A right client's delay warning before its final report is no second bounce (test_down passed);
    # a warning alone is no bounce; a report sent too soon, or without the last error, fails.
    assert "FAILED test_user.py::test_only_a_warning[queue-down-421]" in out
    assert "none arrived (1 other report(s): delayed)" in out
    assert "FAILED test_user.py::test_gives_up_too_soon[queue-down-421]" in out
    assert re.search(r"it arrived \S+ after the first attempt, expected after 5h", out)
    assert "FAILED test_user.py::test_gives_up_too_late[queue-down-421]" in out
    assert re.search(r"it arrived \S+ after the first attempt, expected before 1h", out)
    assert "FAILED test_user.py::test_wrong_last_error[queue-down-421]" in out
    assert "does not carry 4.3" in out


def test_a_bad_mail_hour_is_a_usage_error(tmp_path):
    result = run_pytest(tmp_path, "def test_x(mail_scenario): pass\n", "--mail-hour", "soon")
    assert result.returncode == 4
    assert "--mail-hour 'soon'" in result.stderr
