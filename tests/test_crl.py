"""The ``revoked`` certificate kind and the CA's CRL, checked by clients that are not mailfakes.

A server thread on 127.0.0.1 (port 0) presents a leaf from
``CertAuthority.server_context``; the clients are Python's ``ssl`` with a
CRL loaded by hand, ``openssl s_client -crl_check``, and ``openssl crl``;
``cryptography`` reads the files. Every socket has a timeout and every
thread is joined.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import ssl
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID, NameOID
from mailfakes.certs import (
    DEFAULT_CRL_URL,
    NEEDS_REVOCATION_CHECK,
    CertAuthority,
    CertCache,
    cert_effect,
    check_crl_url,
    crl_url_for,
    expected_verify_failure,
)
from prerequisites import require

HOST = "mx.contoso.test"
CRL_URL = "http://crl.contoso.test/mailfakes.crl"  # what crl_url_for("contoso.test") must give
TIMEOUT = 10.0


@pytest.fixture
def _openssl_installed() -> None:
    require({"openssl": "openssl"}, netns=False)  # a skip here, a failure in CI (it installs openssl)


needs_openssl = pytest.mark.usefixtures("_openssl_installed")


@pytest.fixture
def ca() -> Iterator[CertAuthority]:
    authority = CertAuthority()
    try:
        yield authority
    finally:
        authority.close()


class OneShotTLSServer:
    """Accepts one connection on 127.0.0.1 and handshakes with ``ctx``; errors are kept, not raised."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(TIMEOUT)
        self.port = self.listener.getsockname()[1]
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, name="crl-test-server", daemon=True)

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            conn.settimeout(TIMEOUT)
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")
                tls.recv(1)  # until the client closes
        except (OSError, ssl.SSLError) as exc:
            self.error = exc

    def __enter__(self) -> OneShotTLSServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(TIMEOUT)
        self.listener.close()
        assert not self.thread.is_alive(), "server thread still running"


def connect(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> BaseException | None:
    """One handshake; the client's error (None: it verified and read the server's b"ok")."""
    with OneShotTLSServer(server_ctx) as server:
        try:
            with (
                socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as raw,
                client_ctx.wrap_socket(raw, server_hostname=HOST) as tls,
            ):
                assert tls.recv(2) == b"ok"
        except ssl.SSLError as exc:
            return exc
    return None


def crl_checking_client(ca_file: Path, crl_file: Path | None) -> ssl.SSLContext:
    """Python's default client, with the CRL loaded by hand and checked for the leaf."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    if crl_file is not None:
        ctx.load_verify_locations(cafile=str(crl_file))
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


def read_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def distribution_points(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    return [
        name.value
        for point in ext
        for name in point.full_name or []
        if isinstance(name, x509.UniformResourceIdentifier)
    ]


def openssl(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["openssl", *args], input=stdin, capture_output=True, timeout=TIMEOUT, check=False)
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    )


def crl_serials(text: str) -> set[int]:
    """The serials listed in ``openssl crl -text`` output."""
    return {int(m, 16) for m in re.findall(r"Serial Number: ([0-9A-Fa-f]+)", text)}


# -- Python's ssl -----------------------------------------------------------


def test_revoked_leaf_fails_with_23_for_a_crl_checking_client(ca: CertAuthority) -> None:
    server = ca.server_context(HOST, "revoked", crl_url=CRL_URL)
    err = connect(server, crl_checking_client(ca.ca_file, ca.crl_file))
    assert isinstance(err, ssl.SSLCertVerificationError), err
    assert err.verify_code == 23, err.verify_message
    assert err.verify_message == "certificate revoked"


def test_valid_leaf_of_the_same_ca_passes_the_crl_check(ca: CertAuthority) -> None:
    ca.issue(HOST, "revoked", crl_url=CRL_URL)  # the CRL is not empty
    assert connect(ca.server_context(HOST), crl_checking_client(ca.ca_file, ca.crl_file)) is None


def test_revoked_leaf_is_accepted_without_the_crl(ca: CertAuthority) -> None:
    """Valid in every other way: a client that does not check revocation accepts it."""
    server = ca.server_context(HOST, "revoked", crl_url=CRL_URL)
    assert connect(server, crl_checking_client(ca.ca_file, None)) is None
    assert connect(server, ca.client_context()) is None


def test_client_context_checks_revocation_when_asked(ca: CertAuthority) -> None:
    server = ca.server_context(HOST, "revoked")
    err = connect(server, ca.client_context(check_revocation=True))
    assert isinstance(err, ssl.SSLCertVerificationError), err
    assert err.verify_code == 23
    assert connect(ca.server_context(HOST), ca.client_context(check_revocation=True)) is None
    assert ca.client_context(check_revocation=True).verify_flags & ssl.VERIFY_CRL_CHECK_LEAF


def test_an_empty_crl_lets_a_valid_leaf_through(ca: CertAuthority) -> None:
    assert ca.revoked_serials() == frozenset()
    assert connect(ca.server_context(HOST), crl_checking_client(ca.ca_file, ca.crl_file)) is None


def test_crl_taken_before_the_leaf_was_issued_does_not_name_it(ca: CertAuthority) -> None:
    """The CRL lists the revoked leaves issued so far: a world issues them first."""
    early = ca.crl_file.read_bytes()
    server = ca.server_context(HOST, "revoked")
    (ca.directory / "early.pem").write_bytes(early)
    assert connect(server, crl_checking_client(ca.ca_file, ca.directory / "early.pem")) is None
    err = connect(server, crl_checking_client(ca.ca_file, ca.crl_file))
    assert isinstance(err, ssl.SSLCertVerificationError) and err.verify_code == 23


def test_expected_failure_and_effect() -> None:
    assert expected_verify_failure("revoked") == (23, "certificate revoked")
    assert frozenset({"revoked"}) == NEEDS_REVOCATION_CHECK
    assert "CRL" in cert_effect("revoked")


# -- openssl ------------------------------------------------------------------


def s_client(port: int, ca: CertAuthority, *extra: str) -> subprocess.CompletedProcess[str]:
    return openssl(
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        "-servername",
        HOST,
        "-verify_hostname",
        HOST,
        "-CAfile",
        str(ca.ca_file),
        "-verify_return_error",
        *extra,
    )


@needs_openssl
def test_openssl_s_client_reports_certificate_revoked(ca: CertAuthority) -> None:
    server = ca.server_context(HOST, "revoked", crl_url=CRL_URL)
    with OneShotTLSServer(server) as srv:
        out = s_client(srv.port, ca, "-CRL", str(ca.crl_file), "-crl_check")
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert "verify error:num=23:certificate revoked" in text, text


@needs_openssl
def test_openssl_s_client_accepts_the_valid_leaf_with_the_crl(ca: CertAuthority) -> None:
    ca.issue(HOST, "revoked")
    with OneShotTLSServer(ca.server_context(HOST)) as srv:
        out = s_client(srv.port, ca, "-CRL", str(ca.crl_file), "-crl_check")
    assert "Verify return code: 0 (ok)" in out.stdout, out.stdout + out.stderr


@needs_openssl
def test_openssl_s_client_accepts_the_revoked_leaf_without_a_crl_check(ca: CertAuthority) -> None:
    with OneShotTLSServer(ca.server_context(HOST, "revoked")) as srv:
        out = s_client(srv.port, ca)
    assert "Verify return code: 0 (ok)" in out.stdout, out.stdout + out.stderr


@needs_openssl
def test_openssl_parses_the_crl_in_pem_and_der(ca: CertAuthority) -> None:
    first = read_cert(ca.cert_file(HOST, "revoked", crl_url=CRL_URL))
    second = read_cert(ca.cert_file("mx2.contoso.test", "revoked", crl_url=CRL_URL))
    ca_cert = read_cert(ca.ca_file)
    pem = openssl("crl", "-in", str(ca.crl_file), "-noout", "-text")
    assert pem.returncode == 0, pem.stderr
    der = openssl("crl", "-inform", "DER", "-in", str(ca.crl_der_file), "-noout", "-text")
    assert der.returncode == 0, der.stderr
    assert der.stdout == pem.stdout
    text = pem.stdout
    assert "Version 2 (0x1)" in text
    assert crl_serials(text) == {first.serial_number, second.serial_number}
    assert "X509v3 CRL Number" in text
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert ":".join(f"{b:02X}" for b in ski) in text  # the authority key identifier
    issuer = openssl("crl", "-in", str(ca.crl_file), "-noout", "-issuer").stdout
    unit = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
    assert isinstance(unit, str) and unit in issuer
    # openssl checks the CRL's signature with the CA's key.
    verify = openssl("crl", "-in", str(ca.crl_file), "-noout", "-CAfile", str(ca.ca_file))
    assert "verify OK" in verify.stdout + verify.stderr, verify.stdout + verify.stderr


@needs_openssl
def test_openssl_verify_with_the_crl(ca: CertAuthority) -> None:
    revoked = ca.cert_file(HOST, "revoked")
    valid = ca.cert_file(HOST, "valid")
    bad = openssl(
        "verify", "-crl_check", "-CAfile", str(ca.ca_file), "-CRLfile", str(ca.crl_file), str(revoked)
    )
    assert bad.returncode != 0
    assert "error 23" in bad.stdout + bad.stderr and "certificate revoked" in bad.stdout + bad.stderr
    good = openssl(
        "verify", "-crl_check", "-CAfile", str(ca.ca_file), "-CRLfile", str(ca.crl_file), str(valid)
    )
    assert good.returncode == 0, good.stdout + good.stderr


# -- the CRL and the leaf, read with cryptography -------------------------------


def test_crl_fields(ca: CertAuthority) -> None:
    leaf = read_cert(ca.cert_file(HOST, "revoked"))
    ca_cert = read_cert(ca.ca_file)
    crl = x509.load_der_x509_crl(ca.crl("der"))
    assert x509.load_pem_x509_crl(ca.crl("pem")).public_bytes(Encoding.DER) == ca.crl("der")
    public_key = ca_cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert crl.is_signature_valid(public_key)
    assert crl.issuer == ca_cert.subject
    now = dt.datetime.now(dt.UTC)
    assert crl.next_update_utc is not None
    assert now - dt.timedelta(hours=1, minutes=5) < crl.last_update_utc < now - dt.timedelta(minutes=55)
    assert now + dt.timedelta(days=6, hours=23) < crl.next_update_utc < now + dt.timedelta(days=7, hours=1)
    entry = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
    assert entry is not None
    assert entry.revocation_date_utc <= now
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > 0


def test_crl_number_grows_and_bytes_stay_while_nothing_changes(ca: CertAuthority) -> None:
    ca.issue(HOST, "revoked")
    first = ca.crl("der")
    assert ca.crl("der") == first
    ca.issue("mx2.contoso.test", "revoked")
    second = ca.crl("der")
    assert second != first

    def number(der: bytes) -> int:
        return x509.load_der_x509_crl(der).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number

    assert number(second) > number(first)
    assert len(x509.load_der_x509_crl(second)) == 2


def test_revoked_leaf_names_the_http_distribution_point(ca: CertAuthority) -> None:
    assert crl_url_for("contoso.test") == CRL_URL
    assert crl_url_for("Contoso.Test.") == CRL_URL
    leaf = read_cert(ca.cert_file(HOST, "revoked", crl_url=crl_url_for("contoso.test")))
    [url] = distribution_points(leaf)
    assert url == CRL_URL
    assert url.startswith("http://crl.contoso.test/")


def test_default_distribution_point(ca: CertAuthority) -> None:
    assert DEFAULT_CRL_URL == "http://crl.test/mailfakes.crl"
    assert distribution_points(read_cert(ca.cert_file(HOST, "revoked"))) == ["http://crl.test/mailfakes.crl"]
    assert ca.issue(HOST, "revoked").crl_url == "http://crl.test/mailfakes.crl"
    assert ca.describe(HOST, "revoked")["crl_url"] == "http://crl.test/mailfakes.crl"


def test_revoked_leaf_is_a_valid_leaf_plus_the_distribution_point(ca: CertAuthority) -> None:
    valid = read_cert(ca.cert_file(HOST, "valid"))
    revoked = read_cert(ca.cert_file(HOST, "revoked"))
    assert revoked.issuer == valid.issuer == read_cert(ca.ca_file).subject
    assert revoked.serial_number != valid.serial_number
    valid_exts = {e.oid: e for e in valid.extensions}
    revoked_exts = {e.oid: e for e in revoked.extensions}
    assert set(revoked_exts) - set(valid_exts) == {ExtensionOID.CRL_DISTRIBUTION_POINTS}
    assert set(valid_exts) - set(revoked_exts) == set()
    for oid, ext in valid_exts.items():
        assert revoked_exts[oid].critical == ext.critical, oid
        if oid not in (ExtensionOID.SUBJECT_KEY_IDENTIFIER,):
            assert revoked_exts[oid].value == ext.value, oid
    assert not revoked_exts[ExtensionOID.CRL_DISTRIBUTION_POINTS].critical
    assert revoked.not_valid_before_utc <= dt.datetime.now(dt.UTC) < revoked.not_valid_after_utc
    assert type(revoked.public_key()) is type(valid.public_key())


def test_other_kinds_name_no_distribution_point(ca: CertAuthority) -> None:
    for kind in ("valid", "expired", "wrong_host"):
        leaf = read_cert(ca.cert_file(HOST, kind, crl_url=CRL_URL))  # type: ignore[arg-type]
        with pytest.raises(x509.ExtensionNotFound):
            leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints)
        assert ca.issue(HOST, kind, crl_url=CRL_URL).crl_url is None  # type: ignore[arg-type]
    assert ca.revoked_serials() == frozenset()


def test_each_url_has_its_own_leaf_and_both_are_listed(ca: CertAuthority) -> None:
    a = ca.issue(HOST, "revoked", crl_url=CRL_URL)
    b = ca.issue(HOST, "revoked", crl_url="http://crl.fabrikam.test/mailfakes.crl")
    assert a.cert_file != b.cert_file and a.leaf_pem != b.leaf_pem
    assert ca.issue(HOST, "revoked", crl_url=CRL_URL) is a
    serials = {read_cert(a.cert_file).serial_number, read_cert(b.cert_file).serial_number}
    assert ca.revoked_serials() == serials
    crl = x509.load_der_x509_crl(ca.crl())
    assert {r.serial_number for r in crl} == serials
    ctx_a = ca.server_context(HOST, "revoked", crl_url=CRL_URL)
    assert ca.server_context(HOST, "revoked", crl_url=CRL_URL) is ctx_a
    assert ca.server_context(HOST, "revoked", crl_url="http://crl.fabrikam.test/mailfakes.crl") is not ctx_a


def test_rsa_revoked_leaf_for_a_legacy_server(ca: CertAuthority) -> None:
    issued = ca.issue(HOST, "revoked", rsa=True)
    leaf = read_cert(issued.cert_file)
    assert isinstance(leaf.public_key(), rsa.RSAPublicKey)
    assert leaf.serial_number in ca.revoked_serials()


@pytest.mark.parametrize(
    "url",
    [
        "https://crl.contoso.test/x.crl",
        "ldap://crl.contoso.test/x",
        "http:///x.crl",
        "http://crl.contoso.test/a b",
        "http://crl.contoso.test/\u00e9",
        "http://[::1/x",
        "crl.contoso.test/x.crl",
        "",
    ],
)
def test_bad_crl_urls_are_refused(ca: CertAuthority, url: str) -> None:
    with pytest.raises(ValueError, match="CRL URL"):
        check_crl_url(url)
    with pytest.raises(ValueError, match="CRL URL"):
        ca.issue(HOST, "revoked", crl_url=url)


def test_bad_encoding_and_closed_authority() -> None:
    authority = CertAuthority()
    with pytest.raises(ValueError, match="encoding"):
        authority.crl("txt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty zone"):
        crl_url_for(" . ")
    authority.close()
    with pytest.raises(RuntimeError, match="closed"):
        authority.crl()
    with pytest.raises(RuntimeError, match="closed"):
        _ = authority.crl_file


# -- files, views and the cache -------------------------------------------------


def test_crl_files_are_private_and_follow_new_leaves(ca: CertAuthority) -> None:
    pem_file, der_file = ca.crl_file, ca.crl_der_file
    assert pem_file.parent == der_file.parent == ca.directory
    for path in (pem_file, der_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert not path.is_symlink()
    assert pem_file.read_bytes().startswith(b"-----BEGIN X509 CRL-----")
    assert len(x509.load_der_x509_crl(der_file.read_bytes())) == 0
    leaf = read_cert(ca.cert_file(HOST, "revoked"))
    assert ca.crl_file == pem_file
    assert [r.serial_number for r in x509.load_pem_x509_crl(pem_file.read_bytes())] == [leaf.serial_number]
    assert [r.serial_number for r in x509.load_der_x509_crl(ca.crl_der_file.read_bytes())] == [
        leaf.serial_number
    ]
    assert not [p for p in ca.directory.iterdir() if p.name.startswith(".")]  # no temporary left


def test_a_lent_view_shares_the_crl_in_its_own_directory(ca: CertAuthority) -> None:
    view = ca.lend()
    try:
        leaf = read_cert(view.cert_file(HOST, "revoked", crl_url=CRL_URL))
        assert view.crl_file.parent == view.directory != ca.directory
        assert view.crl() == ca.crl()
        assert leaf.serial_number in {
            r.serial_number for r in x509.load_pem_x509_crl(view.crl_file.read_bytes())
        }
        err = connect(
            view.server_context(HOST, "revoked", crl_url=CRL_URL),
            crl_checking_client(view.ca_file, view.crl_file),
        )
        assert isinstance(err, ssl.SSLCertVerificationError) and err.verify_code == 23
    finally:
        view.close()
    with pytest.raises(RuntimeError, match="closed"):
        view.crl()


def test_a_cached_revoked_leaf_is_on_the_next_authoritys_crl(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    with CertAuthority(cache=CertCache(cache_dir)) as first:
        leaf_pem = first.issue(HOST, "revoked", crl_url=CRL_URL).leaf_pem
        other_url = first.issue(HOST, "revoked").leaf_pem
    assert leaf_pem != other_url
    with CertAuthority(cache=CertCache(cache_dir)) as second:
        again = second.issue(HOST, "revoked", crl_url=CRL_URL)
        assert again.leaf_pem == leaf_pem  # from the cache
        assert again.crl_url == CRL_URL
        assert distribution_points(x509.load_pem_x509_certificate(again.leaf_pem)) == [CRL_URL]
        serial = x509.load_pem_x509_certificate(leaf_pem).serial_number
        assert {r.serial_number for r in x509.load_der_x509_crl(second.crl())} == {serial}
        err = connect(
            second.server_context(HOST, "revoked", crl_url=CRL_URL),
            crl_checking_client(second.ca_file, second.crl_file),
        )
        assert isinstance(err, ssl.SSLCertVerificationError) and err.verify_code == 23


def test_a_warm_cache_gives_the_same_crl_without_signing_again(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    with CertAuthority(cache=CertCache(cache_dir)) as first:
        first.issue(HOST, "revoked")
        signed = first.crl()
    with CertAuthority(cache=CertCache(cache_dir)) as second:
        second.issue(HOST, "revoked")  # the same leaf, from the cache
        assert second.crl() == signed  # the same bytes: taken from the cache, not signed anew
        second.issue("mx2.contoso.test", "revoked")
        grown = x509.load_der_x509_crl(second.crl())
        assert len(grown) == 2
        number = grown.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        first_number = x509.load_der_x509_crl(signed).extensions.get_extension_for_class(x509.CRLNumber)
        assert number > first_number.value.crl_number


def test_no_thread_left_running() -> None:
    assert not [t for t in threading.enumerate() if t.name == "crl-test-server"]
