"""Failure classes, the codes each profile gives them, and finding a code in a report.

One place knows: the six Exchange Online mail flow intelligence codes and
their titles, how a failure seen on the wire (a :class:`Failure`) is reported
under each profile (``eop``, ``eop-observed``, ``rfc3463``, ``postfix``), and
how to read the reported code back out of what a client produced (a trace
line, a log, an SMTP reply, an exception).
"""

from __future__ import annotations

import re
from typing import Final, Literal, get_args

from .spec import frozen

FailureClass = Literal[
    "dns",  # 4.4.312 the DNS query failed
    "timeout",  # 4.4.315 the TCP connection timed out; after connect (TIMEOUT_AFTER_CONNECT) 4.4.318
    "refused",  # 4.4.316 the TCP connection was refused
    "cannot_connect",  # 4.4.317 421, no STARTTLS, 454, failed TLS handshake
    "closed",  # 4.4.318 the connection was closed abruptly
    "certificate",  # 4.7.320 certificate validation failed
    "dane",  # 4.7.321-4.7.325 DANE (RFC 7672) refused the host: detail names the RFC 8460 result
    "mta_sts",  # 4.4.8 / 4.7.5 the MTA-STS policy (RFC 8461, enforce) refused the host
    "server_reply",  # the server answered with its own error
    "delivered",  # the message was accepted
]
FAILURE_CLASSES: Final = get_args(FailureClass)

Profile = Literal["eop", "eop-observed", "rfc3463", "postfix"]
PROFILES: Final = get_args(Profile)

EOP_CODES: Final[dict[str, str]] = {
    "dns": "4.4.312",
    "timeout": "4.4.315",
    "refused": "4.4.316",
    "cannot_connect": "4.4.317",
    "closed": "4.4.318",
    "certificate": "4.7.320",
}

EOP_TITLES: Final[dict[str, dict[str, str]]] = {
    "4.4.312": {"en": "DNS query failed", "fr": "La requête DNS a échoué"},
    "4.4.315": {"en": "Connection timed out", "fr": "Délai de connexion expiré"},
    "4.4.316": {"en": "Connection refused", "fr": "Connexion refusée"},
    "4.4.317": {"en": "Cannot connect to remote server", "fr": "Connexion au serveur distant impossible"},
    "4.4.318": {"en": "Connection was closed abruptly", "fr": "Connexion coupée brutalement"},
    "4.7.320": {"en": "Certificate validation failed", "fr": "La validation du certificat a échoué"},
    # DANE and MTA-STS (Microsoft, "Email non-delivery reports and SMTP errors in Exchange Online";
    # "How SMTP DNS-based Authentication of Named Entities (DANE) works"): 4.x while the message is
    # retried, 5.x in the report after 24 hours.
    "4.7.321": {
        "en": "starttls-not-supported: the destination must support TLS (DANE)",
        "fr": "starttls-not-supported : le serveur de destination doit accepter TLS (DANE)",
    },
    "4.7.322": {
        "en": "certificate-expired: the destination's certificate is expired (DANE)",
        "fr": "certificate-expired : le certificat du serveur de destination a expiré (DANE)",
    },
    "4.7.323": {
        "en": "tlsa-invalid: the domain failed DANE validation",
        "fr": "tlsa-invalid : le domaine a échoué à la validation DANE",
    },
    "4.7.324": {
        "en": "dnssec-invalid: the destination returned invalid DNSSEC records",
        "fr": "dnssec-invalid : la destination a renvoyé des enregistrements DNSSEC invalides",
    },
    "4.7.325": {
        "en": "certificate-host-mismatch: the certificate does not name the host (DANE)",
        "fr": "certificate-host-mismatch : le certificat ne nomme pas l'hôte (DANE)",
    },
    "4.4.8": {
        "en": "MX hosts failed MTA-STS validation",
        "fr": "Les hôtes MX ont échoué à la validation MTA-STS",
    },
    "4.7.5": {
        "en": "Remote certificate failed MTA-STS validation",
        "fr": "Le certificat distant a échoué à la validation MTA-STS",
    },
}

# DANE failures by RFC 8460 result type (the detail of a "dane" Failure).
DANE_CODES: Final[dict[str, str]] = {
    "starttls-not-supported": "4.7.321",
    "certificate-expired": "4.7.322",
    "tlsa-invalid": "4.7.323",
    "dnssec-invalid": "4.7.324",
    "certificate-host-mismatch": "4.7.325",
}
# MTA-STS failures under enforce. Microsoft documents no code of its own for STARTTLS missing under
# MTA-STS: the connection fails for want of TLS, as 4.4.317 says.
MTA_STS_CODES: Final[dict[str, str]] = {
    "mx-mismatch": "4.4.8",
    "starttls-not-supported": "4.4.317",
    "certificate-expired": "4.7.5",
    "certificate-host-mismatch": "4.7.5",
    "certificate-not-trusted": "4.7.5",
    "validation-failure": "4.7.5",
}

# The [Message=...] words Exchange Online traces use for certificate failures.
CERT_MESSAGES: Final[dict[str, str]] = {
    "expired": "CertificateExpired",
    "not_yet_valid": "CertificateNotYetValid",
    "hostname": "SubjectMismatch",
    "untrusted": "UntrustedRoot",
    "self_signed": "UntrustedRoot",
    "chain": "IncompleteChain",
    "unknown": "CertificateValidationFailure",
}


@frozen
class Failure:
    """What went wrong (or right) in one delivery attempt, independent of any profile.

    ``detail`` says which cause of the class it was; ``server_code`` is the
    enhanced code of the server's reply when there was one.
    """

    cls: FailureClass
    detail: str = ""
    server_code: str | None = None
    message: str = ""

    def code(self, profile: str = "eop") -> str:
        return code_for(self, profile)


# rfc3463 and postfix (they agree on everything the catalogue covers).
_DNS_NOT_FOUND: Final = ("nxdomain", "nodata", "no_address", "null_mx")
_CANNOT_CONNECT_RFC: Final[dict[str, str]] = {
    "greeting_421": "4.3.2",
    "ehlo_421": "4.3.2",
    "no_starttls": "4.7.4",
    "starttls_refused": "4.7.0",
    "tls_handshake": "4.7.5",
}


# Timeouts once the connection is up (the greeting, a reply, the message content never taken): not a
# connect timeout. The server is overloaded, times out and the connection is dropped: Exchange Online
# puts this under 4.4.318 (the source article, "Connection was closed abruptly"); Postfix logs
# "conversation with HOST timed out while ..." with dsn 4.4.2 (smtp_proto.c, smtp_chat.c).
TIMEOUT_AFTER_CONNECT: Final = frozenset({"greeting", "read", "reply"})


# The healthy scenario a run includes as its control: a client must deliver
# through it, or its failure reports prove nothing (check and the plugin).
CONTROL_SCENARIO = "baseline-delivered"


def code_for(failure: Failure, profile: str = "eop") -> str:
    """The code a client following ``profile`` reports for ``failure``."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of " + ", ".join(PROFILES))
    cls = failure.cls
    if cls in ("server_reply", "delivered"):
        code = failure.server_code or ("2.0.0" if cls == "delivered" else "4.0.0")
        if profile == "postfix" and failure.detail == "auth" and failure.message.startswith("535"):
            # Postfix defers a 535 to AUTH instead of bouncing (smtp_sasl_auth_soft_bounce = yes, the
            # default), and its dsn= then starts with 4: "4.7.8".
            return "4" + code[1:]
        return code
    if cls in ("dane", "mta_sts"):
        if profile in ("eop", "eop-observed"):
            return (DANE_CODES if cls == "dane" else MTA_STS_CODES).get(failure.detail, "4.7.5")
        # Postfix: 4.7.4 "TLS is required, but was not offered by host", else 4.7.5 ("Server
        # certificate not verified", "TLSA lookup error for HOST:25").
        return "4.7.4" if failure.detail == "starttls-not-supported" else "4.7.5"
    late = cls == "timeout" and failure.detail in TIMEOUT_AFTER_CONNECT
    if profile == "eop":
        return EOP_CODES["closed" if late else cls]
    if profile == "eop-observed":
        if late:
            return EOP_CODES["closed"]
        return "4.4.317" if cls == "certificate" else EOP_CODES[cls]
    if cls == "dns":
        if profile == "postfix" and failure.detail in ("nxdomain", "nodata"):
            # Postfix defers a relayhost (smart host) that does not resolve as a
            # configuration problem, 4.3.5, where an MX host without an address bounces 5.4.4.
            return "4.3.5"
        return "5.4.4" if failure.detail in _DNS_NOT_FOUND else "4.4.3"
    if late:
        return "4.4.2"  # the conversation timed out: RFC 3463 X.4.2 "bad connection", Postfix's dsn
    if cls in ("timeout", "refused"):
        return "4.4.1"
    if cls == "closed":
        return "4.4.2"
    if cls == "certificate":
        return "4.7.5"
    if failure.server_code and failure.detail != "tls_handshake":
        return failure.server_code  # a 421 or 454: the server's own code
    return _CANNOT_CONNECT_RFC.get(failure.detail, "4.4.0")


def title(code: str, lang: str = "en") -> str:
    """The EOP title of a code ('' for codes that are not EOP codes)."""
    return EOP_TITLES.get(code, {}).get(lang, "")


# Compiled (by re, once) at the first search, not at import: `list`, `show`
# and `serve` never read a reply, and compiling costs about 0.2 ms.
_ENHANCED: Final = r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])"


def first_enhanced_code(text: str | bytes) -> str | None:
    """The first RFC 3463 enhanced status code in ``text`` (``4.4.316``), or None.

    Addresses and version numbers do not match: the code must stand alone.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    m = re.search(_ENHANCED, text)
    return ".".join(m.groups()) if m else None


def find_code(report: object, profile: str = "eop") -> str | None:
    """The code a client reported, read from what it produced.

    ``report`` may be a string or bytes (a trace line like ``450 4.4.316
    Connection refused [Message=...]``, a log, several lines: the first
    enhanced code wins), a ``(code, text)`` reply tuple, an exception (mapped
    through :func:`mailfakes.classify.classify`, then ``profile``), or an object
    with a ``code`` attribute (a :class:`mailfakes.client.DeliveryReport`).
    Example::

        assert find_code("450 4.4.316 Connection refused [Message=...]") == "4.4.316"
        try:
            my_client.send(...)
        except Exception as exc:
            assert find_code(exc) == mail_scenario.expected_code
    """
    if isinstance(report, BaseException):
        from .classify import classify

        failure = classify(report)
        return code_for(failure, profile) if failure is not None else first_enhanced_code(str(report))
    if isinstance(report, (str, bytes)):
        return first_enhanced_code(report)
    if isinstance(report, tuple) and len(report) == 2 and isinstance(report[0], int):
        return first_enhanced_code(report[1]) if isinstance(report[1], (str, bytes)) else None
    if isinstance(report, Failure):
        return code_for(report, profile)
    code = getattr(report, "code", None)
    if isinstance(code, str):
        return first_enhanced_code(code) or code
    return first_enhanced_code(str(report))
