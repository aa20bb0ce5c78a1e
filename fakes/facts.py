"""What a client needs to reach a served scenario, computed once.

``serve --json``, the placeholders of ``check`` and the plugin's
``mail_scenario`` all describe the same thing: where the smart host is (by
name, or by address when the connector is set by IP), the ports, the DNS
server, the CA to trust and the envelope. :class:`ClientFacts` is that value;
each of them reads it rather than looking at the world on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .auth import account_of
from .values import frozen

if TYPE_CHECKING:
    from .catalogue import Scenario, Target
    from .faults import Auth
    from .spec import HostSpec
    from .world import World

PROFILES_SHOWN = ("eop", "eop-observed", "rfc3463", "postfix")


def account(target: Target, world: World) -> Auth | None:
    """The smart host's account (its ``auth`` key) when the client is given it, else None.

    None for MX delivery (no smart host), a smart host without ``auth``, or a target that says
    ``credentials = false`` (a client configured without an account).
    """
    if not target.credentials:
        return None
    return account_of(_smart_host_spec(target, world))


def _smart_host_spec(target: Target, world: World) -> HostSpec | None:
    """The smart host's spec in the world, or None (MX delivery, or a name the world does not serve)."""
    if not target.smart_host:
        return None
    return next((h for h in world.spec.hosts if h.name == target.smart_host), None)


def implicit_tls_of(target: Target, world: World) -> bool:
    """Whether the smart host speaks TLS from the first byte (``tls = "implicit"``, RFC 8314), so
    that a client must not wait for a greeting in clear nor use STARTTLS."""
    host = _smart_host_spec(target, world)
    return host is not None and host.smtp is not None and host.smtp.implicit_tls


def smart_host_address(target: Target, world: World) -> str | None:
    """The smart host's address when the connector names it by IP, else None (resolve by name)."""
    if target.smart_host and target.connect_by_ip:
        return world.address_of(target.smart_host)
    return None


@frozen  # not a dataclass: making one of 15 fields costs about 1 ms at import, on serve's path
class ClientFacts:
    """The facts of one served scenario, as a client is given them.

    Example::

        facts = ClientFacts.of(scenario, world)
        smtplib.SMTP(facts.ip, facts.port)
    """

    scenario: str
    code: str
    title: str
    smart_host: str | None  # a name, an address (connector set by IP), or None: MX lookup
    ip: str  # where the smart host (or, for an MX lookup, the first host) listens
    mail_domain: str
    port: int
    dns_host: str
    dns_port: int
    ca_file: str
    hosts: tuple[tuple[str, str], ...]
    require_tls: bool
    mail_from: str
    rcpt_to: tuple[str, ...]
    expected: tuple[tuple[str, str], ...]
    hour: float | None = None  # real seconds per world hour (None: a virtual clock)
    queue: tuple[tuple[str, str], ...] | None = None  # outcome and last error per profile, or None
    crl_file: str | None = None  # the CA's CRL (PEM), in a world with a revoked certificate
    crl_url: str | None = None  # the distribution point its certificates name
    trust_anchor_file: str | None = None  # DNSSEC: the DS and DNSKEY of the signed world's zone
    https_port: int | None = None  # where MTA-STS policy hosts (and HTTPS report receivers) listen
    http_port: int | None = None  # where the CRL distribution point listens
    # The smart host's account (RFC 4954), when the client is given one; None otherwise.
    auth_user: str | None = None
    auth_password: str | None = None
    auth_mechanisms: tuple[str, ...] = ()  # what the smart host offers (PLAIN, LOGIN)
    timeout: float | None = None  # the client's timeout the scenario declares ([target] timeout), or None
    implicit_tls: bool = False  # the smart host speaks TLS from the first byte (RFC 8314, port 465)

    @classmethod
    def of(cls, scenario: Scenario, world: World) -> ClientFacts:
        t = scenario.target
        by_ip = smart_host_address(t, world)
        smart_host = by_ip or t.smart_host
        if by_ip is not None:
            ip = by_ip
        elif t.smart_host and t.smart_host in world.hosts:
            ip = world.address_of(t.smart_host)
        else:
            ip = next(iter(world.hosts.values()), "")
        acct = account(t, world)
        return cls(
            scenario=scenario.id,
            code=scenario.expected_code,
            title=scenario.title["en"],
            smart_host=smart_host,
            ip=ip,
            mail_domain=t.mail_domain,
            port=world.port,
            dns_host=world.dns_host,
            dns_port=world.dns_port,
            ca_file=str(world.ca_file),
            hosts=tuple(world.hosts.items()),
            require_tls=t.require_tls,
            mail_from=t.mail_from,
            rcpt_to=tuple(t.rcpt_to),
            expected=tuple((p, scenario.code_for(p)) for p in PROFILES_SHOWN),
            hour=getattr(world.clock, "hour", None),
            queue=(
                (
                    ("outcome", scenario.queue.outcome),
                    *((f"last_error.{p}", scenario.last_error_for(p)) for p in PROFILES_SHOWN),
                )
                if scenario.queue is not None
                else None
            ),
            crl_file=str(world.crl_file) if world.crl_host is not None else None,
            crl_url=world.crl_url,
            trust_anchor_file=str(anchor) if (anchor := world.trust_anchor_file) is not None else None,
            https_port=world.https_port or None,
            http_port=world.http_port or None,
            auth_user=acct.user if acct is not None else None,
            auth_password=acct.password if acct is not None else None,
            auth_mechanisms=acct.mechanisms if acct is not None else (),
            timeout=t.timeout,
            implicit_tls=implicit_tls_of(t, world),
        )

    def as_json(self) -> dict[str, Any]:
        """The ``serve --json`` line (its keys are a public interface: do not rename them)."""
        return {
            "scenario": self.scenario,
            "code": self.code,
            "title": self.title,
            "smart_host": self.smart_host,
            "mail_domain": self.mail_domain,
            "port": self.port,
            "dns_host": self.dns_host,
            "dns_port": self.dns_port,
            "ca_file": self.ca_file,
            "hosts": dict(self.hosts),
            "require_tls": self.require_tls,
            "mail_from": self.mail_from,
            "rcpt_to": list(self.rcpt_to),
            "expected": dict(self.expected),
            "hour": self.hour,
            "queue": dict(self.queue) if self.queue is not None else None,
            "crl_file": self.crl_file,
            "crl_url": self.crl_url,
            "trust_anchor_file": self.trust_anchor_file,
            "https_port": self.https_port,
            "http_port": self.http_port,
            "auth_user": self.auth_user,
            "auth_password": self.auth_password,
            "timeout": self.timeout,
            "implicit_tls": self.implicit_tls,
        }

    def placeholders(self, timeout: float) -> dict[str, str]:
        """The values of ``check``'s ``{name}`` placeholders (and ``MAILFAKES_*`` variables).

        ``{timeout}`` is the scenario's own timeout when it declares one, else ``timeout``.
        """
        if self.timeout is not None:
            timeout = self.timeout
        return {
            "smart_host": self.smart_host or "",
            "mail_domain": self.mail_domain,
            "port": str(self.port),
            "ip": self.ip,
            "dns_host": self.dns_host,
            "dns_port": str(self.dns_port),
            "ca_file": self.ca_file,
            "mail_from": self.mail_from,
            "rcpt_to": self.rcpt_to[0] if self.rcpt_to else f"user@{self.mail_domain}",
            "timeout": f"{timeout:g}",
            "crl_file": self.crl_file or "",
            "trust_anchor_file": self.trust_anchor_file or "",
            "https_port": str(self.https_port or ""),
            "auth_user": self.auth_user or "",
            "auth_password": self.auth_password or "",
            "implicit_tls": "1" if self.implicit_tls else "0",
        }
