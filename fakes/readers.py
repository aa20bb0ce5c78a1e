"""Readers for clients whose output carries no EOP code: curl, swaks, msmtp, Postfix, Python.

Each reader turns what a client did (its exit status, stdout and stderr)
into a :class:`mailfakes.codes.Failure` whose class and detail say *why* the
client failed, as the client itself put it: a reader never passes a code
through, so a client that reports a timeout where a refusal was expected is
caught even when both end in the same code under a profile (Postfix says
4.4.1 for both). ``mailfakes check`` turns the failure into a code under any
profile. The messages matched come from the clients' own sources (cited
where they are matched) and from running each client against every scenario
of the catalogue; ``tests/test_readers.py`` feeds each reader live output.

A reader returns None for output it does not understand: the cell then
fails, with the client's output shown, rather than being guessed.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass

from .classify import (
    AUTH_MISSING,
    AUTH_NOT_OFFERED,
    CERT_DETAILS,
    ERRNO_CLASSES,
    ERRNO_IN_TEXT,
    GAI_DETAILS,
    STARTTLS_MISSING,
    auth_refused,
    reply_failure,
    with_detail,
)
from .codes import Failure, FailureClass, first_enhanced_code

Reader = Callable[[int, str, str], "Failure | None"]

# A server reply as a client prints it in its transcript: "< 421 4.3.2 ..." (curl -v),
# "<** 550 5.1.1 ..." (swaks), "server message: 421 4.3.2 ..." (msmtp).
_REPLY = re.compile(r"(?:^|[<\s:*~])([245]\d\d)[ -]((?:[245]\.\d{1,3}\.\d{1,3})?.*)$", re.M)


def _last_reply(text: str, *, errors_only: bool = True) -> tuple[int, str] | None:
    found = None
    for m in _REPLY.finditer(text):
        code = int(m.group(1))
        if errors_only and code < 400:
            continue
        found = (code, f"{m.group(1)} {m.group(2)}".strip())
    return found


def _reply_failure(code: int, line: str, stage: str = "") -> Failure:
    enhanced = first_enhanced_code(line)
    if code == 421:
        detail = "greeting_421" if stage in ("", "greeting") else "ehlo_421"
        return Failure("cannot_connect", detail, enhanced, line)
    return Failure("server_reply", "", enhanced or f"{str(code)[0]}.0.0", line)


def _auth_failure(code: int, line: str) -> Failure:
    """A refused AUTH (RFC 4954): the server's own code, as the reference client reports it."""
    failure = _reply_failure(code, line)
    return Failure(failure.cls, "auth", failure.server_code, failure.message)


def _cert_detail(text: str) -> str:
    t = text.lower()
    if "expired" in t:
        return "expired"
    if "not yet valid" in t or "not_yet_valid" in t or "not activated" in t:
        return "not_yet_valid"
    if "hostname" in t or "host name" in t or "mismatch" in t or "does not match" in t:
        return "hostname"
    if "self-signed" in t or "self signed" in t:
        return "self_signed"
    if "issuer" in t or "unknown ca" in t or "not trusted" in t or "untrusted" in t:
        return "untrusted"
    return "unknown"


# -- curl ------------------------------------------------------------------------------

# curl -v (7.88, lib/cf-socket.c) says why one address failed, then gives up with
# "Failed to connect to H port P after N ms: Couldn't connect to server" (exit 7):
#   * connect to 127.1.2.3 port 25 failed: Connection refused
#   * connect to 127.1.2.3 port 25 failed: Connection reset by peer
# Older curl put the errno text in the "Failed to connect" line itself. A reset
# after the connection was established is exit 56, "Recv failure: Connection reset by peer".
_CURL_CONNECT_FAILED = re.compile(r"(?:connect to .* failed|Failed to connect to .*?): (.+)$", re.M)


def _curl_ehlo_refused(text: str) -> bool:
    """Whether the reply to curl's EHLO (the first ``< `` line after ``> EHLO``) was 500 or 502."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("> EHLO "):
            reply = next((ln for ln in lines[i + 1 :] if ln.startswith("< ")), "")
            return reply.startswith(("< 500", "< 502"))
    return False


def read_curl(status: int, out: str, err: str) -> Failure | None:
    """curl run as ``curl -sv --ssl-reqd --crlf ... smtp://HOST:PORT`` (see ``recipes/curl.sh``).

    Reads the exit status and the ``-v`` trace on stderr (``< 250 ...``
    replies, ``* connect to ... failed: ...`` lines). Without ``-v`` the
    server's replies and the reason a connection failed are missing, and a
    refusal cannot be told from a reset. ``--ssl-reqd`` matters: without it
    curl silently delivers in plaintext when STARTTLS is missing.
    """
    text = out + "\n" + err
    if status == 0:
        ok = [m for m in _REPLY.finditer(text) if m.group(1) == "250"]
        line = f"250 {ok[-1].group(2)}" if ok else "250"
        return Failure("delivered", "", first_enhanced_code(line) or "2.0.0", line)
    if status == 6:  # could not resolve host: curl tells no DNS cause from another
        return Failure("dns", "unknown", message="curl: could not resolve host")
    if status == 28:
        if "resolving timed out" in err.lower():
            return Failure("dns", "timeout", message="curl: resolving timed out")
        if "* Connected to " in err:
            # curl's connection phase for smtp:// includes the greeting: --connect-timeout ran out
            # once the TCP connection was up ("Operation timed out after N milliseconds with 0
            # bytes received"), a timeout of the conversation, not of the connect.
            return Failure("timeout", "greeting", message=f"curl: {_curl_timeout_line(err)}")
        return Failure("timeout", "connect", message="curl: timed out")
    if status == 7:
        return _curl_connect_failure(err)
    if status == 60:
        return Failure("certificate", _cert_detail(err), message="curl: certificate problem")
    if status in (35, 80):
        return Failure("cannot_connect", "tls_handshake", message="curl: TLS handshake failed")
    if status == 64:  # --ssl-reqd and no STARTTLS (or STARTTLS refused)
        reply = _last_reply(text)
        if reply is not None and reply[0] != 421:
            return Failure("cannot_connect", "starttls_refused", first_enhanced_code(reply[1]), reply[1])
        return Failure("cannot_connect", "no_starttls", message="curl: STARTTLS required but not offered")
    if status == 67:  # CURLE_LOGIN_DENIED: the server refused AUTH (535, 454, ...)
        reply = _last_reply(text)
        if reply is not None:
            return _auth_failure(reply[0], reply[1])
        return None
    reply = _last_reply(text)
    if status == 9 and reply is not None and reply[0] in (500, 502) and _curl_ehlo_refused(text):
        # lib/smtp.c: under --ssl-reqd curl does not fall back to HELO (a session without
        # STARTTLS): "Remote access denied" is the TLS it cannot have (curl(1) --ssl-reqd).
        return Failure("cannot_connect", "no_starttls", message="curl: EHLO refused, TLS required")
    if reply is not None and status in (8, 9, 55, 56):
        return _reply_failure(reply[0], reply[1], "greeting" if "< 421" in err.split("> EHLO")[0] else "ehlo")
    if status in (8, 52, 55, 56):
        return Failure("closed", "closed", message=f"curl: exit {status}")
    return None


def _curl_timeout_line(err: str) -> str:
    return next((ln.lstrip("* ") for ln in err.splitlines() if "timed out" in ln.lower()), "timed out")


def _curl_connect_failure(err: str) -> Failure | None:
    """Exit 7: the connection was not made. Only the errno text says whether it was refused."""
    reasons = [m.group(1).strip() for m in _CURL_CONNECT_FAILED.finditer(err)]
    said = " ".join(reasons).lower()
    if "connection refused" in said:
        return Failure("refused", "refused", message=f"curl: {_first(reasons, 'refused')}")
    if "reset by peer" in said:
        # The server accepted, then reset before curl's connect() completed: an abrupt
        # close that curl reports as a failed connect, not a refusal.
        return Failure("closed", "reset_at_connect", message=f"curl: {_first(reasons, 'reset')}")
    if "timed out" in said or "timeout was reached" in said:
        return Failure("timeout", "connect", message=f"curl: {_first(reasons, 'time')}")
    return None


def _first(reasons: list[str], word: str) -> str:
    return next((r for r in reasons if word in r.lower()), reasons[0] if reasons else "")


# -- swaks -----------------------------------------------------------------------------


def read_swaks(status: int, out: str, err: str) -> Failure | None:
    """swaks run with ``--tls --tls-verify`` (TLS required and verified; see ``recipes/swaks.sh``).

    Reads the exit status and its transcript, which swaks prints on stdout
    (``<-  250 ...``, ``<** 550 ...``, ``*** ...`` for its own errors).
    """
    text = out + "\n" + err
    low = text.lower()
    if status == 0:
        line = next((ln for ln in reversed(text.splitlines()) if "<-  250" in ln or "<~  250" in ln), "250")
        line = line.split("250", 1)[-1]
        return Failure("delivered", "", first_enhanced_code(line) or "2.0.0", "250" + line)
    if status == 2:  # error connecting: DNS, refused and timeout alike; the message tells
        if (
            "name or service not known" in low
            or "no address associated" in low
            or "failure in name resolution" in low
        ):
            return Failure("dns", "unknown", message="swaks: cannot resolve")
        if "temporary failure in name resolution" in low:
            return Failure("dns", "servfail", message="swaks: cannot resolve")
        if "refused" in low:
            return Failure("refused", "refused", message="swaks: connection refused")
        if "reset by peer" in low:
            return Failure("closed", "closed", message="swaks: connection reset")
        if "timeout" in low or "timed out" in low:
            return Failure("timeout", "connect", message="swaks: timed out")
        return Failure("dns", "unknown", message="swaks: error connecting")
    if "timeout (" in low and "waiting for server response" in low:
        # swaks(1) --timeout: "<** Timeout (N secs) waiting for server response" once connected.
        return Failure("timeout", "read", message="swaks: timeout waiting for server response")
    reply = _last_reply(text)
    if status == 29:  # TLS required: not offered, refused, handshake or certificate failure
        if "starttls not supported" in low or "does not support starttls" in low or "not advertised" in low:
            return Failure("cannot_connect", "no_starttls", message="swaks: STARTTLS not offered")
        if "certificate verify failed" in low or "verify error" in low:
            return Failure("certificate", _cert_detail(text), message="swaks: certificate rejected")
        if reply is not None:
            return Failure("cannot_connect", "starttls_refused", first_enhanced_code(reply[1]), reply[1])
        return Failure("cannot_connect", "tls_handshake", message="swaks: TLS startup failed")
    if status == 28:  # --auth: "Host did not advertise authentication", or every AUTH refused
        if "did not advertise authentication" in low:
            return Failure("server_reply", "auth_not_offered", AUTH_NOT_OFFERED, "swaks: no AUTH offered")
        if reply is not None:
            return _auth_failure(reply[0], reply[1])
        return None
    if status in (21, 23) and reply is not None:
        return _reply_failure(reply[0], reply[1], "greeting" if status == 21 else "ehlo")
    if status in (24, 25, 26, 27) and reply is not None:
        return _reply_failure(reply[0], reply[1], "mail")
    if reply is not None and reply[0] == 421:
        # swaks answers a 421 to EHLO with a HELO on the closed connection: the 421 is what counts.
        return _reply_failure(421, reply[1], "greeting" if status == 21 else "ehlo")
    if status in (6, 141) or "closed connection unexpectedly" in low or "connection reset" in low:
        return Failure("closed", "closed", message="swaks: connection closed")
    if status in (21, 23, 24, 25, 26, 27):
        return Failure("closed", "closed", message=f"swaks: exit {status} without a reply")
    return None


# -- msmtp -----------------------------------------------------------------------------


def read_msmtp(status: int, out: str, err: str) -> Failure | None:
    """msmtp run with ``--debug --tls=on --tls-starttls=on --tls-trust-file=CA`` (``recipes/msmtp.sh``).

    Reads the exit status, msmtp's own ``msmtp: ...`` messages on stderr, and
    the ``--debug`` dialogue (``<-- 421 ...`` / ``--> EHLO ...``); without
    ``--debug`` it falls back to the ``server message:`` line msmtp quotes.
    """
    lines = (out + "\n" + err).splitlines()
    said = "\n".join(ln for ln in lines if ln.startswith("msmtp:")).lower()  # its own messages
    dialogue = [ln for ln in lines if ln.startswith(("<-- ", "--> "))]
    replies = [ln[4:] for ln in dialogue if ln.startswith("<-- ")]
    errors = [r for r in replies if r[:1] in ("4", "5")]
    if not errors:  # without --debug, msmtp still quotes the server's last error
        errors = [ln.split("server message:", 1)[1].strip() for ln in lines if "server message:" in ln]
    if status == 0:
        final = next((r for r in reversed(replies) if r.startswith("250 ")), "250")
        return Failure("delivered", "", first_enhanced_code(final) or "2.0.0", final)
    if "cannot locate host" in said:
        return Failure("dns", "unknown", message="msmtp: cannot locate host")
    if "connection refused" in said:
        return Failure("refused", "refused", message="msmtp: connection refused")
    if ("read error" in said or "write error" in said) and ("timeout" in said or "timed out" in said):
        # "msmtp: network read error: the operation timed out": the connection was up.
        return Failure("timeout", "read", message="msmtp: network read timeout")
    if "timeout" in said or "timed out" in said:
        return Failure("timeout", "connect", message="msmtp: network timeout")
    if "certificate" in said:
        return Failure("certificate", _cert_detail(said), message="msmtp: certificate rejected")
    if "does not support tls" in said or ("starttls" in said and "not support" in said):
        return Failure("cannot_connect", "no_starttls", message="msmtp: STARTTLS not offered")
    if "does not support authentication" in said:  # --auth=on and no AUTH in the EHLO reply
        return Failure("server_reply", "auth_not_offered", AUTH_NOT_OFFERED, "msmtp: no AUTH offered")
    if "authentication failed" in said and errors:  # "authentication failed (method PLAIN)"
        line = errors[-1]
        return _auth_failure(int(line[:3]) if line[:3].isdigit() else 0, line)
    if errors:
        line = errors[-1]
        code = int(line[:3]) if line[:3].isdigit() else 0
        sent = [ln[4:].upper() for ln in dialogue if ln.startswith("--> ")]
        if sent and sent[-1].startswith("STARTTLS") and code != 421:
            return Failure("cannot_connect", "starttls_refused", first_enhanced_code(line), line)
        stage = "greeting" if "initial ok message" in said or not sent else "ehlo"
        return _reply_failure(code, line, stage)
    if "handshake" in said:
        return Failure("cannot_connect", "tls_handshake", message="msmtp: TLS handshake failed")
    if said:
        return Failure("closed", "closed", message="msmtp: connection lost")
    return None


# -- Python ----------------------------------------------------------------------------
#
# The Python reader reads a traceback the way mailfakes.classify reads the exception
# object: the exception that ended the program first, then what it was raised from
# or during, each judged by its class, its message and the functions it passed
# through (an exception raised inside do_handshake is a handshake failure). Class
# names are known by their printed, qualified names: the reader imports neither
# aiosmtplib nor dnspython.


@dataclass(frozen=True)
class _Raised:
    """One exception of a printed traceback."""

    qualname: str  # as printed: "ssl.SSLEOFError", "aiosmtplib.errors.SMTPConnectError", "TimeoutError"
    message: str  # the first line of str(exc)
    functions: tuple[str, ...]  # the functions of its own traceback
    link: str  # "cause" (raise ... from), "context" (raised while handling) or "" (none printed)
    inner: _Raised | None  # the exception printed before it, when linked

    @property
    def name(self) -> str:
        return self.qualname.rsplit(".", 1)[-1]

    def module(self) -> str:
        return self.qualname.rsplit(".", 1)[0] if "." in self.qualname else "builtins"


_TB_HEADER = re.compile(r"^(?:Exception Group )?Traceback \(most recent call last\):$")
_TB_FRAME = re.compile(r'^\s+File ".*", line \d+, in (\S+)')
_TB_CAUSE = "The above exception was the direct cause of the following exception:"
_TB_CONTEXT = "During handling of the above exception, another exception occurred:"
_TB_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*)(?::\s?(.*))?$")
_TB_MARGIN = re.compile(r"^(?:\s*\|(?: |$))+")  # an exception group's members are drawn in a margin
_TB_GROUP_RULE = re.compile(r"^\s*\+[-+]")
# An exception line printed without its traceback (a client that prints only str(exc)).
_PY_BARE = re.compile(
    r"^(?:[\w.]+\.)?\w*(?:Error|Exception|Refused|Disconnected|Timeout|NXDOMAIN|NoAnswer|NoNameservers|Truncated)"
    r"(?::\s*.*)?$"
)


def _tracebacks(err: str) -> list[_Raised]:
    """The exceptions of the last printed traceback (with its chain), outermost first."""
    unit: list[_Raised] = []
    frames: list[str] = []
    in_traceback = False
    link = ""
    for raw in err.splitlines():
        line = _TB_MARGIN.sub("", raw)
        if _TB_GROUP_RULE.match(line):
            frames, in_traceback = [], True  # a member of an exception group follows
            continue
        line = re.sub(r"^\s*\+ (?=Exception Group Traceback)", "", line)
        stripped = line.strip()
        if not stripped:
            continue
        if _TB_HEADER.match(stripped):
            if not link and not raw.startswith((" ", "|")):
                unit = []  # a new, unchained traceback: the earlier one was not the end
            frames, in_traceback = [], True
            continue
        if stripped == _TB_CAUSE:
            link = "cause"
            continue
        if stripped == _TB_CONTEXT:
            link = "context"
            continue
        frame = _TB_FRAME.match(line)
        if frame:
            frames.append(frame.group(1))
            continue
        if line[:1].isspace():
            continue  # a source line or its carets
        m = _TB_EXCEPTION.match(line)
        if m is None or not (in_traceback or _PY_BARE.match(line)):
            continue
        inner = unit[-1] if link and unit else None
        unit.append(_Raised(m.group(1), (m.group(2) or "").strip(), tuple(frames), link, inner))
        frames, in_traceback, link = [], False, ""
    return unit[::-1]


def read_python(status: int, out: str, err: str) -> Failure | None:
    """A Python client that lets its exception end the program: the traceback on stderr.

    Exit status 0 is a delivery (the first enhanced code on stdout, else
    2.0.0). Otherwise stderr must hold the traceback Python prints for an
    uncaught exception (or ``traceback.format_exception``), chained causes
    and exception groups included; a line ``ExcType: message`` alone is read
    too, but then nothing says where it was raised (a TLS handshake). The
    answer agrees with :func:`mailfakes.classify.classify` on the exception
    itself, row for row of the README's table.
    """
    if status == 0:
        code = first_enhanced_code(out) or "2.0.0"
        return Failure("delivered", "", code, out.strip()[-200:])
    chain = _tracebacks(err)
    for judge in (_py_direct, _py_fallback):
        for raised in chain:
            failure = judge(raised)
            if failure is not None:
                return failure
    return None


def _describe(r: _Raised) -> str:
    return f"{r.name}: {r.message}" if r.message else r.name


_SMTPLIB_REPLIES = {
    "SMTPResponseException",
    "SMTPSenderRefused",
    "SMTPDataError",
    "SMTPConnectError",
    "SMTPHeloError",
    "SMTPAuthenticationError",
}
_SMTPLIB_ERRORS = _SMTPLIB_REPLIES | {
    "SMTPException",
    "SMTPNotSupportedError",
    "SMTPServerDisconnected",
    "SMTPRecipientsRefused",
}
_AIO_REPLIES = {
    "SMTPResponseException",
    "SMTPConnectResponseError",
    "SMTPHeloError",
    "SMTPDataError",
    "SMTPAuthenticationError",
    "SMTPSenderRefused",
    "SMTPRecipientRefused",
}
_AIO_TIMEOUTS = {"SMTPTimeoutError", "SMTPConnectTimeoutError", "SMTPReadTimeoutError"}
_AIO_OSERRORS = {"SMTPServerDisconnected", "SMTPConnectError", "SMTPConnectResponseError"} | _AIO_TIMEOUTS
_SSL_ERRORS = {"SSLError", "SSLEOFError", "SSLZeroReturnError", "SSLSyscallError", "SSLWantReadError"}
_SSL_ERRORS |= {"SSLWantWriteError", "SSLCertVerificationError"}
_OSERRORS = {
    "OSError",
    "IOError",
    "EnvironmentError",
    "ConnectionError",
    "ConnectionRefusedError",
    "ConnectionResetError",
    "ConnectionAbortedError",
    "BrokenPipeError",
    "TimeoutError",
    "BlockingIOError",
    "InterruptedError",
    "FileNotFoundError",
    "PermissionError",
}
_HANDSHAKE_FRAMES = frozenset({"do_handshake", "_do_handshake", "_on_handshake_complete"})
_ERRNO_AT_START = re.compile(r"^\[Errno (-?\d+)\]")
# OpenSSL's X509_verify_cert_error_string() texts (as ssl puts them after "certificate verify
# failed: "), to the X509_V_ERR_* code mailfakes.classify reads from verify_code. Python replaces
# 62 and 64 by its own "Hostname mismatch, ..." / "IP address mismatch, ...". Longest first.
_VERIFY_TEXTS: tuple[tuple[str, int], ...] = (
    ("self-signed certificate in certificate chain", 19),
    ("self signed certificate in certificate chain", 19),
    ("unable to get local issuer certificate", 20),
    ("unable to get issuer certificate", 2),
    ("unable to verify the first certificate", 21),
    ("format error in certificate's notbefore field", 13),
    ("format error in certificate's notafter field", 14),
    ("certificate is not yet valid", 9),
    ("certificate has expired", 10),
    ("self-signed certificate", 18),
    ("self signed certificate", 18),
    ("invalid ca certificate", 24),
    ("certificate not trusted", 27),
    ("certificate rejected", 28),
    ("hostname mismatch", 62),
    ("email address mismatch", 63),
    ("ip address mismatch", 64),
)


def _in_handshake(r: _Raised) -> bool:
    return "upgrading transport" in r.message or any(f in _HANDSHAKE_FRAMES for f in r.functions)


def _is_timeout(r: _Raised) -> bool:
    return r.qualname in ("TimeoutError", "socket.timeout") or (
        r.module().startswith("aiosmtplib") and r.name in _AIO_TIMEOUTS
    )


def _is_oserror(r: _Raised) -> bool:
    module = r.module()
    return (
        (module == "builtins" and r.name in _OSERRORS)
        or (module == "socket" and r.name in ("error", "gaierror", "herror", "timeout"))
        or (module == "ssl" and r.name in _SSL_ERRORS)
        or (module.startswith("aiosmtplib") and r.name in _AIO_OSERRORS)
    )


_REPLY_ARGS = re.compile(r"\((\d{3}),\s*(b?(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"))")


def _reply_args(message: str) -> tuple[int, str] | None:
    """The (code, text) a reply exception was built with, from its printed args."""
    m = _REPLY_ARGS.search(message)
    if m is None:
        return None
    try:
        text = ast.literal_eval(m.group(2))
    except (ValueError, SyntaxError):
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return int(m.group(1)), str(text)


def _py_direct(r: _Raised) -> Failure | None:
    module = r.module()
    if module == "smtplib" and r.name in _SMTPLIB_ERRORS:
        return _py_smtplib(r)
    if module.startswith("aiosmtplib"):
        return _py_aiosmtplib(r)
    if module == "ssl" and r.name in _SSL_ERRORS:
        return _py_ssl(r)
    if r.qualname == "socket.gaierror" or module.startswith("dns."):
        return _py_dns(r)
    return _py_socket(r)


def _py_smtplib(r: _Raised) -> Failure | None:
    if r.name == "SMTPRecipientsRefused":
        args = _reply_args(r.message)  # {'rcpt': (550, b'...')}: the first recipient's reply
        return reply_failure(*args) if args else None
    if r.name in _SMTPLIB_REPLIES:
        args = _reply_args(r.message)
        failure = reply_failure(*args) if args else None
        if r.name == "SMTPConnectError":
            return with_detail(failure, "greeting_421")
        if r.name == "SMTPHeloError":
            return with_detail(failure, "ehlo_421")
        if r.name == "SMTPAuthenticationError":
            return auth_refused(failure)
        if r.name == "SMTPResponseException" and failure is not None:
            # Raised bare only by starttls() in a delivery: STARTTLS refused.
            return Failure("cannot_connect", "starttls_refused", failure.server_code, failure.message)
        return failure
    if r.name == "SMTPServerDisconnected":
        return _py_disconnected(r)
    if STARTTLS_MISSING.search(r.message):
        return Failure("cannot_connect", "no_starttls", None, _describe(r))
    if AUTH_MISSING.search(r.message):
        return Failure("server_reply", "auth_not_offered", AUTH_NOT_OFFERED, _describe(r))
    return None


def _py_disconnected(r: _Raised) -> Failure:
    inner = r.inner
    if _in_handshake(r) or (inner is not None and _in_handshake(inner)):
        return Failure("cannot_connect", "tls_handshake", None, _describe(r))
    if (inner is not None and _is_timeout(inner)) or r.message.endswith("timed out"):
        return Failure("timeout", "read", None, _describe(r))
    return Failure("closed", "closed", None, _describe(r))


def _py_aiosmtplib(r: _Raised) -> Failure | None:
    if r.name == "SMTPRecipientsRefused":
        args = _reply_args(r.message)  # [SMTPRecipientRefused(550, '...', 'rcpt')]
        return reply_failure(*args) if args else None
    if r.name in _AIO_REPLIES:
        args = _reply_args(r.message)
        failure = reply_failure(*args) if args else None
        if r.name == "SMTPConnectResponseError":
            return with_detail(failure, "greeting_421")
        if r.name == "SMTPHeloError":
            return with_detail(failure, "ehlo_421")
        if r.name == "SMTPAuthenticationError":
            return auth_refused(failure)
        if r.name == "SMTPResponseException" and failure is not None:
            return Failure("cannot_connect", "starttls_refused", failure.server_code, failure.message)
        return failure
    if r.name == "SMTPConnectTimeoutError":
        cause = r.inner if r.link == "cause" else None
        greeting = cause is not None and cause.name == "SMTPReadTimeoutError"
        return Failure("timeout", "greeting" if greeting else "connect", None, _describe(r))
    if r.name in _AIO_TIMEOUTS:
        if _in_handshake(r):  # STARTTLS accepted, then no (complete) handshake
            return Failure("cannot_connect", "tls_handshake", None, _describe(r))
        return Failure("timeout", "read", None, _describe(r))
    if r.name == "SMTPServerDisconnected":
        return _py_disconnected(r)
    if r.name == "SMTPConnectError":
        return None  # a wrapper: the error it was raised from decides (else the fallback)
    if STARTTLS_MISSING.search(r.message):
        return Failure("cannot_connect", "no_starttls", None, _describe(r))
    if AUTH_MISSING.search(r.message):
        return Failure("server_reply", "auth_not_offered", AUTH_NOT_OFFERED, _describe(r))
    return None


def _py_ssl(r: _Raised) -> Failure:
    if r.name == "SSLCertVerificationError":
        low = r.message.lower()
        code = next((c for text, c in _VERIFY_TEXTS if text in low), -1)
        return Failure("certificate", CERT_DETAILS.get(code, "unknown"), None, _describe(r))
    eof = (
        r.name in ("SSLEOFError", "SSLZeroReturnError") or "[SSL: UNEXPECTED_EOF_WHILE_READING]" in r.message
    )
    if eof and not _in_handshake(r):
        return Failure("closed", "closed", None, _describe(r))
    return Failure("cannot_connect", "tls_handshake", None, _describe(r))


def _py_dns(r: _Raised) -> Failure | None:
    if r.qualname == "socket.gaierror":
        m = _ERRNO_AT_START.match(r.message)
        detail = GAI_DETAILS.get(int(m.group(1))) if m else None
        return Failure("dns", detail, None, _describe(r)) if detail else None
    if r.qualname == "dns.resolver.NXDOMAIN":
        return Failure("dns", "nxdomain", None, _describe(r))
    if r.qualname == "dns.resolver.NoAnswer":
        return Failure("dns", "nodata", None, _describe(r))
    if r.qualname in ("dns.exception.Timeout", "dns.resolver.LifetimeTimeout"):
        return Failure("dns", "timeout", None, _describe(r))
    if r.qualname == "dns.resolver.NoNameservers":
        # "... Server Do53:127.1.2.1@53 answered SERVFAIL; Server ... answered The DNS operation timed out."
        said = r.message
        for word, detail in (("answered SERVFAIL", "servfail"), ("answered REFUSED", "refused")):
            if word in said:
                return Failure("dns", detail, None, _describe(r))
        detail = "timeout" if "timed out" in said else "servfail"
        return Failure("dns", detail, None, _describe(r))
    if r.qualname == "dns.message.Truncated":
        return Failure("dns", "truncated", None, _describe(r))
    return None


def _py_socket(r: _Raised) -> Failure | None:
    if r.module() != "builtins" and r.qualname != "socket.timeout":
        return _py_errno(r) if _is_oserror(r) else None
    if r.name in ("TimeoutError", "timeout"):
        return Failure("timeout", "connect", None, _describe(r))
    if r.name == "ConnectionRefusedError":
        return Failure("refused", "refused", None, _describe(r))
    if r.name in ("ConnectionResetError", "ConnectionAbortedError", "BrokenPipeError", "EOFError"):
        if _in_handshake(r):
            return Failure("cannot_connect", "tls_handshake", None, _describe(r))
        return Failure("closed", "closed", None, _describe(r))
    return _py_errno(r) if _is_oserror(r) else None


def _py_errno(r: _Raised) -> Failure | None:
    m = _ERRNO_AT_START.match(r.message)
    if m and int(m.group(1)) in ERRNO_CLASSES:
        cls, detail = ERRNO_CLASSES[int(m.group(1))]
        return Failure(cls, detail, None, _describe(r))
    return None


def _py_fallback(r: _Raised) -> Failure | None:
    """What only the text says (asyncio's "Multiple exceptions: [Errno 111] ...")."""
    if not _is_oserror(r) or _ERRNO_AT_START.match(r.message):
        return None
    for number in ERRNO_IN_TEXT.findall(r.message):
        if int(number) in ERRNO_CLASSES:
            cls, detail = ERRNO_CLASSES[int(number)]
            return Failure(cls, detail, None, _describe(r))
    if (
        r.module().startswith("aiosmtplib")
        and r.name == "SMTPConnectError"
        and "Connection lost" in r.message
    ):
        return Failure("closed", "closed", None, _describe(r))
    return None


# -- Postfix ---------------------------------------------------------------------------

_POSTFIX_STATUS = re.compile(r"dsn=([245]\.\d{1,3}\.\d{1,3}),\s*status=(\w+)\s*\((.*)\)\s*$", re.M)

# The status texts, from Postfix 3.7's sources (the same since 3.0 unless said).
# src/smtp/smtp_connect.c, smtp_connect_addr(): "connect to %s[%s]:%d: %m" (dsn 4.4.1),
# %m being strerror(errno) of the failed connect().
_PF_CONNECT = re.compile(r"^connect to \S+: (.+)$")
# src/dns/dns_lookup.c, dns_query(): "Host or domain name not found. Name service error for
# name=%s type=%s: %s", the last part from src/dns/dns_strerror.c.
_PF_DNS = re.compile(r"Name service error for name=(\S+) type=(\w+): (.+)$")
_PF_DNS_ERRORS: dict[str, str] = {
    "Host not found": "nxdomain",  # HOST_NOT_FOUND
    "Host found but no data record of requested type": "nodata",  # NO_DATA
    # TRY_AGAIN: SERVFAIL, REFUSED and no answer in time alike; Postfix cannot tell them apart.
    "Host not found, try again": "servfail",
    "Non-recoverable error": "servfail",  # NO_RECOVERY
}
# src/smtp/smtp_addr.c, smtp_domain_addr(): logged when the MX answer names hosts but
# none of them has an address; the status text is then the last address lookup's.
_PF_MX_WITHOUT_ADDRESS = re.compile(r"warning: no MX host for \S+ has a valid address record")
# src/smtp/smtp_proto.c: a reply to the greeting or to EHLO/HELO; a reply to a later command.
_PF_REFUSED_TO_TALK = re.compile(r"^host \S+ refused to talk to me: (.+)$")
_PF_SAID = re.compile(r"^host \S+ said: (.+?)(?: \(in reply to (.+) command\))?$")
# src/tls/tls_verify.c, tls_verify_certificate_callback() (Postfix 3.7): why the certificate failed.
_PF_CERT_FAILED = re.compile(r"certificate verification failed for \S+: (.+)$", re.M)
_PF_CERT_REASONS: tuple[tuple[str, str], ...] = (
    ("certificate has expired", "expired"),
    ("certificate not yet valid", "not_yet_valid"),
    ("self-signed certificate", "self_signed"),
    ("untrusted issuer", "untrusted"),
    ("not trusted by local or TLSA policy", "untrusted"),
    ("hostname mismatch", "hostname"),  # the default branch: "num=62:hostname mismatch"
)


def read_postfix(status: int, out: str, err: str) -> Failure | None:
    """Postfix's mail log for one message, as ``recipes/postfix.sh`` prints it on stdout.

    The log must hold the message's ``status=`` line (``dsn=4.4.1,
    status=deferred (connect to mail.contoso.test[127.1.2.3]:25: Connection
    refused)``); the first one is read, so give the log of one message (or
    of one delivery attempt). The class and detail come from the text in
    parentheses, the only place Postfix says why: it reports a refusal and a
    timeout both as 4.4.1, a lost connection and a read timeout both as
    4.4.2. The dsn is kept as the failure's ``server_code``. Two other log
    lines of the smtp client sharpen the detail: ``certificate verification
    failed for ...: certificate has expired`` (``smtp_tls_loglevel = 1``)
    and ``no MX host for ... has a valid address record``. The exit status
    is not read. Compare under ``--profile postfix``, the codes Postfix
    gives.
    """
    text = out + "\n" + err
    found = _POSTFIX_STATUS.search(text)
    if found is None:
        return None
    dsn, state, reason = found.groups()
    if state == "sent":
        return Failure("delivered", "", dsn, reason)
    before = text[: found.start()]
    failure = _postfix_failure(dsn, reason, before)
    return _postfix_policy(failure, dsn, reason, before)


# DANE (smtp_tls_loglevel >= 1 logs the TLSA records it uses) and MTA-STS (recipes/postfix-mta-sts.sh
# prints what the policy daemon answered): the same texts then mean a policy refused the host.
_PF_DANE = re.compile(r"DNSSEC-signed TLSA record: ")
_PF_TLSA_ERROR = re.compile(r"^TLSA lookup error for \S+:\d+$")
_PF_STS = re.compile(r"mta-sts-daemon answered OK secure match=(\S+)")
_PF_RELAY = re.compile(r"server certificate verification failed for ([^\[\s]+)\[")


def _postfix_policy(failure: Failure | None, dsn: str, reason: str, before: str) -> Failure | None:
    """A failure under DANE or an MTA-STS policy, as Postfix logs it, told by the lines before."""
    if _PF_TLSA_ERROR.match(reason):  # smtp_tls_policy.c: a bogus or failed TLSA lookup, no connection
        return Failure("dane", "dnssec-invalid", dsn, reason)
    if failure is None or failure.cls not in ("cannot_connect", "certificate"):
        return failure
    cls: FailureClass
    if _PF_DANE.search(before):
        cls = "dane"
    elif _PF_STS.search(before):
        cls = "mta_sts"
    else:
        return failure
    if failure.detail == "no_starttls":
        return Failure(cls, "starttls-not-supported", dsn, reason)
    if failure.cls != "certificate":
        return failure
    said = " ".join(m.group(1) for m in _PF_CERT_FAILED.finditer(before))
    if "no matching DANE TLSA records" in said or "num=65" in said:
        return Failure(cls, "tlsa-invalid", dsn, reason)
    if failure.detail == "expired":
        return Failure(cls, "certificate-expired", dsn, reason)
    if failure.detail == "hostname":
        if cls == "mta_sts":
            sts = _PF_STS.search(before)
            relay = _PF_RELAY.search(before)
            patterns = sts.group(1).split(":") if sts else []
            host = relay.group(1) if relay else ""
            named = any(host == p or (p.startswith(".") and host.endswith(p)) for p in patterns)
            return Failure(cls, "certificate-host-mismatch" if named else "mx-mismatch", dsn, reason)
        return Failure(cls, "certificate-host-mismatch", dsn, reason)
    return Failure(cls, "certificate-not-trusted" if cls == "mta_sts" else "tlsa-invalid", dsn, reason)


def _postfix_failure(dsn: str, reason: str, before: str) -> Failure | None:
    connect = _PF_CONNECT.match(reason)
    if connect:
        said = connect.group(1)
        if said == "Connection refused":
            return Failure("refused", "refused", dsn, reason)
        if said == "Connection timed out":  # smtp_connect_timeout, or the kernel's own
            return Failure("timeout", "connect", dsn, reason)
        if said == "Connection reset by peer":
            return Failure("closed", "reset_at_connect", dsn, reason)
        return None
    dns = _PF_DNS.search(reason)
    if dns:
        said = dns.group(3)
        detail = _PF_DNS_ERRORS.get(said.strip())
        if detail is None:
            return None
        if detail in ("nxdomain", "nodata") and _PF_MX_WITHOUT_ADDRESS.search(before):
            detail = "no_address"  # the MX answer was fine: the host it names has no address
        return Failure("dns", detail, dsn, reason)
    if re.match(r"^Domain \S+ does not accept mail \(nullMX\)$", reason):  # dns_lookup.c, RFC 7505
        return Failure("dns", "null_mx", dsn, reason)
    refused = _PF_REFUSED_TO_TALK.match(reason)  # the greeting, or the reply to EHLO/HELO
    if refused:
        return _postfix_reply(dsn, refused.group(1))
    said_match = _PF_SAID.match(reason)
    if said_match:
        return _postfix_reply(dsn, said_match.group(1))
    # smtp_sasl_glue.c: the server refused AUTH (a 535 deferred: smtp_sasl_auth_soft_bounce).
    sasl = re.match(r"^SASL authentication failed; server \S+ said: ([245]\d\d\b.*)$", reason)
    if sasl:
        # The server's own code, as the other clients report it; under the postfix profile a 535
        # becomes the dsn Postfix logs (4.7.8, see mailfakes.codes.code_for).
        reply = sasl.group(1)
        return Failure("server_reply", "auth", first_enhanced_code(reply) or dsn, reply)
    # smtp_proto.c, smtp_start_tls() and smtp_helo().
    if re.match(r"^SMTPUTF8 is required, but was not offered by host \S+$", reason):
        # smtp_proto.c: a UTF-8 address (RFC 6531) and no SMTPUTF8 in the EHLO reply (5.6.7).
        return Failure("server_reply", "no_smtputf8", dsn, reason)
    if re.match(r"^message size \d+ exceeds size limit \d+ of server \S+$", reason):
        # The server's EHLO advertised SIZE below the message: Postfix does not send it (5.3.4).
        return Failure("server_reply", "size_limit", dsn, reason)
    if re.match(r"^TLS is required, but was not offered by host \S+$", reason):
        return Failure("cannot_connect", "no_starttls", dsn, reason)
    starttls = re.match(r"^TLS is required, but host \S+ refused to start TLS: (.+)$", reason)
    if starttls:
        return Failure("cannot_connect", "starttls_refused", dsn, reason)
    if reason == "Cannot start TLS: handshake failure":
        return Failure("cannot_connect", "tls_handshake", dsn, reason)
    # "not trusted" (Postfix up to 3.5 when the chain fails) or "not verified" (3.6 on,
    # and when the name does not match).
    if reason in ("Server certificate not verified", "Server certificate not trusted"):
        return Failure("certificate", _postfix_cert_detail(before), dsn, reason)
    # smtp_trouble.c, smtp_stream_except(): the connection ended, or a reply never came.
    if re.match(r"^lost connection with \S+ while .+$", reason):
        return Failure("closed", "closed", dsn, reason)
    if re.match(r"^conversation with \S+ timed out while .+$", reason):
        return Failure("timeout", "read", dsn, reason)
    return None


def _postfix_reply(dsn: str, reply: str) -> Failure | None:
    """A server's reply that Postfix quotes ("421 4.3.2 Service not available")."""
    m = re.match(r"^([245]\d\d)\b", reply)
    if m is None:
        return None
    if m.group(1) == "421":
        # Postfix does not say which command (greeting, EHLO, MAIL...) the 421 answered.
        return Failure("cannot_connect", "reply_421", dsn, reply)
    return Failure("server_reply", "reply", dsn, reply)


def _postfix_cert_detail(log: str) -> str:
    reasons = [m.group(1) for m in _PF_CERT_FAILED.finditer(log)]
    if not reasons:
        return "unknown"
    said = reasons[-1]
    return next((detail for text, detail in _PF_CERT_REASONS if text in said), "unknown")


READERS: dict[str, Reader] = {
    "curl": read_curl,
    "swaks": read_swaks,
    "msmtp": read_msmtp,
    "postfix": read_postfix,
    "python": read_python,
}
