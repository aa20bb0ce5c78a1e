"""The capability and limit scenarios of the catalogue (issue 12, points 2 and 3), from the wire side.

Each scenario's world is served as the catalogue writes it; a raw client (tests/probe.py) meets
its fault three times and counts what arrives. The witness (mailfakes.witness) must fail a
deliberately wrong client: one that pipelines without PIPELINING, one that drops the recipients
refused with 452. The harnesses of tests/test_conformance*.py, test_scenarios_wire.py,
test_real_clients.py and test_postfix.py grade the same scenarios for each client.
"""

from __future__ import annotations

import smtplib

import pytest
from mailfakes import catalogue as scenarios
from mailfakes.classify import classify
from mailfakes.witness import observe
from probe import RawSMTP, client_context

H = "mail.contoso.test"
MAIL = "MAIL FROM:<sender@fabrikam.test>"


def serve(make_world, sid: str):
    s = scenarios.get(sid)
    return s, make_world(s.world)


def session(w, *, tls: bool = True) -> tuple[RawSMTP, list[str]]:
    """A raw session up to the EHLO reply (after STARTTLS when ``tls``): the client and that reply."""
    c = RawSMTP.connect(w.address_of(H), w.port)
    assert c.reply().code == 220
    ehlo = c.cmd("EHLO client.test")
    if tls:
        assert ehlo.code == 250
        assert c.cmd("STARTTLS").code == 220
        c.starttls(client_context(str(w.ca_file)), H)
        ehlo = c.cmd("EHLO client.test")
    return c, ehlo.lines


def send_one_message(c: RawSMTP) -> None:
    """MAIL, RCPT, DATA, the content and QUIT, each after the reply to the one before (lock-step)."""
    assert c.cmd(MAIL).code == 250
    assert c.cmd("RCPT TO:<user@contoso.test>").code == 250
    assert c.cmd("DATA").code == 354
    c.send("Subject: t\r\n\r\nbody\r\n.")
    assert c.reply().code == 250
    assert c.cmd("QUIT").code == 221


# -- caps-no-pipelining-delivered --------------------------------------------------


def test_a_pipelining_client_gets_554_and_the_witness_fails_it(make_world):
    s, w = serve(make_world, "caps-no-pipelining-delivered")
    for _ in range(3):
        c, ehlo = session(w)
        assert not any("PIPELINING" in ln for ln in ehlo)
        c.sock.sendall(f"{MAIL}\r\nRCPT TO:<user@contoso.test>\r\nDATA\r\n".encode())
        lines, how = c.replies_until_closed()
        assert lines == ["554 5.5.0 Error: SMTP protocol synchronization"] and how == "fin"
    assert not w.messages
    testimony = observe(s, w)
    assert not testimony.ok
    [wrong] = [e for e in testimony.against if e.check == "lock-step"]
    assert "RCPT TO:<user@contoso.test>" in wrong.detail and "554 5.5.0" in wrong.detail


def test_a_lock_step_client_delivers_and_the_witness_passes_it(make_world):
    s, w = serve(make_world, "caps-no-pipelining-delivered")
    for _ in range(3):
        c, _ = session(w)
        send_one_message(c)
        c.close()
    assert len(w.messages) == 3
    testimony = observe(s, w)
    assert testimony.ok, testimony.lines
    assert all(t.out_of_step is None for t in w.sessions)


# -- limits-recipients-452-delivered -------------------------------------------------

RECIPIENTS = ["user1@contoso.test", "user2@contoso.test", "user3@contoso.test"]


def _transaction(c: RawSMTP, rcpts: list[str]) -> list[str]:
    """One transaction: the recipients refused with 452 (the others are sent)."""
    assert c.cmd(MAIL).code == 250
    refused = []
    for r in rcpts:
        reply = c.cmd(f"RCPT TO:<{r}>")
        if reply.code == 452:
            assert reply.lines == ["452 4.5.3 Too many recipients"]
            refused.append(r)
        else:
            assert reply.code == 250
    assert c.cmd("DATA").code == 354
    c.send("Subject: t\r\n\r\nbody\r\n.")
    assert c.reply().code == 250
    return refused


def test_a_client_that_sends_the_refused_recipient_again_delivers_each_once(make_world):
    s, w = serve(make_world, "limits-recipients-452-delivered")
    c, _ = session(w)
    refused = _transaction(c, RECIPIENTS)
    assert refused == ["user3@contoso.test"]
    assert _transaction(c, refused) == []
    c.cmd("QUIT")
    c.close()
    assert [m.rcpt_tos for m in w.messages] == [tuple(RECIPIENTS[:2]), (RECIPIENTS[2],)]
    assert observe(s, w).ok


def test_a_client_that_drops_the_refused_recipient_fails(make_world):
    s, w = serve(make_world, "limits-recipients-452-delivered")
    for _ in range(3):
        c, _ = session(w)
        assert _transaction(c, RECIPIENTS) == ["user3@contoso.test"]
        c.cmd("QUIT")
        c.close()
    testimony = observe(s, w)
    assert not testimony.ok
    [wrong] = [e for e in testimony.against if e.check == "every recipient once"]
    assert "never delivered to user3@contoso.test" in wrong.detail


def test_the_reference_connector_sends_the_refused_recipient_in_a_second_transaction(make_world):
    from mailfakes.client import deliver_scenario

    s, w = serve(make_world, "limits-recipients-452-delivered")
    report = deliver_scenario(s, w)
    assert report.delivered, report.dialogue
    assert sorted(r for m in w.messages for r in m.rcpt_tos) == RECIPIENTS
    assert len(w.messages) == 2 and len(w.sessions) == 1
    assert observe(s, w).ok


# -- limits-rate-421 -------------------------------------------------------------------


def test_the_full_message_window_answers_the_first_mail_with_421_and_closes(make_world):
    _, w = serve(make_world, "limits-rate-421")
    for _ in range(3):
        c, _ = session(w)
        c.send(MAIL)
        lines, how = c.replies_until_closed()
        assert len(lines) == 1 and lines[0].startswith(
            "421 4.7.0 mail.contoso.test Error: too much mail from 127."
        )
        assert how == "fin"
    assert not w.messages
    assert len(w.sessions) == 3


# -- limits-message-too-large ----------------------------------------------------------


def test_the_size_limit_is_advertised_and_refused_at_mail_and_at_the_dot(make_world):
    _, w = serve(make_world, "limits-message-too-large")
    for _ in range(3):
        c, ehlo = session(w)
        assert "250-SIZE 100" in ehlo or "250 SIZE 100" in ehlo
        declared = c.cmd(f"{MAIL} SIZE=101")
        assert declared.code == 552 and declared.lines[0].startswith("552 5.3.4")
        assert c.cmd(MAIL).code == 250
        assert c.cmd("RCPT TO:<user@contoso.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send("Subject: t\r\n\r\n" + "x" * 120 + "\r\n.")
        at_dot = c.reply()
        assert at_dot.code == 552 and at_dot.lines[0].startswith("552 5.3.4")
        c.cmd("QUIT")
        c.close()
    assert not w.messages


# -- caps-no-enhancedstatuscodes ------------------------------------------------------------


def test_without_enhancedstatuscodes_the_refusal_has_no_enhanced_code_and_classifies_5_0_0(make_world):
    _, w = serve(make_world, "caps-no-enhancedstatuscodes")
    for _ in range(3):
        c, ehlo = session(w)
        assert not any("ENHANCEDSTATUSCODES" in ln for ln in ehlo)
        assert c.cmd(MAIL).lines == ["250 OK"]
        refused = c.cmd("RCPT TO:<user@contoso.test>")
        assert refused.lines == ["550 User unknown"]
        c.cmd("QUIT")
        c.close()
    failure = classify(smtplib.SMTPRecipientsRefused({"user@contoso.test": (550, b"User unknown")}))
    assert failure is not None and failure.server_code == "5.0.0"


# -- caps-ehlo-502-tls-required ---------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(3))
def test_ehlo_gets_502_and_the_helo_session_offers_nothing(make_world, attempt):
    _, w = serve(make_world, "caps-ehlo-502-tls-required")
    c, ehlo = session(w, tls=False)
    assert ehlo == ["502 Command not implemented"]
    helo = c.cmd("HELO client.test")
    assert helo.code == 250 and len(helo.lines) == 1
    starttls = c.cmd("STARTTLS")
    assert starttls.code == 502
    c.cmd("QUIT")
    c.close()


# -- caps-no-smtputf8 ------------------------------------------------------------------------


def test_a_utf8_recipient_without_smtputf8_gets_553_from_the_wire(make_world):
    _, w = serve(make_world, "caps-no-smtputf8")
    for _ in range(3):
        c, ehlo = session(w)
        assert not any("SMTPUTF8" in ln for ln in ehlo)
        assert c.cmd(MAIL).code == 250
        refused = c.cmd("RCPT TO:<j\u00fcrgen@contoso.test>")
        assert refused.code == 553 and refused.lines[0].startswith("553 5.6.7")
        c.cmd("QUIT")
        c.close()
    assert not w.messages


def _deliver_to(w, rcpt: str):
    from mailfakes.client import deliver

    return deliver(
        dns_host=w.dns_host,
        dns_port=w.dns_port,
        port=w.port,
        smart_host=H,
        mail_domain="contoso.test",
        ca_file=str(w.ca_file),
        rcpt_to=[rcpt],
    )


def test_the_reference_connector_gives_up_before_mail_without_smtputf8(make_world):
    s, w = serve(make_world, "caps-no-smtputf8")
    report = _deliver_to(w, "j\u00fcrgen@contoso.test")
    assert report.code == "5.6.7" and not report.delivered
    [t] = w.sessions
    assert not any(line.startswith("MAIL") for line in t.client_lines())
    assert observe(s, w).ok


def test_the_reference_connector_declares_smtputf8_when_offered(make_world):
    _, w = serve(make_world, "baseline-delivered")
    report = _deliver_to(w, "j\u00fcrgen@contoso.test")
    assert report.delivered, report.dialogue
    [t] = w.sessions
    assert "MAIL FROM:<sender@fabrikam.test> SMTPUTF8" in t.client_lines()
    assert [m.rcpt_tos for m in w.messages] == [("j\u00fcrgen@contoso.test",)]


# -- the readers: what the real clients print for these scenarios -------------------------------

PF = "Dec 02 13:26:23 relay postfix/smtp[34]: 6DC5120C3B4: to=<{rcpt}>, relay=mail.contoso.test[127.1.2.3]:25, "


@pytest.mark.parametrize(
    ("status", "code", "detail"),
    [
        (
            "dsn=5.3.4, status=bounced (message size 338 exceeds size limit 100 of server "
            "mail.contoso.test[127.1.2.3])",
            "5.3.4",
            "size_limit",
        ),
        (
            "dsn=5.6.7, status=bounced (SMTPUTF8 is required, but was not offered by host "
            "mail.contoso.test[127.1.2.3])",
            "5.6.7",
            "no_smtputf8",
        ),
        (
            "dsn=4.7.0, status=deferred (host mail.contoso.test[127.1.2.3] said: 421 4.7.0 mail.contoso.test "
            "Error: too much mail from 127.0.0.1 (in reply to MAIL FROM command))",
            "4.7.0",
            "reply_421",
        ),
        (
            "dsn=5.0.0, status=bounced (host mail.contoso.test[127.1.2.3] said: 550 User unknown (in reply "
            "to RCPT TO command))",
            "5.0.0",
            "reply",
        ),
    ],
)
def test_the_postfix_reader_reads_postfix_s_own_words_for_these_faults(status, code, detail):
    from mailfakes.readers import read_postfix

    failure = read_postfix(0, PF.format(rcpt="user@contoso.test") + status + "\n", "")
    assert failure is not None and (failure.server_code, failure.detail) == (code, detail)


def test_the_curl_reader_reads_an_ehlo_refused_under_ssl_reqd_as_starttls_missing():
    from mailfakes.readers import read_curl

    trace = "< 220 mail.contoso.test ESMTP mailfakes\n> EHLO client\n< 502 Command not implemented\n"
    failure = read_curl(9, "", trace + "* Remote access denied: 502\n")
    assert failure is not None and (failure.cls, failure.detail) == ("cannot_connect", "no_starttls")
    # A 502 to a later command is the server's reply, not a missing STARTTLS.
    later = trace.replace("> EHLO client\n< 502 Command not implemented\n", "> EHLO client\n< 250 ok\n")
    failure = read_curl(9, "", later + "> MAIL FROM:<a@b.test>\n< 502 Command not implemented\n")
    assert failure is not None and failure.cls == "server_reply"


# -- caps-no-8bitmime-no-size-delivered --------------------------------------------


def test_mail_parameters_not_offered_get_555_and_a_bare_mail_delivers(make_world):
    _, w = serve(make_world, "caps-no-8bitmime-no-size-delivered")
    for _ in range(3):
        c, ehlo = session(w)
        keywords = {ln[4:].split(" ", 1)[0].upper() for ln in ehlo[1:]}
        assert "SIZE" not in keywords and "8BITMIME" not in keywords and "STARTTLS" not in keywords
        for param in ("SIZE=100", "BODY=8BITMIME"):
            refused = c.cmd(f"{MAIL} {param}")
            assert (refused.code, refused.lines[-1][4:9]) == (555, "5.5.4"), refused.lines
        send_one_message(c)
    assert w.wait_until(lambda: len(w.messages) == 3, 5)
    assert all(m.mail_from == "sender@fabrikam.test" for m in w.messages)
