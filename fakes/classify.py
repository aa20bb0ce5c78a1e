"""Map what Python mail clients raise to a :class:`mailfakes.codes.Failure`.

A team whose delivery client is built on :mod:`smtplib`, aiosmtplib,
:mod:`ssl`, :mod:`socket` or dnspython can assert the reported failure with
one call::

    try:
        deliver(message)
    except Exception as exc:
        assert find_code(exc, "eop") == "4.4.316"

:func:`classify` looks at the exception itself first, then at what it wraps
(``__cause__``, ``__context__`` unless suppressed, the members of an
exception group), so a client's own ``DeliveryError(...) from exc`` and
aiosmtplib's ``SMTPConnectError`` around a socket error both classify.

Neither aiosmtplib nor dnspython is imported here: their exception classes
are looked up in :data:`sys.modules`, because an exception of theirs can only
exist once its module was imported.
"""

from __future__ import annotations

import errno
import re
import smtplib
import socket
import ssl
import sys
from collections.abc import Iterator
from typing import Final

from .codes import Failure, FailureClass, first_enhanced_code

__all__ = ["classify"]

_MAX_DEPTH: Final = 16

# OpenSSL X509_V_ERR_* codes (ssl.SSLCertVerificationError.verify_code).
CERT_DETAILS: Final[dict[int, str]] = {
    2: "chain",  # unable to get issuer certificate
    9: "not_yet_valid",
    10: "expired",
    13: "not_yet_valid",  # format error in notBefore
    14: "expired",  # format error in notAfter
    18: "self_signed",  # the leaf is self-signed
    19: "untrusted",  # self-signed root in the chain, not trusted
    20: "untrusted",  # unable to get local issuer: unknown CA, or a missing intermediate
    21: "chain",  # unable to verify the first certificate
    23: "revoked",  # certificate revoked (a client that loaded the CA's CRL)
    24: "untrusted",  # invalid CA certificate
    27: "untrusted",  # certificate not trusted
    28: "untrusted",  # certificate rejected
    62: "hostname",
    63: "hostname",  # e-mail address mismatch
    64: "hostname",  # IP address mismatch
}

GAI_DETAILS: Final[dict[int, str]] = {
    socket.EAI_NONAME: "nxdomain",
    socket.EAI_AGAIN: "servfail",  # temporary failure: SERVFAIL or no answer in time
    socket.EAI_FAIL: "servfail",
}
for _name, _detail in (("EAI_NODATA", "nodata"), ("EAI_ADDRFAMILY", "nodata")):
    if hasattr(socket, _name):
        GAI_DETAILS[getattr(socket, _name)] = _detail

ERRNO_CLASSES: Final[dict[int, tuple[FailureClass, str]]] = {
    errno.ECONNREFUSED: ("refused", "refused"),
    errno.ETIMEDOUT: ("timeout", "connect"),
    errno.ECONNRESET: ("closed", "closed"),
    errno.ECONNABORTED: ("closed", "closed"),
    errno.EPIPE: ("closed", "closed"),
}

# smtplib's SMTPNotSupportedError and aiosmtplib's SMTPException from login() when the EHLO reply
# has no AUTH: "SMTP AUTH extension not supported by server." (smtplib), "The SMTP AUTH extension is
# not supported by this server." (aiosmtplib)
AUTH_MISSING: Final = re.compile(r"\bAUTH extension (?:is )?not supported", re.I)
# RFC 4954 6: the code of "authentication required", reported by a client that holds an account
# but stops because the server offers no AUTH (msmtp, swaks, smtplib's login()), where one that
# goes on without it (curl, Postfix) gets the server's 530 5.7.0 to MAIL: both fail for one reason.
AUTH_NOT_OFFERED: Final = "5.7.0"

# smtplib's send_message ("... require internationalized email support, but the server does not
# advertise the required SMTPUTF8 capability") and aiosmtplib's ("... SMTPUTF8 is not supported by
# this server"): a UTF-8 address and no SMTPUTF8 (RFC 6531 3.2), given up before MAIL.
SMTPUTF8_MISSING: Final = re.compile(r"\bSMTPUTF8\b.*\b(?:capability|not supported)\b", re.I)
STARTTLS_MISSING: Final = re.compile(r"starttls\b.*\bnot supported|not supported\b.*\bstarttls", re.I)
ERRNO_IN_TEXT: Final = re.compile(r"\[Errno (\d+)\]")


def classify(exc: BaseException) -> Failure | None:
    """The failure ``exc`` stands for, or None when it is not a delivery failure we know.

    Handles what :mod:`smtplib`, aiosmtplib, :mod:`ssl`, :mod:`socket`
    (``gaierror``, ``OSError`` and its subclasses) and dnspython raise, and
    anything that wraps one of them. Example::

        try:
            smtplib.SMTP(ip, port, timeout=2)
        except OSError as exc:
            failure = classify(exc)   # Failure(cls='refused', detail='refused', ...)
    """
    for step in (_direct, _fallback):
        for candidate in _chain(exc):
            failure = step(candidate)
            if failure is not None:
                return failure
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it wraps, depth first; each exception once."""
    seen: set[int] = set()
    stack: list[tuple[BaseException, int]] = [(exc, 0)]
    while stack:
        e, depth = stack.pop()
        if id(e) in seen or depth > _MAX_DEPTH:
            continue
        seen.add(id(e))
        yield e
        inner: list[BaseException] = []
        if isinstance(e, BaseExceptionGroup):
            inner += e.exceptions
        if e.__cause__ is not None:
            inner.append(e.__cause__)
        elif e.__context__ is not None and not e.__suppress_context__:
            inner.append(e.__context__)
        stack += [(i, depth + 1) for i in reversed(inner)]


def _type(module: str, name: str) -> type[BaseException] | None:
    """An exception class of a library, only if that library is already imported."""
    mod = sys.modules.get(module)
    found = getattr(mod, name, None) if mod is not None else None
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def _isa(exc: BaseException, module: str, *names: str) -> bool:
    for name in names:
        t = _type(module, name)
        if t is not None and isinstance(exc, t):
            return True
    return False


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _direct(exc: BaseException) -> Failure | None:
    """The failure ``exc`` itself says, without looking at what it wraps."""
    for step in (_from_smtp, _from_ssl, _from_dns, _from_socket):
        failure = step(exc)
        if failure is not None:
            return failure
    return None


# -- SMTP replies and session errors ---------------------------------------------


def reply_failure(code: int, text: str) -> Failure | None:
    """A server reply of class 4 or 5 as the server_reply (or 421) failure it means."""
    if not 400 <= code <= 599:
        return None
    enhanced = first_enhanced_code(text)
    if enhanced is None or enhanced[0] != str(code)[0]:
        enhanced = f"{code // 100}.0.0"
    message = f"{code} {text}".strip()
    if code == 421:
        # "Service not available, closing transmission channel" (RFC 5321 3.8):
        # whatever command it answers, the server will not talk.
        return Failure("cannot_connect", "reply_421", enhanced, message)
    return Failure("server_reply", "reply", enhanced, message)


def auth_refused(failure: Failure | None) -> Failure | None:
    """A reply to AUTH (RFC 4954: 535 5.7.8, 454 4.7.0, ...): the server's code, marked as one to
    AUTH (Postfix defers a 535 there: see mailfakes.codes.code_for)."""
    if failure is None or failure.cls != "server_reply":
        return failure
    return Failure("server_reply", "auth", failure.server_code, failure.message)


def with_detail(failure: Failure | None, detail: str) -> Failure | None:
    if failure is None or failure.cls != "cannot_connect":
        return failure
    return Failure(failure.cls, detail, failure.server_code, failure.message)


def _from_smtp(exc: BaseException) -> Failure | None:
    # smtplib: SMTPResponseException carries smtp_code and smtp_error (bytes).
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        for code, text in exc.recipients.values():
            return reply_failure(code, _text(text))
        return None
    if isinstance(exc, smtplib.SMTPResponseException):
        failure = reply_failure(exc.smtp_code, _text(exc.smtp_error))
        if isinstance(exc, smtplib.SMTPConnectError):
            return with_detail(failure, "greeting_421")
        if isinstance(exc, smtplib.SMTPHeloError):
            return with_detail(failure, "ehlo_421")
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return auth_refused(failure)
        if type(exc) is smtplib.SMTPResponseException and failure is not None:
            # Raised bare only by starttls() in a delivery: STARTTLS refused.
            return Failure("cannot_connect", "starttls_refused", failure.server_code, failure.message)
        return failure
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return _disconnected(exc)
    if isinstance(exc, smtplib.SMTPException) and SMTPUTF8_MISSING.search(str(exc)):
        return Failure("server_reply", "no_smtputf8", "5.6.7", _describe(exc))
    if isinstance(exc, smtplib.SMTPException) and STARTTLS_MISSING.search(str(exc)):
        return Failure("cannot_connect", "no_starttls", None, _describe(exc))
    if isinstance(exc, smtplib.SMTPException) and AUTH_MISSING.search(str(exc)):
        return Failure("server_reply", "auth_not_offered", AUTH_NOT_OFFERED, _describe(exc))
    return _from_aiosmtplib(exc)


def _disconnected(exc: BaseException) -> Failure:
    """A lost connection; smtplib also reports a read timeout this way."""
    context = exc.__cause__ or exc.__context__
    if _in_handshake(exc) or (context is not None and _in_handshake(context)):
        return Failure("cannot_connect", "tls_handshake", None, _describe(exc))
    if isinstance(context, TimeoutError) or str(exc).endswith("timed out"):
        return Failure("timeout", "read", None, _describe(exc))
    return Failure("closed", "closed", None, _describe(exc))


_HANDSHAKE_FRAMES: Final = frozenset({"do_handshake", "_do_handshake", "_on_handshake_complete"})


def _in_handshake(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside a TLS handshake (the server hung up or timed out there).

    ssl raises ``SSLEOFError`` from ``do_handshake``, asyncio ``ConnectionResetError`` from
    ``_on_handshake_complete``, aiosmtplib says "... while upgrading transport".
    """
    if "upgrading transport" in str(exc):
        return True
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name in _HANDSHAKE_FRAMES:
            return True
        tb = tb.tb_next
    return False


def _from_aiosmtplib(exc: BaseException) -> Failure | None:
    m = "aiosmtplib.errors"
    if _type(m, "SMTPException") is None or not _isa(exc, m, "SMTPException"):
        return None
    if _isa(exc, m, "SMTPRecipientsRefused"):
        for refused in getattr(exc, "recipients", ()):
            if isinstance(refused, BaseException):
                return _from_aiosmtplib(refused)
        return None
    if _isa(exc, m, "SMTPResponseException"):
        code, text = getattr(exc, "code", 0), getattr(exc, "message", "")
        failure = reply_failure(code if isinstance(code, int) else 0, _text(text))
        if _isa(exc, m, "SMTPConnectResponseError"):
            return with_detail(failure, "greeting_421")
        if _isa(exc, m, "SMTPHeloError"):
            return with_detail(failure, "ehlo_421")
        if _isa(exc, m, "SMTPAuthenticationError"):
            return auth_refused(failure)
        if type(exc) is _type(m, "SMTPResponseException") and failure is not None:
            # Bare in a delivery: the reply to STARTTLS (also RSET/NOOP/QUIT, rarely fatal).
            return Failure("cannot_connect", "starttls_refused", failure.server_code, failure.message)
        return failure
    if _isa(exc, m, "SMTPConnectTimeoutError"):
        greeting = _isa(exc.__cause__ or exc, m, "SMTPReadTimeoutError")
        return Failure("timeout", "greeting" if greeting else "connect", None, _describe(exc))
    if _isa(exc, m, "SMTPTimeoutError"):
        if _in_handshake(exc):  # STARTTLS accepted, then no (complete) handshake
            return Failure("cannot_connect", "tls_handshake", None, _describe(exc))
        return Failure("timeout", "read", None, _describe(exc))
    if _isa(exc, m, "SMTPServerDisconnected"):
        return _disconnected(exc)
    if _isa(exc, m, "SMTPConnectError"):
        return None  # a wrapper: the error it was raised from decides (else _fallback)
    if SMTPUTF8_MISSING.search(str(exc)):
        return Failure("server_reply", "no_smtputf8", "5.6.7", _describe(exc))
    if STARTTLS_MISSING.search(str(exc)):
        return Failure("cannot_connect", "no_starttls", None, _describe(exc))
    if AUTH_MISSING.search(str(exc)):
        return Failure("server_reply", "auth_not_offered", AUTH_NOT_OFFERED, _describe(exc))
    return None


# -- TLS ---------------------------------------------------------------------------


def _from_ssl(exc: BaseException) -> Failure | None:
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = CERT_DETAILS.get(exc.verify_code, "unknown")
        return Failure("certificate", detail, None, _describe(exc))
    if isinstance(exc, ssl.SSLError):
        eof = isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError))
        if (eof or exc.reason == "UNEXPECTED_EOF_WHILE_READING") and not _in_handshake(exc):
            return Failure("closed", "closed", None, _describe(exc))
        return Failure("cannot_connect", "tls_handshake", None, _describe(exc))
    return None


# -- DNS ---------------------------------------------------------------------------

_RCODE_DETAILS: Final[dict[str, str]] = {"SERVFAIL": "servfail", "REFUSED": "refused"}


def _from_dns(exc: BaseException) -> Failure | None:
    if isinstance(exc, socket.gaierror):
        detail = GAI_DETAILS.get(exc.errno or 0)
        return Failure("dns", detail, None, _describe(exc)) if detail else None
    r, e = "dns.resolver", "dns.exception"
    if _type(e, "DNSException") is None or not _isa(exc, e, "DNSException"):
        return None
    if _isa(exc, r, "NXDOMAIN"):
        return Failure("dns", "nxdomain", None, _describe(exc))
    if _isa(exc, r, "NoAnswer"):
        return Failure("dns", "nodata", None, _describe(exc))
    if _isa(exc, e, "Timeout"):  # LifetimeTimeout is a Timeout
        return Failure("dns", "timeout", None, _describe(exc))
    if _isa(exc, r, "NoNameservers"):
        return Failure("dns", _nameserver_detail(exc), None, _describe(exc))
    if _isa(exc, "dns.message", "Truncated"):  # dns.query.udp(raise_on_truncation=True)
        return Failure("dns", "truncated", None, _describe(exc))
    if _isa(exc, "dns.dnssec", "ValidationFailure"):
        # A client that validates DNSSEC itself found a bad or expired signature, or a broken chain:
        # what a DANE client reports as dnssec-invalid (Exchange Online: 4.7.324).
        return Failure("dane", "dnssec-invalid", None, _describe(exc))
    return None


def _nameserver_detail(exc: BaseException) -> str:
    """SERVFAIL, REFUSED or timeout, from the per-server errors NoNameservers keeps."""
    kwargs = getattr(exc, "kwargs", None)
    errors = kwargs.get("errors", ()) if isinstance(kwargs, dict) else ()
    seen: list[str] = []
    for error in errors if isinstance(errors, (list, tuple)) else ():
        for item in error if isinstance(error, tuple) else (error,):
            if isinstance(item, str) and item in _RCODE_DETAILS:
                seen.append(_RCODE_DETAILS[item])
            elif isinstance(item, BaseException) and (
                _isa(item, "dns.exception", "Timeout") or isinstance(item, TimeoutError)
            ):
                seen.append("timeout")
    for detail in ("servfail", "refused", "timeout"):
        if detail in seen:
            return detail
    return "servfail"


# -- sockets -----------------------------------------------------------------------


def _from_socket(exc: BaseException) -> Failure | None:
    if isinstance(exc, TimeoutError):  # socket.timeout too
        # Raised by a read or a write on a connected socket (not by connect): the connection was up.
        # Only Python frames tell (a file's readline, an SSL read); a bare C-level recv() does not.
        detail = "read" if _frames(exc) & _IO_FRAMES and not _frames(exc) & _CONNECT_FRAMES else "connect"
        return Failure("timeout", detail, None, _describe(exc))
    if isinstance(exc, ConnectionRefusedError):
        return Failure("refused", "refused", None, _describe(exc))
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, EOFError)):
        if _in_handshake(exc):
            return Failure("cannot_connect", "tls_handshake", None, _describe(exc))
        return Failure("closed", "closed", None, _describe(exc))
    if isinstance(exc, OSError) and exc.errno in ERRNO_CLASSES:
        cls, detail = ERRNO_CLASSES[exc.errno]
        return Failure(cls, detail, None, _describe(exc))
    return None


# Where a socket timeout was raised: connecting, or reading and writing a connected socket.
_CONNECT_FRAMES: Final = frozenset({"create_connection", "connect", "_get_socket", "sock_connect"})
_IO_FRAMES: Final = frozenset(
    {"recv", "recv_into", "readline", "readinto", "read", "sendall", "send", "getreply", "sock_recv"}
)


def _frames(exc: BaseException) -> set[str]:
    """The names of the functions ``exc`` went through."""
    names: set[str] = set()
    tb = exc.__traceback__
    while tb is not None:
        names.add(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return names


def _fallback(exc: BaseException) -> Failure | None:
    """What only the text says, once nothing in the chain said more."""
    if isinstance(exc, OSError) and exc.errno is None:
        found = _from_errno_text(exc)
        if found is not None:
            return found
        if _isa(exc, "aiosmtplib.errors", "SMTPConnectError") and "Connection lost" in str(exc):
            return Failure("closed", "closed", None, _describe(exc))
    return None


def _from_errno_text(exc: BaseException) -> Failure | None:
    """asyncio's ``OSError('Multiple exceptions: [Errno 111] ..., ...')`` keeps errnos as text only."""
    for number in ERRNO_IN_TEXT.findall(str(exc)):
        if int(number) in ERRNO_CLASSES:
            cls, detail = ERRNO_CLASSES[int(number)]
            return Failure(cls, detail, None, _describe(exc))
    return None
