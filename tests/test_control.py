"""Faults changed while a world runs (world.host(NAME)...), proven by smtplib sessions on loopback.

Each change applies from the next session on; what a client meets is read from its own replies,
never from mailfakes' view of itself.
"""

from __future__ import annotations

import asyncio
import smtplib

import pytest
from mailfakes.spec import SpecError, parse_world
from mailfakes.world import World, WorldError

HOST = "mail.contoso.test"
SPEC = {"hosts": {HOST: {"tls": "none"}}, "sender_domain": "fabrikam.test"}


def mail_reply(world: World) -> tuple[int, str]:
    """One session: EHLO, then MAIL FROM; the server's answer to MAIL (or to the greeting)."""
    try:
        with smtplib.SMTP(world.address_of(HOST), world.port, timeout=5) as smtp:
            smtp.ehlo("client.fabrikam.test")
            code, text = smtp.mail("sender@fabrikam.test")
            return code, text.decode()
    except smtplib.SMTPConnectError as exc:  # a refusing greeting
        return exc.smtp_code, exc.smtp_error.decode()


def test_fail_next_fails_exactly_the_next_sessions_then_the_host_is_healthy_again():
    with World(parse_world(SPEC)) as w:
        assert mail_reply(w)[0] == 250
        w.host(HOST).fail_next(2, reply="451 4.3.0 Try again later")
        seen = [mail_reply(w) for _ in range(4)]
    assert seen[:2] == [(451, "4.3.0 Try again later")] * 2
    assert [code for code, _ in seen[2:]] == [250, 250]


def test_set_lasts_until_heal_and_restore_brings_the_scenario_back():
    spec = {
        "hosts": {HOST: {"tls": "none", "replies": {"MAIL": {"code": 452, "text": "Insufficient storage"}}}}
    }
    with World(parse_world(spec)) as w:
        control = w.host(HOST)
        assert mail_reply(w)[0] == 452  # the scenario's own fault
        control.set(tls="none", greeting={"code": 421, "enhanced": "4.3.2", "text": "Service not available"})
        assert [mail_reply(w)[0] for _ in range(2)] == [421, 421]
        control.heal()
        assert [mail_reply(w)[0] for _ in range(2)] == [250, 250]
        control.restore()
        assert mail_reply(w)[0] == 452
        # fail_next on top of a set: after its sessions, the set plan again.
        control.set(tls="none", replies={"MAIL": "550 5.7.1 Relaying denied"})
        control.fail_next(1, reply="451 4.3.0 Later")
        assert [mail_reply(w)[0] for _ in range(3)] == [451, 550, 550]
        changes = [e.text for e in w.events.events("fault") if e.data.get("control")]
    assert len(changes) == 5
    assert changes[0].startswith("changed at run time: set: greeting `421 4.3.2".replace("`", ""))
    assert "healed" in changes[1] and "restored" in changes[2] and "the next 1 session(s)" in changes[4]


def test_reset_puts_every_host_back_to_its_scenario():
    with World(parse_world(SPEC)) as w:
        w.host(HOST).fail_next(5, reply="451 4.3.0 Later")
        assert mail_reply(w)[0] == 451
        w.reset()
        assert mail_reply(w)[0] == 250


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda c: c.set(tls="maybe"), SpecError, r"tls: 'maybe' is not valid"),
        (lambda c: c.set(colour="red"), SpecError, r"colour: unknown key"),
        (lambda c: c.set(tlsa=True), SpecError, r"tlsa: unknown key"),
        (lambda c: c.fail_next(0, reply="451 4.3.0 x"), ValueError, r"a number of sessions from 1"),
        (lambda c: c.fail_next(2), ValueError, r"say what fails"),
        (lambda c: c.fail_next(2, reply="hello"), ValueError, r"expected a code and text"),
        (
            lambda c: c.set(tls="none", replies={"MAIL": {"code": 250}}, close_at={"point": "after_mail"}),
            SpecError,
            r"replies\.MAIL",
        ),
    ],
)
def test_a_bad_change_is_refused_and_changes_nothing(call, error, match):
    with World(parse_world(SPEC)) as w:
        with pytest.raises(error, match=match):
            call(w.host(HOST))
        assert mail_reply(w)[0] == 250
        assert not [e for e in w.events.events("fault") if e.data.get("control")]
        assert not w.events.events("error")


def test_unknown_hosts_hosts_of_other_kinds_and_stopped_worlds_are_refused():
    spec = {"hosts": {HOST: {}, "mx2.contoso.test": {"kind": "refuse"}}}
    w = World(parse_world(spec))
    with pytest.raises(WorldError, match="not running"):
        w.host(HOST)
    with w:
        with pytest.raises(KeyError, match=r"no host 'nope.contoso.test' in this world"):
            w.host("nope.contoso.test")
        with pytest.raises(ValueError, match="of kind refuse"):
            w.host("mx2.contoso.test")


def test_a_world_on_the_callers_loop_is_changed_from_that_loop():
    async def main() -> list[int]:
        async with World(parse_world(SPEC)) as w:
            w.host(HOST).fail_next(1, reply="451 4.3.0 Later")
            return [(await asyncio.to_thread(mail_reply, w))[0] for _ in range(2)]

    assert asyncio.run(main()) == [451, 250]


def test_a_certificate_changed_at_run_time_is_the_one_presented():
    import ssl

    with World(parse_world({"hosts": {HOST: {}}})) as w:
        w.host(HOST).set(cert="expired")

        def starttls() -> None:
            with smtplib.SMTP(w.address_of(HOST), w.port, timeout=5) as smtp:
                smtp._host = HOST  # the name starttls() checks
                smtp.ehlo("client.fabrikam.test")
                smtp.starttls(context=ssl.create_default_context(cafile=str(w.ca_file)))

        with pytest.raises(ssl.SSLCertVerificationError) as err:
            starttls()
        assert err.value.verify_code == 10
        w.host(HOST).heal()
        starttls()  # a valid certificate again


def test_a_host_changed_in_a_loop_keeps_a_bounded_record():
    from mailfakes.smtp import MAX_PLANS_KEPT

    with World(parse_world(SPEC)) as w:
        control = w.host(HOST)
        for i in range(MAX_PLANS_KEPT * 3):
            control.set(tls="none", replies={"MAIL": f"451 4.3.0 Change {i}"})
        assert mail_reply(w) == (451, f"4.3.0 Change {MAX_PLANS_KEPT * 3 - 1}")  # the last one holds
        server = w.server_of(HOST)
        assert server is not None and len(server._plans) <= MAX_PLANS_KEPT
        assert len(server._decisions) <= MAX_PLANS_KEPT + 2  # and the memos of those, the host's own
