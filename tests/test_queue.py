"""Issue 10: the world's clock, time schedules, greylisting, the sender's domain, the reference
connector's queue and its non-delivery report, through real sockets on loopback.

Expected values are written by hand: the reference schedule is 0, 5 m, 15 m, 30 m, 1 h, then every
hour, so a message that never gets through is tried at 0, 5m, 15m, 30m, 1h, 2h, ..., 23h (27 times)
and expires at 24 h; one that gets through from 2 h on is delivered at the sixth try.
"""

from __future__ import annotations

import json
import smtplib
import socket
import ssl
import subprocess
import sys

import pytest
from mailfakes import catalogue
from mailfakes.clock import VirtualClock, format_duration, parse_duration
from mailfakes.dsn import parse
from mailfakes.queue import QueuePolicy, parse_retry, run_scenario
from mailfakes.spec import SpecError, parse_world
from mailfakes.world import World, WorldError

QUEUE_IDS = sorted(s.id for s in catalogue.load_catalogue().values() if s.queue is not None)
PROFILES = ("eop", "rfc3463", "postfix", "eop-observed")
HOST = "mail.contoso.test"


def connect_outcome(ip: str, port: int, timeout: float = 0.5) -> str:
    """What a raw TCP client meets: refused (RST to the SYN), timeout (no SYN-ACK) or connected."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((ip, port))
        return "connected"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    finally:
        s.close()


# -- durations and clocks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        (45, 45.0),
        ("250ms", 0.25),
    ],
)
def test_durations_parse(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad",
    ["soon", "5x", "-1", "h", "", True, None, "1h 5q", "1h1h", "30m1h", "1e3", "inf", "nan", float("inf")],
)
def test_bad_durations_are_refused(bad: object) -> None:
    assert parse_duration(bad) is None


def test_durations_shown_for_people() -> None:
    assert [format_duration(s) for s in (0, 45, 300, 5400, 93600)] == ["0s", "45s", "5m", "1h30m", "1d2h"]


def test_virtual_clock_moves_forward_only() -> None:
    clock = VirtualClock()
    clock.set(60)
    with pytest.raises(ValueError, match="forward only"):
        clock.set(30)
    assert clock.now() == 60


# -- what a scenario may say, and what it may not --------------------------------------------


@pytest.mark.parametrize(
    ("world", "key"),
    [
        ({"hosts": {HOST: {"kind": "refuse", "schedule": {"fail_first": 2}}}}, "schedule"),
        (
            {"hosts": {HOST: {"kind": "refuse", "schedule": {"fail_first": 2, "fail_for": "1h"}}}},
            "fail_first",
        ),
        ({"hosts": {HOST: {"kind": "refuse", "schedule": {"fail_for": "soon"}}}}, "fail_for"),
        ({"hosts": {HOST: {"schedule": {"fail_for": "1h"}}}}, "schedule"),  # nothing to limit
        ({"hosts": {HOST: {"greylist": {"after": "5m"}, "replies": {"RCPT": {"code": 550}}}}}, "greylist"),
        ({"hosts": {HOST: {"greylist": {"after": "5m", "code": 550}}}}, "code"),
        (
            {"hosts": {HOST: {"greylist": {}, "greeting": {"code": 421, "text": "busy"}}}},
            "greylist",
        ),
        ({"hour": "0s", "hosts": {HOST: {}}}, "hour"),
        (
            {
                "sender_domain": "fabrikam.test",
                "records": [{"name": "fabrikam.test", "type": "MX", "value": HOST}],
                "hosts": {HOST: {}},
            },
            "sender_domain",
        ),
        ({"dns_faults": [{"name": HOST, "fault": "servfail", "from": "2h", "until": "1h"}]}, "until"),
        ({"hour": "0.5ms", "hosts": {HOST: {}}}, "hour"),
        ({"sender_domain": "test", "hosts": {HOST: {}}}, "sender_domain"),  # the zone itself
        ({"sender_domain": "contoso.test", "hosts": {"mx1.contoso.test": {}}}, "sender_domain"),
        (
            {
                "sender_domain": "fabrikam.test",
                "records": [{"name": "fabrikam.test", "type": "CNAME", "value": HOST}],
                "hosts": {HOST: {}},
            },
            "sender_domain",
        ),
        (
            {
                "hosts": {
                    HOST: {
                        "greylist": {"enhanced": "4.7.1", "code": 451},
                        "extensions_off": ["ENHANCEDSTATUSCODES"],
                    }
                }
            },
            "enhanced",
        ),
    ],
)
def test_contradicting_time_faults_are_refused(world: dict, key: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_world(world)
    assert err.value.key.split(".")[-1].split("[")[0] == key, err.value


def test_dns_faults_in_disjoint_windows_are_allowed() -> None:
    spec = parse_world(
        {
            "dns_faults": [
                {"name": HOST, "fault": "servfail", "until": "1h"},
                {"name": HOST, "fault": "nxdomain", "from": "1h"},
            ]
        }
    )
    assert [f.fault for f in spec.dns_faults] == ["servfail", "nxdomain"]


def test_world_clock_options_are_checked() -> None:
    with pytest.raises(WorldError, match="virtual clock has no hour"):
        World({"hosts": {HOST: {}}}, clock="virtual", hour=1.0)
    with pytest.raises(WorldError, match="clock must be"):
        World({"hosts": {HOST: {}}}, clock="sundial")
    with World({"hosts": {HOST: {}}}) as w, pytest.raises(WorldError, match="virtual clock"):
        w.advance(60)


# -- timed hosts on the wire ---------------------------------------------------------------


def test_refused_for_two_hours_then_accepting_on_a_virtual_clock() -> None:
    with World({"hosts": {HOST: {"kind": "refuse", "schedule": {"fail_for": "2h"}}}}, clock="virtual") as w:
        ip = w.address_of(HOST)
        assert [connect_outcome(ip, w.port) for _ in range(3)] == ["refused"] * 3
        w.advance_to(7199)
        assert [connect_outcome(ip, w.port) for _ in range(3)] == ["refused"] * 3
        w.advance_to(7200)
        with smtplib.SMTP(ip, w.port, timeout=5) as s:
            assert s.ehlo()[0] == 250
        assert [connect_outcome(ip, w.port) for _ in range(3)] == ["connected"] * 3
        assert any("healthy" in e.text for e in w.events.events("fault"))


def test_healthy_then_unanswered_then_healthy_again() -> None:
    spec = {"hosts": {HOST: {"kind": "blackhole", "schedule": {"healthy_for": "1h", "fail_for": "1h"}}}}
    with World(spec, clock="virtual") as w:
        ip = w.address_of(HOST)
        assert connect_outcome(ip, w.port) == "connected"
        w.advance_to(3600)
        assert [connect_outcome(ip, w.port, 0.3) for _ in range(2)] == ["timeout"] * 2
        w.advance_to(7200)
        assert [connect_outcome(ip, w.port) for _ in range(2)] == ["connected"] * 2


def test_a_scaled_real_clock_switches_by_itself() -> None:
    # One world hour lasts 0.2 real seconds: the host listens 0.4 s after the start.
    with World({"hosts": {HOST: {"kind": "refuse", "schedule": {"fail_for": "2h"}}}}, hour=0.2) as w:
        ip = w.address_of(HOST)
        assert connect_outcome(ip, w.port) == "refused"
        assert w.wait_until(lambda: bool(w.events.events("fault")), timeout=10)
        assert connect_outcome(ip, w.port) == "connected"


def test_a_421_until_two_hours_of_world_time() -> None:
    spec = {"hosts": {HOST: {"greeting": {"code": 421, "text": "busy"}, "schedule": {"fail_for": "2h"}}}}
    with World(spec, clock="virtual") as w:
        ip = w.address_of(HOST)
        with pytest.raises(smtplib.SMTPConnectError) as err:
            smtplib.SMTP(ip, w.port, timeout=5)
        assert err.value.smtp_code == 421
        w.advance(7200)
        with smtplib.SMTP(ip, w.port, timeout=5) as s:
            assert s.noop()[0] == 250


def test_greylisting_defers_each_new_pair_until_its_time() -> None:
    with World({"hosts": {HOST: {"greylist": {"after": "5m"}}}}, clock="virtual") as w:
        ip = w.address_of(HOST)

        def rcpt(sender: str, rcpt: str) -> tuple[int, bytes]:
            with smtplib.SMTP(ip, w.port, timeout=5) as s:
                s.ehlo()
                s.mail(sender)
                return s.rcpt(rcpt)

        assert rcpt("a@fabrikam.test", "user@contoso.test") == (
            450,
            b"4.7.1 Greylisted: please try again later",
        )
        w.advance(240)
        assert rcpt("a@fabrikam.test", "user@contoso.test")[0] == 450
        w.advance(60)
        assert rcpt("a@fabrikam.test", "user@contoso.test")[0] == 250
        assert rcpt("b@fabrikam.test", "user@contoso.test")[0] == 450  # another pair waits its own turn
        w.reset()  # a new record: the greylist is forgotten and the clock starts again
        assert w.now == 0
        assert rcpt("a@fabrikam.test", "user@contoso.test")[0] == 450


def test_a_dns_fault_that_starts_mid_queue() -> None:
    pytest.importorskip("dns.message")
    import dns.message
    import dns.query
    import dns.rcode

    spec = {"hosts": {HOST: {}}, "dns_faults": [{"name": HOST, "fault": "servfail", "from": "2m"}]}
    with World(spec, clock="virtual") as w:

        def rcode() -> str:
            answer = dns.query.udp(dns.message.make_query(HOST, "A"), w.dns_host, port=w.dns_port, timeout=2)
            return dns.rcode.to_text(answer.rcode())

        assert [rcode() for _ in range(2)] == ["NOERROR"] * 2
        w.advance(120)
        assert [rcode() for _ in range(2)] == ["SERVFAIL"] * 2


# -- the sender's domain and the bounces it receives -----------------------------------------


def test_the_sender_domain_receives_a_dsn_and_the_world_reads_it() -> None:
    pytest.importorskip("dns.resolver")
    import dns.resolver
    from mailfakes.dsn import Failed, compose

    with World({"sender_domain": "fabrikam.test", "hosts": {HOST: {}}}) as w:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port = [w.dns_host], w.dns_port
        [mx] = resolver.resolve("fabrikam.test", "MX")
        assert str(mx.exchange).rstrip(".") == "mx.fabrikam.test"
        report = compose(
            reporting_mta="relay.fabrikam.test",
            sender="sender@fabrikam.test",
            recipients=[Failed("user@contoso.test", "4.4.7", "smtp; 450 4.4.316 Connection refused", HOST)],
            original=b"Subject: hello\r\nMessage-ID: <1@fabrikam.test>\r\n\r\nhi\r\n",
        )
        with smtplib.SMTP(w.address_of("mx.fabrikam.test"), w.port, timeout=5) as s:
            s._host = "mx.fabrikam.test"  # the name the certificate is checked against (SNI too)
            s.starttls(context=w.client_context())
            s.sendmail("", ["sender@fabrikam.test"], report)
        [b] = w.bounces
        assert (b.action, b.status, b.final_recipient, b.remote_mta) == (
            "failed",
            "4.4.7",
            "user@contoso.test",
            HOST,
        )
        assert b.diagnostic_code == "smtp; 450 4.4.316 Connection refused"
        assert b.envelope_from == "" and b.envelope_to == ("sender@fabrikam.test",)
        assert b.original_headers["Subject"] == "hello"
        assert w.deliveries == []  # the bounce is not a delivery to the target


# -- the reference connector's queue, every queue scenario, every profile ----------------------

ATTEMPTS = {  # by hand, from the reference schedule (see the module's text)
    "queue-recovers-after-2h": 6,
    "queue-greylisted": 2,
    "queue-cut-after-dot-then-healthy": 2,
    "queue-permanent-550": 1,
}
EXPIRY_STATUS = {"eop": "4.4.7", "eop-observed": "4.4.7", "rfc3463": "4.4.7"}  # postfix keeps the last one


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("sid", QUEUE_IDS)
def test_reference_queue_on_a_virtual_clock(sid: str, profile: str) -> None:
    s = catalogue.get(sid)
    assert s.queue is not None
    with World(s.world, clock="virtual") as w:
        run = run_scenario(s, w, profile=profile, timeout=0.1)
        # Read while the world still holds them.
        bounces, deliveries, duplicates, seen = w.bounces, w.deliveries, w.duplicates, w.attempts
    assert run.outcome == s.queue.outcome
    assert len(run.attempts) == ATTEMPTS.get(sid, 27)
    assert [a.at for a in run.attempts][:5] == [0.0, 300.0, 900.0, 1800.0, 3600.0][: len(run.attempts)]
    assert run.attempts[0].code == s.code_for(profile)  # what the queue shows meanwhile
    assert len(seen) == len(run.attempts)  # the fakes saw each attempt (a lookup or a session)
    if s.queue.outcome == "delivered":
        assert run.ndr is None and bounces == []
        assert len(deliveries) == (2 if s.queue.duplicates else 1)
        assert bool(duplicates) == s.queue.duplicates
        return
    assert run.last_error == s.last_error_for(profile)
    [b] = bounces
    assert b.envelope_from == "" and b.envelope_to == (s.target.mail_from,)
    assert b.action == "failed" and b.final_recipient == s.target.rcpt_to[0]
    want = (
        s.last_error_for(profile)
        if s.queue.outcome == "bounced"
        else EXPIRY_STATUS.get(profile, run.last_error)
    )
    assert b.status == want
    assert run.attempts[-1].line.split(" [")[0] in (b.diagnostic_code or "")
    if s.queue.outcome == "expired" and profile.startswith("eop"):
        assert "550 4.4.7 QUEUE.Expired; message expired" in (b.diagnostic_code or "")
    assert b.original_headers["Subject"]
    assert deliveries == []


def test_retry_policy_is_configurable() -> None:
    s = catalogue.get("queue-down-refused")
    with World(s.world, clock="virtual") as w:
        run = run_scenario(s, w, policy=QueuePolicy(lifetime=3600, retry=parse_retry("10m,20m")), timeout=0.1)
    assert [a.at for a in run.attempts] == [0, 600, 1800, 3000]
    assert run.outcome == "expired"
    with pytest.raises(ValueError, match="not a duration"):
        parse_retry("5m,soon")


def test_deliver_queue_json_fields() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailfakes",
            "deliver",
            "queue-recovers-after-2h",
            "queue-down-421",
            "--queue",
            "--json",
            "--timeout",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    rows = {r["scenario"]: r for r in map(json.loads, out.stdout.splitlines())}
    recovers, down = rows["queue-recovers-after-2h"], rows["queue-down-421"]
    assert recovers["outcome"] == "delivered" and recovers["ndr"] is None
    assert [a["at"] for a in recovers["attempts"]] == [0, 300, 900, 1800, 3600, 7200]
    assert [a["code"] for a in recovers["attempts"]] == ["4.4.316"] * 5 + ["2.0.0"]
    assert down["outcome"] == "expired"
    assert down["ndr"]["to"] == "sender@fabrikam.test" and down["ndr"]["status"] == "4.4.7"
    assert down["ndr"]["last_error"] == "4.4.317" and "421" in down["ndr"]["diagnostic"]
    assert down["received_ndr"][0]["status"] == "4.4.7" and down["received_ndr"][0]["envelope_from"] == ""
    assert all(set(a) == {"at", "code", "line"} for a in down["attempts"])


def test_deliver_queue_refuses_bad_flags() -> None:
    for args, words in (
        (["--queue", "--lifetime", "soon"], "invalid duration"),
        (["--queue", "--hour", "2s"], "--hour only with --clock real"),
        (["--retry", "5m"], "--retry only with --queue"),
    ):
        out = subprocess.run(
            [sys.executable, "-m", "mailfakes", "deliver", "queue-down-421", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2 and words in out.stderr, (args, out.stderr)


def test_parse_reads_only_dsns() -> None:
    assert parse(b"Subject: hi\r\n\r\nnot a report\r\n") == []


def test_deliver_queue_on_a_scaled_real_clock() -> None:
    # A world hour of 2 s: greylisted for 5 world minutes (0.17 s), retried 10 minutes later (real
    # waits). A greylist counts from the first RCPT, which comes a little after the attempt began.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailfakes",
            "deliver",
            "queue-greylisted",
            "queue-down-421",
            "--queue",
            "--clock",
            "real",
            "--hour",
            "2s",
            "--lifetime",
            "1h",
            "--retry",
            "10m,20m",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {r["scenario"]: r for r in map(json.loads, out.stdout.splitlines())}
    grey, down = rows["queue-greylisted"], rows["queue-down-421"]
    # Greylisted, then delivered on a retry (a slow first attempt, whose RCPT comes late in world
    # time, may be greylisted once more: the 5 minutes count from that RCPT).
    codes = [a["code"] for a in grey["attempts"]]
    assert len(codes) >= 2 and codes[-1] == "2.0.0" and set(codes[:-1]) == {"4.7.1"}
    ats = [a["at"] for a in grey["attempts"]]
    # Each attempt no earlier than planned (0, 10m, 30m, ...): the waits were real, not skipped.
    assert all(at >= planned for at, planned in zip(ats, (0, 600, 1800, 3000), strict=False)), ats
    # Tried at 0, 10m, 30m, 50m (the last interval repeats); the next would fall after 1h: expired.
    assert [a["code"] for a in down["attempts"]] == ["4.4.317"] * 4
    assert down["outcome"] == "expired" and down["received_ndr"][0]["status"] == "4.4.7"
    assert [a["at"] >= t for a, t in zip(down["attempts"], (0, 600, 1800, 3000), strict=True)] == [True] * 4


def test_a_queue_scenario_s_sender_domain_is_its_sender_s() -> None:
    base = catalogue.get("queue-down-421")
    data = {
        "id": "mine",
        "code": "4.4.317",
        "rfc3463": "4.3.2",
        "title": {"en": "mine"},
        "target": {"smart_host": HOST, "mail_domain": "contoso.test", "mail_from": "a@northwind.test"},
        "world": {
            "sender_domain": "fabrikam.test",
            "hosts": {HOST: {"greeting": {"code": 421, "text": "x"}}},
        },
    }
    with pytest.raises(SpecError, match=r"the domain of target\.mail_from"):
        catalogue.from_dict(data)
    data["target"] = {"smart_host": "mail.fabrikam.test", "mail_domain": "fabrikam.test"}
    data["world"] = {"sender_domain": "fabrikam.test", "hosts": {"mail.fabrikam.test": {}}}
    with pytest.raises(SpecError, match="sender_domain"):
        catalogue.from_dict(data)
    assert base.world.sender_domain == base.target.mail_from.rpartition("@")[2]


def test_an_interrupted_queue_sends_no_ndr_and_says_so() -> None:
    from mailfakes.client import deliver_scenario
    from mailfakes.queue import run

    s = catalogue.get("queue-down-refused")
    with World(s.world, clock="virtual") as w:
        calls = {"waits": 0, "ndr": 0}

        def wait_until(at: float) -> bool:
            calls["waits"] += 1
            return calls["waits"] <= 2  # the run is stopped before its third try

        def send_ndr(dsn: bytes):
            calls["ndr"] += 1
            raise AssertionError("an interrupted queue must send no NDR")

        result = run(
            lambda: deliver_scenario(s, w, timeout=0.2),
            profile="eop",
            sender=s.target.mail_from,
            recipients=s.target.rcpt_to,
            wait_until=wait_until,
            send_ndr=send_ndr,
        )
    assert result.outcome == "stopped" and result.ndr is None and len(result.attempts) == 2
    assert calls["ndr"] == 0 and result.as_dict()["ndr"] is None


def test_reset_starts_world_time_again_in_any_world() -> None:
    with World({"hosts": {HOST: {}}}, clock="virtual") as w:
        w.advance(500)
        w.reset()
        assert w.now == 0


def test_a_session_cut_by_the_schedule_says_so() -> None:
    spec = {"hosts": {HOST: {"kind": "refuse", "schedule": {"healthy_for": "1h"}}}}
    with World(spec, clock="virtual") as w:
        s = smtplib.SMTP(w.address_of(HOST), w.port, timeout=5)
        s.ehlo()
        w.advance(3600)  # the host stops listening: its open session ends with it
        assert w.wait_until(lambda: all(t.closed for t in w.sessions), 5)
        s.close()
        [t] = w.sessions
        assert t.ended_by == "schedule"
        assert connect_outcome(w.address_of(HOST), w.port) == "refused"
        assert "stopped listening" in w.attempts[0].summary


def test_an_attempt_is_summed_up_by_its_refusal_not_by_the_quit_after_it() -> None:
    s = catalogue.get("queue-permanent-550")
    with World(s.world, clock="virtual") as w:
        with smtplib.SMTP(w.address_of(HOST), w.port, timeout=5) as c:
            c._host = HOST
            c.starttls(context=w.client_context())
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                c.sendmail(s.target.mail_from, list(s.target.rcpt_to), b"Subject: x\r\n\r\nx\r\n")
        assert w.wait_until(lambda: all(t.closed for t in w.sessions), 5)
        [a] = w.attempts
        assert "550 5.1.1 User unknown" in a.summary


def test_a_plaintext_retry_at_the_same_instant_is_one_attempt() -> None:
    # A client that retries without TLS right after a failed handshake (as opportunistic MTAs do):
    # on a virtual clock, everything at one instant of world time is one attempt.
    s = catalogue.get("queue-down-bad-certificate")
    with World(s.world, clock="virtual") as w:
        ip = w.address_of(HOST)
        for _ in range(2):  # two attempts, an hour apart, each a TLS try then a plaintext one
            c = smtplib.SMTP(ip, w.port, timeout=5)
            c._host = HOST
            with pytest.raises(ssl.SSLError):
                c.starttls(context=w.client_context())
            c.close()
            with smtplib.SMTP(ip, w.port, timeout=5) as plain:
                plain.noop()
            w.advance(3600)
        assert w.wait_until(lambda: all(t.closed for t in w.sessions), 5)
        assert [len(a.sessions) for a in w.attempts] == [2, 2]
        assert [a.at for a in w.attempts] == [0, 3600]


def test_a_resolver_s_retransmission_is_the_same_attempt() -> None:
    pytest.importorskip("dns.resolver")
    import dns.exception
    import dns.resolver

    spec = {"hosts": {HOST: {}}, "dns_faults": [{"name": HOST, "fault": "drop"}]}
    with World(spec) as w:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers, r.port = [w.dns_host], w.dns_port
        r.timeout, r.lifetime = 0.2, 0.7  # three tries or so, each from its own socket
        with pytest.raises(dns.exception.Timeout):
            r.resolve(HOST, "A")
        assert len(w.dns_queries) >= 2
        assert len(w.attempts) == 1


def test_a_queue_run_sends_one_tls_report_for_its_whole_period() -> None:
    """RFC 8460 4.1: one report per period; the queue's attempts are its sessions (27 in 24 h)."""
    import datetime as dt

    from mailfakes.queue import run_scenario

    s = catalogue.get("dane-cert-expired")
    with World(s.world, clock="virtual") as w:
        run = run_scenario(s, w)
        assert w.wait_until(lambda: len(w.tls_reports) == 1, 5)
        [report] = w.tls_reports
    assert run.outcome == "expired" and len(run.attempts) == 27
    assert report.policy_types == ["tlsa"] and report.results == {"certificate-expired": 27}
    start, end = (dt.datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (report.start, report.end))
    assert end - start == dt.timedelta(hours=24)
    assert (
        len(run.tls_reports) == 1 and "report to mailto:tls-reports@fabrikam.test: 250 " in run.tls_reports[0]
    )
