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
from .faults import README_SECTIONS, describe_dns_fault, describe_host
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
}


def wire_summary(
    s: Scenario, words: Mapping[str, str] = SUMMARY_WORDS, say: Callable[[str], str] | None = None
) -> str:
    """What the client meets, in one line: target, DNS faults, then each misbehaving host.

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
    parts += [tell(describe_dns_fault(f)) for f in world.dns_faults]
    for h in world.hosts:
        desc = [tell(d) for d in describe_host(h)]
        if desc:
            parts.append(words["host"].format(host=h.name, what=", ".join(desc)))
        elif s.is_success:
            parts.append(words["host"].format(host=h.name, what=words["healthy"]))
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
