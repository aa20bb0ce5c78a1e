"""A small delivery function, the way an application might write it.

It sends one message through a smart host with STARTTLS required and the
certificate checked. It lets smtplib, ssl, socket and dnspython errors
propagate: the caller (here, its tests) decides what they mean. The only
concession to testing is that the DNS server can be chosen.
"""

from __future__ import annotations

import ipaddress
import smtplib
import socket
import ssl
from email.message import EmailMessage

import dns.resolver


class _SMTP(smtplib.SMTP):
    """smtplib.SMTP that connects to a resolved address but keeps the host name for TLS."""

    def __init__(self, address: str, **kwargs: object) -> None:
        self._address = address
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((self._address, port), timeout)


def resolve(name: str, nameserver: tuple[str, int] | None, timeout: float) -> str:
    """The first IPv4 address of ``name`` (an IP literal is returned as is)."""
    try:
        ipaddress.ip_address(name)
        return name
    except ValueError:
        pass
    resolver = dns.resolver.Resolver(configure=nameserver is None)
    if nameserver is not None:
        resolver.nameservers = [nameserver[0]]
        resolver.port = nameserver[1]
    resolver.lifetime = timeout
    return str(resolver.resolve(name, "A")[0])


def deliver(
    message: EmailMessage,
    *,
    smart_host: str,
    port: int = 25,
    cafile: str | None = None,
    crlfile: str | None = None,
    nameserver: tuple[str, int] | None = None,
    timeout: float = 30.0,
) -> tuple[int, bytes]:
    """Send ``message`` through ``smart_host``; returns the server's final reply.

    ``crlfile``: a CRL (PEM) to check the server's certificate against, as a careful connector does.
    """
    address = resolve(smart_host, nameserver, timeout)
    context = ssl.create_default_context(cafile=cafile)
    if crlfile:
        context.load_verify_locations(cafile=crlfile)
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    with _SMTP(
        address, host=smart_host, port=port, timeout=timeout, local_hostname="app.fabrikam.test"
    ) as smtp:
        code, text = smtp.ehlo()
        if code != 250:
            # Left alone, smtplib retries with HELO and the server's 421 is
            # lost behind a "Connection unexpectedly closed".
            raise smtplib.SMTPHeloError(code, text)
        smtp.starttls(context=context)  # raises SMTPNotSupportedError when STARTTLS is not offered
        smtp.ehlo()
        code, text = smtp.mail(message["From"])
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, text, message["From"])
        for rcpt in message["To"].split(","):
            code, text = smtp.rcpt(rcpt.strip())
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({rcpt.strip(): (code, text)})
        code, text = smtp.data(message.as_bytes())
        if code != 250:
            raise smtplib.SMTPDataError(code, text)
        return code, text
