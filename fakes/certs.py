"""Certificates of every kind a scenario needs, on trustme, ECDSA keys by default.

One :class:`CertAuthority` belongs to one world (or one test session). It makes
a trusted CA at construction and issues server certificates lazily, on the
first request for a (host name, kind) pair. Clients trust the CA through
:attr:`CertAuthority.ca_file` (a PEM path) or :meth:`CertAuthority.client_context`;
servers present a certificate through :meth:`CertAuthority.server_context`.

Each bad kind fails verification for its own reason (the ``verify_code`` of
``ssl.SSLCertVerificationError``, see :func:`expected_verify_failure`):

=====================  ===================================================  ====
kind                   what the server presents                             code
=====================  ===================================================  ====
valid                  a leaf for the host from the trusted CA              --
expired                the same, valid from 2 days ago to 1 day ago         10
not_yet_valid          the same, valid from tomorrow on                     9
wrong_host             a leaf for ``unrelated.example.test`` (SAN and CN)   62
untrusted_ca           a leaf from a second CA that clients do not trust    20
self_signed            a self-signed leaf for the host (not a CA)           18
missing_intermediate   a leaf from an intermediate CA, sent without it      20
revoked                a leaf like ``valid``, its serial on the CA's CRL    23
=====================  ===================================================  ====

``revoked`` fails only for a client that checks revocation (code 23 is
X509_V_ERR_CERT_REVOKED, "certificate revoked"); any other client accepts
it, as it is valid in every other way. Such a leaf carries a CRL
Distribution Points extension with one http URL: the one its caller gives
(``crl_url=``), by convention :func:`crl_url_for` the world's zone
(``http://crl.<zone>/mailfakes.crl``), else :data:`DEFAULT_CRL_URL`. What
is served there is :meth:`CertAuthority.crl` in DER (RFC 5280, 4.2.1.13),
as ``application/pkix-crl`` (RFC 2585). The CRL is signed by the trusted
CA and lists every revoked leaf this authority (or any view of it) has
issued so far, so a revoked leaf is issued before a CRL that must name it
is taken. :attr:`CertAuthority.crl_file` (PEM) and
:attr:`CertAuthority.crl_der_file` hold the current one;
``client_context(check_revocation=True)`` checks the leaf against it.

``offer`` says what the server context offers: ``current`` (TLS 1.2 and
1.3), ``no_shared_cipher`` (only TLS 1.2 with NULL ciphers, which every client
refuses: OpenSSL answers the ClientHello with a ``handshake_failure`` alert)
or ``legacy_only`` (only TLS 1.0 and 1.1: a client that speaks TLS 1.2 or
later only gets a ``protocol_version`` alert). ``broken=True`` is
``offer="no_shared_cipher"``.

Key material a world uses lives in a private temporary directory (mode 0700,
files 0600) that :meth:`CertAuthority.close` removes. Server contexts are loaded
from files there with ``load_cert_chain`` (trustme's ``configure_cert`` would
write the key to the system temp dir). Cost, measured with OpenSSL 3.0 on 2
cores: ``CertAuthority()`` plus one valid server context takes about 1.7 ms,
most of it OpenSSL parsing the key and certificate; later calls for the same
context are dictionary look-ups.

The process's CA (:func:`shared_authority`, what default worlds and runtimes
use) is kept between processes in a per-user :class:`CertCache` (a 0700
directory under ``$XDG_CACHE_HOME/mailfakes``), with the leaves it issued and
its CRLs (each reused for a day while it lists the same leaves), so
that a command such as ``mailfakes serve`` neither makes keys nor imports
trustme and cryptography when its certificates were made before. Set
``MAILFAKES_CERT_CACHE=off`` to make every CA afresh in memory, as a
``CertAuthority()`` always does.
"""

from __future__ import annotations

import binascii
import contextlib
import datetime as dt
import json
import os
import ssl
import stat
import sys
import threading
import warnings
import weakref
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from .faults import key as _fault_key
from .spec import CERT_KINDS, CertKind, normalize_name

if TYPE_CHECKING:
    import trustme
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

# trustme and cryptography cost about 30 ms to import: only a process that
# makes a key, signs a certificate or reads one's fields imports them.


def _trustme() -> ModuleType:
    import trustme

    return trustme


def _key_name(key_type: object) -> str:
    """ "ECDSA" or "RSA" for a trustme.KeyType (or its name), without importing trustme."""
    name = getattr(key_type, "name", key_type)
    if name not in ("ECDSA", "RSA"):
        raise ValueError(f"unknown key type {key_type!r}; expected trustme.KeyType.ECDSA or RSA")
    return str(name)


def _remove_dir(path: Path, pid: int) -> None:
    # Only the process that made a directory removes it: a forked child that
    # exits normally must not take its parent's keys away.
    if os.getpid() == pid:
        import shutil

        shutil.rmtree(path, True)


def _token(n: int) -> str:
    return os.urandom(n).hex()  # what secrets.token_hex does, without importing hmac and base64


def _temp_base() -> str | None:
    """Where tempfile would make a directory, when tempfile is not needed to say (else None)."""
    loaded = sys.modules.get("tempfile")
    if loaded is not None and loaded.tempdir is not None:
        return None
    bases = [b for b in (os.environ.get(v, "") for v in ("TMPDIR", "TEMP", "TMP")) if os.path.isdir(b)]
    return os.path.abspath(bases[0] if bases else "/tmp")


def _private_temp_dir() -> Path:
    """A new directory only this user can enter (0700), where tempfile.mkdtemp() would make it.

    tempfile (and shutil, bz2, lzma with it) costs about 2 ms to import: it
    is used only when it is imported already (so that its ``tempdir`` is
    honoured) or when the first of ``$TMPDIR``, ``$TEMP``, ``$TMP`` that is a
    directory (else /tmp) will not do.
    """
    base = _temp_base()
    if base is not None:
        for _ in range(8):
            path = os.path.join(base, f"mailfakes-certs-{_token(6)}")
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                continue
            except OSError:
                break
            return Path(path)
    import tempfile

    return Path(tempfile.mkdtemp(prefix="mailfakes-certs-"))


ORGANIZATION: Final = "mailfakes"
WRONG_HOST_NAME: Final = "unrelated.example.test"
"""The only name a ``wrong_host`` certificate is valid for."""

_DAY: Final = dt.timedelta(days=1)
_LIFETIME: Final = dt.timedelta(days=365)

CRL_HOST_LABEL: Final = "crl"
"""The first label of the CRL's host by convention: ``crl.<zone>`` (see :func:`crl_url_for`)."""
CRL_PATH: Final = "/mailfakes.crl"
"""The path of the CRL on its host, by convention."""
CRL_MEDIA_TYPE: Final = "application/pkix-crl"
"""The content type a CRL is served with over http (RFC 2585, section 4.2)."""
NEEDS_REVOCATION_CHECK: Final = frozenset({"revoked"})
"""Kinds that only a client checking revocation refuses; every other client accepts them."""
_CRL_BACKDATE: Final = dt.timedelta(hours=1)
_CRL_VALIDITY: Final = dt.timedelta(days=7)
# A CRL is signed anew when its revoked set changes or once this old, so
# a week-long process never hands out one past its nextUpdate.
_CRL_REFRESH: Final = dt.timedelta(days=1)
_MAX_URL: Final = 2000


def crl_url_for(zone: str) -> str:
    """The CRL distribution point of a world whose DNS zone is ``zone``, by convention.

    Example::

        crl_url_for("contoso.test")   # 'http://crl.contoso.test/mailfakes.crl'
    """
    name = normalize_name(zone)
    if not name:
        raise ValueError(f"empty zone {zone!r}")
    return check_crl_url(f"http://{CRL_HOST_LABEL}.{name}{CRL_PATH}")


def check_crl_url(url: str) -> str:
    """``url`` if it can be a revoked leaf's distribution point (an http URL with a host), else ValueError."""
    from urllib.parse import urlsplit

    if not isinstance(url, str) or not url.isascii() or not url.isprintable() or " " in url:
        raise ValueError(f"CRL URL {url!r}: expected printable ASCII without spaces")
    if len(url) > _MAX_URL:
        raise ValueError(f"CRL URL of {len(url)} characters: at most {_MAX_URL}")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise ValueError(f"CRL URL {url!r}: {exc}") from None
    if parts.scheme != "http" or not host:
        raise ValueError(f"CRL URL {url!r}: expected http://HOST/PATH (CRLs are fetched over plain http)")
    return url


DEFAULT_CRL_URL: Final = f"http://{CRL_HOST_LABEL}.test{CRL_PATH}"
"""The distribution point of a revoked leaf whose caller names none (the default zone's)."""

VERIFY_FAILURES: Final[dict[str, tuple[int, str]]] = {
    # OpenSSL X509_V_ERR_* code and the start of its message (OpenSSL 3 wording).
    "expired": (10, "certificate has expired"),
    "not_yet_valid": (9, "certificate is not yet valid"),
    "wrong_host": (62, "Hostname mismatch"),
    "untrusted_ca": (20, "unable to get local issuer certificate"),
    "self_signed": (18, "self-signed certificate"),
    "missing_intermediate": (20, "unable to get local issuer certificate"),
    "revoked": (23, "certificate revoked"),  # only when the client checks revocation
}


def cert_effect(kind: CertKind) -> str:
    """What a certificate of ``kind`` is, in the fault table's words."""
    return _fault_key("cert").effect(kind)


def expected_verify_failure(kind: CertKind) -> tuple[int, str] | None:
    """The ``(verify_code, reason)`` a verifying client reports for ``kind``.

    ``None`` for ``valid``. ``reason`` is the start of the client's
    ``verify_message`` under OpenSSL 3 (OpenSSL 1.1 writes "self signed").
    A client that does not check revocation accepts the kinds in
    :data:`NEEDS_REVOCATION_CHECK` (``revoked``).
    """
    if kind not in CERT_KINDS:
        raise ValueError(f"unknown certificate kind {kind!r}; expected one of {', '.join(CERT_KINDS)}")
    return VERIFY_FAILURES.get(kind)


_ISSUED_FIELDS: Final = (
    "host_name",
    "kind",
    "cert_file",
    "key_file",
    "leaf_pem",
    "served_count",
    "omitted_pem",
    "not_before",
    "not_after",
    "crl_url",
)


class IssuedCert:
    """A server certificate written to the authority's private directory (a frozen value).

    ``cert_file``: the chain exactly as the server presents it (PEM, leaf
    first); ``served_count``: how many certificates the server sends (1 for
    every kind here); ``omitted_pem``: certificates a correct server would
    also send (the intermediate, for ``missing_intermediate``); ``crl_url``:
    the distribution point a ``revoked`` leaf names (None for the other
    kinds, which name none). A plain class
    rather than a dataclass: building one at import costs half a millisecond
    of every command's start.
    """

    __slots__ = _ISSUED_FIELDS
    host_name: str
    kind: CertKind
    cert_file: Path
    key_file: Path
    leaf_pem: bytes
    served_count: int
    omitted_pem: bytes
    not_before: dt.datetime
    not_after: dt.datetime
    crl_url: str | None

    def __init__(
        self,
        *,
        host_name: str,
        kind: CertKind,
        cert_file: Path,
        key_file: Path,
        leaf_pem: bytes,
        served_count: int,
        omitted_pem: bytes,
        not_before: dt.datetime,
        not_after: dt.datetime,
        crl_url: str | None = None,
    ) -> None:
        values = (
            host_name,
            kind,
            cert_file,
            key_file,
            leaf_pem,
            served_count,
            omitted_pem,
            not_before,
            not_after,
            crl_url,
        )
        for name, value in zip(_ISSUED_FIELDS, values, strict=True):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"IssuedCert is frozen: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"IssuedCert is frozen: cannot delete {name!r}")

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in _ISSUED_FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _ISSUED_FIELDS)
        return f"IssuedCert({fields})"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _validity(kind: CertKind, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    if kind == "expired":
        return now - 2 * _DAY, now - _DAY
    if kind == "not_yet_valid":
        return now + _DAY, now + _DAY + _LIFETIME
    return now - _DAY, now + _LIFETIME


def _general_name(name: str) -> x509.GeneralName:
    import ipaddress

    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


_STEM_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")


def _file_stem(host_name: str) -> str:
    """A file-name-safe stem for a host name, distinct for distinct names."""
    stem = "".join(c if c in _STEM_CHARS else "_" for c in host_name)
    if stem != host_name or len(stem) > 100 or stem.startswith("."):
        import hashlib

        digest = hashlib.sha256(host_name.encode()).hexdigest()[:10]
        stem = f"{stem[:100].lstrip('.')}-{digest}"
    return stem


def _private_key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _new_key(key_name: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if key_name == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _self_signed(
    host_name: str, key_name: str, not_before: dt.datetime, not_after: dt.datetime
) -> tuple[bytes, bytes]:
    """A self-signed leaf for ``host_name``: (key PEM, certificate PEM).

    Not a CA (basicConstraints CA:FALSE); OpenSSL reports it as error 18,
    "self-signed certificate", at depth 0.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = _new_key(key_name)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "mailfakes self-signed certificate"),
            x509.NameAttribute(NameOID.COMMON_NAME, host_name),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_general_name(host_name)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _private_key_pem(key), cert.public_bytes(serialization.Encoding.PEM)


class _Signer:
    """The trusted CA's certificate and private key, loaded once, to sign what trustme cannot."""

    def __init__(self, cert_pem: bytes, key_pem: bytes) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        self.cert = x509.load_pem_x509_certificate(cert_pem)
        key = load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"the CA's key is a {type(key).__name__}, not an ECDSA or RSA key")
        self.key = key
        ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        self.aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _revoked_leaf(
    signer: _Signer,
    host_name: str,
    key_name: str,
    not_before: dt.datetime,
    not_after: dt.datetime,
    crl_url: str,
) -> tuple[bytes, bytes]:
    """A leaf for ``host_name`` from the trusted CA, naming ``crl_url`` as its CRL: (key PEM, cert PEM).

    The extensions of a ``valid`` leaf (what trustme's ``issue_cert`` gives
    one), plus the CRL Distribution Points.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = _new_key(key_name)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "mailfakes revoked certificate"),
            x509.NameAttribute(NameOID.COMMON_NAME, host_name),
        ]
    )
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    purposes = [
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CODE_SIGNING,
    ]
    point = x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(crl_url)], relative_name=None, reasons=None, crl_issuer=None
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(signer.aki, critical=False)
        .add_extension(x509.SubjectAlternativeName([_general_name(host_name)]), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage(purposes), critical=True)
        .add_extension(x509.CRLDistributionPoints([point]), critical=False)
        .sign(signer.key, hashes.SHA256())
    )
    return _private_key_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def _sign_crl(
    signer: _Signer, revoked: list[tuple[int, dt.datetime]], number: int, now: dt.datetime
) -> tuple[bytes, bytes]:
    """An X.509 v2 CRL of the trusted CA listing ``revoked`` (serial, revocation date): (DER, PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(signer.cert.subject)
        .last_update(now - _CRL_BACKDATE)
        .next_update(now + _CRL_VALIDITY)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(signer.aki, critical=False)
    )
    for serial, when in sorted(revoked):
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(when)
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(signer.key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.DER), crl.public_bytes(serialization.Encoding.PEM)


TlsOffer = Literal["current", "no_shared_cipher", "legacy_only"]
TLS_OFFERS: Final = get_args(TlsOffer)


def _offer_legacy_only(ctx: ssl.SSLContext) -> None:
    """Let ``ctx`` speak TLS 1.0 and 1.1 only, as a server nobody has updated since 2015.

    Such a server has an RSA certificate and key exchange (AES-SHA suites):
    the handshake then needs no SHA-1 signature, so a client that still
    accepts TLS 1.1 gets a session, as it would from the real server
    (OpenSSL 3 only refuses those versions' signatures, at its default
    security level). A client that speaks TLS 1.2 or later only is refused
    on the version, with ``protocol_version``.
    """
    with warnings.catch_warnings():  # ssl deprecates these versions: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("AES256-SHA:AES128-SHA:@SECLEVEL=0")


def _make_unusable(ctx: ssl.SSLContext) -> None:
    """Let ``ctx`` offer only TLS 1.2 with NULL (unencrypted) ciphers: no client shares one.

    Every client refuses NULL ciphers by default, OpenSSL and GnuTLS alike,
    so the handshake fails with "no shared cipher" whatever the client's
    protocol versions. (TLS 1.0/1.1 only is not enough: GnuTLS clients such
    as msmtp on Debian 12 still accept TLS 1.1.)
    """
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    # OpenSSL 3 offers NULL ciphers only at security level 0.
    ctx.set_ciphers("eNULL:@SECLEVEL=0")


SERVER_NAME_ATTRIBUTE: Final = "mailfakes_server_name"


def _note_server_name(conn: Any, name: str | None, ctx: ssl.SSLContext) -> None:
    # Called once the ClientHello is in: the name it asked for (None: no SNI)
    # stays on the connection's SSL object for the server to read.
    setattr(conn, SERVER_NAME_ATTRIBUTE, (name,))


class CertAuthority:
    """A CA and the server certificates it issues.

    Thread-safe; every result is cached, so repeated calls are cheap. The
    server contexts returned are shared: do not modify them. A default
    ``World`` uses :func:`shared_authority` through :meth:`lend`.

    ``cache``: a :class:`CertCache` the CA and its leaves are taken from when
    they were made before (by this user, in any process), and kept in when
    new; without it (the default) the CA is new and lives in memory only.
    """

    def __init__(self, *, key_type: trustme.KeyType | str = "ECDSA", cache: CertCache | None = None) -> None:
        self._key_name = _key_name(key_type)
        self._directory = _private_temp_dir()
        os.chmod(self._directory, 0o700)
        self._finalizer = weakref.finalize(self, _remove_dir, self._directory, os.getpid())
        self._lock = threading.RLock()
        self._closed = False
        self.cache = cache if cache is not None and cache.usable() else None
        self._ca_obj: trustme.CA | None = None
        self._ca_key_pem = b""
        try:
            if self.cache is not None:
                self.ca_pem, self._ca_key_pem = self.cache.authority(self._key_name, self._new_ca)
            else:
                self._ca_obj = self._new_ca("trusted")
                self.ca_pem = self._ca_obj.cert_pem.bytes()
            self._ca_file = self._write("ca.pem", self.ca_pem)
        except BaseException:
            self._finalizer()
            raise
        self.ca_id = _ca_id(self.ca_pem)
        self._untrusted_ca: trustme.CA | None = None
        self._intermediate_ca: trustme.CA | None = None
        self._issued: dict[tuple[str, CertKind, bool, str | None], IssuedCert] = {}
        self._contexts: dict[tuple[str, CertKind, str, str | None], ssl.SSLContext] = {}
        self._context_files: dict[tuple[str, CertKind, str, str | None], Path] = {}
        self._generation = 0
        self._signer_obj: _Signer | None = None
        # Every revoked leaf issued or taken from the cache: its PEM -> its revocation date.
        self._revoked: dict[bytes, dt.datetime] = {}
        self._revoked_serials: dict[bytes, int] = {}
        # The CRL last signed: (the revoked leaves it lists, when, DER, PEM), and its number.
        self._crl_made: tuple[frozenset[bytes], dt.datetime, bytes, bytes] | None = None
        self._crl_number = 0
        self._published: dict[str, bytes] = {}  # file name -> what crl_file / crl_der_file wrote

    @property
    def directory(self) -> Path:
        """The private directory (0700, files 0600) of this authority's files, removed at close()."""
        return self._directory

    @property
    def ca_file(self) -> Path:
        """The CA's certificate (PEM) in :attr:`directory`: what a client should trust."""
        return self._ca_file

    @property
    def key_type(self) -> trustme.KeyType:
        """The trustme.KeyType of the CA's keys and of its leaves."""
        return _trustme().KeyType[self._key_name]  # type: ignore[no-any-return]

    @property
    def _ca(self) -> trustme.CA:
        """The trusted CA as a trustme.CA, read from the cached PEM on first need (a miss)."""
        with self._lock:
            if self._ca_obj is None:
                self._ca_obj = _trustme().CA.from_pem(self.ca_pem, self._ca_key_pem)
            return self._ca_obj

    # -- life cycle ------------------------------------------------------

    def close(self) -> None:
        """Remove the private directory and everything in it. Idempotent."""
        with self._lock:
            self._closed = True
            self._finalizer()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> CertAuthority:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else str(self.directory)
        return f"<CertAuthority {self.subject} {state}>"

    def lend(self) -> CertAuthority:
        """A view of this CA with a private directory of its own, closed on its own.

        The view's ``ca_file`` is a copy in its directory; its certificates
        and server contexts are this authority's (made once, for every view).
        Closing the view removes its directory only.
        """
        return _Lent(self)

    # -- clients ---------------------------------------------------------

    @property
    def subject(self) -> str:
        """The trusted CA's subject, as RFC 4514 text."""
        from cryptography import x509

        return x509.load_pem_x509_certificate(self.ca_pem).subject.rfc4514_string()

    def client_context(self, *, check_revocation: bool = False) -> ssl.SSLContext:
        """A fresh client context that trusts this CA only, checks host names, TLS >= 1.2.

        ``check_revocation``: it also checks the leaf against the CRL as it
        is now (:attr:`crl_file`, ``VERIFY_CRL_CHECK_LEAF``), so a ``revoked``
        leaf issued before fails with code 23. Such a context needs a CRL
        from the leaf's issuer: a chain through the intermediate CA (the
        client given the intermediate a ``missing_intermediate`` server
        leaves out) fails with 3, "unable to get certificate CRL".
        """
        ctx = ssl.create_default_context(cadata=self.ca_pem.decode("ascii"))
        ctx.minimum_version = max(ctx.minimum_version, ssl.TLSVersion.TLSv1_2)
        if check_revocation:
            ctx.load_verify_locations(cafile=str(self.crl_file))
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        return ctx

    # -- revocation ------------------------------------------------------

    def crl(self, encoding: Literal["der", "pem"] = "der") -> bytes:
        """The trusted CA's CRL now: X.509 v2, listing every ``revoked`` leaf issued so far.

        DER (what a distribution point serves) or PEM. lastUpdate is an hour
        ago, nextUpdate a week on; it carries a CRL number (larger for each
        CRL signed) and the CA's key identifier. The same bytes come back
        until another revoked leaf is issued or a day has passed.
        """
        if encoding not in ("der", "pem"):
            raise ValueError(f"unknown CRL encoding {encoding!r}; expected 'der' or 'pem'")
        with self._lock:
            if self._closed:
                raise RuntimeError("CertAuthority is closed")
            now = _now()
            listed = frozenset(self._revoked)
            made = self._crl_made
            if made is None or made[0] != listed or not made[1] <= now < made[1] + _CRL_REFRESH:
                made = self._crl_made = self._crl_from_cache(listed, now) or self._sign_crl(listed, now)
            return made[2] if encoding == "der" else made[3]

    def _crl_entry(self, listed: frozenset[bytes]) -> str:
        # Named by the CA and the leaves it lists (their PEMs, so that no certificate is parsed).
        digest = binascii.crc32(b"".join(sorted(listed)))
        return _entry_name("crl", self.ca_id, f"{digest:08x}{len(listed):04x}")

    def _crl_from_cache(
        self, listed: frozenset[bytes], now: dt.datetime
    ) -> tuple[frozenset[bytes], dt.datetime, bytes, bytes] | None:
        """A CRL this CA signed for the same leaves less than a day ago, in this user's cache.

        A world writes its CRL at every start: from the cache, a warm start
        neither imports cryptography nor signs anything.
        """
        if self.cache is None:
            return None
        entry = self._crl_entry(listed)
        found = self.cache.load(entry)
        if found is None:
            return None
        meta, files = found
        try:
            made = dt.datetime.fromisoformat(str(meta["made"]))
            number = int(meta["number"])
            der, pem = files["crl.der"], files["crl.pem"]
            if meta.get("ca") != self.ca_id or not made <= now < made + _CRL_REFRESH:
                raise ValueError("another CA's, or too old")
        except (KeyError, ValueError, TypeError):
            self.cache.discard(entry)
            return None
        self._crl_number = max(self._crl_number, number)
        return listed, made, der, pem

    def _sign_crl(
        self, listed: frozenset[bytes], now: dt.datetime
    ) -> tuple[frozenset[bytes], dt.datetime, bytes, bytes]:
        self._crl_number = max(self._crl_number + 1, int(now.timestamp()))
        entries = [(self._serial(pem), self._revoked[pem]) for pem in listed]
        der, pem = _sign_crl(self._signer(), entries, self._crl_number, now)
        if self.cache is not None:
            entry = self._crl_entry(listed)
            self.cache.discard(entry)  # an older one (a day old): replaced
            meta = {"ca": self.ca_id, "made": now.isoformat(), "number": self._crl_number}
            self.cache.store(entry, meta, {"crl.der": der, "crl.pem": pem})
        return listed, now, der, pem

    def revoked_serials(self) -> frozenset[int]:
        """The serial numbers of the ``revoked`` leaves issued so far (what :meth:`crl` lists)."""
        with self._lock:
            return frozenset(self._serial(pem) for pem in self._revoked)

    @property
    def crl_file(self) -> Path:
        """The current CRL (PEM) in :attr:`directory`, rewritten (atomically) when it changed."""
        return self._publish("crl.pem", self.crl("pem"))

    @property
    def crl_der_file(self) -> Path:
        """The current CRL in DER in :attr:`directory`, as the distribution point serves it."""
        return self._publish("crl.der", self.crl("der"))

    def _publish(self, file_name: str, data: bytes) -> Path:
        with self._lock:
            path = self.directory / file_name
            if self._published.get(file_name) != data:
                tmp = self.directory / f".{file_name}.{_token(4)}"
                _write_private(tmp, data)
                os.replace(tmp, path)
                self._published[file_name] = data
            return path

    # -- servers ---------------------------------------------------------

    def server_context(
        self,
        host_name: str,
        kind: CertKind = "valid",
        *,
        broken: bool = False,
        offer: TlsOffer = "current",
        crl_url: str | None = None,
    ) -> ssl.SSLContext:
        """A server context presenting a certificate of ``kind`` for ``host_name``.

        ``offer`` (see the module's text): ``no_shared_cipher`` and
        ``legacy_only`` make a modern client's handshake fail before any
        certificate is checked. ``broken=True`` means ``no_shared_cipher``.
        ``crl_url``: see :meth:`issue`.
        """
        if broken:
            offer = "no_shared_cipher"
        if offer not in TLS_OFFERS:
            raise ValueError(f"unknown TLS offer {offer!r}; expected one of {', '.join(TLS_OFFERS)}")
        with self._lock:
            # An old server has an RSA key: see _offer_legacy_only.
            issued = self.issue(
                host_name, kind, rsa=offer == "legacy_only", crl_url=crl_url
            )  # raises once closed
            key = (issued.host_name, kind, offer, issued.crl_url)
            ctx = self._contexts.get(key)
            if ctx is not None and self._context_files.get(key) != issued.cert_file:
                ctx = None  # the certificate was issued again (see _still_fits)
            if ctx is None:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                if offer == "no_shared_cipher":
                    _make_unusable(ctx)
                elif offer == "legacy_only":
                    _offer_legacy_only(ctx)
                else:
                    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                ctx.sni_callback = _note_server_name
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                ctx.load_cert_chain(issued.cert_file, issued.key_file)  # checks the key fits the leaf
                self._contexts[key] = ctx
                self._context_files[key] = issued.cert_file
            return ctx

    def cert_file(self, host_name: str, kind: CertKind, *, crl_url: str | None = None) -> Path:
        """The PEM the server presents for (host_name, kind): the chain as served."""
        return self.issue(host_name, kind, crl_url=crl_url).cert_file

    def describe(self, host_name: str, kind: CertKind, *, crl_url: str | None = None) -> dict[str, str]:
        """Details of the served leaf, for demos and debugging.

        Keys: host_name, kind, note, subject, issuer, sans, not_before,
        not_after (ISO 8601, UTC), served (what the server sends), cert_file,
        crl_url (the distribution point a revoked leaf names; else empty).
        """
        from cryptography import x509

        issued = self.issue(host_name, kind, crl_url=crl_url)
        leaf = x509.load_pem_x509_certificate(issued.leaf_pem)
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = ", ".join(
                f"DNS:{n.value}" if isinstance(n, x509.DNSName) else f"IP:{n.value}"
                for n in san
                if isinstance(n, x509.DNSName | x509.IPAddress)
            )
        except x509.ExtensionNotFound:
            sans = ""
        served = "the leaf only"
        if issued.omitted_pem:
            served = "the leaf only, without its intermediate CA"
        return {
            "host_name": issued.host_name,
            "kind": kind,
            "note": cert_effect(kind),  # the fault table's words for it
            "subject": leaf.subject.rfc4514_string(),
            "issuer": leaf.issuer.rfc4514_string(),
            "sans": sans,
            "not_before": issued.not_before.isoformat(),
            "not_after": issued.not_after.isoformat(),
            "served": served,
            "cert_file": str(issued.cert_file),
            "crl_url": issued.crl_url or "",
        }

    def issue(
        self, host_name: str, kind: CertKind = "valid", *, rsa: bool = False, crl_url: str | None = None
    ) -> IssuedCert:
        """The certificate of ``kind`` for ``host_name``, made on first request.

        ``rsa``: an RSA-2048 leaf whatever the authority's key type (about
        70 ms to make), for a server that must look like an old one.
        ``crl_url``: the CRL distribution point a ``revoked`` leaf names (an
        http URL, see :func:`crl_url_for`; default :data:`DEFAULT_CRL_URL`);
        checked, then ignored for the other kinds, which name none. Each URL
        has a leaf of its own.
        """
        if kind not in CERT_KINDS:
            raise ValueError(f"unknown certificate kind {kind!r}; expected one of {', '.join(CERT_KINDS)}")
        name = normalize_name(host_name)
        if not name:
            raise ValueError(f"empty host name {host_name!r}")
        url: str | None = check_crl_url(crl_url) if crl_url is not None else DEFAULT_CRL_URL
        if kind not in NEEDS_REVOCATION_CHECK:
            url = None  # no other kind names a distribution point
        with self._lock:
            if self._closed:
                raise RuntimeError("CertAuthority is closed")
            issued = self._issued.get((name, kind, rsa, url))
            now = _now()
            if issued is None or not _still_fits(issued, now):
                key_name = "RSA" if rsa else self._key_name
                issued = self._from_cache(name, kind, key_name, url, now) or self._issue(
                    name, kind, key_name, url
                )
                self._issued[(name, kind, rsa, url)] = issued
            return issued

    # -- internals -------------------------------------------------------

    def _new_ca(self, role: str, parent: trustme.CA | None = None) -> trustme.CA:
        # A random token keeps the subjects of different CAs apart, so a client
        # never confuses two worlds' CAs (or the trusted and untrusted one).
        trustme = _trustme()
        return trustme.CA(  # type: ignore[no-any-return]
            parent_cert=parent,
            path_length=8 if parent is not None else 9,
            organization_name=ORGANIZATION,
            organization_unit_name=f"mailfakes {role} CA {_token(4)}",
            key_type=trustme.KeyType[self._key_name],
        )

    def _write(self, file_name: str, data: bytes) -> Path:
        path = self.directory / file_name
        _write_private(path, data)
        return path

    def _issuer_for(self, kind: CertKind) -> trustme.CA:
        if kind == "untrusted_ca":
            if self._untrusted_ca is None:
                self._untrusted_ca = self._new_ca("untrusted")
            return self._untrusted_ca
        if kind == "missing_intermediate":
            if self._intermediate_ca is None:
                # What create_child_ca() does, with a readable subject.
                self._intermediate_ca = self._new_ca("intermediate", parent=self._ca)
            return self._intermediate_ca
        return self._ca

    def _leaf_entry(self, host_name: str, kind: CertKind, key_name: str, crl_url: str | None) -> str:
        # What the certificate holds, besides its dates: who vouches for it, for
        # which name, which kind, which key type (and which CRL it names).
        parts = [self.ca_id, _file_stem(host_name), kind, key_name]
        if crl_url is not None:
            parts.append(f"crl-{binascii.crc32(crl_url.encode()):08x}{len(crl_url):04x}")
        return _entry_name("leaf", *parts)

    def _signer(self) -> _Signer:
        """The trusted CA's certificate and key as cryptography objects (loaded once)."""
        with self._lock:
            if self._signer_obj is None:
                key_pem = self._ca_key_pem or self._ca.private_key_pem.bytes()
                self._signer_obj = _Signer(self.ca_pem, key_pem)
            return self._signer_obj

    def _serial(self, leaf_pem: bytes) -> int:
        serial = self._revoked_serials.get(leaf_pem)
        if serial is None:
            from cryptography import x509

            serial = self._revoked_serials[leaf_pem] = x509.load_pem_x509_certificate(leaf_pem).serial_number
        return serial

    def _from_cache(
        self, host_name: str, kind: CertKind, key_name: str, crl_url: str | None, now: dt.datetime
    ) -> IssuedCert | None:
        """A leaf made before, from the cache, copied into this authority's directory."""
        if self.cache is None:
            return None
        entry = self._leaf_entry(host_name, kind, key_name, crl_url)
        found = self.cache.load(entry)
        if found is None:
            return None
        meta, files = found
        try:
            if (meta.get("host"), meta.get("kind"), meta.get("ca"), meta.get("crl_url")) != (
                host_name,
                kind,
                self.ca_id,
                crl_url,
            ):
                raise ValueError("another certificate")
            not_before = dt.datetime.fromisoformat(str(meta["not_before"]))
            not_after = dt.datetime.fromisoformat(str(meta["not_after"]))
            key_pem, leaf_pem, omitted = files["key.pem"], files["cert.pem"], files["omitted.pem"]
        except (KeyError, ValueError):
            self.cache.discard(entry)
            return None
        if not _still_fits_dates(kind, not_before, not_after, now):
            self.cache.discard(entry)  # its dates no longer make it what it is: made again
            return None
        return self._record(
            host_name, kind, key_name, key_pem, leaf_pem, omitted, not_before, not_after, crl_url
        )

    def _issue(self, host_name: str, kind: CertKind, key_name: str, crl_url: str | None) -> IssuedCert:
        not_before, not_after = _validity(kind, _now())
        omitted = b""
        if kind == "self_signed":
            key_pem, leaf_pem = _self_signed(host_name, key_name, not_before, not_after)
        elif kind == "revoked":
            assert crl_url is not None
            key_pem, leaf_pem = _revoked_leaf(
                self._signer(), host_name, key_name, not_before, not_after, crl_url
            )
        else:
            subject_name = host_name
            if kind == "wrong_host":
                subject_name = WRONG_HOST_NAME if host_name != WRONG_HOST_NAME else "other." + WRONG_HOST_NAME
            leaf = self._issuer_for(kind).issue_cert(
                subject_name,
                common_name=subject_name,
                organization_name=ORGANIZATION,
                organization_unit_name=f"mailfakes {kind} certificate",
                not_before=not_before,
                not_after=not_after,
                key_type=_trustme().KeyType[key_name],
            )
            key_pem = leaf.private_key_pem.bytes()
            leaf_pem = leaf.cert_chain_pems[0].bytes()
            # The chain up to (not including) the root; empty unless an
            # intermediate issued the leaf, and that one is left out on purpose.
            omitted = b"".join(blob.bytes() for blob in leaf.cert_chain_pems[1:])
        if self.cache is not None:
            meta = {
                "host": host_name,
                "kind": kind,
                "ca": self.ca_id,
                "not_before": not_before.isoformat(),
                "not_after": not_after.isoformat(),
            }
            if crl_url is not None:
                meta["crl_url"] = crl_url
            files = {"key.pem": key_pem, "cert.pem": leaf_pem, "omitted.pem": omitted}
            self.cache.store(self._leaf_entry(host_name, kind, key_name, crl_url), meta, files)
        return self._record(
            host_name, kind, key_name, key_pem, leaf_pem, omitted, not_before, not_after, crl_url
        )

    def _record(
        self,
        host_name: str,
        kind: CertKind,
        key_name: str,
        key_pem: bytes,
        leaf_pem: bytes,
        omitted: bytes,
        not_before: dt.datetime,
        not_after: dt.datetime,
        crl_url: str | None,
    ) -> IssuedCert:
        """Write a leaf and its key into this authority's directory (a revoked one goes on the CRL)."""
        stem = f"{_file_stem(host_name)}.{kind}" + (".rsa" if key_name != self._key_name else "")
        if (self.directory / f"{stem}.crt.pem").exists():  # issued again (see _still_fits), or another URL
            self._generation += 1
            stem = f"{stem}.{self._generation}"
        if kind in NEEDS_REVOCATION_CHECK:
            self._revoked.setdefault(leaf_pem, not_before)
        return IssuedCert(
            host_name=host_name,
            kind=kind,
            cert_file=self._write(f"{stem}.crt.pem", leaf_pem),
            key_file=self._write(f"{stem}.key.pem", key_pem),
            leaf_pem=leaf_pem,
            served_count=1,
            omitted_pem=omitted,
            not_before=not_before,
            not_after=not_after,
            crl_url=crl_url,
        )


# A certificate cached for a long-lived process (a week-long serve, the shared
# authority) must keep failing for its own reason: issued again when within
# this margin of the date that would change what it is.
_REISSUE_MARGIN: Final = dt.timedelta(hours=1)


def _still_fits(issued: IssuedCert, now: dt.datetime) -> bool:
    return _still_fits_dates(issued.kind, issued.not_before, issued.not_after, now)


def _still_fits_dates(
    kind: CertKind, not_before: dt.datetime, not_after: dt.datetime, now: dt.datetime
) -> bool:
    if kind == "expired":
        return True  # it only gets more expired
    if kind == "not_yet_valid":
        return now < not_before - _REISSUE_MARGIN
    return not_before <= now < not_after - _REISSUE_MARGIN


class _Lent(CertAuthority):
    """See :meth:`CertAuthority.lend`: the owner's CA, a directory of its own.

    The directory and its ``ca_file`` are made when first asked for: a world
    whose CA file no client is given pays no file system work for it (on a
    slow /tmp a directory and a file cost about a millisecond).
    """

    def __init__(self, owner: CertAuthority) -> None:
        # Not CertAuthority.__init__: no CA of its own is made, that is the point.
        self._owner = owner
        self._key_name = owner._key_name
        self.cache = owner.cache
        self._lent_dir: Path | None = None
        self._lent_file: Path | None = None
        self._lent_finalizer: weakref.finalize[Any, Any] | None = None
        self._lock = threading.RLock()
        self._closed = False
        self.ca_pem = owner.ca_pem
        self.ca_id = owner.ca_id
        self._published: dict[str, bytes] = {}

    @property
    def directory(self) -> Path:
        """Made on first use; once closed, a path that no longer (or never) existed."""
        with self._lock:
            if self._lent_dir is None:
                if self._closed:
                    loaded = sys.modules.get("tempfile")
                    base = _temp_base() or (loaded.gettempdir() if loaded is not None else "/tmp")
                    return Path(base) / f"mailfakes-certs-never-made-{_token(6)}"
                self._lent_dir = _private_temp_dir()
                os.chmod(self._lent_dir, 0o700)
                self._lent_finalizer = weakref.finalize(self, _remove_dir, self._lent_dir, os.getpid())
            return self._lent_dir

    @property
    def ca_file(self) -> Path:
        with self._lock:
            if self._lent_file is None:
                self._check_open()
                self._lent_file = self._write("ca.pem", self.ca_pem)
            return self._lent_file

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._lent_finalizer is not None:
                self._lent_finalizer()

    @property
    def _ca(self) -> trustme.CA:
        return self._owner._ca

    def __repr__(self) -> str:
        state = "closed" if self._closed else str(self._lent_dir or "no directory yet")
        return f"<CertAuthority {self.subject} lent, {state}>"

    def lend(self) -> CertAuthority:
        return self._owner.lend()

    def server_context(
        self,
        host_name: str,
        kind: CertKind = "valid",
        *,
        broken: bool = False,
        offer: TlsOffer = "current",
        crl_url: str | None = None,
    ) -> ssl.SSLContext:
        self._check_open()
        return self._owner.server_context(host_name, kind, broken=broken, offer=offer, crl_url=crl_url)

    def issue(
        self, host_name: str, kind: CertKind = "valid", *, rsa: bool = False, crl_url: str | None = None
    ) -> IssuedCert:
        self._check_open()
        return self._owner.issue(host_name, kind, rsa=rsa, crl_url=crl_url)

    def crl(self, encoding: Literal["der", "pem"] = "der") -> bytes:
        self._check_open()
        return self._owner.crl(encoding)

    def revoked_serials(self) -> frozenset[int]:
        return self._owner.revoked_serials()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("CertAuthority is closed")


def _write_private(path: Path, data: bytes) -> None:
    """Write a new file only its owner can read (0600), refusing to follow a link."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


# -- the per-user cache -----------------------------------------------------------

CACHE_ENV: Final = "MAILFAKES_CERT_CACHE"
"""``off`` (or 0, no, false): no cache; an absolute path: the cache's directory."""
CA_MAX_AGE: Final = dt.timedelta(days=7)
"""A cached CA (and every leaf it issued) is replaced once this old."""
_CACHE_FORMAT: Final = "1"
_MAX_FILE: Final = 1 << 20


def _entry_name(*parts: str) -> str:
    # Readable and unambiguous: no part holds a "+" (host names go through _file_stem).
    return "+".join((f"v{_CACHE_FORMAT}", *parts))


def _ca_id(ca_pem: bytes) -> str:
    """A short name for a CA, from its certificate (which holds a random key and subject token)."""
    return f"{binascii.crc32(ca_pem):08x}{len(ca_pem):04x}"


def _check(data: bytes) -> str:
    # Against a torn or damaged file, not an adversary: one who can write the
    # entry can rewrite its meta.json whatever the digest (see CertCache).
    # CRC-32 from binascii, already imported, where hashlib would cost 1 ms.
    return f"crc32:{binascii.crc32(data):08x}:{len(data)}"


def _owned_private(st: os.stat_result, kind: int) -> bool:
    """Of the expected kind (not a link), this user's, and closed to group and others."""
    return stat.S_IFMT(st.st_mode) == kind and st.st_uid == os.getuid() and not st.st_mode & 0o077


def _read_private(path: Path) -> bytes | None:
    """A file's bytes if it is a regular file of this user's, mode 0600 or stricter; else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not _owned_private(st, stat.S_IFREG) or st.st_size > _MAX_FILE:
            return None
        chunks = []
        while chunk := os.read(fd, _MAX_FILE):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class CertCache:
    """Certificates and their keys kept between processes, for one user.

    Example::

        ca = CertAuthority(cache=CertCache(Path.home() / ".cache/mailfakes/certs"))
        ca.server_context("mx.contoso.test")   # a key made once, reused next time

    The directory is the user's own, mode 0700 (made so; one that is not the
    user's, or a link, is never used; one open to others has everything in it
    thrown away and is made again). Each entry is a directory of 0600 files
    and a ``meta.json`` naming them with their length and CRC-32, written
    under a temporary name and renamed into place, so a reader (any process)
    sees a whole entry or none. An entry is named by what its certificate
    holds (format, issuing CA, host name, kind, key type). One that is not
    this user's, is open to others, is incomplete, or whose files do not
    match their checks is removed and made again; so is a leaf whose dates no
    longer make it what it is, and the CA after :data:`CA_MAX_AGE`, with
    every leaf it issued. The checks catch a torn or damaged entry; against
    other users the protection is the ownership and modes, checked on every
    read (files opened without following links).
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._usable: bool | None = None

    def __repr__(self) -> str:
        return f"<CertCache {self.root}>"

    def usable(self) -> bool:
        """Whether the directory is (now) this user's own and private; made on first call."""
        with self._lock:
            if self._usable is None:
                self._usable = self._prepare()
            return self._usable

    def _prepare(self) -> bool:
        try:
            self.root.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.root, 0o700)
            st = os.lstat(self.root)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                return False  # a link, a file, or another user's: neither read nor touched
            if st.st_mode & 0o077:
                # Others could read the keys or plant their own: nothing in it is trusted.
                aside = self.root.with_name(f".{self.root.name}.refused-{_token(4)}")
                os.rename(self.root, aside)
                _remove_dir(aside, os.getpid())
                os.mkdir(self.root, 0o700)
                return _owned_private(os.lstat(self.root), stat.S_IFDIR)
        except OSError:
            return False
        return True

    def load(self, name: str) -> tuple[dict[str, Any], dict[str, bytes]] | None:
        """An entry's metadata and files, or None (none yet, or refused and removed)."""
        path = self.root / name
        try:
            st = os.lstat(path)
        except OSError:
            return None
        problem = not _owned_private(st, stat.S_IFDIR)
        meta: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        if not problem:
            raw = _read_private(path / "meta.json")
            try:
                meta = json.loads(raw) if raw is not None else {}
            except ValueError:
                meta = {}
            digests = meta.get("files") if isinstance(meta, dict) else None
            problem = (
                not isinstance(digests, dict)
                or meta.get("format") != _CACHE_FORMAT
                or meta.get("name") != name
            )
            for file_name, digest in (digests or {}).items() if not problem else ():
                data = _read_private(path / str(file_name)) if "/" not in str(file_name) else None
                if data is None or _check(data) != digest:
                    problem = True
                    break
                files[str(file_name)] = data
        if problem:
            self.discard(name)
            return None
        return meta, files

    def store(self, name: str, meta: dict[str, Any], files: dict[str, bytes]) -> None:
        """Add an entry; when another process added it first, theirs stays."""
        tmp = self.root / f".new-{_token(8)}"
        try:
            os.mkdir(tmp, 0o700)
            for file_name, data in files.items():
                _write_private(tmp / file_name, data)
            digests = {f: _check(d) for f, d in files.items()}
            record = {**meta, "format": _CACHE_FORMAT, "name": name, "files": digests}
            _write_private(tmp / "meta.json", json.dumps(record).encode())
            os.rename(tmp, self.root / name)  # fails when the name is taken (a non-empty directory)
        except OSError:
            _remove_dir(tmp, os.getpid())

    def discard(self, name: str) -> None:
        """Remove an entry (renamed away first, so no reader sees half of it)."""
        path = self.root / name
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                aside = self.root / f".old-{_token(8)}"
                os.rename(path, aside)
                _remove_dir(aside, os.getpid())
            else:
                os.unlink(path)
        except OSError:
            pass

    def authority(self, key_name: str, make: Any) -> tuple[bytes, bytes]:
        """The cached CA's (certificate PEM, key PEM); made with ``make("trusted")`` when missing or old."""
        name = _entry_name("ca", key_name)
        found = self.load(name)
        if found is not None:
            meta, files = found
            try:
                made = dt.datetime.fromisoformat(str(meta["made"]))
                if _now() - CA_MAX_AGE < made <= _now() + _DAY:
                    return files["cert.pem"], files["key.pem"]
            except (KeyError, ValueError):
                pass
            self.discard(name)
        ca = make("trusted")
        cert_pem, key_pem = ca.cert_pem.bytes(), ca.private_key_pem.bytes()
        self.store(
            name, {"made": _now().isoformat(), "role": "trusted"}, {"cert.pem": cert_pem, "key.pem": key_pem}
        )
        again = self.load(name)  # another process may have stored its CA first: one CA for all
        if again is not None and "cert.pem" in again[1] and "key.pem" in again[1]:
            cert_pem, key_pem = again[1]["cert.pem"], again[1]["key.pem"]
        self._prune(_ca_id(cert_pem), keep=name)
        return cert_pem, key_pem

    def _prune(self, ca_id: str, keep: str) -> None:
        """Remove what a CA other than ``ca_id`` issued (the leaves of a CA replaced)."""
        try:
            names = os.listdir(self.root)
        except OSError:
            return
        for entry in names:
            if entry == keep or entry.startswith("."):
                continue
            raw = _read_private(self.root / entry / "meta.json")
            try:
                issuer = json.loads(raw).get("ca") if raw is not None else None
            except (ValueError, AttributeError):
                issuer = None
            if issuer != ca_id:
                self.discard(entry)


def default_cache() -> CertCache | None:
    """The user's certificate cache: ``$MAILFAKES_CERT_CACHE``, else ``$XDG_CACHE_HOME/mailfakes/certs``
    (``~/.cache`` when unset); None when ``MAILFAKES_CERT_CACHE=off``.

    Example::

        cache = default_cache()   # <CertCache /home/me/.cache/mailfakes/certs>
    """
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() in ("off", "0", "no", "false"):
        return None
    if os.path.isabs(value):
        return CertCache(value)
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # unset, or relative: the XDG spec says ignore it
        home = os.path.expanduser("~")
        if not os.path.isabs(home):
            return None
        base = os.path.join(home, ".cache")
    return CertCache(os.path.join(base, "mailfakes", "certs"))


_shared: CertAuthority | None = None
_shared_lock = threading.Lock()


def shared_authority() -> CertAuthority:
    """The process's CA, made on first use; what a ``World`` without a runtime lends from.

    Making a CA and a leaf costs a few milliseconds, more than the rest of a
    world's start: worlds share this one, each with its own directory and
    ``ca_file`` (:meth:`CertAuthority.lend`). Its certificate of each kind
    still fails for its own reason in every world: ``untrusted_ca`` leaves come
    from a second CA that no world's ``ca_file`` holds, ``self_signed`` ones
    from no CA. It comes from the user's :func:`default_cache` (the same CA for
    every process of the user's until it is :data:`CA_MAX_AGE` old). Its
    directory goes when the process exits; after a ``close()`` the next call
    makes a new one.
    """
    global _shared
    with _shared_lock:
        if _shared is None or _shared.closed:
            _shared = CertAuthority(cache=default_cache())
        return _shared


def _forget_shared_in_child() -> None:
    # A forked child starts with no process CA of its own: its first world makes
    # (or reads from the cache) one; the parent's directory stays the parent's.
    global _shared, _shared_lock
    _shared, _shared_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_shared_in_child)
