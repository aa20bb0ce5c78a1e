"""Which TLS policy the reference connector applies to one MX host, and checks made after a handshake.

For delivery to a domain's MX hosts (not to a smart host), RFC 7672 and
RFC 8461 decide how much TLS a sender must insist on:

- ``dane``: the MX host has TLSA records in DNSSEC-signed, validated DNS:
  STARTTLS is required and the chain must match a TLSA record (DANE takes
  precedence over MTA-STS, RFC 8461 2).
- ``sts-enforce``: the domain's MTA-STS policy is in enforce mode: the MX host
  must be one the policy names, offer STARTTLS, and present a certificate
  that is valid for its name under the web PKI.
- ``sts-testing``: the same checks, whose failures are only reported (TLS-RPT),
  and the message is delivered anyway.
- ``verify``: TLS required and verified (a smart host, ``require_tls``).
- ``may``: opportunistic TLS: STARTTLS when offered, any certificate.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from .dane import TlsaRecord
from .mtasts import Policy
from .values import frozen

PolicyKind = Literal["dane", "sts-enforce", "sts-testing", "verify", "may"]

# What a failed PKIX check is, as RFC 8460 names it.
CertResult = Literal["certificate-expired", "certificate-host-mismatch", "certificate-not-trusted"]


@frozen
class SessionPolicy:
    """The TLS policy for one session with one MX host."""

    kind: PolicyKind
    domain: str = ""  # the policy domain (the recipient domain)
    tlsa: tuple[TlsaRecord, ...] = ()
    sts: Policy | None = None
    failed: bool = False  # a failure of this session is reported already (testing: MX not named)

    @property
    def requires_tls(self) -> bool:
        return self.kind in ("dane", "sts-enforce", "verify")

    @property
    def reported(self) -> bool:
        """Whether sessions under it count in a TLS report (RFC 8460 covers DANE and MTA-STS)."""
        return self.kind in ("dane", "sts-enforce", "sts-testing")

    @property
    def report_type(self) -> str:
        return "tlsa" if self.kind == "dane" else "sts"

    @property
    def strings(self) -> list[str]:
        """RFC 8460 4.5 policy-string: the TLSA records, or the policy's lines."""
        if self.kind == "dane":
            return [f"{r.usage} {r.selector} {r.matching} {r.data.hex()}" for r in self.tlsa]
        return self.sts.lines if self.sts is not None else []


def pkix_problem(chain: list[bytes], host: str, ca_file: str | None) -> CertResult | None:
    """Why ``chain`` (DER, leaf first) is not valid for ``host`` under the CAs of ``ca_file``
    (dates, name, trust), or None when it is. Uses cryptography's X.509 path validation."""
    from cryptography import x509
    from cryptography.x509 import verification

    if not chain:
        return "certificate-not-trusted"
    certs = [x509.load_der_x509_certificate(c) for c in chain]
    leaf = certs[0]
    now = dt.datetime.now(dt.UTC)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        return "certificate-expired"
    from .dane import names
    from .mtasts import mx_matches

    if not any(mx_matches(n, host) for n in names(leaf)):
        return "certificate-host-mismatch"
    if ca_file is None:
        return "certificate-not-trusted"
    with open(ca_file, "rb") as f:
        roots = x509.load_pem_x509_certificates(f.read())
    try:
        # The web PKI's rules for the CA; for the leaf only what a TLS client checks (SAN present,
        # any criticality: trustme marks it critical, which the CA/Browser profile forbids).
        ee = verification.ExtensionPolicy.permit_all().require_present(
            x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None
        )
        verifier = (
            verification.PolicyBuilder()
            .store(verification.Store(roots))
            .time(now)
            .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee)
            .build_server_verifier(x509.DNSName(host))
        )
        verifier.verify(leaf, certs[1:])
    except verification.VerificationError:
        return "certificate-not-trusted"
    return None
