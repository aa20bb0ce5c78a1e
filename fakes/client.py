"""The reference delivery client: what an outbound connector does, step by step.

It resolves the smart host (or the MX hosts of the mail domain, in preference
order) through one DNS server, connects with a timeout, says EHLO, requires
STARTTLS by default, verifies the certificate against a CA file and the host
name, and sends one message. It falls back to the next MX host after a
connection failure, a 4xx greeting or a session lost before MAIL, as an MTA
does. The outcome is a :class:`DeliveryReport` whose line reads like an
Exchange Online trace::

    450 4.4.316 Connection refused [Message=...] [LastAttemptedServerName=mx1.contoso.test]
    [LastAttemptedIP=127.0.3.2:2525]
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTPUTF8
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any, Final

from .codes import CERT_MESSAGES, Failure, code_for, first_enhanced_code, title
from .resolver import Answer, StubResolver
from .tlsrpt import ReportBook

if TYPE_CHECKING:
    from .mtasts import Policy
    from .tlspolicy import SessionPolicy

DEFAULT_TIMEOUT = 2.0
EHLO_NAME = "mailfakes-client.test"

# ssl verify codes -> Failure.detail for certificates.
_VERIFY_DETAILS = {
    9: "not_yet_valid",
    10: "expired",
    18: "self_signed",
    23: "revoked",
    19: "self_signed",
    2: "chain",
    20: "untrusted",
    21: "untrusted",
    62: "hostname",
}

_CLASS_TEXT = {
    "dns": "DNS query failed",
    "timeout": "Connection timed out",
    "refused": "Connection refused",
    "cannot_connect": "Cannot connect to remote server",
    "server_reply": "Delivery not attempted",
    "closed": "Connection was closed abruptly",
    "certificate": "Certificate validation failed",
    "dane": "DANE validation failed",
    "mta_sts": "MTA-STS validation failed",
}


@dataclass
class Attempt:
    """One host tried: its name, address and how it went."""

    name: str
    ip: str | None
    failure: Failure | None = None


@dataclass
class DeliveryReport:
    """What the reference client concluded, and how it got there."""

    failure: Failure
    profile: str
    port: int
    server: str | None = None
    ip: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    dns: list[Answer] = field(default_factory=list)
    dialogue: list[str] = field(default_factory=list)
    reply: str = ""  # the server's last reply line, when there was one
    seconds: float = 0.0

    @property
    def code(self) -> str:
        """The reported code under the report's profile (``4.4.316``, ``5.1.1``, ``2.0.0``)."""
        return code_for(self.failure, self.profile)

    @property
    def delivered(self) -> bool:
        return self.failure.cls == "delivered"

    def line(self) -> str:
        """The report in the Exchange trace style."""
        code = self.code
        if self.failure.cls in ("delivered", "server_reply") and self.reply:
            head = (
                self.reply
                if first_enhanced_code(self.reply) == code
                else f"{self.reply[:3]} {code} {self.reply[4:]}"
            )
        else:
            basic = "550" if code.startswith("5.") else "450"
            text = (title(code) if self.profile.startswith("eop") else "") or _CLASS_TEXT.get(
                self.failure.cls, self.failure.cls
            )
            head = f"{basic} {code} {text}"
            if self.failure.message:
                head += f" [Message={self.failure.message}]"
        tags = ""
        if self.server:
            tags += f" [LastAttemptedServerName={self.server}]"
        if self.ip:
            where = f"[{self.ip}]" if ":" in self.ip else self.ip
            tags += f" [LastAttemptedIP={where}:{self.port}]"
        return head + tags

    __str__ = line

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "profile": self.profile,
            "class": self.failure.cls,
            "detail": self.failure.detail,
            "report": self.line(),
            "delivered": self.delivered,
            "server": self.server,
            "ip": self.ip,
            "port": self.port,
            "seconds": round(self.seconds, 4),
            "dialogue": list(self.dialogue),
        }


Observer = Callable[[str], None]


class _Dialogue(list[str]):
    """The client's side of the dialogue; each line also goes to an observer, live."""

    def __init__(self, observer: Observer | None = None) -> None:
        super().__init__()
        self.observer = observer

    def append(self, line: str) -> None:
        super().append(line)
        if self.observer is not None:
            self.observer(line)


class _Closed(Exception):
    def __init__(self, how: str) -> None:
        super().__init__(how)
        self.how = how


_TCP_CLOSE = 7  # tcpi_state after a reset (linux/tcp_states.h)


class _Session:
    """Line-level SMTP over a socket that may become TLS."""

    def __init__(self, sock: socket.socket, log: list[str]) -> None:
        self.sock: socket.socket = sock
        self.buf = b""
        self.log = log

    def _recv(self) -> bytes:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            raise _Closed("RST") from None
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            raise _Closed(self._how_it_ended()) from None
        if not data:
            raise _Closed(self._how_it_ended())
        return data

    def _how_it_ended(self) -> str:
        """FIN or RST, from the TCP state: under TLS, Python reads a reset as a bare EOF too."""
        try:
            state = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
        except (OSError, AttributeError):
            return "FIN"
        return "RST" if state == _TCP_CLOSE else "FIN"  # a FIN leaves CLOSE_WAIT

    def reply(self) -> tuple[int, list[str]]:
        lines: list[str] = []
        while True:
            while b"\n" not in self.buf:
                self.buf += self._recv()
                if len(self.buf) > 65536:
                    raise _Closed("garbage")
            raw, _, self.buf = self.buf.partition(b"\n")
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            self.log.append(f"S: {line}")
            lines.append(line)
            if line[3:4] != "-":
                try:
                    return int(line[:3]), lines
                except ValueError:
                    raise _Closed("garbage") from None

    def send(self, line: str, shown: str | None = None) -> None:
        self.log.append(f"C: {shown or line}")
        try:
            self.sock.sendall(line.encode() + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            raise _Closed("RST") from None
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            raise _Closed(self._how_it_ended()) from None

    def cmd(self, line: str) -> tuple[int, list[str]]:
        self.send(line)
        return self.reply()

    def cmd_masked(self, line: str, shown: str) -> tuple[int, list[str]]:
        """A command that carries a secret: the log shows ``shown`` instead."""
        self.send(line, shown)
        return self.reply()


def build_message(mail_from: str, rcpt_to: list[str] | tuple[str, ...]) -> bytes:
    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = ", ".join(rcpt_to)
    msg["Subject"] = "mailfakes delivery test"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="mailfakes.test")
    msg.set_content("This message was sent by the mailfakes reference client.\n" * 4)
    if not all(a.isascii() for a in (mail_from, *rcpt_to)):
        return msg.as_bytes(policy=SMTPUTF8)  # UTF-8 headers (RFC 6532), sent under SMTPUTF8
    return msg.as_bytes()


class DeliveryClient:
    """An outbound connector in a few hundred lines. See :func:`deliver`."""

    def __init__(
        self,
        *,
        dns_host: str,
        dns_port: int,
        port: int,
        ca_file: str | None = None,
        require_tls: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        dns_timeout: float | None = None,
        profile: str = "eop",
        observer: Observer | None = None,
        dane: bool = True,
        mta_sts: bool = True,
        check_revocation: bool | None = None,
        crl_file: str | None = None,
        https_port: int = 443,
        reports: ReportBook | None = None,
        auth_user: str | None = None,
        auth_password: str | None = None,
        implicit_tls: bool = False,
    ) -> None:
        self.observer = observer
        # RFC 8314: TLS from the first byte (submissions, port 465), instead of STARTTLS.
        self.implicit_tls = implicit_tls
        # The smart host's account (RFC 4954): used when both are given and the host offers AUTH.
        self.auth_user = auth_user
        self.auth_password = auth_password
        self.dane = dane
        self.mta_sts = mta_sts
        # A careful connector checks revocation, against the CRL it is given (crl_file).
        self.check_revocation = True if check_revocation is None else check_revocation
        self.crl_file = crl_file
        self.https_port = https_port
        self.reports = reports if reports is not None else ReportBook()
        self.sts_cache: dict[str, Policy] = {}
        self.resolver = StubResolver(dns_host, dns_port, timeout=dns_timeout or timeout)
        if observer is not None:
            self.resolver.observer = lambda answer: observer(f"DNS: {answer.describe()}" + _values(answer))
        self.port = port
        self.ca_file = ca_file
        self.require_tls = require_tls
        self.timeout = timeout
        self.profile = profile
        code_for(Failure("dns"), profile)  # reject an unknown profile now

    # -- resolution -----------------------------------------------------------

    def _dns_failure(self, answer: Answer, *, exchange: bool = False) -> Failure:
        rcode = answer.rcode
        if rcode == "NOERROR":
            detail = "no_address" if exchange else "nodata"
        elif rcode == "NXDOMAIN":
            detail = "no_address" if exchange else "nxdomain"
        elif rcode in ("TIMEOUT", "CLOSED"):
            detail = "timeout"
        elif rcode == "REFUSED":
            detail = "refused"
        else:
            detail = "servfail"
        return Failure("dns", detail, message=f"DNS {answer.describe()}")

    def _addresses(self, name: str, *, exchange: bool = False) -> list[str] | Failure:
        """The host's addresses, IPv6 first (RFC 6724's order for ::1; RFC 8305 starts with IPv6).

        Both A and AAAA are asked, and a family that answers is used even when the other fails
        (a SERVFAIL for AAAA, say), as Postfix's dns_lookup_rv merges what each type gave. With
        neither: a temporary error of either (SERVFAIL, timeout) is the failure, else the A one.
        """
        dnssec = exchange and self.dane
        a = self.resolver.query(name, "A", dnssec=dnssec)
        if a.rcode == "NXDOMAIN":  # the name does not exist: no AAAA either (RFC 8020)
            self.address_secure = a.ad
            return self._dns_failure(a, exchange=exchange)
        aaaa = self.resolver.query(name, "AAAA", dnssec=dnssec)
        found = [(answer, answer.values(answer.qtype)) for answer in (aaaa, a) if answer.ok]
        addresses = [ip for _, ips in found for ip in ips]
        if addresses:
            self.address_secure = all(answer.ad for answer, ips in found if ips)
            return addresses
        self.address_secure = a.ad
        soft = next((x for x in (a, aaaa) if x.rcode not in ("NOERROR", "NXDOMAIN")), a)
        return self._dns_failure(soft, exchange=exchange)

    # -- TLS policy (MX delivery): DANE, MTA-STS ------------------------------------

    def _sts_policy(self, domain: str, log: list[str]) -> Policy | None:
        """The domain's MTA-STS policy (RFC 8461 3), fetched or from the cache; None without one."""
        from . import mtasts

        answer = self.resolver.query(f"_mta-sts.{domain}", "TXT")
        policy_id = mtasts.policy_id(answer.values("TXT")) if answer.ok else None
        cached = self.sts_cache.get(domain)
        if policy_id is None:
            return cached
        if cached is not None and cached.policy_id == policy_id:
            return cached
        host = f"mta-sts.{domain}"
        found = self.resolver.query(host, "A")
        addresses = found.values("A") if found.ok else []
        if not addresses:
            result: mtasts.Policy | mtasts.FetchError = mtasts.FetchError(
                "sts-policy-fetch-error", f"{host}: no address ({found.describe()})"
            )
        else:
            result = mtasts.fetch(
                domain,
                addresses[0],
                port=self.https_port,
                ca_file=self.ca_file,
                timeout=self.timeout,
                policy_id_=policy_id,
            )
        if isinstance(result, mtasts.FetchError):
            log.append(f"*: MTA-STS: no policy for {domain}: {result.reason} ({result.result})")
            self.reports.policy(domain, "sts")
            self.reports.failure(domain, result.result, reason=result.reason)
            return cached  # RFC 8461 3.3: a cached policy still applies; else none
        log.append(
            f"*: MTA-STS: policy {policy_id} for {domain}: mode {result.mode}, mx {' '.join(result.mx)}"
        )
        self.sts_cache[domain] = result
        return result

    def _host_policy(
        self, name: str, domain: str, sts: Policy | None, log: list[str]
    ) -> SessionPolicy | Failure:
        """The TLS policy for MX host ``name`` of ``domain`` (see mailfakes.tlspolicy)."""
        from .dane import TlsaRecord
        from .tlspolicy import SessionPolicy

        if self.dane and self.mx_secure and self.address_secure:
            # MX delivery is SMTP on port 25, so _25._tcp whatever port a test world listens on
            # (the world publishes its own port's name too, for clients that use that one).
            answer = self.resolver.query(f"_25._tcp.{name}", "TLSA", dnssec=True)
            if answer.rcode not in ("NOERROR", "NXDOMAIN"):
                log.append(f"*: DANE: TLSA lookup error for {name}:25 ({answer.describe()})")
                self.reports.policy(domain, "tlsa", mx_host=name)
                self.reports.failure(domain, "dnssec-invalid", name, reason=answer.describe())
                return Failure(
                    "dane",
                    "dnssec-invalid",
                    message=f"dnssec-invalid: TLSA lookup error for {name}:25",
                )
            records = []
            for v in answer.values("TLSA"):
                with contextlib.suppress(ValueError):
                    records.append(TlsaRecord.parse(v))
            if answer.ad and records:
                log.append(
                    f"*: DANE: {len(records)} secure TLSA record(s) for {name}: TLS and a match required"
                )
                return SessionPolicy("dane", domain, tuple(records))
        if sts is not None and sts.mode in ("enforce", "testing"):
            kind = "sts-enforce" if sts.mode == "enforce" else "sts-testing"
            policy = SessionPolicy(kind, domain, sts=sts, failed=not sts.matches(name))  # type: ignore[arg-type]
            if policy.failed:
                log.append(f"*: MTA-STS: {name} is not an MX host the policy of {domain} names")
                self.reports.policy(domain, "sts", policy.strings, name)
                self.reports.failure(domain, "validation-failure", name, reason="mx-mismatch")
                if kind == "sts-enforce":
                    return Failure(
                        "mta_sts", "mx-mismatch", message=f"MX hosts of {domain} failed MTA-STS validation"
                    )
            return policy
        return SessionPolicy("verify" if self.require_tls else "may", domain)

    def hosts_for(self, smart_host: str | None, mail_domain: str) -> list[str] | Failure:
        """Names to try, in order: the smart host, or the MX hosts of the domain."""
        if smart_host:
            return [smart_host]
        answer = self.resolver.query(mail_domain, "MX", dnssec=self.dane)
        self.mx_secure = answer.ad
        if not answer.ok:
            return self._dns_failure(answer)
        mx = sorted((int(pref), host) for pref, host in (v.split(" ", 1) for v in answer.values("MX")))
        if not mx:
            return [mail_domain]  # no MX: the domain itself is the implicit MX (RFC 5321 5.1)
        if len(mx) == 1 and mx[0][1] in ("", "."):
            return Failure("dns", "null_mx", message=f"{mail_domain} publishes a null MX: it accepts no mail")
        return [host for _, host in mx]

    # -- delivery ---------------------------------------------------------------

    def deliver(
        self,
        *,
        smart_host: str | None,
        mail_domain: str,
        mail_from: str,
        rcpt_to: list[str] | tuple[str, ...],
        smart_host_ip: str | None = None,
        message: bytes | None = None,
    ) -> DeliveryReport:
        """Deliver one message; never raises for a delivery failure: the report says it."""
        if not rcpt_to:
            raise ValueError("deliver() needs at least one recipient (rcpt_to)")
        started = time.monotonic()
        self.mx_secure = self.address_secure = False
        report = DeliveryReport(Failure("dns"), self.profile, self.port, dialogue=_Dialogue(self.observer))
        data = message if message is not None else build_message(mail_from, list(rcpt_to))
        if smart_host_ip:  # the connector names an address: no DNS at all
            targets: list[tuple[str, str]] = [(smart_host or smart_host_ip, smart_host_ip)]
        else:
            names = self.hosts_for(smart_host, mail_domain)
            if isinstance(names, Failure):
                report.failure = names
                return self._done(report, started)
            targets = [(name, "") for name in names]
        last: Failure | None = None
        by_mx = not smart_host and not smart_host_ip
        sts = self._sts_policy(mail_domain, report.dialogue) if by_mx and self.mta_sts else None
        for name, ip_or_blank in targets:
            addresses: list[str] | Failure = (
                [ip_or_blank] if ip_or_blank else self._addresses(name, exchange=smart_host is None)
            )
            if isinstance(addresses, Failure):
                report.attempts.append(Attempt(name, None, addresses))
                report.server, report.ip = name, None
                last = addresses
                continue
            policy: SessionPolicy | Failure | None = (
                self._host_policy(name, mail_domain, sts, report.dialogue) if by_mx else None
            )
            if isinstance(policy, Failure):
                report.attempts.append(Attempt(name, None, policy))
                report.server, report.ip = name, None
                last = policy
                continue  # RFC 7672 2.2, RFC 8461 5: this host is not usable; the next may be
            for ip in addresses:
                report.server, report.ip = name, ip
                failure = self._session(name, ip, mail_from, list(rcpt_to), data, report, policy)
                report.attempts.append(Attempt(name, ip, failure))
                last = failure
                if not _try_next(failure):
                    report.failure = failure
                    return self._done(report, started)
        assert last is not None
        report.failure = last
        return self._done(report, started)

    def send_tls_reports(
        self,
        *,
        submitter: str = "mailfakes-client.test",
        hours: float = 24.0,
        start: Any = None,
        end: Any = None,
    ) -> list[str]:
        """Send each policy domain's TLS report (RFC 8460) to the addresses of its ``_smtp._tls`` TXT
        record: by mail through the address's MX (without DANE or MTA-STS, as RFC 8460 3 asks) or
        POSTed over HTTPS. Returns one line per report sent or not sent."""
        import datetime as dt
        import gzip
        import json

        from .tlsrpt import MEDIA_GZIP, report_mail

        # The period the report covers: the last ``hours``, or ``start``..``end`` (datetimes) when
        # given, as a queue run gives the span of world time its attempts took.
        end = end or dt.datetime.now(dt.UTC)
        start = start or end - dt.timedelta(hours=hours)
        out: list[str] = []
        for domain in self.reports.domains:
            answer = self.resolver.query(f"_smtp._tls.{domain}", "TXT")
            found = [t for t in answer.values("TXT") if t.startswith("v=TLSRPTv1")] if answer.ok else []
            if len(found) != 1:
                out.append(f"{domain}: no TLS-RPT record ({answer.describe()})")
                continue
            rua = [
                u.strip()
                for part in found[0].split(";")
                if part.strip().startswith("rua=")
                for u in part.strip()[4:].split(",")
            ]
            report = self.reports.report(domain, start, end, submitter=submitter)
            for uri in rua:
                if uri.startswith("mailto:"):
                    to = uri[len("mailto:") :]
                    sender = f"noreply-tlsrpt@{submitter}"
                    data = report_mail(report, to=to, sender=sender, domain=domain, submitter=submitter)
                    plain = DeliveryClient(
                        dns_host=self.resolver.server,
                        dns_port=self.resolver.port,
                        port=self.port,
                        ca_file=self.ca_file,
                        require_tls=False,
                        timeout=self.timeout,
                        profile=self.profile,
                        dane=False,
                        mta_sts=False,
                    )
                    plain.resolver.observer = self.resolver.observer  # the same guard on answers
                    sent = plain.deliver(
                        smart_host=None,
                        mail_domain=to.rpartition("@")[2],
                        mail_from=sender,
                        rcpt_to=[to],
                        message=data,
                    )
                    out.append(f"{domain}: report to {uri}: {sent.line()}")
                elif uri.startswith("https://"):
                    body = gzip.compress(json.dumps(report).encode())
                    out.append(f"{domain}: report to {uri}: {self._post(uri, body, MEDIA_GZIP)}")
        return out

    def _post(self, uri: str, body: bytes, media: str) -> str:
        host, _, path = uri[len("https://") :].partition("/")
        found = self.resolver.query(host, "A")
        addresses = found.values("A") if found.ok else []
        if not addresses:
            return f"no address for {host} ({found.describe()})"
        context = ssl.create_default_context(cafile=self.ca_file)
        head = (
            f"POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {media}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("ascii")
        try:
            with (
                socket.create_connection((addresses[0], self.https_port), timeout=self.timeout) as raw,
                context.wrap_socket(raw, server_hostname=host) as sock,
            ):
                sock.sendall(head + body)
                status = sock.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
        except (OSError, ssl.SSLError) as exc:
            return f"not posted: {exc}"
        return status or "no answer"

    def _done(self, report: DeliveryReport, started: float) -> DeliveryReport:
        report.dns = list(self.resolver.log)
        report.seconds = time.monotonic() - started
        return report

    def _connect(self, ip: str, log: list[str]) -> socket.socket | Failure:
        where = f"[{ip}]:{self.port}" if ":" in ip else f"{ip}:{self.port}"
        log.append(f"*: connecting to {where}")
        try:
            sock = socket.create_connection((ip, self.port), timeout=self.timeout)
        except ConnectionRefusedError:
            failure = Failure("refused", "refused", message=f"connection to {where} refused (RST)")
        except TimeoutError:
            failure = Failure("timeout", "connect", message=f"no answer from {where} in {self.timeout:g} s")
        except ConnectionResetError:
            failure = Failure(
                "closed", "before_greeting", message="connection reset before the greeting (RST)"
            )
        except OSError as exc:
            failure = Failure("refused", "unreachable", message=f"cannot reach {where}: {exc.strerror}")
        else:
            log.append("*: connected")
            return sock
        log.append(f"*: {failure.message}")
        return failure

    def _session(
        self,
        name: str,
        ip: str,
        mail_from: str,
        rcpt_to: list[str],
        data: bytes,
        report: DeliveryReport,
        policy: SessionPolicy | None = None,
    ) -> Failure:
        log = report.dialogue
        sock = self._connect(ip, log)
        if isinstance(sock, Failure):
            return sock
        s = _Session(sock, log)
        stage = "the greeting"
        try:
            if self.implicit_tls:
                # RFC 8314 3.3: the TLS handshake comes first, the greeting inside it.
                stage = "the TLS handshake"
                log.append("*: implicit TLS: the handshake before the greeting")
                failure = self._starttls(s, name, policy, ip)
                if failure is not None:
                    return failure
                stage = "the greeting"
            code, lines = s.reply()
            report.reply = lines[-1]
            if code == 421 or (400 <= code < 500):
                return Failure("cannot_connect", "greeting_421", first_enhanced_code(lines[-1]), lines[-1])
            if code != 220:
                return _server_reply(lines[-1])
            stage = "EHLO"
            code, lines = s.cmd(f"EHLO {EHLO_NAME}")
            report.reply = lines[-1]
            if code == 421:
                return Failure("cannot_connect", "ehlo_421", first_enhanced_code(lines[-1]), lines[-1])
            if code in (500, 502):
                # RFC 5321 4.1.4: a server that does not know EHLO takes HELO, without extensions
                # (so without STARTTLS: a connector that requires TLS gives up below).
                log.append(f"*: EHLO refused with {code}: falling back to HELO")
                stage = "HELO"
                code, lines = s.cmd(f"HELO {EHLO_NAME}")
                report.reply = lines[-1]
                if code == 421:
                    return Failure("cannot_connect", "ehlo_421", first_enhanced_code(lines[-1]), lines[-1])
                lines = lines[:1]  # a HELO reply offers nothing
            if code != 250:
                return _server_reply(lines[-1])
            offered = _extensions(lines)
            required = self.require_tls if policy is None else policy.requires_tls
            ehlo = lines  # the last EHLO reply (its AUTH line names the mechanisms)
            if self.implicit_tls:
                pass  # the session is inside TLS from its first byte
            elif any(line[4:].upper().startswith("STARTTLS") for line in lines):
                stage = "STARTTLS"
                code, lines = s.cmd("STARTTLS")
                report.reply = lines[-1]
                if code != 220:
                    if required:
                        return self._no_tls(policy, name, ip, lines[-1]) or Failure(
                            "cannot_connect", "starttls_refused", first_enhanced_code(lines[-1]), lines[-1]
                        )
                    self._note_no_tls(policy, name, ip, log)
                else:
                    stage = "the TLS handshake"
                    failure = self._starttls(s, name, policy, ip)
                    if failure is not None:
                        return failure
                    stage = "EHLO after STARTTLS"
                    code, lines = s.cmd(f"EHLO {EHLO_NAME}")
                    report.reply = lines[-1]
                    if code != 250:
                        return _server_reply(lines[-1])
                    offered = _extensions(lines)
                    ehlo = lines
            elif required:
                log.append("*: STARTTLS is not in the EHLO reply, and TLS is required: giving up")
                return self._no_tls(policy, name, ip, "") or Failure(
                    "cannot_connect",
                    "no_starttls",
                    message="TLS is required but the server did not offer STARTTLS",
                )
            else:
                self._note_no_tls(policy, name, ip, log)
            if self.auth_user is not None and self.auth_password is not None:
                if not isinstance(s.sock, ssl.SSLSocket):
                    # PLAIN and LOGIN send the password as it is: never outside TLS (RFC 4954 4,
                    # Postfix's default noplaintext). The server's refusal of MAIL says the rest.
                    log.append("*: AUTH outside TLS would send the password in clear: going on without")
                else:
                    stage = "AUTH"
                    refused = self._authenticate(s, ehlo, report)
                    if refused is not None:
                        return refused
            body = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            body = b"\r\n".join(b"." + ln if ln.startswith(b".") else ln for ln in body.split(b"\r\n"))
            if not body.endswith(b"\r\n"):
                body += b"\r\n"
            utf8 = "" if all(a.isascii() for a in (mail_from, *rcpt_to)) else " SMTPUTF8"
            if utf8 and "SMTPUTF8" not in offered:
                # RFC 6531 3.2: a UTF-8 address needs SMTPUTF8; without it the client gives up
                # before MAIL (Postfix: 5.6.7 "SMTPUTF8 is required, but was not offered").
                log.append("*: an address needs SMTPUTF8, which the server did not offer: giving up")
                report.reply = ""  # no server reply refused it: the client did
                why = "SMTPUTF8 is required, but was not offered by host"
                return Failure("server_reply", "no_smtputf8", "5.6.7", why)
            pending = list(rcpt_to)
            while pending:
                stage = "MAIL"
                code, lines = s.cmd(f"MAIL FROM:<{mail_from}>{utf8}")
                report.reply = lines[-1]
                if code >= 400:
                    return _server_reply(lines[-1])
                accepted: list[str] = []
                later: list[str] = []
                for rcpt in pending:
                    stage = "RCPT"
                    code, lines = s.cmd(f"RCPT TO:<{rcpt}>")
                    report.reply = lines[-1]
                    if code < 400:
                        accepted.append(rcpt)
                    elif code == 452 and accepted:
                        # RFC 5321 4.5.3.1.10: too many recipients for this transaction; the
                        # accepted ones go now, the others in the next transaction.
                        later.append(rcpt)
                    else:
                        return _server_reply(lines[-1])
                if later:
                    log.append(
                        f"*: {len(later)} recipient(s) refused with 452 after {len(accepted)} accepted: "
                        "they go in another transaction"
                    )
                stage = "DATA"
                code, lines = s.cmd("DATA")
                report.reply = lines[-1]
                if code >= 400:
                    return _server_reply(lines[-1])
                stage = "the message content"
                log.append(f"C: <message content, {len(body)} bytes>")
                try:
                    s.sock.sendall(body + b".\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    raise _Closed("RST") from None
                stage = "the final dot"
                code, lines = s.reply()
                report.reply = lines[-1]
                if code >= 400:
                    return _server_reply(lines[-1])
                pending = later
            with contextlib.suppress(_Closed, OSError):
                s.cmd("QUIT")
            return Failure("delivered", "", first_enhanced_code(lines[-1]) or "2.0.0", lines[-1])
        except _Closed as closed:
            log.append(f"*: the server closed the connection ({closed.how}) during {stage}")
            return Failure("closed", stage, message=f"connection closed ({closed.how}) during {stage}")
        except TimeoutError:
            log.append(f"*: no reply to {stage} in {self.timeout:g} s")
            return Failure("timeout", "reply", message=f"no reply to {stage} in {self.timeout:g} s")
        except OSError as exc:
            log.append(f"*: connection lost during {stage}: {exc}")
            return Failure("closed", stage, message=f"connection lost during {stage}: {exc}")
        finally:
            s.sock.close()

    def _authenticate(self, s: _Session, offered: list[str], report: DeliveryReport) -> Failure | None:
        """AUTH with the account (RFC 4954), when the EHLO reply offers it: PLAIN with an initial
        response (RFC 4616), else LOGIN. Not offered: the session goes on without it, as Postfix's
        smtp client does (a server that needs it then refuses MAIL). A refusal is the server's own
        reply (535 5.7.8, 454 4.7.0, ...). The dialogue shows no credential, not even in base64."""
        user, password = self.auth_user or "", self.auth_password or ""
        mechanisms = _auth_mechanisms(offered)
        if mechanisms is None:
            s.log.append("*: AUTH is not in the EHLO reply: going on without authentication")
            return None
        if "PLAIN" in mechanisms:
            token = _b64(f"\0{user}\0{password}")
            code, lines = s.cmd_masked(f"AUTH PLAIN {token}", "AUTH PLAIN <credentials, masked>")
        elif "LOGIN" in mechanisms:
            code, lines = s.cmd("AUTH LOGIN")
            for value, what in ((user, "user name"), (password, "password")):
                if code != 334:
                    break
                code, lines = s.cmd_masked(_b64(value), f"<{what}, masked>")
        else:
            s.log.append(
                f"*: no mechanism in common (offered: {' '.join(mechanisms)}): going on without AUTH"
            )
            return None
        if code == 334:  # a challenge more than the mechanism has: cancel the exchange (RFC 4954 4)
            code, lines = s.cmd("*")
        report.reply = lines[-1]
        if 200 <= code < 300:
            s.log.append(f"*: authenticated as {user}")
            return None
        refused = _server_reply(lines[-1])
        return Failure("server_reply", "auth", refused.server_code, refused.message)

    def _no_tls(self, policy: SessionPolicy | None, name: str, ip: str, reply: str) -> Failure | None:
        """The failure a DANE or MTA-STS (enforce) host without STARTTLS is (None under other policies)."""
        if policy is None or policy.kind not in ("dane", "sts-enforce"):
            return None
        self.reports.policy(policy.domain, policy.report_type, policy.strings, name)
        self.reports.failure(policy.domain, "starttls-not-supported", name, ip)
        if policy.kind == "dane":
            return Failure(
                "dane",
                "starttls-not-supported",
                first_enhanced_code(reply) if reply else None,
                "starttls-not-supported: the host has TLSA records but no STARTTLS",
            )
        return Failure(
            "mta_sts",
            "starttls-not-supported",
            message=f"the MTA-STS policy of {policy.domain} requires STARTTLS, which {name} does not offer",
        )

    def _note_no_tls(self, policy: SessionPolicy | None, name: str, ip: str, log: list[str]) -> None:
        if policy is not None and policy.kind == "sts-testing":
            log.append("*: MTA-STS (testing): no STARTTLS; reported, delivered without TLS")
            self.reports.policy(policy.domain, "sts", policy.strings, name)
            if not policy.failed:  # one session, one failure: an MX not named is reported already
                self.reports.failure(policy.domain, "starttls-not-supported", name, ip)

    def _context(self, policy: SessionPolicy | None) -> ssl.SSLContext:
        if policy is not None and policy.kind in ("dane", "sts-testing", "may"):
            # DANE authenticates against TLSA records, testing only reports, may takes any certificate:
            # the chain is checked after the handshake, not by it.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        context = ssl.create_default_context(cafile=self.ca_file)
        if (policy is None or policy.kind == "verify") and self.check_revocation and self.crl_file:
            context.load_verify_locations(cafile=self.crl_file)
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        return context

    def _starttls(
        self, s: _Session, name: str, policy: SessionPolicy | None = None, ip: str = ""
    ) -> Failure | None:
        context = self._context(policy)
        try:
            s.sock = context.wrap_socket(s.sock, server_hostname=name)
        except ssl.SSLCertVerificationError as exc:
            detail = _VERIFY_DETAILS.get(exc.verify_code, "unknown")
            s.log.append(f"*: certificate rejected: {exc.verify_message} ({exc.verify_code})")
            if policy is not None and policy.kind == "sts-enforce":
                result = _STS_RESULTS.get(exc.verify_code, "certificate-not-trusted")
                self.reports.policy(policy.domain, "sts", policy.strings, name)
                self.reports.failure(policy.domain, result, name, ip, reason=exc.verify_message)
                return Failure(
                    "mta_sts",
                    result,
                    message=f"Remote certificate failed MTA-STS validation. Reason: {exc.verify_message}",
                )
            return Failure(
                "certificate", detail, message=CERT_MESSAGES.get(detail, "CertificateValidationFailure")
            )
        except (ssl.SSLError, ConnectionResetError, EOFError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            s.log.append(f"*: TLS handshake failed: {reason}")
            return Failure("cannot_connect", "tls_handshake", message=f"TLS handshake failed: {reason}")
        assert isinstance(s.sock, ssl.SSLSocket)
        s.buf = b""
        if policy is None or policy.kind in ("verify", "sts-enforce"):
            s.log.append(f"*: TLS {s.sock.version()} established, certificate verified for {name}")
            if policy is not None and policy.reported:
                self.reports.policy(policy.domain, "sts", policy.strings, name)
                self.reports.success(policy.domain)
            return None
        chain = _peer_chain(s.sock)
        if policy.kind == "may":
            s.log.append(f"*: TLS {s.sock.version()} established (opportunistic: certificate not checked)")
            return None
        if policy.kind == "sts-testing":
            from .tlspolicy import pkix_problem

            self.reports.policy(policy.domain, "sts", policy.strings, name)
            problem = pkix_problem(chain, name, self.ca_file)
            if problem is None:
                s.log.append(
                    f"*: TLS {s.sock.version()} established, certificate valid for {name} (MTA-STS testing)"
                )
                if not policy.failed:
                    self.reports.success(policy.domain)
            else:
                s.log.append(f"*: MTA-STS (testing): {problem}; reported, delivered anyway")
                if not policy.failed:
                    self.reports.failure(policy.domain, problem, name, ip)
            return None
        from .dane import authenticate

        self.reports.policy(policy.domain, "tlsa", policy.strings, name)
        result = authenticate(list(policy.tlsa), chain, name)
        if result in ("ok", "unusable"):
            how = "authenticated by TLSA" if result == "ok" else "TLSA records unusable: encrypted only"
            s.log.append(f"*: TLS {s.sock.version()} established, DANE: {how} for {name}")
            self.reports.success(policy.domain)
            return None
        s.log.append(f"*: DANE: the certificate of {name} fails: {result}")
        self.reports.failure(policy.domain, result, name, ip)
        with contextlib.suppress(OSError, ssl.SSLError):
            s.sock.close()
        return Failure("dane", result, message=f"{result}: {_DANE_TEXT.get(result, result)}")


_STS_RESULTS: Final = {10: "certificate-expired", 9: "certificate-expired", 62: "certificate-host-mismatch"}
_DANE_TEXT: Final = {
    "tlsa-invalid": "the certificate matches no TLSA record of the host",
    "certificate-expired": "the certificate (DANE-TA) is outside its validity dates",
    "certificate-host-mismatch": "the certificate (DANE-TA) does not name the host",
}


def _peer_chain(sock: ssl.SSLSocket) -> list[bytes]:
    """The chain the server sent, leaf first, in DER (Python 3.13 has get_unverified_chain on SSLSocket;
    3.11 and 3.12 have it on the socket's SSL object)."""
    get = getattr(sock, "get_unverified_chain", None) or getattr(
        getattr(sock, "_sslobj", None), "get_unverified_chain", None
    )
    if get is not None:
        chain = get() or []
        return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]
    leaf = sock.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _values(answer: Answer) -> str:
    shown = [v for t, v in answer.records if t in (answer.qtype, "CNAME")]
    return f" -> {', '.join(shown)}" if shown else ""


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode("ascii")


def _auth_mechanisms(lines: list[str]) -> list[str] | None:
    """The SASL mechanisms an EHLO reply offers (``250-AUTH PLAIN LOGIN``), or None without AUTH."""
    for line in lines[1:]:
        words = line[4:].split()
        if words and words[0].upper() in ("AUTH", "AUTH=PLAIN", "AUTH=LOGIN"):
            if words[0].upper() == "AUTH":
                return [w.upper() for w in words[1:]]
            return [words[0][5:].upper(), *(w.upper() for w in words[1:])]
    return None


def _extensions(lines: list[str]) -> set[str]:
    """The extension keywords of an EHLO reply (its first line is the greeting)."""
    return {line[4:].split(" ", 1)[0].upper() for line in lines[1:] if line[4:]}


def _server_reply(line: str) -> Failure:
    code = first_enhanced_code(line)
    if code is None or code[0] != line[:1]:
        # RFC 3463 3.1: without an enhanced code (no ENHANCEDSTATUSCODES), x.0.0 from the first digit.
        code = f"{line[:1] if line[:1] in '245' else '4'}.0.0"
    if line.startswith("421"):
        # RFC 5321 3.8: a 421 closes the session whatever command it answers (as classify() says).
        return Failure("cannot_connect", "reply_421", code, line)
    return Failure("server_reply", "", code, line)


def _try_next(failure: Failure) -> bool:
    """Whether an MTA tries the next host after this failure."""
    if failure.cls in ("timeout", "refused"):
        return True
    if failure.cls == "cannot_connect" and failure.detail in ("greeting_421", "ehlo_421"):
        return True
    if failure.cls in ("dane", "mta_sts"):
        return True  # this host fails the domain's policy; another MX host may pass it
    return failure.cls == "closed" and failure.detail in ("the greeting", "before_greeting", "EHLO")


def deliver(
    *,
    dns_host: str,
    dns_port: int,
    port: int,
    mail_domain: str,
    smart_host: str | None = None,
    smart_host_ip: str | None = None,
    ca_file: str | None = None,
    require_tls: bool = True,
    mail_from: str = "sender@fabrikam.test",
    rcpt_to: list[str] | tuple[str, ...] = (),
    timeout: float = DEFAULT_TIMEOUT,
    dns_timeout: float | None = None,
    profile: str = "eop",
    message: bytes | None = None,
    observer: Observer | None = None,
    dane: bool = True,
    mta_sts: bool = True,
    check_revocation: bool | None = None,
    crl_file: str | None = None,
    https_port: int = 443,
    tls_reports: bool = False,
    reports: ReportBook | None = None,
    auth_user: str | None = None,
    auth_password: str | None = None,
    implicit_tls: bool = False,
) -> DeliveryReport:
    """Deliver one message like an outbound connector and report how it went.

    With ``auth_user`` and ``auth_password``, it authenticates to a host that offers AUTH (after
    STARTTLS and the second EHLO) before MAIL. With ``implicit_tls`` the session is inside TLS from
    its first byte (RFC 8314, port 465), and STARTTLS is not used.

    Example::

        report = deliver(dns_host=w.dns_host, dns_port=w.dns_port, port=w.port,
                         smart_host="mail.contoso.test", mail_domain="contoso.test",
                         ca_file=str(w.ca_file), rcpt_to=["user@contoso.test"])
        print(report)        # 450 4.7.320 Certificate validation failed [Message=CertificateExpired] ...
        report.code          # '4.7.320'
    """
    client = DeliveryClient(
        dns_host=dns_host,
        dns_port=dns_port,
        port=port,
        ca_file=ca_file,
        require_tls=require_tls,
        timeout=timeout,
        dns_timeout=dns_timeout,
        profile=profile,
        observer=observer,
        dane=dane,
        mta_sts=mta_sts,
        check_revocation=check_revocation,
        crl_file=crl_file,
        https_port=https_port,
        reports=reports,
        auth_user=auth_user,
        auth_password=auth_password,
        implicit_tls=implicit_tls,
    )
    report = client.deliver(
        smart_host=smart_host,
        mail_domain=mail_domain,
        mail_from=mail_from,
        rcpt_to=list(rcpt_to) or [f"user@{mail_domain}"],
        smart_host_ip=smart_host_ip,
        message=message,
    )
    if tls_reports and client.reports.domains:
        for line in client.send_tls_reports():
            report.dialogue.append(f"*: TLS-RPT: {line}")
    return report


def deliver_scenario(scenario: Any, world: Any, **options: Any) -> DeliveryReport:
    """Run the reference client against a served scenario (its target, its world)."""
    from .facts import account, implicit_tls_of, smart_host_address

    t = scenario.target
    ip = smart_host_address(t, world)
    acct = account(t, world)  # the smart host's account, when the target gives it to the client
    if acct is not None:
        options.setdefault("auth_user", acct.user)
        options.setdefault("auth_password", acct.password)
    options.setdefault("require_tls", t.require_tls)
    if implicit_tls_of(t, world):
        options.setdefault("implicit_tls", True)
    if t.timeout is not None:
        # A slow scenario's verdict depends on its client's timeout: it wins over the caller's
        # (check's --timeout, the demo's, a test's), as check's {timeout} does.
        options["timeout"] = t.timeout
    if world.crl_host is not None:
        options.setdefault("crl_file", str(world.crl_file))
    if world.https_port:
        options.setdefault("https_port", world.https_port)
    options.setdefault("tls_reports", any(r.domain == t.mail_domain for r in world.spec.tls_rpt))
    return deliver(
        dns_host=world.dns_host,
        dns_port=world.dns_port,
        port=world.port,
        mail_domain=t.mail_domain,
        smart_host=t.smart_host,
        smart_host_ip=ip,
        ca_file=str(world.ca_file),
        mail_from=t.mail_from,
        rcpt_to=t.rcpt_to,
        **options,
    )
