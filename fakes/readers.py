"""Readers for clients whose output carries no EOP code: curl, swaks, msmtp, Postfix, Python.

Each reader turns what a client did (its exit status, stdout and stderr)
into a :class:`fakes.codes.Failure`, so ``mailfakes check`` can compare it
with a scenario's expected code under any profile. The mappings come from
running each client against every scenario of the catalogue (DESIGN.md
section 4 lists the exit statuses); the tests in ``tests/test_real_clients.py``
keep them honest.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .codes import Failure, first_enhanced_code

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


def read_curl(status: int, out: str, err: str) -> Failure | None:
    """curl with ``--ssl-reqd`` and ``-v`` (so server replies are on stderr)."""
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
        return Failure("timeout", "connect", message="curl: timed out")
    if status == 7:
        if "timed out" in err.lower():
            return Failure("timeout", "connect", message="curl: timed out")
        return Failure("refused", "refused", message="curl: failed to connect")
    if status == 60:
        return Failure("certificate", _cert_detail(err), message="curl: certificate problem")
    if status in (35, 80):
        return Failure("cannot_connect", "tls_handshake", message="curl: TLS handshake failed")
    if status == 64:  # --ssl-reqd and no STARTTLS (or STARTTLS refused)
        reply = _last_reply(text)
        if reply is not None and reply[0] != 421:
            return Failure("cannot_connect", "starttls_refused", first_enhanced_code(reply[1]), reply[1])
        return Failure("cannot_connect", "no_starttls", message="curl: STARTTLS required but not offered")
    reply = _last_reply(text)
    if reply is not None and status in (8, 9, 55, 56):
        return _reply_failure(reply[0], reply[1], "greeting" if "< 421" in err.split("> EHLO")[0] else "ehlo")
    if status in (8, 52, 55, 56):
        return Failure("closed", "closed", message=f"curl: exit {status}")
    return None


def read_swaks(status: int, out: str, err: str) -> Failure | None:
    """swaks with ``--tls`` (TLS required); it prints its transcript on stdout."""
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
    reply = _last_reply(text)
    if status == 29:  # TLS required: not offered, refused, handshake or certificate failure
        if "starttls not supported" in low or "does not support starttls" in low or "not advertised" in low:
            return Failure("cannot_connect", "no_starttls", message="swaks: STARTTLS not offered")
        if "certificate verify failed" in low or "verify error" in low:
            return Failure("certificate", _cert_detail(text), message="swaks: certificate rejected")
        if reply is not None:
            return Failure("cannot_connect", "starttls_refused", first_enhanced_code(reply[1]), reply[1])
        return Failure("cannot_connect", "tls_handshake", message="swaks: TLS startup failed")
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


def read_msmtp(status: int, out: str, err: str) -> Failure | None:
    """msmtp with ``--tls=on --tls-starttls=on --tls-trust-file`` (and ``--debug`` for the replies)."""
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
    if "timeout" in said or "timed out" in said:
        return Failure("timeout", "connect", message="msmtp: network timeout")
    if "certificate" in said:
        return Failure("certificate", _cert_detail(said), message="msmtp: certificate rejected")
    if "does not support tls" in said or ("starttls" in said and "not support" in said):
        return Failure("cannot_connect", "no_starttls", message="msmtp: STARTTLS not offered")
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


_PY_LAST = re.compile(
    r"^(?:[\w.]+\.)?(\w*(?:Error|Exception|Refused|Disconnected|Timeout|NXDOMAIN|NoAnswer|NoNameservers))(?::\s*(.*))?$"
)


def read_python(status: int, out: str, err: str) -> Failure | None:
    """A Python client that lets its exception end the program (traceback on stderr)."""
    if status == 0:
        code = first_enhanced_code(out) or "2.0.0"
        return Failure("delivered", "", code, out.strip()[-200:])
    lines = [ln.strip() for ln in err.strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        m = _PY_LAST.match(line)
        if m:
            return _python_failure(m.group(1), m.group(2) or "")
    return None


def _python_failure(name: str, message: str) -> Failure | None:
    low = message.lower()
    if name in ("gaierror", "NXDOMAIN", "NoAnswer", "NoNameservers", "LifetimeTimeout"):
        return Failure(
            "dns", {"NXDOMAIN": "nxdomain", "NoAnswer": "nodata"}.get(name, "unknown"), message=message
        )
    if name in ("TimeoutError", "timeout", "SMTPConnectTimeoutError"):
        return Failure("timeout", "connect", message=message)
    if name == "ConnectionRefusedError":
        return Failure("refused", "refused", message=message)
    if name == "SSLCertVerificationError":
        return Failure("certificate", _cert_detail(message), message=message)
    if name == "SMTPNotSupportedError" or "starttls extension not supported" in low:
        return Failure("cannot_connect", "no_starttls", message=message)
    code_match = re.match(r"\(?(\d{3})", message)
    code = int(code_match.group(1)) if code_match else 0
    if name in ("SMTPConnectError", "SMTPConnectResponseError") and code:
        return _reply_failure(code, message, "greeting")
    if name == "SMTPHeloError" and code:
        return _reply_failure(code, message, "ehlo")
    if name == "SMTPServerDisconnected" and "timed out" in low:
        return Failure("timeout", "read", message=message)  # smtplib's read timeout
    if name in ("SMTPServerDisconnected", "ConnectionResetError", "BrokenPipeError", "SSLEOFError"):
        return Failure("closed", "closed", message=message)
    if name in ("SSLError",):
        return Failure("cannot_connect", "tls_handshake", message=message)
    if name in ("SMTPRecipientsRefused", "SMTPSenderRefused", "SMTPDataError", "SMTPResponseException") and (
        enhanced := first_enhanced_code(message)
    ):
        if name == "SMTPResponseException":
            return Failure("cannot_connect", "starttls_refused", enhanced, message)
        return Failure("server_reply", "", enhanced, message)
    return None


_POSTFIX_DSN = re.compile(r"dsn=([245]\.\d{1,3}\.\d{1,3}),\s*status=(\w+)\s*\((.*)\)")


def read_postfix(status: int, out: str, err: str) -> Failure | None:
    """Postfix's log line for the message: ``dsn=4.4.1, status=deferred (...)``.

    Postfix reports its own codes, so compare under ``--profile postfix``.
    """
    found = None
    for m in _POSTFIX_DSN.finditer(out + "\n" + err):
        found = m
    if found is None:
        return None
    dsn, state, reason = found.groups()
    if state == "sent":
        return Failure("delivered", "", dsn, reason)
    return Failure("server_reply", "", dsn, reason)  # Postfix's own code, whatever the cause


READERS: dict[str, Reader] = {
    "curl": read_curl,
    "swaks": read_swaks,
    "msmtp": read_msmtp,
    "postfix": read_postfix,
    "python": read_python,
}
