"""mailfakes.certs through real TLS handshakes on loopback sockets.

A server thread accepts one connection on 127.0.0.1 (port 0) and handshakes
with ``CertAuthority.server_context(...)``; the client verifies with
``client_context()`` (or Python's default context) and ``server_hostname``.
Every socket has a timeout and every thread is joined.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography import x509
from mailfakes.certs import (
    NEEDS_REVOCATION_CHECK,
    VERIFY_FAILURES,
    WRONG_HOST_NAME,
    CertAuthority,
    expected_verify_failure,
)
from mailfakes.spec import CERT_KINDS, CertKind

HOST = "mx.contoso.test"
TIMEOUT = 5.0
BAD_KINDS: list[CertKind] = [k for k in CERT_KINDS if k != "valid"]


@dataclass
class Outcome:
    """What both ends of one handshake saw."""

    client_version: str | None = None
    client_error: ssl.SSLError | None = None
    server_version: str | None = None
    server_error: BaseException | None = None
    received: bytes = b""


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str) -> Outcome:
    """One TLS connection over loopback: the server greets with b"ok" once the handshake is done."""
    out = Outcome()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(TIMEOUT)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(TIMEOUT)
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    out.server_version = tls.version()
                    tls.sendall(b"ok")
            except (OSError, ssl.SSLError) as exc:
                out.server_error = exc

        thread = threading.Thread(target=serve, name="tls-test-server", daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=TIMEOUT) as raw,
                client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
            ):
                out.client_version = tls.version()
                out.received = tls.recv(2)
        except ssl.SSLError as exc:
            out.client_error = exc
        finally:
            thread.join(TIMEOUT)
        assert not thread.is_alive(), "server thread still running"
    return out


def verify_error(out: Outcome) -> ssl.SSLCertVerificationError:
    assert isinstance(out.client_error, ssl.SSLCertVerificationError), out
    return out.client_error


def same_reason(message: str, reason: str) -> bool:
    # OpenSSL 1.1 says "self signed", OpenSSL 3 "self-signed".
    return message.replace("-", " ").startswith(reason.replace("-", " "))


@pytest.fixture(scope="module")
def authority() -> Iterator[CertAuthority]:
    with CertAuthority() as ca:
        yield ca


@pytest.fixture
def fresh() -> Iterator[CertAuthority]:
    ca = CertAuthority()
    try:
        yield ca
    finally:
        ca.close()


# -- handshakes ---------------------------------------------------------


def test_valid_certificate_verifies(authority: CertAuthority) -> None:
    out = handshake(authority.server_context(HOST), authority.client_context(), HOST)
    assert out.client_error is None, out.client_error
    assert out.received == b"ok"
    assert out.client_version in ("TLSv1.2", "TLSv1.3")
    assert out.server_error is None


def test_valid_certificate_for_an_ip_address(authority: CertAuthority) -> None:
    out = handshake(authority.server_context("127.0.0.1"), authority.client_context(), "127.0.0.1")
    assert out.client_error is None, out.client_error
    assert out.received == b"ok"


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_kind_fails_with_its_own_verify_code(authority: CertAuthority, kind: CertKind) -> None:
    expected = expected_verify_failure(kind)
    assert expected is not None
    code, reason = expected
    server = authority.server_context(HOST, kind)  # first: a CRL lists the leaves issued before it
    client = authority.client_context(check_revocation=kind in NEEDS_REVOCATION_CHECK)
    err = verify_error(handshake(server, client, HOST))
    assert err.verify_code == code, err.verify_message
    assert same_reason(err.verify_message, reason), err.verify_message


def test_observed_messages_are_exact(authority: CertAuthority) -> None:
    """The messages users will see, pinned (OpenSSL 3 wording)."""
    if ssl.OPENSSL_VERSION_INFO < (3,):
        pytest.skip("OpenSSL 1.1 words some messages differently")
    seen = {}
    for kind in BAD_KINDS:
        server = authority.server_context(HOST, kind)
        client = authority.client_context(check_revocation=kind in NEEDS_REVOCATION_CHECK)
        err = verify_error(handshake(server, client, HOST))
        seen[kind] = (err.verify_code, err.verify_message)
    assert seen == {
        "expired": (10, "certificate has expired"),
        "not_yet_valid": (9, "certificate is not yet valid"),
        "wrong_host": (62, f"Hostname mismatch, certificate is not valid for '{HOST}'."),
        "untrusted_ca": (20, "unable to get local issuer certificate"),
        "self_signed": (18, "self-signed certificate"),
        "missing_intermediate": (20, "unable to get local issuer certificate"),
        "revoked": (23, "certificate revoked"),
    }


@pytest.mark.parametrize("kind", ["valid", *BAD_KINDS])
def test_python_default_client_agrees(authority: CertAuthority, kind: CertKind) -> None:
    """A client built the ordinary way, from ca_file, sees the same result."""
    client = ssl.create_default_context(cafile=str(authority.ca_file))
    out = handshake(authority.server_context(HOST, kind), client, HOST)
    # A revoked certificate is valid in every other way: a client that loads no CRL accepts it.
    expected = None if kind in NEEDS_REVOCATION_CHECK else expected_verify_failure(kind)
    if expected is None:
        assert out.client_error is None and out.received == b"ok"
    else:
        assert verify_error(out).verify_code == expected[0]


def test_missing_intermediate_is_the_only_defect(authority: CertAuthority) -> None:
    """Given the intermediate the server left out, the same chain verifies."""
    issued = authority.issue(HOST, "missing_intermediate")
    assert issued.omitted_pem.count(b"-----BEGIN CERTIFICATE-----") == 1
    client = authority.client_context()
    client.load_verify_locations(cadata=issued.omitted_pem.decode("ascii"))
    out = handshake(authority.server_context(HOST, "missing_intermediate"), client, HOST)
    assert out.client_error is None, out.client_error


def test_client_trusts_only_its_own_ca(authority: CertAuthority, fresh: CertAuthority) -> None:
    err = verify_error(handshake(fresh.server_context(HOST), authority.client_context(), HOST))
    assert err.verify_code == 20


def test_client_context_settings(authority: CertAuthority) -> None:
    ctx = authority.client_context()
    assert ctx is not authority.client_context()
    assert ctx.check_hostname is True
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert len(ctx.get_ca_certs()) == 1


# -- broken TLS -----------------------------------------------------------


@pytest.mark.parametrize("client_kind", ["client_context", "python_default"])
def test_broken_fails_for_lack_of_a_shared_cipher(authority: CertAuthority, client_kind: str) -> None:
    client = (
        authority.client_context()
        if client_kind == "client_context"
        else ssl.create_default_context(cafile=str(authority.ca_file))
    )
    out = handshake(authority.server_context(HOST, broken=True), client, HOST)
    err = out.client_error
    assert isinstance(err, ssl.SSLError)
    assert not isinstance(err, ssl.SSLCertVerificationError)
    # Observed with OpenSSL 3.0: "[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] sslv3 alert handshake failure".
    assert err.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE", err
    assert isinstance(out.server_error, ssl.SSLError)
    assert out.server_error.reason == "NO_SHARED_CIPHER"


def test_broken_server_works_for_a_client_that_accepts_null_ciphers(authority: CertAuthority) -> None:
    """The fault is the cipher list, nothing else: a client that allows NULL ciphers gets through."""
    client = authority.client_context()
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers("eNULL:@SECLEVEL=0")
    out = handshake(authority.server_context(HOST, broken=True), client, HOST)
    assert out.client_error is None, out.client_error
    assert out.client_version == "TLSv1.2"
    assert out.received == b"ok"


def test_server_context_settings_and_cache(authority: CertAuthority) -> None:
    ctx = authority.server_context(HOST)
    assert authority.server_context(HOST) is ctx
    assert authority.server_context(HOST.upper() + ".") is ctx
    assert authority.server_context(HOST, "valid", broken=True) is not ctx
    assert authority.server_context(HOST, "expired") is not ctx
    assert ctx.verify_mode == ssl.CERT_NONE
    assert ctx.check_hostname is False
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    broken = authority.server_context(HOST, broken=True)
    assert broken.maximum_version == ssl.TLSVersion.TLSv1_2
    assert all("NULL" in c["name"] or c["protocol"] == "TLSv1.3" for c in broken.get_ciphers())


def test_unknown_kind_and_empty_name_are_rejected(authority: CertAuthority) -> None:
    with pytest.raises(ValueError, match="unknown certificate kind"):
        authority.server_context(HOST, "bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty host name"):
        authority.server_context(" . ")


# -- expected failures ----------------------------------------------------


def test_expected_verify_failure_covers_every_kind() -> None:
    assert expected_verify_failure("valid") is None
    assert set(VERIFY_FAILURES) == set(BAD_KINDS)
    codes = {kind: expected_verify_failure(kind) for kind in BAD_KINDS}
    assert codes["expired"] == (10, "certificate has expired")
    assert codes["self_signed"] == (18, "self-signed certificate")
    with pytest.raises(ValueError):
        expected_verify_failure("bogus")  # type: ignore[arg-type]


# -- files and life cycle -------------------------------------------------


def mode(path: os.PathLike[str]) -> int:
    return stat.S_IMODE(os.stat(str(path)).st_mode)


def test_private_directory_and_file_modes(fresh: CertAuthority) -> None:
    assert fresh.directory.is_dir()
    assert mode(fresh.directory) == 0o700
    assert fresh.ca_file.parent == fresh.directory
    assert mode(fresh.ca_file) == 0o600
    assert fresh.ca_file.read_bytes() == fresh.ca_pem
    for kind in CERT_KINDS:
        fresh.server_context(HOST, kind)
    files = sorted(fresh.directory.iterdir())
    assert len(files) == 1 + 2 * len(CERT_KINDS)
    for path in files:
        assert path.is_file() and not path.is_symlink()
        assert mode(path) == 0o600, path


def test_certificates_are_made_lazily(fresh: CertAuthority) -> None:
    assert [p.name for p in fresh.directory.iterdir()] == ["ca.pem"]
    fresh.server_context(HOST)
    assert len(list(fresh.directory.iterdir())) == 3


@pytest.mark.parametrize("kind", CERT_KINDS)
def test_cert_file_is_the_served_chain_without_key(authority: CertAuthority, kind: CertKind) -> None:
    pem = authority.cert_file(HOST, kind).read_bytes()
    assert pem.count(b"-----BEGIN CERTIFICATE-----") == 1
    assert b"PRIVATE KEY" not in pem
    assert authority.cert_file(HOST, kind).parent == authority.directory


def test_ipv6_host_gets_a_safe_file_name(fresh: CertAuthority) -> None:
    path = fresh.cert_file("::1", "valid")
    assert path.parent == fresh.directory
    assert ":" not in path.name
    out = handshake(fresh.server_context("::1"), fresh.client_context(), "::1")
    assert out.client_error is None, out.client_error
    assert fresh.describe("::1", "valid")["sans"] == "IP:::1"


def test_close_removes_directory_and_is_idempotent() -> None:
    ca = CertAuthority()
    ctx = ca.server_context(HOST)
    directory = ca.directory
    assert directory.exists()
    ca.close()
    assert not directory.exists()
    assert ca.closed
    ca.close()
    assert not directory.exists()
    assert isinstance(ctx, ssl.SSLContext)
    with pytest.raises(RuntimeError, match="closed"):
        ca.server_context(HOST)
    with pytest.raises(RuntimeError, match="closed"):
        ca.cert_file(HOST, "expired")


def test_context_manager_closes() -> None:
    with CertAuthority() as ca:
        directory = ca.directory
        ca.server_context(HOST, "self_signed")
        assert directory.exists()
    assert not directory.exists()


# -- describe ---------------------------------------------------------------


def parse_iso(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    assert parsed.tzinfo is not None
    return parsed


def test_describe_dates(authority: CertAuthority) -> None:
    now = dt.datetime.now(dt.UTC)
    valid = authority.describe(HOST, "valid")
    assert parse_iso(valid["not_before"]) < now < parse_iso(valid["not_after"])
    expired = authority.describe(HOST, "expired")
    assert parse_iso(expired["not_after"]) < now
    assert parse_iso(expired["not_before"]) < parse_iso(expired["not_after"])
    future = authority.describe(HOST, "not_yet_valid")
    assert parse_iso(future["not_before"]) > now


def test_describe_matches_the_served_certificate(authority: CertAuthority) -> None:
    info = authority.describe(HOST, "expired")
    leaf = x509.load_pem_x509_certificate(authority.cert_file(HOST, "expired").read_bytes())
    assert info["subject"] == leaf.subject.rfc4514_string()
    assert info["not_after"] == leaf.not_valid_after_utc.isoformat()
    assert info["not_before"] == leaf.not_valid_before_utc.isoformat()
    assert info["cert_file"] == str(authority.cert_file(HOST, "expired"))


def test_describe_names_and_issuers(authority: CertAuthority) -> None:
    d = {kind: authority.describe(HOST, kind) for kind in CERT_KINDS}
    ca_subject = authority.subject
    for kind, info in d.items():
        assert info["kind"] == kind
        assert info["host_name"] == HOST
        assert info["note"]
    assert d["valid"]["sans"] == f"DNS:{HOST}"
    assert f"CN={HOST}" in d["valid"]["subject"]
    assert d["valid"]["issuer"] == ca_subject
    assert d["wrong_host"]["sans"] == f"DNS:{WRONG_HOST_NAME}"
    assert f"CN={WRONG_HOST_NAME}" in d["wrong_host"]["subject"]
    assert d["self_signed"]["issuer"] == d["self_signed"]["subject"]
    assert d["self_signed"]["sans"] == f"DNS:{HOST}"
    assert "untrusted CA" in d["untrusted_ca"]["issuer"]
    assert d["untrusted_ca"]["issuer"] != ca_subject
    assert "intermediate CA" in d["missing_intermediate"]["issuer"]
    assert "without its intermediate" in d["missing_intermediate"]["served"]
    assert d["valid"]["served"] == "the leaf only"


def test_describe_ip_host(authority: CertAuthority) -> None:
    assert authority.describe("127.0.0.1", "self_signed")["sans"] == "IP:127.0.0.1"
    assert authority.describe("127.0.0.1", "valid")["sans"] == "IP:127.0.0.1"


def test_no_thread_left_running() -> None:
    assert not [t for t in threading.enumerate() if t.name == "tls-test-server"]
