"""A one-line description of what each scenario does on the wire, and the README table.

The summary is computed from the scenario's target and world, so the table
cannot drift from the data: ``markdown_table(load_catalogue().values())``
regenerates the README's catalogue section.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from .catalogue import Scenario
from .spec import DnsFault, HostSpec, Reply, WorldSpec, normalize_name

_DNS_FAULTS: Final = {
    "nxdomain": "NXDOMAIN",
    "servfail": "SERVFAIL",
    "refused": "REFUSED",
    "drop": "no answer (query dropped)",
    "nodata": "NODATA (name exists, no record of that type)",
}
_TCP_FALLBACKS: Final = {
    "answer": "answered",
    "nxdomain": "gets NXDOMAIN",
    "servfail": "gets SERVFAIL",
    "refused": "gets REFUSED",
    "drop": "gets no answer",
    "reset": "is cut with a reset",
}
_KINDS: Final = {
    "refuse": "RST to the SYN (connection refused)",
    "blackhole": "SYN never answered (connect times out)",
    "silent": "accepts the connection, never sends a greeting",
}
_TLS: Final = {
    "none": "no STARTTLS in the EHLO reply",
    "starttls_refused": "STARTTLS refused",
    "starttls_broken": "STARTTLS handshake refused with a handshake_failure alert (no shared cipher)",
    "starttls_legacy": "STARTTLS server speaks only TLS 1.0/1.1 (protocol_version alert to newer clients)",
    "implicit": "implicit TLS",
    "implicit_broken": "implicit TLS refused with a handshake_failure alert",
}
_CERTS: Final = {
    "expired": "expired certificate",
    "not_yet_valid": "certificate not yet valid",
    "wrong_host": "certificate for another host name",
    "untrusted_ca": "certificate from a CA the client does not trust",
    "self_signed": "self-signed certificate",
    "missing_intermediate": "certificate chain without its intermediate CA",
}
_COMMANDS: Final = {"DATA_END": "final dot"}
_CLOSE_POINTS: Final = {
    "before_greeting": "closes before the greeting",
    "after_greeting": "closes after the greeting",
    "after_ehlo": "closes instead of answering EHLO",
    "after_starttls": "closes right after the TLS handshake",
    "after_mail": "closes instead of answering MAIL",
    "after_rcpt": "closes instead of answering RCPT",
    "in_data": "closes on the first bytes of message content",
    "after_final_dot": "keeps the message, closes before answering the final dot",
}


def _reply(r: Reply) -> str:
    text = f"`{r.line()}`"
    if r.close:
        text += f" then closes ({r.close.upper()})"
    return text


def _dns_fault(f: DnsFault) -> str:
    name = f.name + (" " + "/".join(sorted(f.types)) if f.types else "")
    if f.fault == "truncate":
        what = f"UDP answer truncated, TCP retry {_TCP_FALLBACKS[f.tcp]}"
    elif f.fault == "delay":
        what = f"answers after {f.delay_ms} ms"
    else:
        what = _DNS_FAULTS[f.fault]
    return f"DNS {name} → {what}"


def _host(h: HostSpec) -> list[str]:
    """How the host differs from a healthy SMTP server (empty when it does not)."""
    out: list[str] = []
    if h.kind in _KINDS:
        out.append(_KINDS[h.kind])
    elif h.kind == "close_on_accept":
        out.append(f"accepts, then closes at once ({h.close.upper()})")
    else:
        plan = h.smtp
        if plan.greeting is not None:
            out.append("greeting " + _reply(plan.greeting))
        if plan.tls in _TLS and not (plan.tls == "starttls_refused" and "STARTTLS" in plan.replies):
            out.append(_TLS[plan.tls])
        if plan.cert in _CERTS:
            out.append(_CERTS[plan.cert])
        out += [f"{_COMMANDS.get(cmd, cmd)} → {_reply(r)}" for cmd, r in plan.replies.items()]
        if plan.close_at is not None:
            ca = plan.close_at
            where = _CLOSE_POINTS[ca.point]
            if ca.point == "in_data" and ca.after_bytes:
                where = f"closes after {ca.after_bytes} bytes of content (or at a shorter message's dot)"
            out.append(f"{where} ({ca.how.upper()})")
        out += [f"{point} delayed {ms} ms" for point, ms in plan.delays_ms.items() if ms]
    if not h.a_record:
        out.append("no A record")
    if h.schedule is not None and out:
        out.append(f"for its first {h.schedule.fail_first} session(s) only")
    return out


def _has_address(world: WorldSpec, name: str) -> bool:
    if any(h.name == name and h.a_record for h in world.hosts):
        return True
    return any(r.name == name and r.type in ("A", "AAAA", "CNAME") for r in world.records)


def wire_summary(s: Scenario) -> str:
    """What the client meets, in one line: target, DNS faults, then each misbehaving host."""
    world, target = s.world, s.target
    parts: list[str] = []
    if target.smart_host is None:
        domain = normalize_name(target.mail_domain)
        mxs = sorted(
            (r for r in world.records if r.type == "MX" and r.name == domain), key=lambda r: r.priority
        )
        if not mxs:
            parts.append(f"no MX for {domain} (falls back to its address)")
        elif any(r.value == "." for r in mxs):
            parts.append(f"null MX for {domain}")
        else:
            hops = [
                f"{r.priority} {r.value}" + ("" if _has_address(world, r.value) else " (no address)")
                for r in mxs
            ]
            parts.append(f"MX of {domain}: " + ", ".join(hops))
    elif target.connect_by_ip:
        parts.append(f"connector set to the IP address of {target.smart_host}")
    else:
        parts.append(f"smart host {target.smart_host}")
    if not target.require_tls:
        parts.append("TLS optional")
    parts += [_dns_fault(f) for f in world.dns_faults]
    for h in world.hosts:
        desc = _host(h)
        if desc:
            parts.append(f"{h.name}: " + ", ".join(desc))
        elif s.is_success:
            parts.append(f"{h.name}: healthy, STARTTLS, accepts the message")
    return "; ".join(parts)


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(scenarios: Iterable[Scenario] | Mapping[str, Scenario]) -> str:
    """A Markdown table: id | code | title (en) | wire behaviour, one row per scenario."""
    items = scenarios.values() if isinstance(scenarios, Mapping) else scenarios
    lines = ["| id | code | title | wire behaviour |", "|---|---|---|---|"]
    for s in items:
        code = s.code if s.server_code is None else f"{s.code} ({s.server_code})"
        lines.append(f"| `{s.id}` | {code} | {_cell(s.title['en'])} | {_cell(wire_summary(s))} |")
    return "\n".join(lines) + "\n"


START_MARK: Final = "<!-- catalogue:start -->"
END_MARK: Final = "<!-- catalogue:end -->"


def with_table(readme: str, table: str) -> str:
    """``readme`` with the text between the catalogue markers replaced by ``table``."""
    head, start, rest = readme.partition(START_MARK)
    _, end, tail = rest.partition(END_MARK)
    if not start or not end:
        raise ValueError(f"the README has no {START_MARK} ... {END_MARK} section")
    return f"{head}{START_MARK}\n{table}{END_MARK}{tail}"


def main(argv: list[str] | None = None) -> None:
    """``python -m mailfakes.markdown [README.md ...]``: regenerate the catalogue table in place."""
    import sys
    from pathlib import Path

    from .catalogue import load_catalogue

    for name in (sys.argv[1:] if argv is None else argv) or ["README.md"]:
        path = Path(name)
        path.write_text(with_table(path.read_text(), markdown_table(load_catalogue())))


if __name__ == "__main__":
    main()
