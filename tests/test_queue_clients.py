"""Queues written here, on smtplib and on aiosmtplib, meet the queue scenarios on a scaled real clock.

Each client is what an application's mail queue does: resolve the smart host in the world's DNS,
connect, STARTTLS with the world's CA, send; a 4xx or a lost connection is retried after its own
backoff (a wait on an event that never fires: the client's timer, not a synchronisation), a 5xx
or the end of its lifetime ends the message, and then it mails a DSN it writes itself (with the
email package, not mailfakes) to the sender's domain. The world runs on a real clock whose hour
lasts a fraction of a second, so its schedules pass while the clients run, and what the fakes saw
is asserted: attempts, deliveries, the bounce as it arrived.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from email import policy
from email.message import EmailMessage

import pytest
from mailfakes import catalogue
from mailfakes.world import World

dns_resolver = pytest.importorskip("dns.resolver")
aiosmtplib = pytest.importorskip("aiosmtplib")

HOUR = 0.25  # real seconds per world hour: 2 world hours last half a second
SENDER, RCPT = "sender@fabrikam.test", "user@contoso.test"

Outcome = tuple[str, str]  # ("delivered" | "temporary" | "permanent", the reply or the error)


def resolve(world: World, name: str, rtype: str = "A") -> list[str]:
    r = dns_resolver.Resolver(configure=False)
    r.nameservers, r.port, r.lifetime = [world.dns_host], world.dns_port, 1.0
    answer = r.resolve(name, rtype)
    if rtype == "MX":
        return [str(rr.exchange).rstrip(".") for rr in sorted(answer, key=lambda rr: rr.preference)]
    return [rr.address for rr in answer]


def message() -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = SENDER, RCPT, "queued"
    m["Message-ID"] = f"<{time.monotonic_ns()}@fabrikam.test>"
    m.set_content("hello")
    return m.as_bytes(policy=policy.SMTP)  # CRLF line ends, as SMTP wants them


def context(world: World) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(world.ca_file))


def smtplib_attempt(world: World, host: str, data: bytes, sender: str, rcpt: str) -> Outcome:
    try:
        ip = resolve(world, host)[0]
    except Exception as exc:  # a lookup that fails is a temporary failure of this attempt
        return "temporary", f"DNS {type(exc).__name__}"
    try:
        with smtplib.SMTP(ip, world.port, timeout=2) as s:
            s._host = host  # SNI and the certificate's name: the host, not its address
            s.starttls(context=context(world))
            s.sendmail(sender, [rcpt], data)
        return "delivered", "250"
    except smtplib.SMTPResponseException as exc:
        return ("permanent" if exc.smtp_code >= 500 else "temporary"), f"{exc.smtp_code} {exc.smtp_error!r}"
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        return ("permanent" if code >= 500 else "temporary"), f"{code} {text.decode()}"
    except (OSError, smtplib.SMTPException) as exc:
        return "temporary", f"{type(exc).__name__}: {exc}"


def aiosmtplib_attempt(world: World, host: str, data: bytes, sender: str, rcpt: str) -> Outcome:
    try:
        ip = resolve(world, host)[0]
    except Exception as exc:
        return "temporary", f"DNS {type(exc).__name__}"

    async def go() -> Outcome:
        client = aiosmtplib.SMTP(hostname=ip, port=world.port, timeout=2, start_tls=False)
        try:
            await client.connect()
            await client.starttls(server_hostname=host, tls_context=context(world))
            errors, _ = await client.sendmail(sender, [rcpt], data)
            if errors:
                code, text = next(iter(errors.values()))
                return ("permanent" if code >= 500 else "temporary"), f"{code} {text}"
            return "delivered", "250"
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            return ("permanent" if refused.code >= 500 else "temporary"), f"{refused.code} {refused.message}"
        except aiosmtplib.SMTPResponseException as exc:
            return ("permanent" if exc.code >= 500 else "temporary"), f"{exc.code} {exc.message}"
        except (OSError, aiosmtplib.SMTPException) as exc:
            return "temporary", f"{type(exc).__name__}: {exc}"
        finally:
            client.close()

    return asyncio.run(go())


Attempt = Callable[[World, str, bytes, str, str], Outcome]


def dsn(last: str, status: str, original: bytes) -> bytes:
    """The client's own RFC 3464 report, written out by hand."""
    headers = original.split(b"\r\n\r\n", 1)[0].decode()
    text = "\r\n".join(
        [
            "From: MAILER-DAEMON@fabrikam.test",
            f"To: {SENDER}",
            "Subject: Undeliverable",
            "MIME-Version: 1.0",
            'Content-Type: multipart/report; report-type=delivery-status; boundary="report"',
            "",
            "--report",
            "Content-Type: text/plain",
            "",
            f"Your message could not be delivered: {last}",
            "--report",
            "Content-Type: message/delivery-status",
            "",
            "Reporting-MTA: dns; app.fabrikam.test",
            "",
            f"Final-Recipient: rfc822; {RCPT}",
            "Action: failed",
            f"Status: {status}",
            f"Diagnostic-Code: smtp; {last}",
            "",
            "--report",
            "Content-Type: text/rfc822-headers",
            "",
            headers,
            "--report--",
            "",
        ]
    )
    return text.encode()


def run_queue(world: World, attempt: Attempt, *, lifetime: float, backoff: float) -> list[Outcome]:
    """The client's queue, on its own real-time clock: try, back off, try again, give up; then the DSN."""
    data, seen = message(), []
    gives_up = time.monotonic() + lifetime
    timer = threading.Event()  # never set: the client's backoff timer
    while True:
        seen.append(attempt(world, "mail.contoso.test", data, SENDER, RCPT))
        kind, last = seen[-1]
        if kind == "delivered":
            return seen
        if kind == "permanent" or time.monotonic() + backoff > gives_up:
            break
        timer.wait(backoff)
    status = last.split()[1] if kind == "permanent" and len(last.split()) > 1 else "4.4.7"
    mx = resolve(world, "fabrikam.test", "MX")[0]
    assert attempt(world, mx, dsn(last, status.strip("b'"), data), "", SENDER)[0] == "delivered"
    return seen


CLIENTS = {"smtplib": smtplib_attempt, "aiosmtplib": aiosmtplib_attempt}


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_recovers_after_2h_is_delivered_once(client: str) -> None:
    s = catalogue.get("queue-recovers-after-2h")
    with World(s.world, hour=HOUR) as w:
        # 12 world hours to live, a try every 36 world minutes: the host listens again after 2.
        seen = run_queue(w, CLIENTS[client], lifetime=12 * HOUR, backoff=0.6 * HOUR)
        assert seen[0][0] == "temporary" and ("refused" in seen[0][1].lower() or "111" in seen[0][1])
        assert seen[-1][0] == "delivered"
        assert w.wait_until(lambda: all(t.closed for t in w.sessions), 5)
        assert len(w.deliveries) == 1 and w.bounces == [] and w.duplicates == {}
        assert len(w.attempts) == len(seen) >= 2
        assert [a.delivered for a in w.attempts] == [False] * (len(seen) - 1) + [True]


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_down_for_the_lifetime_expires_and_bounces(client: str) -> None:
    s = catalogue.get("queue-down-421")
    with World(s.world, hour=HOUR) as w:
        seen = run_queue(w, CLIENTS[client], lifetime=4 * HOUR, backoff=HOUR)
        assert len(seen) >= 2 and all(kind == "temporary" and "421" in last for kind, last in seen)
        assert w.wait_until(lambda: bool(w.bounces), 5)
        [b] = w.bounces
        assert (b.action, b.status, b.envelope_from, b.final_recipient) == ("failed", "4.4.7", "", RCPT)
        assert "421" in (b.diagnostic_code or "") and b.original_headers["Subject"] == "queued"
        assert w.deliveries == []
        assert len(w.attempts) == len(seen)
        assert all("421 4.3.2" in a.summary for a in w.attempts)


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_greylisting_is_delivered_on_the_retry(client: str) -> None:
    s = catalogue.get("queue-greylisted")
    with World(s.world, hour=HOUR) as w:
        # 5 world minutes of greylisting; the client comes back after 36.
        seen = run_queue(w, CLIENTS[client], lifetime=12 * HOUR, backoff=0.6 * HOUR)
        assert seen[0][0] == "temporary" and "450" in seen[0][1]
        assert [kind for kind, _ in seen[1:]] == ["delivered"]
        assert w.wait_until(lambda: all(t.closed for t in w.sessions), 5)
        assert len(w.deliveries) == 1 and w.bounces == []
        assert len(w.attempts) == 2 and w.attempts[1].at >= 300


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_a_permanent_error_bounces_at_once(client: str) -> None:
    s = catalogue.get("queue-permanent-550")
    with World(s.world, hour=HOUR) as w:
        seen = run_queue(w, CLIENTS[client], lifetime=12 * HOUR, backoff=0.6 * HOUR)
        assert [kind for kind, _ in seen] == ["permanent"]
        assert w.wait_until(lambda: bool(w.bounces), 5)
        [b] = w.bounces
        assert b.status == "5.1.1" and "550" in (b.diagnostic_code or "")
        assert len(w.attempts) == 1
