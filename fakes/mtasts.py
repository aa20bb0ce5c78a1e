"""MTA-STS for a sending client (RFC 8461): the TXT record, the policy fetch, MX matching.

The reference connector uses this; any client of the world may too. The
policy is fetched over HTTPS from ``mta-sts.<domain>`` at an address the
caller resolved (through the world's DNS, never the system's), with the
certificate checked against the CA the caller trusts and the name
``mta-sts.<domain>``. Redirects are not followed (RFC 8461 3.3).

Failures are named by their RFC 8460 result types:
``sts-policy-fetch-error`` (no connection, an HTTP status other than 200, a
redirect), ``sts-webpki-invalid`` (the policy host's certificate did not
verify) and ``sts-policy-invalid`` (the policy does not parse).
"""

from __future__ import annotations

import re
import socket
import ssl
from typing import Final, Literal

from .values import frozen

WELL_KNOWN: Final = "/.well-known/mta-sts.txt"
MAX_POLICY_BYTES: Final = 64 * 1024  # RFC 8461 3.3: senders may limit the size they read
MAX_AGE_LIMIT: Final = 31557600

FetchResult = Literal["sts-policy-fetch-error", "sts-webpki-invalid", "sts-policy-invalid"]


@frozen
class Policy:
    """A parsed policy: its ``mode``, ``mx`` patterns and ``max_age``, with the ``id`` of its TXT."""

    mode: str
    mx: tuple[str, ...]
    max_age: int
    policy_id: str = ""
    text: str = ""

    def matches(self, host: str) -> bool:
        """Whether MX host ``host`` is one the policy names (RFC 8461 4.1)."""
        return any(mx_matches(p, host) for p in self.mx)

    @property
    def lines(self) -> list[str]:
        """The policy as RFC 8460's ``policy-string``: one entry per line."""
        return [ln for ln in self.text.replace("\r\n", "\n").split("\n") if ln.strip()]


@frozen
class FetchError:
    """Why no policy came: an RFC 8460 result type and what happened."""

    result: FetchResult
    reason: str


def mx_matches(pattern: str, host: str) -> bool:
    """``mx: mail.contoso.test`` names that host; ``mx: *.contoso.test`` any one label below it."""
    p, h = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if p.startswith("*."):
        return "." in h and h.split(".", 1)[1] == p[2:]
    return p == h


def policy_id(txt_values: list[str]) -> str | None:
    """The ``id`` of the one ``v=STSv1`` TXT record, or None (none, several, or no id: no policy)."""
    found = [t for t in txt_values if t.startswith("v=STSv1")]
    if len(found) != 1:
        return None
    for part in found[0].split(";"):
        k, _, v = part.strip().partition("=")
        if k == "id" and re.fullmatch(r"[A-Za-z0-9]{1,32}", v):
            return v
    return None


class PolicyError(ValueError):
    pass


def parse_policy(text: str, policy_id_: str = "") -> Policy:
    """A policy file's fields (RFC 8461 3.2); PolicyError when it is not one."""
    fields: dict[str, list[str]] = {}
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise PolicyError(f"a line that is not key: value: {line[:60]!r}")
        fields.setdefault(key.strip(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise PolicyError("no 'version: STSv1' line")
    mode = (fields.get("mode") or [""])[0]
    if mode not in ("enforce", "testing", "none"):
        raise PolicyError(f"mode {mode!r} is not enforce, testing or none")
    ages = fields.get("max_age") or []
    if len(ages) != 1 or not ages[0].isdigit() or int(ages[0]) > MAX_AGE_LIMIT:
        raise PolicyError(f"max_age must be one number of seconds up to {MAX_AGE_LIMIT}")
    mx = tuple(fields.get("mx", ()))
    if mode != "none" and not mx:
        raise PolicyError(f"mode {mode} without any mx line")
    return Policy(mode=mode, mx=mx, max_age=int(ages[0]), policy_id=policy_id_, text=text)


def fetch(
    domain: str,
    address: str,
    *,
    port: int = 443,
    ca_file: str | None = None,
    timeout: float = 5.0,
    policy_id_: str = "",
) -> Policy | FetchError:
    """GET ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` from ``address``:``port``."""
    host = f"mta-sts.{domain}"
    context = ssl.create_default_context(cafile=ca_file)
    try:
        raw = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        return FetchError("sts-policy-fetch-error", f"cannot connect to {host} ({address}:{port}): {exc}")
    try:
        try:
            sock = context.wrap_socket(raw, server_hostname=host)
        except ssl.SSLCertVerificationError as exc:
            return FetchError("sts-webpki-invalid", f"{host}: certificate rejected: {exc.verify_message}")
        except (ssl.SSLError, OSError) as exc:
            return FetchError("sts-policy-fetch-error", f"{host}: TLS handshake failed: {exc}")
        raw = sock
        request = (
            f"GET {WELL_KNOWN} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: mailfakes\r\n\r\n"
        )
        sock.sendall(request.encode("ascii"))
        data = b""
        while len(data) <= MAX_POLICY_BYTES + 8192:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (OSError, ssl.SSLError) as exc:
        return FetchError("sts-policy-fetch-error", f"{host}: {exc}")
    finally:
        raw.close()
    head, sep, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    m = re.match(r"HTTP/1\.[01] (\d{3})", status_line)
    if not sep or m is None:
        return FetchError("sts-policy-fetch-error", f"{host}: no HTTP response")
    status = int(m.group(1))
    if status != 200:
        return FetchError("sts-policy-fetch-error", f"{host}: HTTP {status_line[9:].strip()}")
    try:
        text = body[:MAX_POLICY_BYTES].decode("utf-8")
        return parse_policy(text, policy_id_)
    except (UnicodeDecodeError, PolicyError) as exc:
        return FetchError("sts-policy-invalid", f"{host}: {exc}")
