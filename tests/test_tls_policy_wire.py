"""MTA-STS, revocation and TLS reports on the wire, proven by clients that are not mailfakes'.

The policy host is fetched with a plain TLS socket and the world's CA, the DNS records read with
dnspython, the CRL read with cryptography and used by OpenSSL (Python ssl and openssl s_client),
TLS reports written here by hand (json, gzip, email) and sent with smtplib and a raw HTTPS POST.
Expected values are written out in the tests, not taken from mailfakes.
"""

from __future__ import annotations

import gzip
import json
import smtplib
import socket
import ssl
import subprocess
from email.message import EmailMessage

import pytest
from mailfakes.spec import parse_world
from mailfakes.world import World
from prerequisites import require

dns_resolver = pytest.importorskip("dns.resolver")
x509 = pytest.importorskip("cryptography.x509")

POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mx1.contoso.test\r\nmax_age: 86400\r\n"


def sts_world(**policy: object) -> dict[str, object]:
    host = policy.pop("host", {})
    return {
        "sender_domain": "fabrikam.test",
        "hosts": {"mx1.contoso.test": host},
        "records": [{"name": "contoso.test", "type": "MX", "value": "mx1.contoso.test"}],
        "mta_sts": {"contoso.test": policy},
        "tls_rpt": {
            "contoso.test": {
                "rua": ["mailto:tls-reports@fabrikam.test", "https://rua.fabrikam.test/v1/report"]
            }
        },
    }


def lookup(world: World, name: str, rtype: str) -> list[str]:
    r = dns_resolver.Resolver(configure=False)
    r.nameservers, r.port, r.lifetime = [world.dns_host], world.dns_port, 2.0
    answer = r.resolve(name, rtype)
    if rtype == "TXT":
        return [b"".join(rr.strings).decode() for rr in answer]
    return [rr.to_text() for rr in answer]


def https_get(
    world: World, host: str, path: str, *, verify: bool = True
) -> tuple[int, dict[str, str], bytes]:
    ip = lookup(world, host, "A")[0]
    ctx = ssl.create_default_context(cafile=str(world.ca_file))
    if not verify:
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with (
        socket.create_connection((ip, world.https_port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as s,
    ):
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def test_the_policy_and_its_records_are_served_as_rfc_8461_says():
    with World(parse_world(sts_world())) as w:
        assert lookup(w, "_mta-sts.contoso.test", "TXT") == ["v=STSv1; id=20261201T000000"]
        assert lookup(w, "_smtp._tls.contoso.test", "TXT") == [
            "v=TLSRPTv1; rua=mailto:tls-reports@fabrikam.test,https://rua.fabrikam.test/v1/report"
        ]
        status, headers, body = https_get(w, "mta-sts.contoso.test", "/.well-known/mta-sts.txt")
        assert (status, headers["content-type"], body) == (200, "text/plain", POLICY)
        # Any other path is not found, and the request was seen with its SNI.
        assert https_get(w, "mta-sts.contoso.test", "/mta-sts.txt")[0] == 404
        seen = w.web["mta-sts.contoso.test"].requests
        assert [r.sni for r in seen] == ["mta-sts.contoso.test", "mta-sts.contoso.test"]


def test_a_policy_in_testing_mode_with_its_own_mx_patterns():
    with World(parse_world(sts_world(mode="testing", mx=["*.contoso.test"], max_age=604800, id="v2"))) as w:
        assert lookup(w, "_mta-sts.contoso.test", "TXT") == ["v=STSv1; id=v2"]
        body = https_get(w, "mta-sts.contoso.test", "/.well-known/mta-sts.txt")[2]
        assert body == b"version: STSv1\r\nmode: testing\r\nmx: *.contoso.test\r\nmax_age: 604800\r\n"


def test_an_unreachable_policy_host_refuses_every_connection():
    with World(parse_world(sts_world(fault="unreachable"))) as w:
        ip = lookup(w, "mta-sts.contoso.test", "A")[0]
        assert ip.startswith("127.")
        for _ in range(3):  # an RST each time, never a listener
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((ip, w.https_port), timeout=5).close()


def test_a_missing_policy_is_404_and_a_malformed_one_does_not_parse():
    with World(parse_world(sts_world(fault="missing"))) as w:
        assert https_get(w, "mta-sts.contoso.test", "/.well-known/mta-sts.txt")[0] == 404
    with World(parse_world(sts_world(fault="malformed"))) as w:
        status, _, body = https_get(w, "mta-sts.contoso.test", "/.well-known/mta-sts.txt")
        assert status == 200
        lines = body.decode().split("\r\n")
        assert "version: STSv1" not in lines and not any(ln.startswith("max_age:") for ln in lines)


def test_the_policy_host_presents_the_certificate_its_policy_says():
    with World(parse_world(sts_world(cert="expired"))) as w:
        with pytest.raises(ssl.SSLCertVerificationError) as err:
            https_get(w, "mta-sts.contoso.test", "/.well-known/mta-sts.txt")
        assert err.value.verify_code == 10  # X509_V_ERR_CERT_HAS_EXPIRED
        # Without verification the policy is still there: only the certificate is wrong.
        assert https_get(w, "mta-sts.contoso.test", "/.well-known/mta-sts.txt", verify=False)[2] == POLICY


REVOKED = {"hosts": {"mail.contoso.test": {"cert": "revoked"}, "mail2.contoso.test": {}}}


def served_leaf(world: World, host: str) -> bytes:
    ip = world.address_of(host)
    with smtplib.SMTP(ip, world.port, timeout=5) as smtp:
        smtp._host = host  # the name starttls() checks the certificate for (it keeps the address)
        smtp.ehlo("probe.test")
        ctx = ssl.create_default_context(cafile=str(world.ca_file))
        smtp.starttls(context=ctx)  # valid in every way but revocation: Python checks no CRL by default
        assert isinstance(smtp.sock, ssl.SSLSocket)
        der = smtp.sock.getpeercert(binary_form=True)
    assert der is not None
    return der


def http_get(ip: str, port: int, host: str, path: str) -> tuple[int, bytes]:
    with socket.create_connection((ip, port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_the_revoked_certificate_names_a_crl_the_world_serves_and_lists_it_in():
    with World(parse_world(REVOKED)) as w:
        leaf = x509.load_der_x509_certificate(served_leaf(w, "mail.contoso.test"))
        points = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        url = points[0].full_name[0].value
        assert url == "http://crl.test/mailfakes.crl"
        host, path = url[len("http://") :].split("/", 1)
        ip = lookup(w, host, "A")[0]  # the distribution point is a host of the world's DNS
        status, der = http_get(ip, w.http_port, host, "/" + path)
        assert status == 200
        crl = x509.load_der_x509_crl(der)
        ca = x509.load_pem_x509_certificate(w.ca_file.read_bytes())
        assert crl.is_signature_valid(ca.public_key()) and crl.issuer == ca.subject
        assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None
        # The file handed to clients is the same CRL, in PEM; the healthy host's leaf is not on it.
        assert x509.load_pem_x509_crl(w.crl_file.read_bytes()).fingerprint(
            crl.signature_hash_algorithm
        ) == crl.fingerprint(crl.signature_hash_algorithm)
        other = x509.load_der_x509_certificate(served_leaf(w, "mail2.contoso.test"))
        assert crl.get_revoked_certificate_by_serial_number(other.serial_number) is None


def test_python_ssl_with_the_crl_refuses_the_revoked_host_only():
    with World(parse_world(REVOKED)) as w:
        for host, refused in (("mail.contoso.test", True), ("mail2.contoso.test", False)):
            ctx = ssl.create_default_context(cafile=str(w.ca_file))
            ctx.load_verify_locations(cafile=str(w.crl_file))
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
            with smtplib.SMTP(w.address_of(host), w.port, timeout=5) as smtp:
                smtp._host = host
                smtp.ehlo("probe.test")
                if refused:
                    with pytest.raises(ssl.SSLCertVerificationError) as err:
                        smtp.starttls(context=ctx)
                    assert err.value.verify_code == 23  # X509_V_ERR_CERT_REVOKED
                else:
                    smtp.starttls(context=ctx)
                    smtp.ehlo("probe.test")


def test_openssl_s_client_with_the_crl_says_certificate_revoked():
    require({"openssl": "openssl"}, netns=False)  # CI installs it: it must run there
    with World(parse_world(REVOKED)) as w:
        argv = [
            "openssl",
            "s_client",
            "-starttls",
            "smtp",
            "-connect",
            f"{w.address_of('mail.contoso.test')}:{w.port}",
            "-servername",
            "mail.contoso.test",
            "-CAfile",
            str(w.ca_file),
            "-CRL",
            str(w.crl_file),
            "-crl_check",
            "-verify_return_error",
        ]
        done = subprocess.run(argv, input=b"", capture_output=True, timeout=20)
        said = (done.stdout + done.stderr).decode(errors="replace")
        assert done.returncode != 0 and "certificate revoked" in said, said


def report_json(result: str) -> dict[str, object]:
    return {
        "organization-name": "probe",
        "date-range": {"start-datetime": "2026-12-01T00:00:00Z", "end-datetime": "2026-12-01T23:59:59Z"},
        "contact-info": "postmaster@probe.test",
        "report-id": "1@probe.test",
        "policies": [
            {
                "policy": {"policy-type": "sts", "policy-domain": "contoso.test"},
                "summary": {"total-successful-session-count": 2, "total-failure-session-count": 3},
                "failure-details": [{"result-type": result, "failed-session-count": 3}],
            }
        ],
    }


def test_reports_mailed_or_posted_by_another_client_are_read_back():
    with World(parse_world(sts_world())) as w:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "r@probe.test", "tls-reports@fabrikam.test", "Report"
        msg["TLS-Report-Domain"], msg["TLS-Report-Submitter"] = "contoso.test", "probe.test"
        msg.set_content("report")
        msg.add_attachment(
            gzip.compress(json.dumps(report_json("certificate-expired")).encode()),
            maintype="application",
            subtype="tlsrpt+gzip",
            filename="probe.test!contoso.test!1!2.json.gz",
        )
        msg.set_type("multipart/report")
        msg.set_param("report-type", "tlsrpt")
        mx = lookup(w, "fabrikam.test", "MX")[0].split()[1].rstrip(".")
        with smtplib.SMTP(w.address_of(mx), w.port, timeout=5) as smtp:
            smtp.send_message(msg)
        body = gzip.compress(json.dumps(report_json("sts-policy-invalid")).encode())
        ip = lookup(w, "rua.fabrikam.test", "A")[0]
        ctx = ssl.create_default_context(cafile=str(w.ca_file))
        with (
            socket.create_connection((ip, w.https_port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="rua.fabrikam.test") as s,
        ):
            s.sendall(
                b"POST /v1/report HTTP/1.1\r\nHost: rua.fabrikam.test\r\nContent-Type: application/tlsrpt+gzip\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            assert s.recv(4096).startswith(b"HTTP/1.1 201")
        assert w.wait_until(lambda: len(w.tls_reports) == 2, 5)
        by_via = {r.via: r for r in w.tls_reports}
        assert by_via["mail"].results == {"certificate-expired": 3} and by_via["mail"].successes == 2
        assert by_via["https"].results == {"sts-policy-invalid": 3}
        assert by_via["mail"].domains == by_via["https"].domains == ["contoso.test"]
        assert w.bounces == []  # a TLS report is no non-delivery report


def test_a_dane_client_that_names_the_port_it_connects_to_finds_the_same_records_and_faults():
    """RFC 7672 2.2.3 names the TLSA records by the port: outside a namespace the world's SMTP port is
    not 25, so the records (and a fault on them) are at _25._tcp and at _PORT._tcp alike."""
    import dns.flags
    import dns.message
    import dns.query
    import dns.rcode

    spec = {
        "dnssec": {"zones": ["contoso.test"]},
        "hosts": {"mx1.contoso.test": {"tlsa": True}, "mx2.contoso.test": {"tlsa": True}},
        "dns_faults": [{"name": "_25._tcp.mx2.contoso.test", "fault": "bad_signature", "types": ["TLSA"]}],
    }
    with World(parse_world(spec)) as w:
        assert w.port != 25

        def ask(name: str) -> dns.message.Message:
            q = dns.message.make_query(name, "TLSA", want_dnssec=True)
            return dns.query.udp(q, w.dns_host, port=w.dns_port, timeout=2)

        on_25, on_port = ask("_25._tcp.mx1.contoso.test"), ask(f"_{w.port}._tcp.mx1.contoso.test")
        assert [rr.to_text() for rr in on_25.answer[0]] == [rr.to_text() for rr in on_port.answer[0]]
        assert on_25.flags & dns.flags.AD and on_port.flags & dns.flags.AD
        for name in ("_25._tcp.mx2.contoso.test", f"_{w.port}._tcp.mx2.contoso.test"):
            assert ask(name).rcode() == dns.rcode.SERVFAIL, name  # bogus at both names


def test_the_reference_connector_posts_its_report_to_an_https_rua():
    from mailfakes.client import deliver

    spec = sts_world(mode="testing", host={"cert": "expired"})
    spec["tls_rpt"] = {"contoso.test": {"rua": ["https://rua.fabrikam.test/v1/report"]}}
    with World(parse_world(spec)) as w:
        report = deliver(
            dns_host=w.dns_host,
            dns_port=w.dns_port,
            port=w.port,
            mail_domain="contoso.test",
            ca_file=str(w.ca_file),
            require_tls=False,
            https_port=w.https_port,
            tls_reports=True,
            rcpt_to=["user@contoso.test"],
        )
        assert report.delivered  # testing mode: delivered, and reported
        assert w.wait_until(lambda: len(w.tls_reports) == 1, 5)
        [posted] = w.web["rua.fabrikam.test"].posts("/v1/report")
        [tls] = w.tls_reports
    assert posted.content_type == "application/tlsrpt+gzip" and posted.sni == "rua.fabrikam.test"
    assert tls.via == "https" and tls.policy_types == ["sts"] and tls.results == {"certificate-expired": 1}
    # The JSON itself, read here without mailfakes: RFC 8460 4.4's fields.
    doc = json.loads(gzip.decompress(posted.body))
    policy = doc["policies"][0]
    assert policy["policy"]["policy-domain"] == "contoso.test" and policy["policy"]["mx-host"] == [
        "mx1.contoso.test"
    ]
    assert "mode: testing" in policy["policy"]["policy-string"]
    assert policy["summary"] == {"total-successful-session-count": 0, "total-failure-session-count": 1}
    assert set(doc) >= {"organization-name", "date-range", "contact-info", "report-id"}


def test_a_revoked_dane_ta_host_names_the_distribution_point_its_world_serves():
    spec = {
        "zone": "contoso.test",
        "dnssec": {},
        "hosts": {"mx1.contoso.test": {"cert": "revoked", "tlsa": {"usage": 2}}},
    }
    with World(parse_world(spec)) as w:
        leaf = x509.load_der_x509_certificate(served_leaf(w, "mx1.contoso.test"))
        points = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        assert points[0].full_name[0].value == "http://crl.contoso.test/mailfakes.crl"
        assert lookup(w, "crl.contoso.test", "A") == [w.address_of("crl.contoso.test")]


def test_one_session_under_a_testing_policy_is_one_failure_in_the_report():
    """An MX the policy does not name, which then offers no STARTTLS: one session, one failure."""
    from mailfakes.client import deliver

    with World(parse_world(sts_world(mode="testing", mx=["mx9.contoso.test"], host={"tls": "none"}))) as w:
        report = deliver(
            dns_host=w.dns_host, dns_port=w.dns_port, port=w.port, mail_domain="contoso.test",
            ca_file=str(w.ca_file), require_tls=False, https_port=w.https_port, tls_reports=True,
            rcpt_to=["user@contoso.test"],
        )  # fmt: skip
        assert report.delivered
        assert w.wait_until(lambda: len(w.tls_reports) == 2, 5)  # one by mail, one posted
        reports = w.tls_reports
    assert [(r.results, r.successes, r.failures) for r in reports] == [({"validation-failure": 1}, 0, 1)] * 2
