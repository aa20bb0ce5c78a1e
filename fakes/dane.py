"""DANE for SMTP (RFC 6698, RFC 7672): TLSA data from certificates, and matching a server's chain.

The world publishes a host's TLSA record from the certificate it presents
(:func:`tlsa_data`); the reference connector checks the chain a server sent
against the TLSA records it looked up (:func:`authenticate`). Both read
certificates with ``cryptography``, imported when first needed.

Usages, as RFC 7672 3.1 has SMTP clients apply them:

- 3, DANE-EE: the leaf matches; neither its names nor its dates are checked.
- 2, DANE-TA: a certificate of the chain the server sent matches, the leaf
  chains up to it, and the leaf is valid now and names the MX host.
- 0 and 1 (PKIX-TA, PKIX-EE) are unusable for SMTP: a record set of only
  those still requires TLS, without authentication (RFC 7672 3.1.3).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from typing import TYPE_CHECKING, Final, Literal

from .values import frozen

if TYPE_CHECKING:
    from cryptography import x509

    from .faults import Tlsa

DANE_TA: Final = 2
DANE_EE: Final = 3

# The reasons a DANE check fails, named as RFC 8460 names its result types.
DaneResult = Literal[
    "ok",
    "tlsa-invalid",  # no usable record matches the chain
    "certificate-expired",  # DANE-TA: the leaf is outside its dates
    "certificate-host-mismatch",  # DANE-TA: the leaf does not name the host
    "unusable",  # only PKIX usages: TLS required, no authentication
]


@frozen
class TlsaRecord:
    """One TLSA record as looked up: ``usage selector matching`` and its data."""

    usage: int
    selector: int
    matching: int
    data: bytes

    @classmethod
    def parse(cls, text: str) -> TlsaRecord:
        """From zone-file form, ``3 1 1 0a1b...``; ValueError if it is not one."""
        parts = text.split()
        if len(parts) < 4:
            raise ValueError(f"not a TLSA record: {text!r}")
        usage, selector, matching = (int(p) for p in parts[:3])
        return cls(usage, selector, matching, bytes.fromhex("".join(parts[3:])))

    @property
    def usable(self) -> bool:
        return self.usage in (DANE_TA, DANE_EE) and self.selector in (0, 1) and self.matching in (0, 1, 2)


def _load(der_or_pem: bytes) -> x509.Certificate:
    from cryptography import x509

    if der_or_pem.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(der_or_pem)
    return x509.load_der_x509_certificate(der_or_pem)


def _selected(cert: x509.Certificate, selector: int) -> bytes:
    from cryptography.hazmat.primitives import serialization

    if selector == 0:
        return cert.public_bytes(serialization.Encoding.DER)
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _digest(data: bytes, matching: int) -> bytes:
    if matching == 1:
        return hashlib.sha256(data).digest()
    if matching == 2:
        return hashlib.sha512(data).digest()
    return data


def association(cert_pem_or_der: bytes, selector: int, matching: int) -> bytes:
    """The certificate association data of a certificate (RFC 6698 2.1.4)."""
    return _digest(_selected(_load(cert_pem_or_der), selector), matching)


def tlsa_data(tlsa: Tlsa, leaf_pem: bytes, issuer_pem: bytes) -> str:
    """The hex data of the TLSA record ``tlsa`` describes, for a host presenting ``leaf_pem``
    issued by ``issuer_pem``. ``matches=False``: the digest of bytes no certificate has."""
    if not tlsa.matches:
        unrelated = hashlib.sha512(b"mailfakes: a key nobody holds").digest()
        return _digest(unrelated, tlsa.matching or 1).hex()
    cert = leaf_pem if tlsa.usage == DANE_EE else issuer_pem
    return association(cert, tlsa.selector, tlsa.matching).hex()


def _matches(record: TlsaRecord, cert: x509.Certificate) -> bool:
    return _digest(_selected(cert, record.selector), record.matching) == record.data


def names(cert: x509.Certificate) -> list[str]:
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [n.lower().rstrip(".") for n in san.value.get_values_for_type(x509.DNSName)]


def authenticate(
    records: list[TlsaRecord], chain: list[bytes], host: str, *, now: dt.datetime | None = None
) -> DaneResult:
    """Check the chain a server sent (leaf first, DER or PEM) against its TLSA records.

    ``host`` is the reference identifier (the MX host name, RFC 7672 3.2.2).
    """
    usable = [r for r in records if r.usable]
    if not usable:
        return "unusable"
    certs = [_load(c) for c in chain]
    if not certs:
        return "tlsa-invalid"
    leaf = certs[0]
    if any(r.usage == DANE_EE and _matches(r, leaf) for r in usable):
        return "ok"  # DANE-EE: no name, no date checks (RFC 7672 3.1.1)
    anchors = [c for c in certs[1:] for r in usable if r.usage == DANE_TA and _matches(r, c)]
    if not anchors:
        return "tlsa-invalid"
    if not _chains_to(certs, anchors[0]):
        return "tlsa-invalid"
    when = now or dt.datetime.now(dt.UTC)
    if not leaf.not_valid_before_utc <= when <= leaf.not_valid_after_utc:
        return "certificate-expired"
    from .mtasts import mx_matches  # one rule for a wildcard: the leftmost label only (RFC 6125 6.4.3)

    if not any(mx_matches(n, host) for n in names(leaf)):
        return "certificate-host-mismatch"
    return "ok"


def _chains_to(certs: list[x509.Certificate], anchor: x509.Certificate) -> bool:
    """Whether the chain's leaf is signed, link by link, up to ``anchor``."""
    for child, parent in itertools.pairwise(certs):
        try:
            child.verify_directly_issued_by(parent)
        except Exception:
            return False
        if parent == anchor:
            return True
    return False
