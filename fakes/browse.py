"""``mailfakes list``, ``show``, ``validate`` and ``faults``: reading the catalogue, serving nothing.

They import the catalogue only, never the servers, so that they start at
the cost of reading TOML files.
"""

from __future__ import annotations

import argparse
import json
import os
import textwrap
from typing import TYPE_CHECKING, TextIO

from .command import UsageError, get
from .spec import SpecError, WorldSpec, enhanced_ok

if TYPE_CHECKING:
    from .catalogue import Scenario


def _code_choices() -> list[str]:
    from . import catalogue as cat

    return sorted({s.code for s in cat.load_catalogue().values()})


def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    from . import catalogue as cat

    items = cat.headlines()
    if args.code:
        if args.code not in cat.CODES and not enhanced_ok(args.code):
            raise UsageError(
                f"unknown code {args.code!r}; expected one of "
                + ", ".join(cat.CODES)
                + " or an enhanced code"
            )
        items = [h for h in items if args.code in (h.code, h.expected_code)]
    if args.code and not items:
        raise UsageError(f"no scenario has code {args.code!r}; codes: {', '.join(_code_choices())}")
    if args.json:
        rows = [
            {
                "id": s.id,
                "code": s.expected_code,
                "class": s.code,
                "title": s.title[args.lang],
                "smart_host": s.smart_host,
                "mail_domain": s.mail_domain,
            }
            for s in items
        ]
        out.write(json.dumps(rows, ensure_ascii=False) + "\n")
        return 0
    width = max(len(s.id) for s in items)
    for s in items:
        out.write(f"{s.id:<{width}}  {s.expected_code:<8}  {s.title[args.lang]}\n")
    return 0


def describe_world(scenario: Scenario) -> list[str]:
    """Readable lines about a scenario's world: names, records, and each fault in the fault table's words."""
    from .faults import describe_dns_fault, describe_host

    world = scenario.world
    lines = [f"zone {world.zone}"]
    for h in world.hosts:
        what = describe_host(h)
        if not what:
            what = ["healthy SMTP server" + (", STARTTLS" if h.smtp.uses_tls else "")]
        lines.append(f"host {h.name}: " + "; ".join(what).replace("`", ""))
    for r in world.records:
        prio = f" {r.priority}" if r.type == "MX" else ""
        lines.append(f"record {r.name} {r.type}{prio} {r.value}")
    lines += [describe_dns_fault(f).replace("`", "") for f in world.dns_faults]
    lines += describe_tls_policy(world)
    return lines


_USAGES = {2: ("the CA that issued its certificate", "DANE-TA"), 3: ("its own certificate", "DANE-EE")}
_SELECTORS = {0: "whole certificate", 1: "public key"}
_MATCHING = {0: "in full", 1: "SHA-256", 2: "SHA-512"}


def describe_tls_policy(world: WorldSpec) -> list[str]:
    """The world's TLS policy in readable lines: DNSSEC, TLSA records, MTA-STS policies, TLS-RPT, CRL."""
    lines = []
    if world.dnssec is not None:
        subs = ", ".join(world.dnssec.zones)
        lines.append(
            f"DNSSEC: {world.zone} signed (ECDSA P-256), its DS and DNSKEY are the trust anchor"
            + (f"; signed sub-zones {subs}, each with a DS in {world.zone}" if subs else "")
        )
    for h in world.hosts:
        t = h.tlsa
        if t is None:
            continue
        what = (
            "a digest of a key nobody holds (matches nothing)"
            if not t.matches
            else (
                f"{_MATCHING[t.matching]} of the {_SELECTORS[t.selector]} of {_USAGES[t.usage][0]} "
                f"({_USAGES[t.usage][1]})"
            )
        )
        lines.append(f"TLSA _25._tcp.{h.name} {t.usage} {t.selector} {t.matching}: {what}, computed at start")
    for p in world.mta_sts:
        lines.append(f'MTA-STS {p.domain}: TXT _mta-sts.{p.domain} "{p.txt}"')
        where = f"https://{p.host}/.well-known/mta-sts.txt"
        if p.fault == "unreachable":
            lines.append(f"  policy {where}: the host refuses connections")
        elif p.fault == "missing":
            lines.append(f"  policy {where}: 404 Not Found")
        elif p.fault == "malformed":
            lines.append(f"  policy {where}: 200, but a text that is no policy")
        else:
            lines.append(f"  policy {where}: " + " | ".join(p.policy_text().split("\r\n")[:-1]))
        if p.cert != "valid":
            lines.append(f"  the policy host's certificate: {p.cert.replace('_', ' ')}")
    for r in world.tls_rpt:
        lines.append(f'TLS-RPT {r.domain}: TXT _smtp._tls.{r.domain} "{r.txt}"')
    if world.crl_host is not None:
        revoked = [h.name for h in world.hosts if h.kind == "smtp" and h.smtp.cert == "revoked"]
        lines.append(
            f"CRL http://{world.crl_host}/mailfakes.crl (and crl_file): the CA lists the serial of the "
            f"certificate of {', '.join(revoked) or 'the policy host'}"
        )
    return lines


def cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    s = get(args.id)
    lang = args.lang
    t = s.target
    head = f"{s.id}: {s.title[lang]}"
    w = out.write
    w(head + "\n" + "=" * len(head) + "\n\n")
    label = {
        "en": ("Cause", "Fix", "Expected codes", "World", "Target"),
        "fr": ("Cause", "Correction", "Codes attendus", "Monde", "Cible"),
    }[lang]
    if s.cause[lang] or s.fix[lang]:  # a user's own scenario may have no explanation
        w(f"{label[0]}:\n{_wrap(s.cause[lang])}\n\n{label[1]}:\n{_wrap(s.fix[lang])}\n\n")
    w(f"{label[2]}:\n")
    for profile in ("eop", "eop-observed", "rfc3463", "postfix"):
        w(f"  {profile:<13} {s.code_for(profile)}\n")
    w(f"\n{label[4]}:\n")
    w(
        f"  smart_host   {t.smart_host or '(none: MX lookup of ' + t.mail_domain + ')'}"
        f"{' (by IP)' if t.connect_by_ip else ''}\n"
    )
    w(f"  mail_domain  {t.mail_domain}\n  require_tls  {str(t.require_tls).lower()}\n")
    w(f"  mail_from    {t.mail_from}\n  rcpt_to      {', '.join(t.rcpt_to)}\n")
    if t.timeout is not None:
        w(f"  timeout      {t.timeout:g} s\n")
    w(f"\n{label[3]}:\n")
    for line in describe_world(s):
        w(f"  {line}\n")
    if s.tls_report is not None:
        r = s.tls_report
        w(f"\nTLS report (RFC 8460) to expect for {r.domain}: policy {r.policy}, ")
        w(f"result {r.result}\n" if r.result else "no failure\n")
    if s.sources:
        w("\nSources:\n" + "".join(f"  {src}\n" for src in s.sources))
    return 0


def _wrap(text: str) -> str:
    return textwrap.fill(" ".join(text.split()), width=78, initial_indent="  ", subsequent_indent="  ")


def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    from . import catalogue as cat

    known = cat.load_catalogue()
    bad = 0
    seen: dict[str, str] = {}
    for path in args.files:
        try:
            s = cat.load_file(path)
        except OSError as exc:
            out.write(f"FAIL {path}: cannot read it: {exc.strerror}\n")
            bad += 1
            continue
        except SpecError as exc:
            out.write(f"FAIL {exc}\n")
            bad += 1
            continue
        notes = []
        if s.id in seen:
            notes.append(f"same id as {seen[s.id]}")
            bad += 1
        seen[s.id] = path
        if s.id in known and os.path.abspath(known[s.id].path) != os.path.abspath(path):
            notes.append(f"note: the catalogue already has {s.id}; this file would be used instead of it")
        mark = "FAIL" if notes and notes[0].startswith("same id") else "ok  "
        out.write(
            f"{mark} {path}: {s.id} ({s.expected_code}, {s.title['en']})"
            + "".join(f"; {n}" for n in notes)
            + "\n"
        )
    out.write(f"{len(args.files) - bad} valid, {bad} invalid\n")
    return 1 if bad else 0


def cmd_faults(args: argparse.Namespace, out: TextIO) -> int:
    from . import faults

    keys = faults.TABLE
    if args.key:
        try:
            keys = (faults.key(args.key),)
        except KeyError:
            known = ", ".join(k.key for k in faults.TABLE)
            raise UsageError(f"no key {args.key!r} in the fault table; keys: {known}") from None
    if args.json:
        rows = [
            {
                "scope": k.scope,
                "key": k.key,
                "form": k.form,
                "doc": k.doc,
                "default": k.default,
                "values": [{"value": c.value, "effect": c.effect} for c in k.choices],
            }
            for k in keys
        ]
        out.write(json.dumps(rows) + "\n")
        return 0
    for k in keys:
        out.write(f"{k.key}  ({k.scope})\n  written: {k.form.replace('`', '')}\n")
        out.write(_wrap(k.doc.replace("`", "")) + "\n")
        for c in k.choices:
            default = " (default)" if c.value == k.default else ""
            out.write(f"    {c.value}{default}: {c.effect.replace('`', '')}\n")
        out.write("\n")
    if not args.key:
        out.write("Which fault wins:\n" + _wrap(faults.PRECEDENCE.replace("`", "")) + "\n")
    return 0
