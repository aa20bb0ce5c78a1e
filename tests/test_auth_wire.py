"""SMTP AUTH on a host, proven from the client's side: a raw socket before TLS, smtplib inside it."""

from __future__ import annotations

import base64
import smtplib
import socket

from mailfakes import World

HOST = "smtp.contoso.test"
SPEC = {"hosts": {HOST: {"auth": {"user": "alerts@fabrikam.test", "password": "s3cret"}}}}


def _reply(f: socket.SocketIO | object) -> list[bytes]:
    lines = []
    while True:
        line = f.readline()  # type: ignore[attr-defined]
        lines.append(line)
        if line[3:4] != b"-":
            return lines


def test_before_tls_no_auth_is_offered_and_auth_and_mail_are_refused() -> None:
    with World(SPEC) as w:
        for _ in range(3):
            with socket.create_connection((w.address_of(HOST), w.port), timeout=5) as s:
                f = s.makefile("rb")
                assert _reply(f)[0].startswith(b"220 ")
                s.sendall(b"EHLO client.test\r\n")
                ehlo = b"".join(_reply(f))
                assert b"STARTTLS" in ehlo and b"AUTH" not in ehlo
                s.sendall(b"AUTH PLAIN AGFsZXJ0c0BmYWJyaWthbS50ZXN0AHMzY3JldA==\r\n")
                assert _reply(f) == [b"503 5.5.1 Error: authentication not enabled\r\n"]
                s.sendall(b"MAIL FROM:<alerts@fabrikam.test>\r\n")
                assert _reply(f) == [b"530 5.7.0 Must issue a STARTTLS command first\r\n"]


def test_inside_tls_plain_and_login_and_the_errors_of_rfc_4954() -> None:
    with World(SPEC) as w:
        for _ in range(3):
            c = smtplib.SMTP(timeout=5)
            c._host = HOST  # the name the certificate is checked against
            c.connect(w.address_of(HOST), w.port)
            c.starttls(context=w.client_context())
            _code, ehlo = c.ehlo()
            assert b"AUTH PLAIN LOGIN" in ehlo.splitlines()
            assert c.docmd("MAIL", "FROM:<alerts@fabrikam.test>") == (530, b"5.7.0 Authentication required")
            wrong = base64.b64encode(b"\0alerts@fabrikam.test\0nope").decode()
            assert c.docmd("AUTH", "PLAIN " + wrong) == (535, b"5.7.8 Authentication credentials invalid")
            assert c.docmd("AUTH", "PLAIN") == (334, b"")
            assert c.docmd("***") == (501, b"5.5.2 Invalid base64 data in response")
            assert c.docmd("AUTH", "LOGIN") == (334, b"VXNlcm5hbWU6")
            assert c.docmd("*") == (501, b"5.7.0 Authentication aborted")
            assert c.docmd("AUTH", "CRAM-MD5") == (504, b"5.5.4 Unrecognized authentication type")
            assert c.docmd("AUTH", "LOGIN") == (334, b"VXNlcm5hbWU6")
            assert c.docmd(base64.b64encode(b"alerts@fabrikam.test").decode()) == (334, b"UGFzc3dvcmQ6")
            assert c.docmd(base64.b64encode(b"s3cret").decode()) == (235, b"2.7.0 Authentication successful")
            assert c.docmd("AUTH", "PLAIN") == (503, b"5.5.1 Error: already authenticated")
            assert c.sendmail("alerts@fabrikam.test", ["user@contoso.test"], "Subject: x\r\n\r\nhi\r\n") == {}
            c.quit()
        assert len(w.messages) == 3


def test_a_bad_auth_key_is_a_spec_error_naming_the_key() -> None:
    import pytest
    from mailfakes.spec import SpecError, parse_world

    def auth(table: dict[str, object], **host: object) -> dict[str, object]:
        return {"hosts": {HOST: {"auth": table, **host}}}

    cases = [
        (auth({"password": "x"}), f'hosts."{HOST}".auth.user'),
        (auth({"user": "u", "password": "p", "mechanisms": ["CRAM-MD5"]}), f'hosts."{HOST}".auth.mechanisms'),
        (auth({"user": "u", "password": "p", "fault": "nope"}), f'hosts."{HOST}".auth.fault'),
        (auth({"user": "u", "password": "p", "colour": 1}), f'hosts."{HOST}".auth.colour'),
        (auth({"user": "u", "password": "p"}, tls="none"), f'hosts."{HOST}".auth.before_tls'),
    ]
    for world, key in cases:
        with pytest.raises(SpecError) as err:
            parse_world(world)
        assert err.value.key == key
