"""``mailfakes demo``: play scenarios for a room, in English or French.

For each scenario: its title and cause, the dialogue live as the reference
client meets the fault (DNS, TCP, SMTP both ways, TLS and the certificate
presented, the point where it breaks), the code the client reports in the
Exchange trace style, and how to fix it. In a world with a TLS policy the
dialogue also tells what the world recorded: the DNSSEC outcome of each
answer, each TLSA record checked against the certificate presented, the
MTA-STS policy fetch as the policy host saw it, the TLS reports received. Colour in a terminal, plain text
elsewhere; ``render_html`` turns the same results into one self-contained
page to share after a session: a summary, then each scenario with its
dialogue also drawn as a sequence diagram (inline SVG).

Every word the demo writes itself is in the chosen language: the labels
(:data:`LABELS`), the client's and the servers' notes and the description of
the fakes (the :class:`Phrases` tables below). What comes from the wire
(SMTP lines, DNS names and answers, certificate subjects, TLS alert names,
OpenSSL's own messages) and the client's report line, in Exchange's trace
style, stay as they are.
"""

from __future__ import annotations

import html
import os
import queue
import re
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TextIO

from .client import DeliveryReport, deliver_scenario
from .codes import title as eop_title
from .faults import key
from .markdown import SUMMARY_WORDS
from .markdown import wire_summary as markdown_summary

if TYPE_CHECKING:
    from .catalogue import Scenario
    from .dns import DnsQuery
    from .events import Event
    from .faults import CertKind
    from .runtime import Runtime
    from .world import World

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "cause": "Cause",
        "fix": "How to fix it",
        "dialogue": "What happens",
        "reported": "The client reports",
        "expected": "expected",
        "ok": "as expected",
        "diff": "NOT the expected code",
        "press": "Press Enter for the next scenario",
        "tour": "mailfakes demo",
        "certificate": "certificate presented",
        "issuer": "issued by",
        "valid": "valid",
        "server": "server",
        "scenario": "scenario",
        "wire": "The fakes",
        "summary": "Summary",
        "date": "Date",
        "version": "mailfakes version",
        "played": "Scenarios played",
        "codes": "Codes",
        "n_ok": "as expected: {n}",
        "n_diff": "not as expected: {n}",
        "got": "reported {reported}, expected {expected}",
        "no_report": "no report (stopped)",
        "diagram": "Sequence diagram",
        "queue": "The queue",
        "queue_lines": "Each attempt",
        "outcome": "expected outcome",
        "diagram_title": "Sequence diagram of {id}: the client, the DNS server and the SMTP server",
        "client": "client",
        "dns": "DNS",
        "web": "HTTPS",
        "diagram_title_web": (
            "Sequence diagram of {id}: the client, the DNS server, the SMTP server and the policy host"
        ),
        "dnssec_line": "DNSSEC {status}: {why}",
        "dnssec_off": "DNSSEC: {why}",
        "then": "; ",
        "dnssec_insecure": "no chain of trust to it (no DS)",
        "dnssec_bogus": "signatures that do not verify",
        "dnssec_indeterminate": "nothing validated",
        "dnssec_unsigned": "zone not signed",
        "dnssec_bad_signature": "the RRSIG does not verify",
        "dnssec_expired_signature": "the RRSIG has expired",
        "dnssec_missing_ds": "the parent zone publishes no DS",
        "dnssec_no_ad": "valid, but the resolver does not set AD",
        "ad_set": "AD bit set",
        "ad_missing": "no AD bit",
        "tlsa_check": "TLSA {record} against {which} ({selected}, {digest} {value}): {verdict}",
        "tlsa_leaf": "the certificate presented",
        "tlsa_ca": "the CA that issued it",
        "selector_0": "whole certificate",
        "selector_1": "public key",
        "matching_0": "in full",
        "tlsa_match": "matches",
        "tlsa_no_match": "no match",
        "web_status": "answer {status} ({tls}, SNI {sni})",
        "web_served": "policy served: {text}",
        "web_problem": "policy host: {detail}",
        "web_nothing": "{host}: no request arrived",
        "report_got": (
            "TLS report received at {to} ({via}): policy {policy} of {domain}, {ok} successful and "
            "{failed} failed session(s){results}"
        ),
        "via_mail": "by mail",
        "via_https": "posted over HTTPS",
    },
    "fr": {
        "cause": "Cause",
        "fix": "Comment corriger",
        "dialogue": "Ce qui se passe",
        "reported": "Le client signale",
        "expected": "attendu",
        "ok": "conforme",
        "diff": "PAS le code attendu",
        "press": "Appuyez sur Entrée pour le scénario suivant",
        "tour": "démonstration mailfakes",
        "certificate": "certificat présenté",
        "issuer": "émis par",
        "valid": "valide",
        "server": "serveur",
        "scenario": "scénario",
        "wire": "Les faux serveurs",
        "summary": "Résumé",
        "date": "Date",
        "version": "version de mailfakes",
        "played": "Scénarios joués",
        "codes": "Codes",
        "n_ok": "conformes : {n}",
        "n_diff": "non conformes : {n}",
        "got": "signalé {reported}, attendu {expected}",
        "no_report": "pas de rapport (interrompu)",
        "diagram": "Diagramme de séquence",
        "queue": "La file d'attente",
        "queue_lines": "Chaque tentative",
        "outcome": "issue attendue",
        "diagram_title": "Diagramme de séquence de {id} : le client, le serveur DNS et le serveur SMTP",
        "client": "client",
        "dns": "DNS",
        "web": "HTTPS",
        "diagram_title_web": (
            "Diagramme de séquence de {id} : le client, le serveur DNS, le serveur SMTP et l'hôte de la "
            "politique"
        ),
        "dnssec_line": "DNSSEC {status} : {why}",
        "dnssec_off": "DNSSEC : {why}",
        "then": " ; ",
        "dnssec_insecure": "aucune chaîne de confiance jusqu'à elle (pas de DS)",
        "dnssec_bogus": "des signatures qui ne se vérifient pas",
        "dnssec_indeterminate": "rien de validé",
        "dnssec_unsigned": "zone non signée",
        "dnssec_bad_signature": "la signature RRSIG ne se vérifie pas",
        "dnssec_expired_signature": "la signature RRSIG a expiré",
        "dnssec_missing_ds": "la zone parente ne publie pas de DS",
        "dnssec_no_ad": "valide, mais le résolveur ne pose pas le bit AD",
        "ad_set": "bit AD présent",
        "ad_missing": "sans bit AD",
        "tlsa_check": "TLSA {record} comparé {which} ({selected}, {digest} {value}) : {verdict}",
        "tlsa_leaf": "au certificat présenté",
        "tlsa_ca": "à l'autorité qui l'a émis",
        "selector_0": "certificat entier",
        "selector_1": "clé publique",
        "matching_0": "en entier",
        "tlsa_match": "correspond",
        "tlsa_no_match": "ne correspond pas",
        "web_status": "réponse {status} ({tls}, SNI {sni})",
        "web_served": "politique servie : {text}",
        "web_problem": "hôte de la politique : {detail}",
        "web_nothing": "{host} : aucune requête reçue",
        "report_got": (
            "rapport TLS reçu à {to} ({via}) : politique {policy} de {domain}, {ok} session(s) réussie(s) et "
            "{failed} en échec{results}"
        ),
        "via_mail": "par courrier",
        "via_https": "envoyé en POST HTTPS",
    },
}

# -- the demo's own sentences, in French ---------------------------------------------

_SLOT = r"\{(\w+)\}"


class Phrases:
    """English sentences with ``{slots}``, each with its French and a tag saying what it is.

    A sentence matches a text whole; a slot's value is kept as it is (an
    address, a host name, a reply from the wire), looked up in a mapping, or
    translated by another :class:`Phrases`. The patterns are compiled at the
    first match, not at import.
    """

    def __init__(
        self,
        entries: Iterable[tuple[str, str, str]],
        slots: Mapping[str, Mapping[str, str] | Phrases] | None = None,
    ) -> None:
        self.entries = tuple(entries)  # (tag, English, French)
        self.slots = dict(slots or {})
        self._patterns: list[re.Pattern[str]] | None = None

    def _compiled(self) -> list[re.Pattern[str]]:
        if self._patterns is None:
            patterns = []
            for _, en, _ in self.entries:
                parts = re.split(_SLOT, en)
                regex = ""
                for i, part in enumerate(parts):
                    if i % 2 == 0:
                        regex += re.escape(part)
                        continue
                    slot = self.slots.get(part)
                    if isinstance(slot, Mapping):
                        choices = sorted(slot, key=len, reverse=True)
                        regex += f"(?P<{part}>{'|'.join(re.escape(c) for c in choices)})"
                    else:
                        regex += f"(?P<{part}>.*?)"
                patterns.append(re.compile(regex, re.S))
            self._patterns = patterns
        return self._patterns

    def match(self, text: str) -> tuple[str, str] | None:
        """``(tag, French)`` for ``text``, or None when it is none of the sentences."""
        for (tag, _, fr), pattern in zip(self.entries, self._compiled(), strict=True):
            m = pattern.fullmatch(text)
            if m is None:
                continue
            values: dict[str, str] = {}
            for name, value in m.groupdict().items():
                slot = self.slots.get(name)
                if isinstance(slot, Phrases):
                    found = slot.match(value)
                    if found is None:
                        break
                    value = found[1]
                elif slot is not None:
                    value = slot[value]
                values[name] = value
            else:
                return tag, fr.format_map(values)
        return None

    def tag(self, text: str) -> str:
        found = self.match(text)
        return found[0] if found else ""

    def values(self, text: str) -> dict[str, str]:
        """The slots' values in ``text`` as written (English), by the first sentence it is; {} if none."""
        for pattern in self._compiled():
            m = pattern.fullmatch(text)
            if m is not None:
                return {k: v for k, v in m.groupdict().items() if v is not None}
        return {}

    def say(self, text: str, lang: str) -> str:
        """``text`` in ``lang`` (as it is in English, or when it is none of the sentences)."""
        if lang == "en":
            return text
        found = self.match(text)
        return found[1] if found else text

    def english(self, seen: set[int] | None = None) -> list[str]:
        """The English words of every sentence and slot value (but for the values French keeps as
        they are, such as ``fin``): what a French text must not hold (tests read it)."""
        seen = set() if seen is None else seen
        if id(self) in seen:
            return []
        seen.add(id(self))
        out: list[str] = []
        for _, en, _ in self.entries:
            out += [p.strip() for p in re.split(_SLOT, en)[::2] if _is_words(p)]
        for slot in self.slots.values():
            if isinstance(slot, Phrases):
                out += slot.english(seen)
            else:
                out += [en for en, fr in slot.items() if _is_words(en) and en != fr]
        return out


def _is_words(text: str) -> bool:
    return re.search(r"[a-z]{3}", text) is not None


def _same(*words: str) -> dict[str, str]:
    return {w: w for w in words}


_HOW = _same("FIN", "RST")
_STAGES = {
    "the greeting": "l'accueil",
    "the TLS handshake": "la négociation TLS",
    "EHLO after STARTTLS": "EHLO après STARTTLS",
    "the message content": "l'envoi du message",
    "the final dot": "le point final",
    **_same("EHLO", "STARTTLS", "MAIL", "RCPT", "DATA"),
}
_STAGES_TO = {
    "the greeting": "à l'accueil",
    "the TLS handshake": "à la négociation TLS",
    "EHLO after STARTTLS": "à EHLO après STARTTLS",
    "the message content": "au contenu du message",
    "the final dot": "au point final",
    **{w: f"à {w}" for w in ("EHLO", "STARTTLS", "MAIL", "RCPT", "DATA")},
}

# OpenSSL's reasons for refusing a certificate (X509_V_ERR_*), glossed in French; its words stay.
_VERIFY = Phrases(
    [
        ("", "{message} (9)", "certificat pas encore valide (OpenSSL : {message}, 9)"),
        ("", "{message} (10)", "certificat expiré (OpenSSL : {message}, 10)"),
        ("", "{message} (18)", "certificat auto-signé (OpenSSL : {message}, 18)"),
        ("", "{message} (19)", "chaîne auto-signée (OpenSSL : {message}, 19)"),
        ("", "{message} (20)", "émetteur inconnu ou non reconnu (OpenSSL : {message}, 20)"),
        ("", "{message} (21)", "premier certificat invérifiable (OpenSSL : {message}, 21)"),
        ("", "{message} (23)", "certificat révoqué (OpenSSL : {message}, 23)"),
        ("", "{message} (62)", "le nom d'hôte ne correspond pas (OpenSSL : {message}, 62)"),
        ("", "{message}", "{message}"),
    ]
)
# Why the connector has no MTA-STS policy (mailfakes.mtasts's reasons; the rest as they came).
_STS_REASONS = Phrases(
    [
        (
            "",
            "{host}: certificate rejected: {message}",
            "{host} : certificat refusé : {message}",
        ),
        ("", "{host}: TLS handshake failed: {error}", "{host} : échec de la négociation TLS : {error}"),
        ("", "cannot connect to {host}: {error}", "connexion impossible à {host} : {error}"),
        ("", "{host}: no HTTP response", "{host} : aucune réponse HTTP"),
        ("", "{host}: HTTP {status}", "{host} : HTTP {status}"),
        (
            "",
            "{host}: a line that is not key: value: {line}",
            "{host} : une ligne qui n'a pas la forme « clé: valeur » : {line}",
        ),
        ("", "{host}: no 'version: STSv1' line", "{host} : pas de ligne « version: STSv1 »"),
        (
            "",
            "{host}: mode {mode} is not enforce, testing or none",
            "{host} : le mode {mode} n'est ni enforce, ni testing, ni none",
        ),
        (
            "",
            "{host}: max_age must be one number of seconds up to {most}",
            "{host} : max_age doit être un seul nombre de secondes, au plus {most}",
        ),
        ("", "{host}: mode {mode} without any mx line", "{host} : le mode {mode} sans aucune ligne mx"),
        ("", "{host}: no address ({answer})", "{host} : pas d'adresse ({answer})"),
        ("", "{reason}", "{reason}"),
    ]
)
# How a TLS report went (after "report to URI: "): a delivery's report line, an HTTP status, or why not.
_RPT_SENT = Phrases(
    [
        ("", "not posted: {error}", "non envoyé : {error}"),
        ("", "no address for {host} ({answer})", "pas d'adresse pour {host} ({answer})"),
        ("", "no answer", "aucune réponse"),
        ("", "{line}", "{line}"),
    ]
)
# The reference client's notes (its "*: " lines), tagged with what happened.
NOTES = Phrases(
    [
        ("connect", "connecting to {where}", "connexion à {where}"),
        ("connected", "connected", "connecté"),
        ("refused", "connection to {where} refused (RST)", "connexion à {where} refusée (RST)"),
        ("timeout", "no answer from {where} in {seconds} s", "aucune réponse de {where} en {seconds} s"),
        (
            "reset",
            "connection reset before the greeting (RST)",
            "connexion réinitialisée avant l'accueil (RST)",
        ),
        ("unreachable", "cannot reach {where}: {error}", "impossible de joindre {where} : {error}"),
        (
            "no-starttls",
            "STARTTLS is not in the EHLO reply, and TLS is required: giving up",
            "STARTTLS est absent de la réponse à EHLO, alors que TLS est exigé : abandon",
        ),
        (
            "closed",
            "the server closed the connection ({how}) during {stage}",
            "le serveur a fermé la connexion ({how}) pendant {stage}",
        ),
        ("no-reply", "no reply to {stage_to} in {seconds} s", "aucune réponse {stage_to} en {seconds} s"),
        (
            "lost",
            "connection lost during {stage}: {error}",
            "connexion perdue pendant {stage} : {error}",
        ),
        ("cert-rejected", "certificate rejected: {why}", "certificat refusé : {why}"),
        ("tls-failed", "TLS handshake failed: {reason}", "échec de la négociation TLS : {reason}"),
        (
            "tls-ok",
            "TLS {version} established, certificate verified for {name}",
            "TLS {version} établi, certificat vérifié pour {name}",
        ),
        (
            "tls-may",
            "TLS {version} established (opportunistic: certificate not checked)",
            "TLS {version} établi (opportuniste : certificat non vérifié)",
        ),
        # DANE (RFC 7672), MTA-STS (RFC 8461) and TLS-RPT (RFC 8460): the connector's TLS policy.
        (
            "dane-required",
            "DANE: {n} secure TLSA record(s) for {name}: TLS and a match required",
            "DANE : {n} enregistrement(s) TLSA sécurisé(s) pour {name} : TLS et une correspondance exigés",
        ),
        (
            "dane-lookup",
            "DANE: TLSA lookup error for {where} ({answer})",
            "DANE : erreur de recherche TLSA pour {where} ({answer})",
        ),
        (
            "dane-failed",
            "DANE: the certificate of {name} fails: {result}",
            "DANE : le certificat de {name} échoue : {result}",
        ),
        (
            "dane-ok",
            "TLS {version} established, DANE: authenticated by TLSA for {name}",
            "TLS {version} établi, DANE : authentifié par TLSA pour {name}",
        ),
        (
            "dane-unusable",
            "TLS {version} established, DANE: TLSA records unusable: encrypted only for {name}",
            "TLS {version} établi, DANE : enregistrements TLSA inutilisables, chiffrement seul pour {name}",
        ),
        (
            "sts-policy",
            "MTA-STS: policy {id} for {domain}: mode {mode}, mx {mx}",
            "MTA-STS : politique {id} pour {domain} en mode {mode}, hôtes MX {mx}",
        ),
        (
            "sts-none",
            "MTA-STS: no policy for {domain}: {reason} ({result})",
            "MTA-STS : pas de politique pour {domain} : {reason} ({result})",
        ),
        (
            "sts-mx-mismatch",
            "MTA-STS: {name} is not an MX host the policy of {domain} names",
            "MTA-STS : {name} n'est pas un hôte MX que nomme la politique de {domain}",
        ),
        (
            "sts-testing",
            "MTA-STS (testing): no STARTTLS; reported, delivered without TLS",
            "MTA-STS (mode testing) : pas de STARTTLS ; signalé, remis sans TLS",
        ),
        (
            "sts-testing",
            "MTA-STS (testing): {result}; reported, delivered anyway",
            "MTA-STS (mode testing) : {result} ; signalé, remis malgré tout",
        ),
        (
            "sts-testing-ok",
            "TLS {version} established, certificate valid for {name} (MTA-STS testing)",
            "TLS {version} établi, certificat valide pour {name} (MTA-STS en mode testing)",
        ),
        (
            "tlsrpt-none",
            "TLS-RPT: {domain}: no TLS-RPT record ({answer})",
            "TLS-RPT : {domain} : pas d'enregistrement TLS-RPT ({answer})",
        ),
        (
            "tlsrpt",
            "TLS-RPT: {domain}: report to {uri}: {sent}",
            "TLS-RPT : {domain} : rapport envoyé à {uri} : {sent}",
        ),
    ],
    {
        "how": _HOW,
        "stage": _STAGES,
        "stage_to": _STAGES_TO,
        "why": _VERIFY,
        "reason": _STS_REASONS,
        "result": _same(
            "sts-policy-fetch-error",
            "sts-policy-invalid",
            "sts-webpki-invalid",
            "certificate-expired",
            "certificate-host-mismatch",
            "certificate-not-trusted",
            "tlsa-invalid",
            "dnssec-invalid",
            "starttls-not-supported",
            "validation-failure",
        ),
        "sent": _RPT_SENT,
    },
)
# Where a note says the delivery broke.
BREAKS = frozenset(
    [
        "refused",
        "timeout",
        "reset",
        "unreachable",
        "no-starttls",
        "closed",
        "no-reply",
        "lost",
        "cert-rejected",
        "tls-failed",
        "dane-lookup",
        "dane-failed",
        "sts-mx-mismatch",
    ]
)

# What the client shows of the content it sends (a "C: " line it composes).
CONTENT = Phrases(
    [
        ("content", "<message content, {size} bytes>", "<contenu du message, {size} octets>"),
        ("credentials", "AUTH PLAIN <credentials, masked>", "AUTH PLAIN <identifiants masqués>"),
        ("credentials", "<user name, masked>", "<nom d'utilisateur masqué>"),
        ("credentials", "<password, masked>", "<mot de passe masqué>"),
    ],
)

# The resolver's account of an answer (after "DNS: ").
_DNS_RCODE = Phrases(
    [
        ("", "CLOSED", "connexion fermée (CLOSED)"),
        ("", "{rcode} (secure)", "{rcode} (sécurisée, AD)"),
        ("", "{rcode}", "{rcode}"),
    ]
)
_DNS_HOW = {
    "over TCP after a truncated UDP answer": "par TCP après une réponse UDP tronquée",
    "over UDP": "par UDP",
    "over TCP": "par TCP",
}
DNS_ANSWERS = Phrases(
    [
        (
            "nodata",
            "{query}: no record (NODATA) {how}{rest}",
            "{query} : aucun enregistrement (NODATA) {how}{rest}",
        ),
        (
            "timeout",
            "{query}: no answer (timeout) {how}{rest}",
            "{query} : aucune réponse (délai dépassé) {how}{rest}",
        ),
        ("answer", "{query}: {rcode} {how}{rest}", "{query} : {rcode} {how}{rest}"),
    ],
    {"rcode": _DNS_RCODE, "how": _DNS_HOW},
)
# The notes that quote an answer translate it as the DNS lines are.
for _table in (NOTES, _STS_REASONS, _RPT_SENT):
    _table.slots["answer"] = DNS_ANSWERS

# The fakes' own fault events, as the demo shows them.
_CUT_WHY = Phrases(
    [
        ("", "before the greeting", "avant l'accueil"),
        ("", "after the greeting", "après l'accueil"),
        ("", "right after the TLS handshake", "juste après la négociation TLS"),
        ("", "after {size} bytes of message content", "après {size} octets du contenu du message"),
        ("", "after the final dot, before the reply", "après le point final, avant la réponse"),
        ("", "after the reply", "après la réponse"),
        ("", "after {point}, before its reply", "après {point}, avant sa réponse"),
    ]
)
SERVER_FAULTS = Phrases(
    [
        ("cut", "cut ({how}) {why}", "coupure ({how}) {why}"),
        ("alert", "TLS alert {name} sent", "alerte TLS {name} envoyée"),
        (
            "stall",
            "stalled after {size} bytes of content",
            "blocage : cesse de lire après {size} octets du contenu, sans jamais répondre",
        ),
        ("rate", "message rate limit: {code}", "limite de débit de messages atteinte : {code}"),
        (
            "rate",
            "connection rate limit: connection refused",
            "limite de débit de connexions atteinte : connexion refusée",
        ),
        (
            "busy",
            "concurrency limit: connection refused",
            "limite de sessions simultanées : connexion refusée",
        ),
        (
            "out-of-step",
            "client sent {what} before the reply to its last command (PIPELINING is off)",
            "le client a envoyé {what} avant la réponse à sa commande précédente (PIPELINING absent)",
        ),
        (
            "dns-delay",
            "DNS answer to {query} ({rcode}) sent after {ms} ms",
            "réponse DNS à {query} ({rcode}) envoyée après {ms} ms",
        ),
    ],
    {"how": _same("fin", "rst"), "why": _CUT_WHY},
)

# The fault table's effects (faults.TABLE, in English), in French: (key, value) -> French.
EFFECTS_FR: dict[tuple[str, str], str] = {
    ("auth.fault", "not_offered"): (
        "pas d'AUTH dans la réponse à EHLO, et `503 5.5.1 Error: authentication not enabled` à un AUTH "
        "envoyé malgré tout (MAIL exige toujours l'authentification si `required`)"
    ),
    ("auth.fault", "bad_credentials"): (
        "`535 5.7.8 Authentication credentials invalid` quoi que le client envoie (le compte est "
        "verrouillé ou son mot de passe a été changé sur le serveur)"
    ),
    ("auth.fault", "temporary"): (
        "`454 4.7.0 Temporary authentication failure` (le serveur ne joint pas sa base de comptes)"
    ),
    ("extensions_off", "PIPELINING"): "pas de PIPELINING",
    ("extensions_off", "SIZE"): "pas de SIZE (un paramètre `SIZE=` de MAIL reçoit `555 5.5.4`)",
    ("extensions_off", "8BITMIME"): "pas de 8BITMIME (un paramètre `BODY=` de MAIL reçoit `555 5.5.4`)",
    ("extensions_off", "ENHANCEDSTATUSCODES"): (
        "pas d'ENHANCEDSTATUSCODES (les réponses ne portent alors aucun code étendu)"
    ),
    ("extensions_off", "SMTPUTF8"): (
        "pas de SMTPUTF8 (une adresse UTF-8 reçoit `553 5.6.7`, le paramètre `SMTPUTF8` `555 5.5.4` ; "
        "proposé, une adresse UTF-8 non déclarée reçoit `553 5.6.7`)"
    ),
    ("kind", "smtp"): "un serveur SMTP (aiosmtpd), sain sauf si ses clés SMTP disent autre chose",
    ("kind", "refuse"): "RST au SYN (connexion refusée)",
    ("kind", "blackhole"): "SYN jamais répondu (la connexion expire)",
    ("kind", "silent"): "accepte la connexion, n'envoie jamais d'accueil",
    ("kind", "close_on_accept"): "accepte, puis ferme aussitôt",
    ("tls", "starttls"): "STARTTLS proposé et fonctionnel",
    ("tls", "none"): (
        "pas de STARTTLS dans la réponse à EHLO (un STARTTLS envoyé malgré tout reçoit 502 5.5.1, "
        "comme de Postfix)"
    ),
    ("tls", "starttls_refused"): "STARTTLS refusé (454 4.7.0)",
    ("tls", "starttls_broken"): (
        "négociation STARTTLS refusée par une alerte handshake_failure, puis FIN (aucun chiffrement commun)"
    ),
    ("tls", "starttls_legacy"): (
        "le serveur STARTTLS ne parle que TLS 1.0/1.1 (alerte protocol_version pour un client TLS 1.2+ ; "
        "un client qui accepte encore TLS 1.1 obtient une session)"
    ),
    ("tls", "implicit"): "TLS implicite (TLS dès le premier octet, à la manière du port 465)",
    ("tls", "implicit_broken"): "TLS implicite refusé par une alerte handshake_failure",
    ("cert", "valid"): "un certificat pour l'hôte, émis par l'autorité reconnue",
    ("cert", "expired"): "certificat expiré, sa validité a pris fin hier",
    ("cert", "not_yet_valid"): "certificat pas encore valide, sa validité commence demain",
    ("cert", "wrong_host"): "certificat établi pour un autre nom d'hôte",
    ("cert", "untrusted_ca"): "certificat d'une seconde autorité, que le client ne reconnaît pas",
    ("cert", "self_signed"): "certificat auto-signé, aucune autorité ne s'en porte garante",
    (
        "cert",
        "missing_intermediate",
    ): "chaîne privée de son autorité intermédiaire, que le serveur n'envoie pas",
    ("cert", "revoked"): (
        "certificat révoqué par son autorité, valide à tous autres égards (son numéro de série figure "
        "sur la liste de révocation, la CRL, de l'autorité)"
    ),
    ("close_at", "before_greeting"): "ferme avant l'accueil",
    ("close_at", "after_greeting"): "ferme après l'accueil",
    ("close_at", "after_ehlo"): "ferme au lieu de répondre à EHLO (ou HELO)",
    ("close_at", "after_starttls"): "ferme juste après la négociation TLS",
    ("close_at", "after_mail"): "ferme au lieu de répondre à MAIL",
    ("close_at", "after_rcpt"): "ferme au lieu de répondre à RCPT",
    ("close_at", "in_data"): "ferme dès les premiers octets du contenu du message",
    ("close_at", "after_final_dot"): (
        "garde le message (`replied=False`), ferme avant de répondre au point final"
    ),
    ("dns_faults", "nxdomain"): "NXDOMAIN",
    ("dns_faults", "servfail"): "SERVFAIL",
    ("dns_faults", "refused"): "REFUSED",
    ("dns_faults", "drop"): "pas de réponse (requête ignorée)",
    ("dns_faults", "nodata"): "NODATA (le nom existe, sans enregistrement de ce type)",
    ("dns_faults", "truncate"): "réponse UDP tronquée (bit TC) ; la reprise sur TCP suit `tcp`",
    ("dns_faults", "delay"): "répondu après `delay_ms`",
    ("dns_faults", "bad_signature"): (
        "zone signée : la signature RRSIG ne se vérifie pas (bogus) : SERVFAIL du résolveur validant, "
        "les enregistrements avec leur RRSIG cassée à une requête qui pose CD"
    ),
    ("dns_faults", "expired_signature"): (
        "zone signée : la signature RRSIG a expiré hier (bogus) : SERVFAIL, les enregistrements à une "
        "requête qui pose CD"
    ),
    ("dns_faults", "missing_ds"): (
        "une sous-zone signée dont la zone parente ne publie pas le DS (absence prouvée) : ses réponses "
        "ne sont pas sécurisées (insecure), jamais AD"
    ),
    ("dns_faults", "no_ad"): (
        "zone signée : signatures valides, mais les réponses ne portent jamais le bit AD (un résolveur "
        "qui ne valide pas)"
    ),
    ("dns_faults.tcp", "answer"): "reçoit une réponse",
    ("dns_faults.tcp", "nxdomain"): "reçoit NXDOMAIN",
    ("dns_faults.tcp", "servfail"): "reçoit SERVFAIL",
    ("dns_faults.tcp", "refused"): "reçoit REFUSED",
    ("dns_faults.tcp", "drop"): "ne reçoit aucune réponse",
    (
        "dns_faults.tcp",
        "reset",
    ): "est coupée par une réinitialisation (un pare-feu qui rejette le DNS sur TCP)",
}


def _effects(*keys: str) -> list[tuple[str, str, str]]:
    """Sentences for the effects of these keys (``{`` and ``}`` of an effect are no slots)."""
    out = []
    for (k, value), fr in EFFECTS_FR.items():
        if k in keys:
            en = key(k).effect(value).replace("{", "{{").replace("}", "}}")
            out.append((f"{k}={value}", en, fr.replace("{", "{{").replace("}", "}}")))
    return out


_AFTER_MS = ("", "{effect} after {ms} ms", "{effect} après {ms} ms")
_COMMANDS = {"final dot": "point final", **_same("EHLO", "HELO", "MAIL", "RCPT", "DATA", "STARTTLS")}
_COMMANDS.update(_same("RSET", "QUIT", "NOOP"))
_REPLY = Phrases(
    [("", "{line} then closes ({how})", "{line} puis ferme ({how})"), ("", "{line}", "{line}")],
    {"how": _HOW},
)
_POINTS = Phrases(
    [("", "final dot", "point final"), ("", "GREETING", "accueil (GREETING)"), ("", "{point}", "{point}")]
)
_CLOSING = Phrases(
    [
        *_effects("close_at"),
        *[e for e in _effects("kind") if e[0] == "kind=close_on_accept"],
        (
            "",
            "closes after {size} bytes of content (or at a shorter message's dot)",
            "ferme après {size} octets de contenu (ou au point final d'un message plus court)",
        ),
    ]
)
_DNS_EFFECT = Phrases(_effects("dns_faults"))
_TCP_RETRY = Phrases(
    [*_effects("dns_faults.tcp"), _AFTER_MS], {"effect": Phrases(_effects("dns_faults.tcp"))}
)
# World durations as faults.describe_* write them (clock.format_duration: 45s, 2h, 1d2h).
_DURATION = Phrases([("", "{days}d{rest}", "{days}j{rest}"), ("", "{d}", "{d}")])
_WHEN = Phrases(
    [
        ("", "from {start} until {end}", "de {start} à {end}"),
        ("", "from {start}", "à partir de {start}"),
        ("", "until {end}", "jusqu'à {end}"),
    ],
    {"start": _DURATION, "end": _DURATION},
)
_DNS_WHAT = Phrases(
    [
        *_effects("dns_faults"),
        _AFTER_MS,
        ("", "UDP answer truncated, TCP retry {retry}", "réponse UDP tronquée, la reprise sur TCP {retry}"),
        (
            "",
            "UDP answer truncated after {ms} ms, TCP retry {retry}",
            "réponse UDP tronquée après {ms} ms, la reprise sur TCP {retry}",
        ),
        ("", "answers after {ms} ms", "répond après {ms} ms"),
        ("", "{what} ({when})", "{what} ({when})"),  # a fault active for a while only
    ],
    {"effect": _DNS_EFFECT, "retry": _TCP_RETRY, "when": _WHEN},
)
_DNS_WHAT.slots["what"] = _DNS_WHAT
# The phrases of faults.describe_host and faults.describe_dns_fault.
# faults.describe_auth: what a host's authentication offers, then its parts joined by "; ".
_AUTH_OFFER = Phrases(
    [
        ("", "AUTH not offered", "AUTH non proposé"),
        (
            "",
            "AUTH {mechanisms} offered inside TLS only, account {user}",
            "AUTH {mechanisms} proposé sous TLS seulement, compte {user}",
        ),
        (
            "",
            "AUTH {mechanisms} offered before and inside TLS, account {user}",
            "AUTH {mechanisms} proposé avant et sous TLS, compte {user}",
        ),
    ]
)
_AUTH_PART = Phrases(
    [
        ("", "MAIL without AUTH → `{line}`", "MAIL sans AUTH → `{line}`"),
        ("", "mail taken without AUTH too", "courrier accepté sans AUTH aussi"),
        ("", "AUTH → {effect}", "AUTH → {effect}"),
        (
            "",
            "may send as {senders} only (others `550 5.7.60` at the final dot)",
            "ne peut envoyer qu'en tant que {senders} (les autres reçoivent `550 5.7.60` au point final)",
        ),
    ],
    {"effect": {key("auth.fault").effect(v): fr for (k, v), fr in EFFECTS_FR.items() if k == "auth.fault"}},
)
_AUTH_REST = Phrases(
    [("", "{part}; {rest}", "{part} ; {rest}"), ("", "{part}", "{part}")], {"part": _AUTH_PART}
)
_AUTH_REST.slots["rest"] = _AUTH_REST

WIRE = Phrases(
    [
        *_effects("kind", "tls", "cert"),
        ("", "{auth_offer}; {auth_rest}", "{auth_offer} ; {auth_rest}"),
        ("", "{closing} ({how})", "{closing} ({how})"),
        ("", "greeting {reply}", "accueil {reply}"),
        ("", "{command} → {reply}", "{command} → {reply}"),
        ("", "EHLO without {names}", "EHLO sans {names}"),
        ("", "every reply delayed {ms} ms", "chaque réponse retardée de {ms} ms"),
        ("", "every other reply delayed {ms} ms", "toute autre réponse retardée de {ms} ms"),
        ("", "{point} delayed {ms} ms", "{point} : réponse retardée de {ms} ms"),
        ("", "{point} not delayed", "{point} : réponse non retardée"),
        (
            "",
            "replies trickle at {bps} bytes per second",
            "réponses envoyées au compte-gouttes, {bps} octets par seconde",
        ),
        (
            "",
            "stops reading after {n} bytes of content (or at a shorter message's dot) and never answers",
            "cesse de lire après {n} octets du message (ou au point final d'un message plus court) "
            "et ne répond jamais",
        ),
        (
            "",
            "stops reading at the first byte of content and never answers",
            "cesse de lire dès le premier octet du message et ne répond jamais",
        ),
        ("", "no A record", "pas d'enregistrement A"),
        (
            "",
            "IPv6: an AAAA record and no A record; the server answers on its IPv6 address only",
            "IPv6 : un enregistrement AAAA et aucun enregistrement A ; le serveur ne répond que sur son "
            "adresse IPv6",
        ),
        (
            "",
            "IPv6: A and AAAA records; the server answers on both addresses",
            "IPv6 : enregistrements A et AAAA ; le serveur répond sur ses deux adresses",
        ),
        (
            "",
            "IPv6: A and AAAA records; nothing listens on the IPv6 address (a SYN there gets RST) while "
            "the IPv4 address serves: a client must fall back to the A address",
            "IPv6 : enregistrements A et AAAA ; rien n'écoute sur l'adresse IPv6 (un SYN y reçoit un RST) "
            "tandis que l'adresse IPv4 sert : le client doit se replier sur l'adresse A",
        ),
        ("", "for its first 1 session(s) only", "pour sa première session seulement"),
        ("", "for its first {n} session(s) only", "pour ses {n} premières sessions seulement"),
        ("", "for the first {span} only, then healthy", "seulement pendant {span}, puis sain"),
        ("", "from {start} on (healthy before)", "à partir de {start} (sain avant)"),
        (
            "",
            "from {start} for {span}, healthy before and after",
            "à partir de {start} pendant {span}, sain avant et après",
        ),
        (
            "",
            "greylisting: {reply} to each new sender/recipient pair, accepted {after} later",
            "liste grise : {reply} à chaque nouvelle paire expéditeur/destinataire, "
            "acceptée {after} plus tard",
        ),
        (
            "",
            "{n} recipient(s) per message, then {reply}",
            "{n} destinataire(s) par message, puis {reply}",
        ),
        (
            "",
            "messages of at most {n} bytes (SIZE {size}), then `552 5.3.4`",
            "messages d'au plus {n} octets (SIZE {size}), puis `552 5.3.4`",
        ),
        (
            "",
            "at most {n} session(s) at once, the connection above gets {reply} then closes",
            "au plus {n} session(s) à la fois, la connexion de trop reçoit {reply} puis la fermeture",
        ),
        (
            "",
            "at most {n} {per} per {window} ({used} already used at the start), then {where} → {reply} "
            "then closes",
            "au plus {n} {per} par {window} ({used} déjà utilisés au départ), puis {where} → {reply} et la "
            "fermeture",
        ),
        (
            "",
            "at most {n} {per} per {window} ({used} already used at the start), then {where} → {reply}",
            "au plus {n} {per} par {window} ({used} déjà utilisés au départ), puis {where} → {reply}",
        ),
        (
            "",
            "at most {n} {per} per {window}, then {where} → {reply} then closes",
            "au plus {n} {per} par {window}, puis {where} → {reply} et la fermeture",
        ),
        (
            "",
            "at most {n} {per} per {window}, then {where} → {reply}",
            "au plus {n} {per} par {window}, puis {where} → {reply}",
        ),
        ("", "DNS {name} → {what}", "DNS {name} → {what}"),
    ],
    {
        "closing": _CLOSING,
        "how": _HOW,
        "reply": _REPLY,
        "command": _COMMANDS,
        "auth_offer": _AUTH_OFFER,
        "auth_rest": _AUTH_REST,
        "point": _POINTS,
        "what": _DNS_WHAT,
        "span": _DURATION,
        "start": _DURATION,
        "after": _DURATION,
        "window": _DURATION,
        "per": {"messages": "messages", "connections": "connexions"},
        "where": {"greeting": "l'accueil", "MAIL": "MAIL"},
    },
)
# The one-line account of a world (markdown.wire_summary's parts), in both languages.
SUMMARY: dict[str, Mapping[str, str]] = {
    "en": SUMMARY_WORDS,
    "fr": {
        "no_mx": "pas de MX pour {domain} (repli sur son adresse)",
        "null_mx": "MX nul pour {domain}",
        "mx": "MX de {domain}\u00a0: {hops}",
        "no_address": " (sans adresse)",
        "by_ip": "connecteur réglé sur l'adresse IP de {host}",
        "smart_host": "hôte intelligent {host}",
        "tls_optional": "TLS facultatif",
        "host": "{host}\u00a0: {what}",
        "healthy": "sain, STARTTLS, accepte le message",
        "dnssec": "zones signées (DNSSEC) {zones}",
        "tlsa": "TLSA {fields} ({usage}), qui correspond",
        "tlsa_wrong": "TLSA {fields} ({usage}), qui ne correspond à aucune de ses clés",
        "dane_ee": "DANE-EE\u00a0: son propre certificat",
        "dane_ta": "DANE-TA\u00a0: l'autorité qui a émis son certificat",
        "mta_sts": "politique MTA-STS de {domain} en mode {mode}, hôtes MX {mx}",
        "sts_unreachable": "politique MTA-STS de {domain}\u00a0: son hôte {host} refuse les connexions",
        "sts_missing": "politique MTA-STS de {domain}\u00a0: {host} répond 404",
        "sts_malformed": (
            "politique MTA-STS de {domain}\u00a0: {host} sert un texte qui n'est pas une politique"
        ),
        "sts_cert": "hôte de la politique {host}\u00a0: {what}",
        "tls_rpt": "rapports TLS de {domain} à {rua}",
        "crl": "la liste de révocation (CRL) {url} contient le certificat de {hosts}",
    },
}


def wire_summary(s: Scenario, lang: str = "en") -> str:
    """What the client meets, in one line, in ``lang`` (``markdown.wire_summary`` with its words)."""
    if lang == "en":
        return markdown_summary(s)
    return markdown_summary(s, SUMMARY.get(lang, SUMMARY_WORDS), lambda text: WIRE.say(text, lang))


def cert_effect(kind: str, lang: str = "en") -> str:
    """The fault table's words for a certificate kind, in ``lang``."""
    if lang == "en":
        return key("cert").effect(kind)
    return EFFECTS_FR.get(("cert", kind), key("cert").effect(kind))


# The short tour of ``make demo``: one scenario per code (DANE and MTA-STS among them), then a delivery.
DEFAULT_TOUR = (
    "dns-nxdomain",
    "tcp-timeout-server-down",
    "tcp-refused-firewall",
    "tls-starttls-missing",
    "close-mid-data",
    "tls-cert-expired",
    "dane-tlsa-mismatch",
    "mta-sts-mx-mismatch",
    "queue-down-refused",
    "baseline-delivered",
)

# What a dialogue line is, by the prefix the client gives it.
KINDS = {"DNS: ": "dns", "S: ": "server", "C: ": "client", "*: ": "note"}
MARKS = {
    "dns": "DNS",
    "server": "S <",
    "client": "C >",
    "note": " * ",
    "tls": "TLS",
    "fault": " ! ",
    "cert": "CRT",
    "policy": "POL",
    "warn": " ! ",
    "web": "WEB",
    "report": "RPT",
}
# The connector's TLS-policy notes, by tag: what kind of line each is.
_NOTE_KINDS = {
    "tls-ok": "tls",
    "tls-may": "tls",
    "dane-ok": "tls",
    "dane-unusable": "tls",
    "sts-testing-ok": "tls",
    "cert-rejected": "fault",
    "tls-failed": "fault",
    "no-starttls": "fault",
    "dane-lookup": "fault",
    "dane-failed": "fault",
    "sts-mx-mismatch": "fault",
    "dane-required": "policy",
    "sts-policy": "policy",
    "sts-none": "warn",
    "sts-testing": "warn",
    "tlsrpt": "report",
    "tlsrpt-none": "warn",
}


@dataclass
class DemoLine:
    kind: str  # dns, client, server, note, tls, cert, fault, policy, warn, web, report
    text: str  # as shown, in the demo's language
    raw: str = ""  # as the client or the fake wrote it (English), when the demo translated it
    step: str = ""  # what happened, for the sequence diagram: a tag of NOTES, DNS_ANSWERS, SERVER_FAULTS
    dnssec: str = ""  # a DNS line's DNSSEC outcome as the fake DNS recorded it (secure, bogus...)


@dataclass
class DemoResult:
    scenario: Scenario
    lang: str
    lines: list[DemoLine] = field(default_factory=list)
    report: DeliveryReport | None = None
    queue: Mapping[str, Any] | None = None  # a queue run (mailfakes.timeline's shape), when one was played

    @property
    def expected(self) -> str:
        return str(self.scenario.code_for(self.report.profile if self.report else "eop"))

    @property
    def reported(self) -> str:
        return self.report.code if self.report else "-"

    @property
    def as_expected(self) -> bool:
        return self.report is not None and self.reported == self.expected


class Style:
    """ANSI colour when writing to a terminal (and NO_COLOR is unset); nothing otherwise."""

    CODES: ClassVar[dict[str, str]] = {
        "bold": "1",
        "dim": "2",
        "red": "31",
        "green": "32",
        "yellow": "33",
        "blue": "34",
        "magenta": "35",
        "cyan": "36",
    }

    def __init__(self, out: TextIO, colour: bool | None = None) -> None:
        if colour is None:
            colour = out.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        self.colour = colour

    def __call__(self, text: str, *styles: str) -> str:
        if not self.colour or not styles:
            return text
        return f"\033[{';'.join(self.CODES[s] for s in styles)}m{text}\033[0m"


LINE_STYLES = {
    "dns": ("cyan",),
    "client": ("blue",),
    "server": ("magenta",),
    "note": ("dim",),
    "tls": ("yellow",),
    "cert": ("yellow",),
    "fault": ("red", "bold"),
    "policy": ("green",),
    "warn": ("yellow", "bold"),
    "web": ("cyan",),
    "report": ("green", "bold"),
}


def dialogue_line(line: str, lang: str = "en") -> DemoLine:
    """One line of the client's dialogue (``DNS: ``, ``S: ``, ``C: ``, ``*: ``) as the demo shows it."""
    prefix = line[: line.find(": ") + 2]
    kind = KINDS.get(prefix)
    if kind is None:
        return DemoLine("note", line, line)
    raw = line[len(prefix) :]
    if kind == "server":  # the wire, as it came
        return DemoLine(kind, raw, raw)
    if kind == "client":
        if CONTENT.tag(raw):  # the client's own account of what it sent
            return DemoLine(kind, CONTENT.say(raw, lang), raw, CONTENT.tag(raw) or "content")
        return DemoLine(kind, raw, raw)
    if kind == "dns":
        return DemoLine(kind, DNS_ANSWERS.say(raw, lang), raw, DNS_ANSWERS.tag(raw) or "answer")
    step = NOTES.tag(raw)
    return DemoLine(_NOTE_KINDS.get(step, kind), NOTES.say(raw, lang), raw, step)


def _hex(data: bytes) -> str:
    """A digest as the demo shows it: its first 12 hex digits."""
    text = data.hex()
    return text if len(text) <= 12 else text[:12] + "…"


class _PolicyView:
    """What the world recorded of its TLS policy, told beside the connector's dialogue.

    The DNSSEC outcome of each DNS answer (the fake DNS's query log), each
    TLSA record checked against the certificate the host presents, the
    MTA-STS policy fetch as the policy host saw it, the TLS reports the world
    received. Bad or missing records make fewer lines, never an error.
    """

    def __init__(self, world: World, lang: str) -> None:
        spec = world.spec
        self.world = world
        self.lang = lang
        self.lab = LABELS[lang]
        self.active = bool(
            spec.dnssec is not None or spec.mta_sts or spec.tls_rpt or any(h.tlsa for h in spec.hosts)
        )
        self.tlsa: dict[str, list[str]] = {}  # host -> the TLSA values of its last answer
        self.web_seen: dict[str, tuple[int, int]] = {}  # policy host -> requests, problems shown
        self.reports_seen = 0

    def told(self, tell: Callable[[], list[DemoLine] | None]) -> list[DemoLine]:
        """What ``tell`` adds to the dialogue; nothing if it fails: the narration runs in the
        connector's thread, and must never break the delivery it describes."""
        try:
            return tell() or []
        except Exception:  # a record the view did not expect: say less, not fail
            return []

    # -- DNS ---------------------------------------------------------------------

    def dns(self, item: DemoLine) -> list[DemoLine]:
        """Add the DNSSEC outcome of the answer to ``item`` (a DNS line); keep TLSA values. No new
        line: the outcome goes on the answer's own."""
        if self.active:
            self._dns(item)
        return []

    def _dns(self, item: DemoLine) -> None:
        query, _, rest = item.raw.partition(": ")
        qtype, _, name = query.partition(" ")
        if qtype == "TLSA" and name.startswith("_25._tcp."):
            values = rest.split(" -> ", 1)[1].split(", ") if " -> " in rest else []
            self.tlsa[name[len("_25._tcp.") :]] = values
        log: list[DnsQuery] = self.world.dns_queries
        q = next((q for q in reversed(log) if q.qtype == qtype and q.name == name), None)
        if q is None:
            return
        status = self._status(q)
        if status:
            item.text += f"  [{status}]"
            item.dnssec = q.dnssec or ""

    def _status(self, q: DnsQuery) -> str:
        from .faults import DNSSEC_FAULTS

        lab = self.lab
        asked = "AD" in q.flags or "DO" in q.flags
        ad = lab["ad_set"] if q.ad else lab["ad_missing"]
        if q.dnssec is None:  # an unsigned world: say so where the client asked for AD
            return lab["dnssec_off"].format(why=lab["dnssec_unsigned"] + lab["then"] + ad) if asked else ""
        if q.fault in DNSSEC_FAULTS:
            why = lab[f"dnssec_{q.fault}"]
        else:  # a secure answer needs no gloss
            why = "" if q.dnssec == "secure" else lab.get(f"dnssec_{q.dnssec}", "")
        shown = lab["dnssec_line"].format(status=q.dnssec, why=why) if why else f"DNSSEC {q.dnssec}"
        return shown + (f"{lab['then']}{ad}" if asked else "")

    # -- DANE ----------------------------------------------------------------------

    def tlsa_checks(self, host: str) -> list[DemoLine]:
        """Each TLSA record of ``host`` against what it is meant to match: the certificate the host
        presents (DANE-EE) or the CA that issued it (DANE-TA)."""
        from .dane import TlsaRecord, association

        world, lab = self.world, self.lab
        try:
            spec = world.spec.host(host)
            kind = spec.smtp.cert
            assert world.ca is not None
            leaf = world.ca.issue(host, kind, crl_url=world.crl_url if kind == "revoked" else None).leaf_pem
            ca = world.ca.ca_file.read_bytes()
        except (KeyError, ValueError, AssertionError, OSError, RuntimeError):
            return []
        out = []
        for text in self.tlsa.get(host, []):
            try:
                record = TlsaRecord.parse(text)
            except ValueError:
                continue
            if record.usage not in (2, 3) or not record.usable:
                continue
            value = association(leaf if record.usage == 3 else ca, record.selector, record.matching)
            ok = value == record.data
            line = lab["tlsa_check"].format(
                record=f"{record.usage} {record.selector} {record.matching} {_hex(record.data)}",
                which=lab["tlsa_leaf" if record.usage == 3 else "tlsa_ca"],
                selected=lab[f"selector_{record.selector}"],
                digest={1: "SHA-256", 2: "SHA-512"}.get(record.matching, lab["matching_0"]),
                value=_hex(value),
                verdict=lab["tlsa_match" if ok else "tlsa_no_match"],
            )
            out.append(
                DemoLine("policy" if ok else "fault", line, step="tlsa-match" if ok else "tlsa-no-match")
            )
        return out

    # -- MTA-STS -------------------------------------------------------------------

    def fetch(self, domain: str, reason: str = "") -> list[DemoLine]:
        """The policy fetch for ``domain`` as the policy host recorded it: the request, the
        certificate it presented, its answer and the policy it served, or its problem."""
        from .mtasts import WELL_KNOWN

        world, lab = self.world, self.lab
        policy = world.spec.mta_sts_for(domain)
        if policy is None or ": no address (" in reason:
            return []
        host = policy.host
        out = [DemoLine("web", f"HTTPS GET https://{host}{WELL_KNOWN}", step="web-get")]
        server = world.web.get(host)
        if server is None:  # nothing listens there
            return [*out, DemoLine("fault", lab["web_nothing"].format(host=host), step="web-nothing")]
        seen_requests, seen_problems = self.web_seen.get(host, (0, 0))
        # The host records a request as it answers, a failed handshake once the client has gone.
        world.wait_until(
            lambda: len(server.requests) > seen_requests or len(server.problems) > seen_problems, 1.0
        )
        requests, problems = server.requests[seen_requests:], server.problems[seen_problems:]
        self.web_seen[host] = (seen_requests + len(requests), seen_problems + len(problems))
        cert = _certificate_line(world, host, policy.cert, self.lang)
        if cert:
            out.append(DemoLine("cert", cert, step="web-cert"))
        for r in requests:
            status = lab["web_status"].format(status=r.status, tls=r.tls_version or "TCP", sni=r.sni or "-")
            out.append(DemoLine("web" if r.status < 400 else "fault", status, step="web-status"))
            route = server.site.route(r.path)
            body = route.body if route is not None else b""
            if r.status == 200 and isinstance(body, bytes | bytearray):
                lines = bytes(body).decode("utf-8", "replace").splitlines()
                text = " | ".join(ln.strip() for ln in lines if ln.strip())
                out.append(DemoLine("web", lab["web_served"].format(text=_cut(text, 160)), step="web-policy"))
        for pr in problems:
            detail = NOTES.say(pr.detail, self.lang)
            out.append(DemoLine("fault", lab["web_problem"].format(detail=detail), pr.detail, "web-problem"))
        return out

    # -- TLS-RPT -------------------------------------------------------------------

    def reports(self) -> list[DemoLine]:
        """The TLS reports the world received since the last call."""
        world, lab = self.world, self.lab
        seen = self.reports_seen
        world.wait_until(lambda: len(world.tls_reports) > seen, 1.0)
        got = world.tls_reports
        self.reports_seen = len(got)
        colon = " : " if self.lang == "fr" else ": "
        out = []
        for t in got[seen:]:
            results = (colon + ", ".join(f"{k} ×{n}" for k, n in t.results.items())) if t.results else ""
            text = lab["report_got"].format(
                to=t.to,
                via=lab["via_mail" if t.via == "mail" else "via_https"],
                policy=", ".join(t.policy_types),
                domain=", ".join(t.domains),
                ok=t.successes,
                failed=t.failures,
                results=results,
            )
            out.append(DemoLine("report", text, step="report"))
        return out


def _cut(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def _certificate_line(world: World, host: str, kind: CertKind, lang: str) -> str:
    """``certificate presented: subject, issued by ..., names, valid from → to (what it is)``."""
    lab = LABELS[lang]
    try:
        if world.ca is None:
            return ""
        info = world.ca.describe(host, kind, crl_url=world.crl_url if kind == "revoked" else None)
    except (KeyError, ValueError, AttributeError, RuntimeError, OSError):
        return ""
    return (
        f"{lab['certificate']}: {info['subject']}, {lab['issuer']} {info['issuer']}, "
        f"{info['sans']}, {lab['valid']} {info['not_before'][:10]} → {info['not_after'][:10]}"
        f" ({cert_effect(kind, lang)})"
    )


class Player:
    """Plays scenarios one after the other on one runtime and prints them."""

    def __init__(
        self,
        out: TextIO = sys.stdout,
        *,
        lang: str = "en",
        pace: float = 0.0,
        step: bool = False,
        timeout: float = 1.0,
        profile: str = "eop",
        colour: bool | None = None,
        wait_for_enter: Callable[[], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.out = out
        self.lang = lang
        self.labels = LABELS[lang]
        self.pace = pace
        self.step = step
        self.timeout = timeout
        self.profile = profile
        self.style = Style(out, colour)
        self.stop = stop or threading.Event()
        self.wait_for_enter = wait_for_enter or self._enter

    def w(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def play_all(self, scenarios: list[Scenario]) -> list[DemoResult]:
        from .runtime import Runtime

        results = []
        with Runtime() as runtime:
            for i, s in enumerate(scenarios, 1):
                if self.stop.is_set():
                    break
                if i > 1 and self.step:
                    self.w(self.style(f"[{self.labels['press']}]", "dim"))
                    self.wait_for_enter()
                    if self.stop.is_set():
                        break
                results.append(self.play(s, runtime, i, len(scenarios)))
        return results

    def show(self, item: DemoLine) -> None:
        st = self.style
        self.w("  " + st(f"{MARKS.get(item.kind, '   ')}  {item.text}", *LINE_STYLES.get(item.kind, ())))

    def play(self, scenario: Scenario, runtime: Runtime, index: int = 1, total: int = 1) -> DemoResult:
        from .world import World

        st, lab, lang = self.style, self.labels, self.lang
        code = scenario.expected_code
        heading = f" {index}/{total}  {scenario.id}  ·  {code} {eop_title(code, lang)}".rstrip() + " "
        self.w()
        self.w(st("━" * 3 + heading + "━" * max(3, 76 - len(heading)), "bold"))
        self.w(st(scenario.title[lang], "bold"))
        if scenario.cause[lang]:  # a user's own scenario may have no explanation
            self.w(st(f"{lab['cause']}:", "bold"))
            self.w(_wrap(scenario.cause[lang]))
        self.w(st(f"{lab['wire']}:", "bold"))
        self.w(_wrap(wire_summary(scenario, lang).replace("`", "")))
        self.w()
        self.w(st(f"{lab['dialogue']}:", "bold"))
        result = DemoResult(scenario, lang)
        world = World(scenario.world, runtime=runtime).start()
        lines: queue.Queue[DemoLine | None] = queue.Queue()
        seen_hosts: dict[str, str] = {ip: name for name, ip in world.hosts.items()}
        current = {"host": ""}

        view = _PolicyView(world, lang)

        def observe(line: str) -> None:
            item = dialogue_line(line, lang)
            if item.step == "connect":
                ip = item.raw.split()[-1].rsplit(":", 1)[0]
                current["host"] = seen_hosts.get(ip, ip)
                item.text = f"TCP {item.text}" + (f" ({current['host']})" if current["host"] != ip else "")
            elif item.kind == "dns":
                view.told(lambda: view.dns(item))
            elif item.step in ("dane-ok", "dane-unusable", "dane-failed"):
                name = NOTES.values(item.raw).get("name", "")
                for extra in view.told(lambda: view.tlsa_checks(name)):
                    lines.put(extra)
            elif item.step in ("sts-policy", "sts-none"):
                said = NOTES.values(item.raw)
                for extra in view.told(lambda: view.fetch(said.get("domain", ""), said.get("reason", ""))):
                    lines.put(extra)
            lines.put(item)
            if item.step == "tlsrpt":
                for extra in view.told(view.reports):
                    lines.put(extra)
            if item.kind == "server" and item.text.startswith("220") and "TLS" in item.text:
                cert = self._certificate(world, current["host"])
                if cert:
                    lines.put(DemoLine("cert", cert, step="cert"))

        def server_event(event: Event) -> None:
            if event.kind == "fault":
                text = SERVER_FAULTS.say(event.text, lang)
                lines.put(
                    DemoLine("fault", f"{lab['server']}: {text}", event.text, SERVER_FAULTS.tag(event.text))
                )

        unsubscribe = world.events.subscribe(server_event)
        box: dict[str, DeliveryReport] = {}

        def run() -> None:
            try:
                box["report"] = deliver_scenario(
                    scenario, world, timeout=self.timeout, profile=self.profile, observer=observe
                )
            finally:
                lines.put(None)

        worker = threading.Thread(target=run, name="mailfakes-demo-client", daemon=True)
        worker.start()
        try:
            while True:
                try:
                    item = lines.get(timeout=0.2)
                except queue.Empty:
                    if self.stop.is_set():
                        break  # Ctrl-C: the client finishes within its own timeouts
                    continue
                if item is None:
                    break
                result.lines.append(item)
                self.show(item)
                if self.pace and self.stop.wait(self.pace):  # pacing for a room, not synchronisation
                    break
            worker.join(10)
            # The server may still be recording the end of the session (a cut, an alert).
            world.wait_until(lambda: all(t.ended_by for t in world.sessions), 1.0)
            while not lines.empty():
                item = lines.get_nowait()
                if item is not None:
                    result.lines.append(item)
                    self.show(item)
        finally:
            unsubscribe()
            world.stop()
        report = box.get("report")
        result.report = report
        self.w()
        if report is not None:
            ok = report.code == scenario.code_for(self.profile)
            verdict = st(lab["ok"], "green") if ok else st(lab["diff"], "red", "bold")
            self.w(st(f"{lab['reported']}:", "bold"))
            self.w("  " + st(report.line(), "bold", "green" if ok else "red"))
            self.w(f"  ({lab['expected']} {scenario.code_for(self.profile)}: {verdict})")
        if scenario.queue is not None and not self.stop.is_set():
            result.queue = self._queue(scenario, runtime)
            if result.queue is not None:
                self.w()
                self.show_queue(result.queue)
                outcome = _queue_verdict(result, lang)
                if outcome is not None:
                    self.w("  " + st(outcome[0], "green" if outcome[1] else "red", "bold"))
        if scenario.fix[lang]:
            self.w(st(f"{lab['fix']}:", "bold"))
            self.w(_wrap(scenario.fix[lang]))
        return result

    def _queue(self, scenario: Scenario, runtime: Runtime) -> dict[str, Any] | None:
        """The whole queue cycle of ``scenario`` by the reference connector, on a virtual clock (24
        hours in a moment), with the NDR as the sender's domain received it."""
        from .queue import run_scenario
        from .world import World

        world = World(scenario.world, runtime=runtime, clock="virtual").start()
        try:
            run = run_scenario(
                scenario, world, profile=self.profile, timeout=min(self.timeout, 0.5), stop=self.stop
            )
            row = run.as_dict()
            row["received_ndr"] = [
                {"action": b.action, "status": b.status, "diagnostic_code": b.diagnostic_code}
                for b in world.bounces
            ]
        finally:
            world.stop()
        return row

    def show_queue(self, run: Mapping[str, Any]) -> None:
        """Print a queue run (``mailfakes.timeline``'s shape): each attempt, how it ended, the NDR."""
        from .timeline import code_class, timeline_text

        st = self.style
        colours = {"success": ("green",), "temporary": ("yellow",), "permanent": ("red",)}
        lines = timeline_text(run, self.lang)
        self.w(st(f"{self.labels['queue']}:", "bold"))
        attempts = sorted(run.get("attempts") or [], key=lambda a: float(a.get("at", 0.0)))
        for i, line in enumerate(lines[1:]):
            if i < len(attempts):  # an attempt, in the colour of its code's class
                self.w(st(line, *colours.get(code_class(str(attempts[i].get("code", ""))), ())))
            else:  # how it ended, the NDR
                self.w("  " + st(line, "bold"))

    def _enter(self) -> None:
        """Wait for Enter on stdin, or for Ctrl-C (checked every 0.2 s)."""
        import select

        while not self.stop.is_set():
            try:
                ready, _, _ = select.select([sys.stdin], [], [], 0.2)
            except (OSError, ValueError):
                return
            if ready:
                sys.stdin.readline()
                return

    def _certificate(self, world: World, host: str) -> str:
        try:
            spec = world.spec.host(host)
        except (KeyError, ValueError, AttributeError):
            return ""
        if spec.smtp.tls_offer != "current":
            return ""  # the server refuses the handshake before any certificate is sent
        return _certificate_line(world, host, spec.smtp.cert, self.lang)


def _wrap(text: str) -> str:
    return textwrap.fill(
        re.sub(r"[ \t\r\n]+", " ", text.strip()),
        width=80,
        initial_indent="  ",
        subsequent_indent="  ",
        break_on_hyphens=False,
    )


# -- the sequence diagram ---------------------------------------------------------------

_LANES = {"dns": 80, "client": 330, "server": 850}
_WIDTH = 930
_WEB_LANE = 1090  # the MTA-STS policy host, right of the SMTP server, when a policy is fetched
_WEB_WIDTH = 1170
_TOP = 46  # below the lifelines' heads
_ROW = 26
_CHAR = 6.7  # the width of one character of the 11 px monospace labels
_COLOURS = {
    "client": "#2f62c9",
    "server": "#8e44ad",
    "dns": "#0f7f99",
    "tcp": "#5b6472",
    "tls": "#a86b00",
    "err": "#c92a2a",
    "ok": "#2b8a3e",
    "warn": "#b35c00",
    "note": "#5b6472",
    "web": "#1c7c54",
}


@dataclass
class _Row:
    shape: str  # arrow (from src to dst), note (beside lane src), band (across client and server)
    src: str
    dst: str
    label: str
    colour: str
    title: str = ""
    dashed: bool = False
    lost: bool = False  # an arrow that never arrives (no answer)
    failing: bool = False
    final: bool = False  # where the delivery broke


def _dns_rows(line: DemoLine) -> list[_Row]:
    raw = line.raw or line.text
    query, _, rest = raw.partition(": ")
    ask = _Row("arrow", "client", "dns", f"{query} ?", "dns", line.text)
    if line.step == "timeout":  # the query goes nowhere; the client says so
        ask.colour, ask.lost, ask.dashed = "err", True, True
        return [ask, _Row("note", "client", "client", line.text, "err", line.text, failing=True)]
    values = rest.split(" -> ", 1)[1] if " -> " in rest else ""
    values = re.sub(r"\b([0-9a-f]{12})[0-9a-f]{20,}\b", r"\1…", values)  # a TLSA digest, shortened
    rcode = "NODATA" if line.step == "nodata" else (rest.split() or ["?"])[0]
    answer = rcode + (" AD" if " (secure) " in rest else "") + (" (TCP)" if "over TCP" in rest else "")
    if line.dnssec and line.dnssec != "secure":  # bogus, insecure: where the chain of trust broke
        answer += f" ({line.dnssec})"
    answer += f" → {values}" if values else ""
    # No MTA-STS or TLS-RPT record (a TXT that is not there) is how most domains answer, and a host
    # without IPv6 has no AAAA: no failure.
    optional = (query.startswith("TXT ") and rcode in ("NXDOMAIN", "NODATA")) or (
        query.startswith("AAAA ") and rcode == "NODATA"
    )
    bad = (rcode != "NOERROR" and not optional) or line.dnssec == "bogus"
    return [ask, _Row("arrow", "dns", "client", answer, "err" if bad else "dns", line.text, failing=bad)]


def _short_cert(text: str) -> str:
    """``certificate presented: CN=host (what is wrong with it)``, from the certificate line."""
    head, _, rest = text.partition(": ")
    subject = rest.split(",", 1)[0]
    what = text[text.rfind(" (") :] if text.endswith(")") else ""
    return f"{head}: {subject}{what}"


def _web_rows(line: DemoLine, rows: list[_Row]) -> list[_Row]:
    """The rows of the policy fetch: the GET to the policy host, its certificate, answer, policy."""
    text = line.text
    if line.step == "web-get":
        return [_Row("arrow", "client", "web", text, "web", text)]
    if line.step == "web-nothing":  # the GET never arrived
        if rows and rows[-1].dst == "web":
            rows[-1].colour, rows[-1].lost, rows[-1].dashed = "err", True, True
        return [_Row("note", "client", "client", text, "err", text)]
    if line.step == "web-cert":
        return [_Row("arrow", "web", "client", _short_cert(text), "tls", text)]
    if line.step == "web-problem":
        return [_Row("arrow", "web", "client", text, "err", text, dashed=True)]
    bad = line.kind == "fault"
    return [
        _Row("arrow", "web", "client", text, "err" if bad else "web", text, dashed=line.step == "web-policy")
    ]


def _rows(result: DemoResult) -> list[_Row]:
    lab = LABELS.get(result.lang, LABELS["en"])
    rows: list[_Row] = []
    lines = result.lines
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.kind == "server":
            group = [line.text]
            while line.text[3:4] == "-" and i + 1 < len(lines) and lines[i + 1].kind == "server":
                i += 1
                line = lines[i]
                group.append(line.text)
            bad = group[-1][:1] in ("4", "5")
            label = group[0] + (f"  (+{len(group) - 1})" if len(group) > 1 else "")
            rows.append(
                _Row(
                    "arrow",
                    "server",
                    "client",
                    label,
                    "err" if bad else "server",
                    "\n".join(group),
                    failing=bad,
                )
            )
        elif line.kind == "client":
            rows.append(_Row("arrow", "client", "server", line.text, "client", line.text))
        elif line.kind == "dns":
            rows += _dns_rows(line)
        elif line.step.startswith("web-"):
            rows += _web_rows(line, rows)
        elif line.kind == "cert":
            rows.append(_Row("arrow", "server", "client", _short_cert(line.text), "tls", line.text))
        elif line.step in ("tls-may", "dane-ok", "dane-unusable", "sts-testing-ok"):
            rows.append(_Row("band", "client", "server", line.text, "tls", line.text))
        elif line.step in ("tlsa-match", "tlsa-no-match"):
            ok = line.step == "tlsa-match"
            rows.append(_Row("note", "client", "client", line.text, "ok" if ok else "err", failing=not ok))
        elif line.kind in ("policy", "report"):
            rows.append(_Row("note", "client", "client", line.text, "ok" if line.step == "report" else "tls"))
        elif line.kind == "warn":
            rows.append(_Row("note", "client", "client", line.text, "warn", line.text))
        elif line.step == "connect":
            rows.append(_Row("arrow", "client", "server", line.text, "tcp", line.text))
        elif line.step == "connected":
            rows.append(_Row("arrow", "server", "client", line.text, "tcp", line.text, dashed=True))
        elif line.step in ("refused", "reset"):
            rows.append(_Row("arrow", "server", "client", line.text, "err", line.text, failing=True))
        elif line.step == "tls-ok":
            rows.append(_Row("band", "client", "server", line.text, "tls", line.text))
        elif line.step in ("cut", "alert"):
            rows.append(_Row("arrow", "server", "client", line.text, "err", line.text, dashed=True))
        elif line.step == "dns-delay":
            rows.append(_Row("note", "dns", "dns", line.text, "warn", line.text))
        elif line.step == "stall":
            rows.append(_Row("note", "server", "server", line.text, "warn", line.text))
        elif line.step in BREAKS:
            if line.step in ("timeout", "unreachable") and rows and rows[-1].colour == "tcp":
                rows[-1].colour, rows[-1].lost, rows[-1].dashed = "err", True, True  # the SYN goes nowhere
            rows.append(_Row("note", "client", "client", line.text, "err", line.text, failing=True))
        else:
            rows.append(_Row("note", "client", "client", line.text, "note", line.text))
        i += 1
    report = result.report
    if report is not None and not report.delivered:
        failing = [r for r in rows if r.failing]
        if failing:
            failing[-1].final = True
    if report is not None:
        rows.append(
            _Row(
                "note",
                "client",
                "client",
                f"{lab['reported']}: {report.code}",
                "ok" if report.delivered else "err",
                report.line(),
            )
        )
    return rows


def _fit(text: str, width: float) -> str:
    most = max(4, int(width / _CHAR))
    return text if len(text) <= most else text[: most - 1] + "…"


def _cross(x: float, y: float, size: float = 6) -> str:
    c = _COLOURS["err"]
    return (
        f'<path d="M{x - size:g},{y - size:g} L{x + size:g},{y + size:g} M{x - size:g},{y + size:g} '
        f'L{x + size:g},{y - size:g}" stroke="{c}" stroke-width="3" stroke-linecap="round"/>'
    )


def sequence_svg(result: DemoResult, uid: str = "seq") -> str:
    """The dialogue of one played scenario as a sequence diagram: one inline SVG, no script, no asset.

    Lifelines DNS, client and server; an arrow per DNS query and answer, TCP
    connect, SMTP command and reply, certificate; the TLS session shaded; red
    where it fails, and a cross with its label in bold where the delivery broke.
    """
    esc = html.escape
    lab = LABELS.get(result.lang, LABELS["en"])
    rows = _rows(result)
    height = _TOP + _ROW * len(rows) + 14
    heads = {"dns": lab["dns"], "client": lab["client"], "server": lab["server"]}
    name = lab["diagram_title"].format(id=result.scenario.id)
    lanes, svg_width = dict(_LANES), _WIDTH
    if any("web" in (r.src, r.dst) for r in rows):  # the MTA-STS policy host has a lifeline too
        lanes["web"], svg_width = _WEB_LANE, _WEB_WIDTH
        heads["web"] = lab["web"]
        name = lab["diagram_title_web"].format(id=result.scenario.id)
    out = [
        f'<svg viewBox="0 0 {svg_width} {height}" width="{svg_width}" height="{height}" role="img" '
        f'aria-labelledby="{esc(uid)}-title" class="seq" font-family="ui-monospace,Menlo,Consolas,monospace" '
        f'font-size="11">',
        f'<title id="{esc(uid)}-title">{esc(name)}</title>',
        f'<rect x="0" y="0" width="{svg_width}" height="{height}" fill="#ffffff"/>',
    ]
    # The TLS session: from the handshake's end to the connection's end.
    tls_from: int | None = None
    for n, row in enumerate([*rows, None]):
        ends = row is None or (row.shape == "arrow" and row.colour == "tcp" and row.src == "client")
        ends = ends or (row is not None and row.dst == "dns")  # a lookup: the session is over
        if tls_from is not None and ends:
            y0, y1 = _TOP + _ROW * tls_from, _TOP + _ROW * n
            out.append(
                f'<rect x="{lanes["client"]}" y="{y0}" width="{lanes["server"] - lanes["client"]}" '
                f'height="{y1 - y0}" fill="#f6d67a" fill-opacity="0.16"/>'
            )
            tls_from = None
        if row is not None and row.shape == "band":
            tls_from = n
    for lane, x in lanes.items():
        out.append(
            f'<line x1="{x}" y1="32" x2="{x}" y2="{height - 6}" stroke="#b9bfcc" stroke-dasharray="4 3"/>'
            f'<rect x="{x - 55}" y="6" width="110" height="26" rx="5" fill="#eef1f7" stroke="#9aa3b5"/>'
            f'<text x="{x}" y="23" text-anchor="middle" font-size="12" font-weight="bold" fill="#1d2330">'
            f"{esc(heads[lane])}</text>"
        )
    for n, row in enumerate(rows):
        y = _TOP + _ROW * n + 17
        colour = _COLOURS[row.colour]
        weight = ' font-weight="bold"' if row.final or row.failing else ""
        group = '<g class="break">' if row.final else "<g>"
        part = [f"{group}<title>{esc(row.title or row.label)}</title>"]
        if row.shape == "arrow":
            x1, x2 = lanes[row.src], lanes[row.dst]
            sign = 1 if x2 > x1 else -1
            end = x1 + (x2 - x1) * 0.78 if row.lost else x2
            dash = ' stroke-dasharray="6 4"' if row.dashed else ""
            part.append(
                f'<line x1="{x1}" y1="{y}" x2="{end:g}" y2="{y}" stroke="{colour}" stroke-width="1.6"{dash}/>'
            )
            if row.lost:
                part.append(_cross(end, y, 4))
            else:
                part.append(
                    f'<polygon points="{x2},{y} {x2 - sign * 9},{y - 4.5} {x2 - sign * 9},{y + 4.5}" '
                    f'fill="{colour}"/>'
                )
            label = _fit(row.label, abs(end - x1) - 24)
            part.append(
                f'<text x="{(x1 + end) / 2:g}" y="{y - 5}" text-anchor="middle" fill="{colour}"{weight}>'
                f"{esc(label)}</text>"
            )
            if row.final and not row.lost:
                part.append(_cross(x2, y, 7))
        elif row.shape == "band":
            x1, x2 = lanes["client"], lanes["server"]
            part.append(
                f'<rect x="{x1 + 6}" y="{y - 13}" width="{x2 - x1 - 12}" height="18" rx="4" fill="#fff4d6" '
                f'stroke="{colour}"/>'
                f'<text x="{(x1 + x2) / 2:g}" y="{y}" text-anchor="middle" fill="{colour}">'
                f"{esc(_fit(row.label, x2 - x1 - 24))}</text>"
            )
        else:  # a note beside its lane, towards the next one
            x = lanes[row.src]
            room = (lanes["server"] - x) if row.src == "client" else (lanes["client"] - x)
            label = _fit(row.label, room - 30)
            width = len(label) * _CHAR + 10
            part.append(
                f'<rect x="{x + 12}" y="{y - 13}" width="{width:g}" height="18" rx="4" fill="#ffffff" '
                f'stroke="{colour}" stroke-opacity="0.6"/>'
                f'<text x="{x + 17}" y="{y}" fill="{colour}"{weight}>{esc(label)}</text>'
            )
            if row.final:
                part.append(_cross(x, y - 4, 7))
        part.append("</g>")
        out.append("".join(part))
    out.append("</svg>")
    return "\n".join(out)


# -- the shareable page -----------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
 color:#1d2330;background:#fbfbfd;line-height:1.45}
h1{font-size:1.6rem}
section{border:1px solid #d8dbe3;border-radius:.6rem;padding:1rem 1.3rem;margin:1.4rem 0;background:#fff}
h2{font-size:1.2rem;margin:.2rem 0 .6rem}
h3{font-size:1rem;margin:.9rem 0 .3rem}
.summary dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0}
.summary dt{font-weight:bold}.summary dd{margin:0}
.summary a{margin-right:.5rem}
.summary .ok{color:#2b8a3e;font-weight:bold}.summary .diff{color:#c92a2a;font-weight:bold}
.code{font-family:ui-monospace,monospace;background:#eef1f7;padding:.1rem .35rem;border-radius:.3rem}
.dialogue{font-family:ui-monospace,monospace;font-size:.85rem;background:#10131a;color:#e6e9ef;
 padding:.8rem;border-radius:.4rem;overflow-x:auto;white-space:pre-wrap}
.dns{color:#7fd4e8}.client{color:#8fb4ff}.server{color:#e3a3f0}.note{color:#9aa1ad}
.tls,.cert{color:#f0d27a}.fault{color:#ff7b7b;font-weight:bold}
.policy,.report{color:#8ce99a}.web{color:#66d9e8}.warn{color:#ffd43b;font-weight:bold}
details.diagram{margin:.6rem 0}
details.diagram summary{cursor:pointer;font-weight:bold}
svg.seq{display:block;max-width:100%;height:auto;margin-top:.4rem;border:1px solid #e3e6ee;
 border-radius:.4rem}
.report{font-family:ui-monospace,monospace;font-size:.9rem;padding:.5rem;border-left:4px solid #2f9e44;
 background:#f1faf3}
.report.diff{border-color:#e03131;background:#fff1f1}
"""


def _version() -> str:
    from . import __version__

    return __version__


def summary_html(results: list[DemoResult], lang: str = "en", generated: datetime | None = None) -> str:
    """The page's opening block: date, version, the scenarios played, how many codes were as expected."""
    lab = LABELS[lang]
    esc = html.escape
    when = (generated or datetime.now().astimezone()).replace(microsecond=0)
    good = [r for r in results if r.as_expected]
    bad = [r for r in results if not r.as_expected]
    played = " ".join(f'<a href="#{esc(r.scenario.id)}">{esc(r.scenario.id)}</a>' for r in results)
    misses = ", ".join(
        f'<a href="#{esc(r.scenario.id)}">{esc(r.scenario.id)}</a> ('
        + esc(lab["got"].format(reported=r.reported, expected=r.expected) if r.report else lab["no_report"])
        + ")"
        for r in bad
    )
    codes = f'<span class="ok" data-ok="{len(good)}">{esc(lab["n_ok"].format(n=len(good)))}</span>'
    codes += f', <span class="diff" data-diff="{len(bad)}">{esc(lab["n_diff"].format(n=len(bad)))}</span>'
    if bad:
        codes += f": {misses}"
    return (
        f'<section class="summary" id="summary" aria-labelledby="summary-title">'
        f'<h2 id="summary-title">{esc(lab["summary"])}</h2><dl>'
        f'<dt>{esc(lab["date"])}</dt><dd><time datetime="{when.isoformat()}">'
        f"{when:%Y-%m-%d %H:%M} {esc(when.tzname() or '')}</time></dd>"
        f'<dt>{esc(lab["version"])}</dt><dd class="version">{esc(_version())}</dd>'
        f"<dt>{esc(lab['played'])}</dt>"
        f'<dd class="played" data-count="{len(results)}">{len(results)} · {played}</dd>'
        f'<dt>{esc(lab["codes"])}</dt><dd class="codes">{codes}</dd>'
        "</dl></section>"
    )


_OUTCOME_WORDS: dict[str, dict[str, str]] = {
    "en": {"delivered": "delivered", "bounced": "bounced", "expired": "expired"},
    "fr": {"delivered": "remis", "bounced": "renvoyé", "expired": "expiré"},
}


def _queue_verdict(r: DemoResult, lang: str) -> tuple[str, bool] | None:
    """The queue's outcome against the scenario's expected one: a sentence, and whether they agree."""
    q = r.scenario.queue
    if r.queue is None or q is None:
        return None
    got = str(r.queue.get("outcome"))
    words, lab = _OUTCOME_WORDS[lang], LABELS[lang]
    ok = got == q.outcome
    shown = words.get(got, got)
    return (
        f"{shown} ({lab['outcome']} {words.get(q.outcome, q.outcome)}: {lab['ok'] if ok else lab['diff']})",
        ok,
    )


def render_html(results: list[DemoResult], lang: str = "en", generated: datetime | None = None) -> str:
    """One self-contained HTML page (no external assets, no script) for the played scenarios.

    ``generated``: the date the summary shows (default: now, local time). Results
    with a queue run (``DemoResult.queue``) add the queue's alert after the
    summary and their timeline to their section (:mod:`mailfakes.timeline`)."""
    lab = LABELS[lang]
    esc = html.escape
    runs = [r.queue for r in results if r.queue]
    css = _CSS
    if runs:
        from .timeline import CSS as TIMELINE_CSS

        css += TIMELINE_CSS
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="{lang}"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(lab['tour'])}</title><style>{css}</style></head><body>",
        f"<h1>{esc(lab['tour'])}</h1>",
        summary_html(results, lang, generated),
    ]
    if runs:
        from .timeline import last_error, queue_summary

        fixes: dict[str, str] = {}  # what to fix, by code: the fix of a scenario whose run ended on it
        for r in results:
            if r.queue and r.scenario.fix[lang]:
                fixes.setdefault(last_error(r.queue), " ".join(r.scenario.fix[lang].split()))
        parts.append(queue_summary(runs, lang, fixes))
    for n, r in enumerate(results, 1):
        s = r.scenario
        code = s.expected_code
        ok = r.as_expected
        parts.append(
            f'<section id="{esc(s.id)}" data-scenario="{esc(s.id)}" data-code="{esc(r.reported)}" '
            f'data-expected="{esc(r.expected)}" data-as-expected="{"yes" if ok else "no"}">'
        )
        parts.append(
            f'<h2>{esc(s.title[lang])} <span class="code">{esc(code)}</span></h2>'
            f'<p><span class="code">{esc(s.id)}</span>'
            + (f" · {esc(eop_title(code, lang))}" if eop_title(code, lang) else "")
            + "</p>"
        )
        if s.cause[lang]:  # a user's own scenario may have no explanation
            parts.append(f"<h3>{esc(lab['cause'])}</h3><p>{esc(' '.join(s.cause[lang].split()))}</p>")
        parts.append(f"<h3>{esc(lab['wire'])}</h3><p>{esc(wire_summary(s, lang).replace('`', ''))}</p>")
        parts.append(f"<h3>{esc(lab['dialogue'])}</h3>")
        parts.append(
            f'<details class="diagram" open><summary>{esc(lab["diagram"])}</summary>'
            f"{sequence_svg(r, f'seq-{n}')}</details>"
        )
        parts.append(
            '<div class="dialogue">'
            + "".join(
                f'<div class="{esc(line.kind)}">{esc(MARKS.get(line.kind, ""))}  {esc(line.text)}</div>'
                for line in r.lines
            )
            + "</div>"
        )
        if r.queue:
            from .timeline import timeline_svg, timeline_text

            outcome = _queue_verdict(r, lang)
            parts.append(
                f"<h3>{esc(lab['queue'])}</h3>{timeline_svg(r.queue, lang, f'queue-{n}')}"
                + (
                    f'<p class="report{"" if outcome[1] else " diff"}">{esc(outcome[0])}</p>'
                    if outcome
                    else ""
                )
                + f'<details class="queue-lines"><summary>{esc(lab["queue_lines"])}</summary>'
                '<div class="dialogue">'
                + "".join(f"<div>{esc(line)}</div>" for line in timeline_text(r.queue, lang))
                + "</div></details>"
            )
        if r.report is not None:
            verdict = lab["ok"] if ok else lab["diff"]
            parts.append(
                f'<h3>{esc(lab["reported"])}</h3><p class="report{"" if ok else " diff"}">'
                f"{esc(r.report.line())}<br>{esc(lab['expected'])} {esc(r.expected)}: {esc(verdict)}</p>"
            )
        if s.fix[lang]:
            parts.append(f"<h3>{esc(lab['fix'])}</h3><p>{esc(' '.join(s.fix[lang].split()))}</p>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# -- serve --follow ------------------------------------------------------------------

FOLLOW_MARKS = {
    "dns": ("DNS", ("cyan",)),
    "connect": ("TCP", ("dim",)),
    "close": ("TCP", ("dim",)),
    "smtp_in": ("C >", ("blue",)),
    "smtp_out": ("S <", ("magenta",)),
    "tls": ("TLS", ("yellow",)),
    "fault": (" ! ", ("red", "bold")),
    "message": ("MSG", ("green",)),
    "error": ("ERR", ("red", "bold")),
}


def follower(out: TextIO, colour: bool | None = None) -> Callable[[Event], None]:
    """An event subscriber that prints the live dialogue of a served world."""
    style = Style(out, colour)
    lock = threading.Lock()

    def show(event: Event) -> None:
        mark, styles = FOLLOW_MARKS.get(event.kind, ("   ", ()))
        session = event.data.get("session")
        where = f"{event.host}" + (f" #{session}" if session else "")
        with lock:
            out.write(style(f"{time.strftime('%H:%M:%S')} {mark} {where}: {event.text}", *styles) + "\n")
            out.flush()

    return show
