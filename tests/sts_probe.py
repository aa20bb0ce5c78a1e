"""An independent MTA-STS client for the tests (RFC 8461): dnspython, socket and ssl only.

It shares no code with ``mailfakes``: the TXT record is read with dnspython,
the policy fetched with a plain HTTPS request over ``ssl`` (the world's CA,
SNI ``mta-sts.<domain>``), parsed by the grammar of RFC 8461 3.2 and matched
against MX names as RFC 8461 4.1 says. Failures are named by their RFC 8460
result types.
"""

from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

TIMEOUT = 2.0
WELL_KNOWN = "/.well-known/mta-sts.txt"
MAX_AGE = 31557600  # RFC 8461 3.2: max_age is at most a year
MAX_BODY = 64 * 1024

# RFC 8461 3.1: v=STSv1 first, then id=1*32(ALPHA / DIGIT); fields separated by ";" and WSP.
_TXT_ID = re.compile(r"(?:^|;)[ \t]*id=([A-Za-z0-9]{1,32})[ \t]*(?:;|$)")
# RFC 8461 3.2: a field is a name, ":", optional WSP, then a value of visible characters and WSP.
_FIELD = re.compile(
    r"([A-Za-z0-9][A-Za-z0-9_.\-]{0,31}):[ \t]*([\x21-\x7e](?:[ \t\x21-\x7e]*[\x21-\x7e])?)[ \t]*"
)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
_MX_PATTERN = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")


def txt_records(server: str, port: int, name: str, timeout: float = TIMEOUT) -> tuple[str, list[str]]:
    """(rcode, TXT strings) for ``name``; rcode TIMEOUT when nothing came."""
    q = dns.message.make_query(name, "TXT")
    try:
        resp = dns.query.udp(q, server, port=port, timeout=timeout)
    except (dns.exception.Timeout, OSError):
        return "TIMEOUT", []
    values = [
        b"".join(rd.strings).decode("utf-8", "replace")
        for rrset in resp.answer
        if rrset.rdtype == dns.rdatatype.TXT
        for rd in rrset
    ]
    return dns.rcode.to_text(resp.rcode()), values


def sts_id(values: list[str]) -> str | None:
    """The id of the one TXT record that starts ``v=STSv1;``; None if there is none, or several."""
    found = [v for v in values if re.match(r"v=STSv1[ \t]*(;|$)", v)]
    if len(found) != 1:
        return None
    m = _TXT_ID.search(found[0])
    return m.group(1) if m else None


@dataclass(frozen=True)
class StsPolicy:
    mode: str
    mx: tuple[str, ...]
    max_age: int


@dataclass(frozen=True)
class Fetched:
    """A policy, or why none: ``result`` an RFC 8460 result type ('' when ``policy`` is set)."""

    policy: StsPolicy | None
    result: str
    detail: str
    status: int = 0
    content_type: str = ""
    sent: bool = False  # the request went out (the TLS handshake with the policy host succeeded)


def parse_policy(text: str) -> StsPolicy | str:
    """The policy, or why ``text`` is not one. Lines end with LF or CRLF; every line must be a field;
    version, mode and max_age must each be there once; mx at least once unless mode is none;
    unknown fields are ignored (RFC 8461 3.2)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the last line's terminator is optional
    fields: dict[str, list[str]] = {}
    for raw in lines:
        line = raw[:-1] if raw.endswith("\r") else raw
        m = _FIELD.fullmatch(line)
        if m is None:
            return f"not a policy field: {line[:60]!r}"
        fields.setdefault(m.group(1), []).append(m.group(2))
    for name in ("version", "mode", "max_age"):
        if len(fields.get(name, [])) != 1:
            return f"{name} appears {len(fields.get(name, []))} times"
    if fields["version"] != ["STSv1"]:
        return f"version {fields['version'][0]!r}"
    mode = fields["mode"][0]
    if mode not in ("enforce", "testing", "none"):
        return f"mode {mode!r}"
    age = fields["max_age"][0]
    if not re.fullmatch(r"[0-9]{1,10}", age) or int(age) > MAX_AGE:
        return f"max_age {age!r}"
    mx = tuple(fields.get("mx", []))
    if mode != "none" and not mx:
        return "no mx field"
    bad = [p for p in mx if not _MX_PATTERN.fullmatch(p)]
    if bad:
        return f"mx {bad[0]!r} is not a host name or *.domain"
    return StsPolicy(mode, mx, int(age))


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 4.1: a name matches itself; ``*.`` stands for exactly one leftmost label."""
    p, h = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if not p.startswith("*."):
        return p == h
    label, _, parent = h.partition(".")
    return bool(label) and parent == p[2:]


def fetch_policy(domain: str, ip: str, port: int, cafile: str, timeout: float = TIMEOUT) -> Fetched:
    """GET https://mta-sts.<domain>/.well-known/mta-sts.txt at ``ip``:``port``, verifying the
    certificate for mta-sts.<domain> against ``cafile``. No redirect is followed (RFC 8461 3.3)."""
    host = f"mta-sts.{domain}"
    ctx = ssl.create_default_context(cafile=cafile)
    try:
        raw = socket.create_connection((ip, port), timeout=timeout)
    except OSError as exc:
        return Fetched(None, "sts-policy-fetch-error", f"connect: {exc!r}")
    with raw:
        try:
            tls = ctx.wrap_socket(raw, server_hostname=host)
        except ssl.SSLCertVerificationError as exc:
            return Fetched(None, "sts-webpki-invalid", f"{exc.verify_code} {exc.verify_message}")
        except (ssl.SSLError, OSError) as exc:
            return Fetched(None, "sts-policy-fetch-error", f"TLS: {exc!r}")
        with tls:
            tls.sendall(f"GET {WELL_KNOWN} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            try:
                while len(data) <= MAX_BODY and (chunk := tls.recv(65536)):
                    data += chunk
            except (ssl.SSLError, OSError) as exc:
                return Fetched(None, "sts-policy-fetch-error", f"read: {exc!r}", sent=True)
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    m = re.fullmatch(r"HTTP/1\.[01] ([0-9]{3})(?: .*)?", lines[0])
    if not sep or m is None:
        return Fetched(None, "sts-policy-fetch-error", f"no HTTP response: {lines[0][:60]!r}", sent=True)
    status = int(m.group(1))
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    ctype = headers.get("content-type", "")
    if "content-length" in headers and headers["content-length"].isdigit():
        body = body[: int(headers["content-length"])]
    if status != 200:
        return Fetched(None, "sts-policy-fetch-error", f"HTTP {status}", status, ctype, sent=True)
    if ctype.split(";")[0].strip().lower() != "text/plain":  # RFC 8461 3.3
        return Fetched(None, "sts-policy-invalid", f"Content-Type {ctype!r}", status, ctype, sent=True)
    try:
        parsed = parse_policy(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        parsed = f"not UTF-8: {exc}"
    if isinstance(parsed, str):
        return Fetched(None, "sts-policy-invalid", parsed, status, ctype, sent=True)
    return Fetched(parsed, "", "", status, ctype, sent=True)
