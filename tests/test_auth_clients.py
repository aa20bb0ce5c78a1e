"""The smart host's account, handed to clients and used by the reference client, seen on the wire.

The facts (``serve --json``, ``check``'s placeholders and ``MAILFAKES_*`` variables, the plugin)
carry the account only when the target gives it to the client; the reference client logs in with
it and never shows it; the auth scenarios' refusals are proven from a raw client, three times each.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys

from mailfakes import World
from mailfakes import catalogue as scenarios
from mailfakes.check import environment
from mailfakes.client import deliver, deliver_scenario
from mailfakes.command import smtp_port
from mailfakes.facts import ClientFacts
from probe import RawSMTP, client_context

USER, PASSWORD = "alerts@fabrikam.test", "Relay-Passw0rd"  # the account of the auth-* scenarios
HOST = "smtp.contoso.test"


def _served(make_world, sid: str) -> tuple[scenarios.Scenario, World]:
    s = scenarios.get(sid)
    return s, make_world(s.world)


def test_the_facts_carry_the_account_only_when_the_client_is_given_it(make_world) -> None:
    cases = [
        ("auth-bad-credentials", USER, PASSWORD),
        ("auth-required-no-credentials", None, None),  # credentials = false
        ("baseline-delivered", None, None),  # no auth table
    ]
    for sid, user, password in cases:
        s, world = _served(make_world, sid)
        facts = ClientFacts.of(s, world)
        assert (facts.auth_user, facts.auth_password) == (user, password), sid
        info = facts.as_json()
        assert (info["auth_user"], info["auth_password"]) == (user, password), sid
        assert {"scenario", "port", "ca_file", "http_port"} <= set(info), sid  # the old keys stay
        values = facts.placeholders(2.0)
        assert (values["auth_user"], values["auth_password"]) == (user or "", password or ""), sid
        env = environment(values, s, s.expected_code)
        assert (env["MAILFAKES_AUTH_USER"], env["MAILFAKES_AUTH_PASSWORD"]) == (user or "", password or "")


def _serve_json(sid: str) -> dict:
    """The first line of ``mailfakes serve SID --json``, from a served world that is then stopped."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailfakes", "serve", sid, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info: dict = json.loads(proc.stdout.readline())
        return info
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_serve_json_gives_the_account() -> None:
    info = _serve_json("auth-login-only-delivered")
    assert (info["auth_user"], info["auth_password"]) == (USER, PASSWORD)


def test_inside_netns_an_auth_world_listens_on_the_submission_port() -> None:
    def args(port: int, inside: bool) -> argparse.Namespace:
        return argparse.Namespace(port=port, inside_netns=inside)

    auth, plain = scenarios.get("auth-bad-credentials"), scenarios.get("baseline-delivered")
    assert smtp_port(args(0, True), auth) == 587  # RFC 6409
    assert smtp_port(args(0, True), scenarios.get("auth-submissions-465-delivered")) == 465  # RFC 8314
    assert smtp_port(args(0, True), plain) == 25
    assert smtp_port(args(2525, True), auth) == 2525  # --port wins
    assert smtp_port(args(0, False), auth) == 0  # outside: a free port


def test_the_reference_client_logs_in_and_shows_no_credential(make_world) -> None:
    secrets = [PASSWORD, base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()]
    secrets.append(base64.b64encode(PASSWORD.encode()).decode())
    for sid in ("auth-after-starttls-delivered", "auth-login-only-delivered"):
        s, world = _served(make_world, sid)
        for _ in range(3):
            report = deliver_scenario(s, world)
            assert report.delivered, f"{sid}: {report.line()}"
            said = "\n".join(report.dialogue)
            assert "235 2.7.0" in said and f"authenticated as {USER}" in said
            seen = said + "\n".join(t.text() for t in world.sessions)
            assert not any(secret in seen for secret in secrets), sid
        assert len(world.messages) == 3


def test_the_reference_client_reports_the_servers_refusal(make_world) -> None:
    expected = {
        "auth-bad-credentials": "535 5.7.8 Authentication credentials invalid",
        "auth-temporary-failure": "454 4.7.0 Temporary authentication failure",
        "auth-not-offered": "530 5.7.0 Authentication required",
        "auth-required-no-credentials": "530 5.7.0 Authentication required",
        "auth-exchange-not-authenticated": "530 5.7.57 Client not authenticated to send mail",
        "auth-send-as-denied": "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
    }
    for sid, line in expected.items():
        s, world = _served(make_world, sid)
        report = deliver_scenario(s, world)
        assert report.reply == line, f"{sid}: {report.line()}"
        assert report.code == s.expected_code and world.messages == [], sid
    s, world = _served(make_world, "auth-bad-credentials")
    assert deliver_scenario(s, world, profile="postfix").code == "4.7.8"  # smtp_sasl_auth_soft_bounce


def _tls_session(world: World) -> tuple[RawSMTP, list[str]]:
    c = RawSMTP.connect(world.address_of(HOST), world.port)
    assert c.reply().code == 220
    assert c.cmd("EHLO raw.test").code == 250
    assert c.cmd("STARTTLS").code == 220
    c.starttls(client_context(str(world.ca_file)), HOST)
    ehlo = c.cmd("EHLO raw.test")
    assert ehlo.code == 250
    return c, ehlo.lines


def test_raw_client_not_offered_exchange_and_send_as(make_world) -> None:
    plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    _, not_offered = _served(make_world, "auth-not-offered")
    _, exchange = _served(make_world, "auth-exchange-not-authenticated")
    _, send_as = _served(make_world, "auth-send-as-denied")
    for _ in range(3):
        c, lines = _tls_session(not_offered)
        assert not any("AUTH" in line for line in lines)
        assert c.cmd("AUTH PLAIN " + plain).lines == ["503 5.5.1 Error: authentication not enabled"]
        assert c.cmd(f"MAIL FROM:<{USER}>").lines == ["530 5.7.0 Authentication required"]
        c.close()

        c, lines = _tls_session(exchange)
        assert "250-AUTH PLAIN LOGIN" in lines or "250 AUTH PLAIN LOGIN" in lines
        assert c.cmd(f"MAIL FROM:<{USER}>").lines == ["530 5.7.57 Client not authenticated to send mail"]
        c.close()

        c, _ = _tls_session(send_as)
        assert c.cmd("AUTH PLAIN " + plain).lines == ["235 2.7.0 Authentication successful"]
        assert c.cmd("MAIL FROM:<ceo@fabrikam.test>").code == 250
        assert c.cmd("RCPT TO:<user@contoso.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send("Subject: x\r\n\r\nhi\r\n.")
        denied = "550 5.7.60 SMTP; Client does not have permissions to send as this sender"
        assert c.reply().lines == [denied]
        c.close()
    assert not_offered.messages == exchange.messages == []


def test_the_witness_wants_the_step_where_authentication_fails(make_world) -> None:
    from mailfakes.witness import observe

    # A client that stops after the EHLO inside TLS has not met the refusal of AUTH, of MAIL
    # without an account, or of the sender; in auth-not-offered that EHLO is the faulty step.
    for sid, reached in (
        ("auth-bad-credentials", False),
        ("auth-temporary-failure", False),
        ("auth-required-no-credentials", False),
        ("auth-send-as-denied", False),
        ("auth-not-offered", True),
    ):
        s, world = _served(make_world, sid)
        c, _ = _tls_session(world)
        c.cmd("QUIT")
        c.close()
        testimony = observe(s, world)
        assert testimony.ok is reached, f"{sid}: {testimony.reason()}"
        s, world = _served(make_world, sid)
        assert deliver_scenario(s, world).code == s.expected_code
        assert observe(s, world).ok, f"{sid}: {observe(s, world).reason()}"


def test_smtplib_and_aiosmtplib_login_refused_or_not_offered_classify_to_the_servers_code(make_world) -> None:
    import asyncio
    import smtplib
    import traceback

    import aiosmtplib
    from mailfakes.classify import classify
    from mailfakes.codes import code_for
    from mailfakes.readers import read_python

    def with_smtplib(world: World) -> BaseException:
        c = smtplib.SMTP(timeout=5)
        c._host = HOST  # the name the certificate is checked against
        c.connect(world.address_of(HOST), world.port)
        c.starttls(context=world.client_context())
        try:
            c.login(USER, PASSWORD)
        except smtplib.SMTPException as exc:
            return exc
        finally:
            c.close()
        raise AssertionError("login() did not fail")

    async def with_aiosmtplib(world: World) -> BaseException:
        c = aiosmtplib.SMTP(hostname=world.address_of(HOST), port=world.port, start_tls=False, timeout=5)
        await c.connect()
        await c.starttls(server_hostname=HOST, tls_context=world.client_context())
        try:
            await c.login(USER, PASSWORD)
        except aiosmtplib.SMTPException as exc:
            return exc
        finally:
            c.close()
        raise AssertionError("login() did not fail")

    cases = {"auth-bad-credentials": "5.7.8", "auth-temporary-failure": "4.7.0", "auth-not-offered": "5.7.0"}
    for sid, code in cases.items():
        s, world = _served(make_world, sid)
        for exc in (with_smtplib(world), asyncio.run(with_aiosmtplib(world))):
            failure = classify(exc)
            assert failure is not None and code_for(failure) == code == s.expected_code, f"{sid}: {exc!r}"
            printed = "".join(traceback.format_exception(exc))
            assert read_python(1, "", printed) == failure, f"{sid}: {printed}"
    postfix = code_for(classify(with_smtplib(_served(make_world, "auth-bad-credentials")[1])), "postfix")
    assert postfix == "4.7.8"


# -- auth-submissions-465-delivered: TLS from the first byte (RFC 8314) ------------------------


def test_serve_json_says_the_smart_host_speaks_implicit_tls() -> None:
    for sid, implicit in (("auth-submissions-465-delivered", True), ("auth-login-only-delivered", False)):
        assert _serve_json(sid)["implicit_tls"] is implicit, sid


def test_implicit_tls_greets_only_inside_tls_and_offers_auth_not_starttls(make_world) -> None:
    s, world = _served(make_world, "auth-submissions-465-delivered")
    ip = world.address_of(HOST)
    for _ in range(3):
        # A client that waits for a greeting in clear gets no byte: the server waits for a ClientHello.
        plain = RawSMTP.connect(ip, world.port, timeout=0.5)
        plain.sock.settimeout(0.5)
        try:
            got = plain.sock.recv(1)
        except TimeoutError:
            got = None
        assert got is None, f"a greeting in clear: {got!r}"
        plain.close()
        # TLS first: then the greeting, and an EHLO reply with AUTH and without STARTTLS.
        c = RawSMTP.connect(ip, world.port)
        c.starttls(client_context(str(world.ca_file)), HOST)
        assert c.reply().code == 220
        ehlo = c.cmd("EHLO client.test")
        keywords = [ln[4:].split(" ", 1)[0].upper() for ln in ehlo.lines[1:]]
        assert "AUTH" in keywords and "STARTTLS" not in keywords, ehlo.lines
        token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        assert c.cmd(f"AUTH PLAIN {token}").code == 235
        assert c.cmd("MAIL FROM:<sender@fabrikam.test>").code == 250
        assert c.cmd("QUIT").code == 221
    report = deliver_scenario(s, world, timeout=2)
    assert report.delivered, report.line()
    assert any("implicit TLS" in line for line in report.dialogue)
    assert world.wait_until(lambda: len(world.messages) == 1, 5)
    assert world.messages[0].tls_version is not None


def test_send_implicit_tls_delivers_and_without_it_times_out_at_the_greeting(make_world) -> None:
    s, world = _served(make_world, "auth-submissions-465-delivered")
    base = [
        sys.executable, "-m", "mailfakes", "send", "--smart-host", HOST, "--mail-domain", "contoso.test",
        "--port", str(world.port), "--dns-host", world.dns_host, "--dns-port", str(world.dns_port),
        "--ca-file", str(world.ca_file), "--auth-user", USER, "--timeout", "1",
    ]  # fmt: skip
    env = {**environment({}, s, "2.0.0"), "MAILFAKES_AUTH_PASSWORD": PASSWORD}
    right = subprocess.run([*base, "--implicit-tls"], capture_output=True, text=True, env=env, timeout=30)
    assert right.returncode == 0 and " 2.0.0 " in right.stdout, right.stdout + right.stderr
    wrong = subprocess.run(base, capture_output=True, text=True, env=env, timeout=30)
    assert wrong.returncode != 0 and "4.4.318" in wrong.stdout, wrong.stdout + wrong.stderr
    assert world.wait_until(lambda: len(world.messages) == 1, 5)


def test_the_reference_client_never_sends_the_password_outside_tls(make_world) -> None:
    # A host that offers AUTH in clear (before_tls) and no STARTTLS, to a connector that does not
    # require TLS: the connector keeps the password to itself, and the server refuses MAIL.
    world = make_world(
        {
            "zone": "test",
            "hosts": {
                HOST: {
                    "kind": "smtp",
                    "tls": "none",
                    "auth": {"user": USER, "password": PASSWORD, "before_tls": True},
                }
            },
        }
    )
    report = deliver(
        dns_host=world.dns_host, dns_port=world.dns_port, port=world.port, smart_host=HOST,
        mail_domain="contoso.test", require_tls=False, auth_user=USER, auth_password=PASSWORD,
        timeout=2,
    )  # fmt: skip
    assert not report.delivered and report.code == "5.7.0", report.line()
    sent = [line for t in world.sessions for line in t.text().splitlines() if line.startswith("C:")]
    assert sent and not any(line.split()[1:2] == ["AUTH"] for line in sent), sent
    assert any("in clear: going on without" in line for line in report.dialogue)
