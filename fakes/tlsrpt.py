"""SMTP TLS reports (RFC 8460): what a sender writes, and reading back what arrives.

A sending client keeps, per policy domain, how many sessions succeeded and
which failed for what (:class:`ReportBook`); at the end of the period it
sends one JSON report per domain to each address of the domain's
``_smtp._tls`` TXT record: gzipped, attached to a ``multipart/report;
report-type="tlsrpt"`` mail (RFC 8460 5.3), or POSTed as
``application/tlsrpt+gzip`` (5.4). :func:`read_report` reads a report from
either form into a :class:`TlsReport`; a world does that with what its
``rua`` addresses received (``world.tls_reports``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from .faults import TLS_RESULT_TYPES as RESULT_TYPES
from .values import frozen

__all__ = [
    "MEDIA_GZIP",
    "MEDIA_JSON",
    "RESULT_TYPES",
    "ReportBook",
    "TlsReport",
    "read_report",
    "report_mail",
]
MEDIA_GZIP: Final = "application/tlsrpt+gzip"
MEDIA_JSON: Final = "application/tlsrpt+json"


@frozen
class TlsReport:
    """One report as received: per policy in it, its type, domain, counts and failures."""

    organization: str
    report_id: str
    start: str
    end: str
    policies: tuple[dict[str, Any], ...]
    via: str = "mail"  # or https
    to: str = ""  # the rua it came to
    at: float | None = None  # world seconds it arrived

    @property
    def domains(self) -> list[str]:
        return [str(p.get("policy", {}).get("policy-domain", "")) for p in self.policies]

    @property
    def policy_types(self) -> list[str]:
        return [str(p.get("policy", {}).get("policy-type", "")) for p in self.policies]

    @property
    def results(self) -> dict[str, int]:
        """Failed sessions by result type, over every policy of the report."""
        out: dict[str, int] = {}
        for p in self.policies:
            for d in p.get("failure-details", []):
                kind = str(d.get("result-type", ""))
                out[kind] = out.get(kind, 0) + int(d.get("failed-session-count", 0))
        return out

    @property
    def successes(self) -> int:
        return sum(int(p.get("summary", {}).get("total-successful-session-count", 0)) for p in self.policies)

    @property
    def failures(self) -> int:
        return sum(int(p.get("summary", {}).get("total-failure-session-count", 0)) for p in self.policies)


@frozen
class _Policy:
    kind: str  # sts, tlsa, no-policy-found
    domain: str
    strings: tuple[str, ...] = ()
    mx_hosts: tuple[str, ...] = ()


class ReportBook:
    """What a sender keeps for its reports: sessions per policy domain and their results."""

    def __init__(self, organization: str = "mailfakes reference connector") -> None:
        self.organization = organization
        self._policies: dict[str, _Policy] = {}
        self._ok: dict[str, int] = {}
        self._failed: dict[tuple[str, str, str, str], int] = {}  # (domain, result, mx, ip) -> sessions
        self.reasons: dict[tuple[str, str, str, str], str] = {}

    def policy(
        self, domain: str, kind: str, strings: list[str] | tuple[str, ...] = (), mx_host: str = ""
    ) -> None:
        """Say which policy applied to ``domain`` (the last one said wins)."""
        known = self._policies.get(domain)
        mx = known.mx_hosts if known is not None else ()
        if mx_host and mx_host not in mx:
            mx = (*mx, mx_host)
        self._policies[domain] = _Policy(kind, domain, tuple(strings), mx)

    def success(self, domain: str) -> None:
        self._ok[domain] = self._ok.get(domain, 0) + 1

    def failure(self, domain: str, result: str, mx_host: str = "", ip: str = "", reason: str = "") -> None:
        if result not in RESULT_TYPES:
            raise ValueError(f"unknown TLS-RPT result type {result!r}")
        k = (domain, result, mx_host, ip)
        self._failed[k] = self._failed.get(k, 0) + 1
        if reason:
            self.reasons[k] = reason

    @property
    def domains(self) -> list[str]:
        return sorted(set(self._policies) | set(self._ok) | {k[0] for k in self._failed})

    def report(
        self, domain: str, start: dt.datetime, end: dt.datetime, *, submitter: str = "mailfakes.test"
    ) -> dict[str, Any]:
        """The RFC 8460 4.4 JSON report for ``domain`` over ``start``..``end``."""
        p = self._policies.get(domain) or _Policy("no-policy-found", domain)
        details = [
            {
                "result-type": result,
                **({"receiving-mx-hostname": mx} if mx else {}),
                **({"receiving-ip": ip} if ip else {}),
                "failed-session-count": n,
                **({"failure-reason-code": self.reasons[k]} if k in self.reasons else {}),
            }
            for k, n in self._failed.items()
            if k[0] == domain
            for (_, result, mx, ip) in [k]
        ]
        policy: dict[str, Any] = {"policy-type": p.kind, "policy-domain": domain}
        if p.strings:
            policy["policy-string"] = list(p.strings)
        if p.mx_hosts:
            policy["mx-host"] = list(p.mx_hosts)
        import uuid

        return {
            "organization-name": self.organization,
            "date-range": {"start-datetime": _iso(start), "end-datetime": _iso(end)},
            "contact-info": f"postmaster@{submitter}",
            "report-id": f"{end.strftime('%Y%m%d')}.{domain}.{uuid.uuid4().hex[:12]}@{submitter}",
            "policies": [
                {
                    "policy": policy,
                    "summary": {
                        "total-successful-session-count": self._ok.get(domain, 0),
                        "total-failure-session-count": sum(
                            n for k, n in self._failed.items() if k[0] == domain
                        ),
                    },
                    **({"failure-details": details} if details else {}),
                }
            ],
        }


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def report_mail(report: dict[str, Any], *, to: str, sender: str, domain: str, submitter: str) -> bytes:
    """The report as mail (RFC 8460 5.3): multipart/report, the JSON gzipped as an attachment."""
    import gzip
    import json
    from email.message import EmailMessage
    from email.utils import format_datetime, make_msgid

    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = f"Report Domain: {domain} Submitter: {submitter} Report-ID: <{report['report-id']}>"
    msg["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    msg["Message-ID"] = make_msgid(domain=submitter)
    msg["TLS-Report-Domain"] = domain
    msg["TLS-Report-Submitter"] = submitter
    msg.set_content(f"This is an aggregate TLS report from {submitter} for {domain}.\n")
    start = report["date-range"]["start-datetime"][:10].replace("-", "")
    end = report["date-range"]["end-datetime"][:10].replace("-", "")
    msg.add_attachment(
        gzip.compress(json.dumps(report).encode()),
        maintype="application",
        subtype="tlsrpt+gzip",
        filename=f"{submitter}!{domain}!{start}!{end}.json.gz",
    )
    msg.set_param("report-type", "tlsrpt")
    msg.set_type("multipart/report")
    return msg.as_bytes()


def _from_json(data: bytes, via: str, to: str, at: float | None) -> TlsReport | None:
    import gzip
    import json

    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            return None
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("policies"), list):
        return None
    found = doc.get("date-range")
    rng: dict[str, Any] = found if isinstance(found, dict) else {}
    return TlsReport(
        organization=str(doc.get("organization-name", "")),
        report_id=str(doc.get("report-id", "")),
        start=str(rng.get("start-datetime", "")),
        end=str(rng.get("end-datetime", "")),
        policies=tuple(p for p in doc["policies"] if isinstance(p, dict)),
        via=via,
        to=to,
        at=at,
    )


def read_report(data: bytes, *, via: str = "mail", to: str = "", at: float | None = None) -> TlsReport | None:
    """A report from a mail (any part of type application/tlsrpt+gzip or +json) or a posted body;
    None when ``data`` holds none."""
    if via != "mail":
        return _from_json(data, via, to, at)
    from email import message_from_bytes, policy

    msg = message_from_bytes(data, policy=policy.compat32)
    for part in msg.walk():
        if part.get_content_type() in (MEDIA_GZIP, MEDIA_JSON):
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return _from_json(payload, via, to, at)
    return None
