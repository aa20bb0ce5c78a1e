"""A one-line description of what each scenario does on the wire, and the README's generated tables.

The summary is computed from the scenario's target and world, with the
fault table's descriptions (``faults.describe_host``), so the table cannot
drift from the data: ``python -m mailfakes.markdown README.md`` regenerates
the README's catalogue section and its fault table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

from .catalogue import Scenario
from .faults import README_SECTIONS, Tlsa, describe_dns_fault, describe_host, key
from .spec import WorldSpec, normalize_name


def _has_address(world: WorldSpec, name: str) -> bool:
    if any(h.name == name and h.a_record for h in world.hosts):
        return True
    return any(r.name == name and r.type in ("A", "AAAA", "CNAME") for r in world.records)


# The summary's own words; the demo passes its French ones (mailfakes.demo.SUMMARY).
SUMMARY_WORDS: Final[Mapping[str, str]] = {
    "no_mx": "no MX for {domain} (falls back to its address)",
    "null_mx": "null MX for {domain}",
    "mx": "MX of {domain}: {hops}",
    "no_address": " (no address)",
    "by_ip": "connector set to the IP address of {host}",
    "smart_host": "smart host {host}",
    "tls_optional": "TLS optional",
    "host": "{host}: {what}",
    "healthy": "healthy, STARTTLS, accepts the message",
    "dnssec": "DNSSEC-signed zones {zones}",
    "tlsa": "TLSA {fields} ({usage}), matching",
    "tlsa_wrong": "TLSA {fields} ({usage}), matching no key it holds",
    "dane_ee": "DANE-EE: its own certificate",
    "dane_ta": "DANE-TA: the CA that issued its certificate",
    "mta_sts": "MTA-STS policy of {domain}: {mode} mode, MX hosts {mx}",
    "sts_unreachable": "MTA-STS policy of {domain}: its host {host} refuses connections",
    "sts_missing": "MTA-STS policy of {domain}: {host} answers 404",
    "sts_malformed": "MTA-STS policy of {domain}: {host} serves a text that is no policy",
    "sts_cert": "policy host {host}: {what}",
    "tls_rpt": "TLS reports of {domain} to {rua}",
    "crl": "CRL {url} lists the certificate of {hosts}",
}


def wire_summary(
    s: Scenario, words: Mapping[str, str] = SUMMARY_WORDS, say: Callable[[str], str] | None = None
) -> str:
    """What the client meets, in one line: target, DNSSEC, DNS faults, each misbehaving host (and
    its TLSA record), then the TLS policy: MTA-STS, TLS-RPT, the CRL of a revoked certificate.

    ``words`` are the line's own words and ``say`` translates the fault table's phrases
    (the demo's French); by default both are English."""
    world, target = s.world, s.target
    tell = say or (lambda text: text)
    parts: list[str] = []
    if target.smart_host is None:
        domain = normalize_name(target.mail_domain)
        mxs = sorted(
            (r for r in world.records if r.type == "MX" and r.name == domain), key=lambda r: r.priority
        )
        if not mxs:
            parts.append(words["no_mx"].format(domain=domain))
        elif any(r.value == "." for r in mxs):
            parts.append(words["null_mx"].format(domain=domain))
        else:
            hops = [
                f"{r.priority} {r.value}" + ("" if _has_address(world, r.value) else words["no_address"])
                for r in mxs
            ]
            parts.append(words["mx"].format(domain=domain, hops=", ".join(hops)))
    elif target.connect_by_ip:
        parts.append(words["by_ip"].format(host=target.smart_host))
    else:
        parts.append(words["smart_host"].format(host=target.smart_host))
    if not target.require_tls:
        parts.append(words["tls_optional"])
    if world.dnssec is not None:
        parts.append(words["dnssec"].format(zones=", ".join((world.zone, *world.dnssec.zones))))
    parts += [tell(describe_dns_fault(f)) for f in world.dns_faults]
    for h in world.hosts:
        desc = [tell(d) for d in describe_host(h)]
        if h.tlsa is not None:
            desc.append(_tlsa(h.tlsa, words))
        if desc:
            parts.append(words["host"].format(host=h.name, what=", ".join(desc)))
        elif s.is_success:
            parts.append(words["host"].format(host=h.name, what=words["healthy"]))
    parts += _tls_policy(world, words, tell)
    return "; ".join(parts)


def _tlsa(t: Tlsa, words: Mapping[str, str]) -> str:
    usage = words["dane_ee"] if t.usage == 3 else words["dane_ta"]
    return words["tlsa" if t.matches else "tlsa_wrong"].format(
        fields=f"{t.usage} {t.selector} {t.matching}", usage=usage
    )


def _tls_policy(world: WorldSpec, words: Mapping[str, str], tell: Callable[[str], str]) -> list[str]:
    """The MTA-STS policies, TLS-RPT addresses and the CRL of a world, one part each."""
    parts = []
    for p in world.mta_sts:
        if p.fault is None:
            parts.append(words["mta_sts"].format(domain=p.domain, mode=p.mode, mx=" ".join(p.mx) or "-"))
        else:
            parts.append(words[f"sts_{p.fault}"].format(domain=p.domain, host=p.host))
        if p.cert != "valid":
            parts.append(words["sts_cert"].format(host=p.host, what=tell(key("cert").effect(p.cert))))
    for r in world.tls_rpt:
        parts.append(words["tls_rpt"].format(domain=r.domain, rua=", ".join(r.rua)))
    if world.crl_host is not None:
        from .certs import crl_url_for

        revoked = [h.name for h in world.hosts if h.kind == "smtp" and h.smtp.cert == "revoked"]
        revoked += [p.host for p in world.mta_sts if p.cert == "revoked"]
        parts.append(words["crl"].format(url=crl_url_for(world.zone), hosts=", ".join(revoked)))
    return parts


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


def with_table(readme: str, table: str, start_mark: str = START_MARK, end_mark: str = END_MARK) -> str:
    """``readme`` with the text between two markers (the catalogue's by default) replaced by ``table``."""
    head, start, rest = readme.partition(start_mark)
    _, end, tail = rest.partition(end_mark)
    if not start or not end:
        raise ValueError(f"the README has no {start_mark} ... {end_mark} section")
    return f"{head}{start_mark}\n{table}{end_mark}{tail}"


def regenerated(readme: str) -> str:
    """``readme`` with every generated section made anew: the catalogue and the fault table."""
    from .catalogue import load_catalogue

    text = with_table(readme, markdown_table(load_catalogue()))
    for start_mark, end_mark, make in README_SECTIONS:
        text = with_table(text, make(), start_mark, end_mark)
    return text


def main(argv: list[str] | None = None) -> None:
    """``python -m mailfakes.markdown [README.md ...]``: regenerate the catalogue table in place."""
    import sys
    from pathlib import Path

    for name in (sys.argv[1:] if argv is None else argv) or ["README.md"]:
        path = Path(name)
        path.write_text(regenerated(path.read_text()))


if __name__ == "__main__":
    main()
