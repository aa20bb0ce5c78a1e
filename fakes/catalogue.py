"""The scenario catalogue: one TOML file per scenario, loaded and checked.

A scenario file names the failure a delivery client must report (an Exchange
Online "mail flow intelligence" code, ``other`` or ``success``), the codes
other conventions expect (RFC 3463, Postfix, named alternates), a title and an
explanation, the delivery target the client is given and the small mail world
that produces the failure (parsed by :func:`mailfakes.spec.parse_world`). The
package's own scenarios have every text in English and French; a user's own
(a file, a directory or :func:`from_dict`) needs an English title only, its
French texts and its explanation are optional, and a missing French text shows
the English one.

The file format (unknown keys anywhere are errors)::

    id = "tls-cert-expired"     # required, [a-z0-9-], equal to the file name stem
    code = "4.7.320"            # required: an EOP code (EOP_CODES), "other" or "success"
    server_code = "5.1.1"       # required iff code is "other" (4xx/5xx) or "success" (2.x.x)
    rfc3463 = "4.7.5"           # required: what a strictly RFC 3463 client reports
    postfix = "4.7.5"           # optional: what Postfix reports
    [alternates]                # optional: codes under other profiles (ALTERNATE_PROFILES)
    eop-observed = "4.4.317"
    [title]                     # en (required) and fr, one line each
    [explain.en]                # cause and fix; same for [explain.fr] (see above)
    [target]                    # mail_domain (required), smart_host, connect_by_ip,
                                # require_tls (true), mail_from, rcpt_to, credentials,
                                # timeout (seconds the client waits for each step: a slow server)
    [world]                     # hosts, records, dns_faults: every key in mailfakes.faults.TABLE

Every name must lie under the reserved ``.test`` domain, the smart host and
mail domain inside the world's zone; ``connect_by_ip = true`` needs a smart
host that is a host of the world; a scenario of code ``other`` must name a
``server_code`` that some host of its world replies with.

Every bad value raises :class:`ScenarioError` (a :class:`mailfakes.spec.SpecError`)
whose message names the file, the dotted key, the bad value and what is
allowed. :func:`load_catalogue` reads a whole directory (the package directory
by default, cached), :func:`get` and :func:`select` pick scenarios from it.
"""

from __future__ import annotations

import contextlib
import functools
import marshal
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from .codes import EOP_TITLES as EOP_TITLES
from .codes import PROFILES as PROFILES
from .spec import (
    ENHANCED_HINT,
    SpecError,
    Table,
    WorldSpec,
    check_name,
    enhanced_ok,
    frozen,
    in_zone,
    local_part_ok,
    name_ok,
    normalize_name,
    parse_world,
)

if TYPE_CHECKING:
    import tomllib

__all__ = [
    "ALTERNATE_PROFILES",
    "CATALOGUE_DIR",
    "CODES",
    "EOP_CODES",
    "EOP_TITLES",
    "LANGUAGES",
    "PROFILES",
    "Headline",
    "Scenario",
    "ScenarioError",
    "Target",
    "UnknownScenario",
    "clear_cache",
    "from_dict",
    "get",
    "headlines",
    "load_catalogue",
    "load_file",
    "parse_scenario",
    "select",
]

EOP_CODES: Final = tuple(EOP_TITLES)
"""The six Exchange Online codes, in the order of the catalogue."""

CODES: Final = (*EOP_CODES, "other", "success")
"""Every allowed value of a scenario's ``code``, in catalogue order."""

ALTERNATE_PROFILES: Final = ("eop-observed",)
"""Profiles a scenario may name under ``[alternates]``."""

LANGUAGES: Final = ("en", "fr")
"""The languages of the package's own scenarios: every text in both."""

OWN_LANGUAGES: Final = ("en",)
"""The languages a user's own scenario must have: English; French is optional."""

DEFAULT_MAIL_FROM: Final = "sender@fabrikam.test"
RESERVED_TLD: Final = "test"


def _catalogue_dir() -> Path:
    # Installed, the TOML files are the package data of mailfakes.scenario_files
    # (the scenarios/ folder); from a source tree, that folder is next to ours.
    # Those two plain places are looked at first: importlib.resources costs a
    # few milliseconds to import, and `mailfakes list` must start fast.
    here = Path(__file__).resolve().parent
    for candidate in (here / "scenario_files", here.parent / "scenarios"):
        if (candidate / "__init__.py").is_file():
            return candidate
    from importlib import resources

    try:
        return Path(str(resources.files("mailfakes.scenario_files")))
    except ModuleNotFoundError:
        return here.parent / "scenarios"


CATALOGUE_DIR: Final = _catalogue_dir()

_TOP_KEYS: Final = (
    "id",
    "code",
    "server_code",
    "rfc3463",
    "postfix",
    "alternates",
    "title",
    "explain",
    "target",
    "world",
    "queue",
    "sources",
    "tls_report",
)
_QUEUE_KEYS: Final = ("outcome", "last_error", "attempts", "duplicates")
_OUTCOMES: Final = ("delivered", "bounced", "expired")
_TARGET_KEYS: Final = (
    "smart_host",
    "connect_by_ip",
    "mail_domain",
    "require_tls",
    "mail_from",
    "rcpt_to",
    "credentials",
    "timeout",
)
# A scenario's own client timeout ([target] timeout, seconds): long enough for a loaded machine to
# answer a healthy step, short enough to keep a run fast.
TARGET_TIMEOUT_RANGE: Final = (0.5, 30.0)
_EXPLAIN_KEYS: Final = ("cause", "fix")
_ID_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
# Compiled (by re, once) only for a file that is not TOML: not at import.
_TOML_POS_RE: Final = r"\s*\(at line (\d+), column (\d+)\)\s*$"
_LANGUAGE_NAMES: Final = {"en": "English", "fr": "French"}


class ScenarioError(SpecError):
    """A bad scenario file: names the file, the dotted key, the value and what is allowed."""

    def __init__(
        self, where: str, key: str, value: object, expected: str, *, message: str | None = None
    ) -> None:
        super().__init__(where, key, value, expected)
        if message is not None:
            self.args = (message,)


class UnknownScenario(KeyError):
    """No scenario has this id (or no id matches this glob); suggests close matches."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        import difflib  # only on a miss: a few milliseconds off every start

        ids = list(known)
        close = [i for i in ids if name and name in i]
        close += [i for i in difflib.get_close_matches(name, ids, n=5, cutoff=0.6) if i not in close]
        self.name = name
        self.suggestions: tuple[str, ...] = tuple(close[:5])
        if self.suggestions:
            hint = "did you mean " + ", ".join(self.suggestions) + "?"
        elif ids:
            hint = "known scenarios: " + ", ".join(ids)
        else:
            hint = "the catalogue is empty"
        self.message = f"unknown scenario {name!r}; {hint}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


@frozen
class Target:
    """What the delivery client is told: where to deliver, and with what envelope."""

    smart_host: str | None
    mail_domain: str
    connect_by_ip: bool
    require_tls: bool
    mail_from: str
    rcpt_to: tuple[str, ...]
    # Whether the client is given the smart host's account (its auth key): false for a client
    # configured without credentials (auth-required).
    credentials: bool = True
    # The timeout (seconds) the client must be configured with, for a scenario whose verdict depends
    # on it (a slow server): None, the run's own (check --timeout, the plugin's default).
    timeout: float | None = None


@frozen
class QueueExpectation:
    """What a correct queue does with the scenario's message (its ``[queue]`` table).

    ``outcome``: delivered, bounced or expired; ``last_error``: the code the
    last attempt (and so the NDR) must carry, per profile (empty: the
    scenario's own code); ``at_least``/``at_most``: how many delivery
    attempts a queue makes (any correct client, not only the reference
    one); ``duplicates``: the message arrives twice unless the client
    deduplicates (a cut after the final dot).
    """

    outcome: str
    last_error: Mapping[str, str]
    at_least: int = 1
    at_most: int | None = None
    duplicates: bool = False


@frozen
class TlsReportExpectation:
    """What a reporting client (RFC 8460) sends the domain after the scenario (its ``[tls_report]``).

    ``policy``: the policy type the report names (``tlsa`` for DANE, ``sts`` for MTA-STS);
    ``result``: the result type of the failed session (None: the session succeeded).
    """

    domain: str
    policy: str
    result: str | None = None


@frozen
class Scenario:
    """One catalogue entry: the expected codes, the explanation, the target and the world."""

    id: str
    code: str
    server_code: str | None
    rfc3463: str
    postfix: str | None
    alternates: Mapping[str, str]
    title: Mapping[str, str]
    cause: Mapping[str, str]
    fix: Mapping[str, str]
    target: Target
    world: WorldSpec
    path: Path
    languages: tuple[str, ...] = LANGUAGES
    """The languages its author wrote; the others show the English text."""
    queue: QueueExpectation | None = None
    """What a queue must do with the message (a scenario of the queue's cycle), or None."""
    sources: tuple[str, ...] = ()
    """Where its codes and behaviour come from (pages, RFC sections)."""
    tls_report: TlsReportExpectation | None = None
    """What a TLS report of the client must say (a scenario with ``[world.tls_rpt]``), or None."""

    def last_error_for(self, profile: str = "eop") -> str:
        """The code a queue's last attempt (and its NDR) carries under ``profile``."""
        if self.queue is not None and profile in self.queue.last_error:
            return self.queue.last_error[profile]
        if self.queue is not None and profile == "eop-observed" and "eop" in self.queue.last_error:
            return self.queue.last_error["eop"]
        return self.code_for(profile)

    @property
    def expected_code(self) -> str:
        """The EOP code for a failure; the server's own code for ``other`` and ``success``."""
        if self.server_code is not None:
            return self.server_code
        return self.code

    @property
    def is_success(self) -> bool:
        return self.code == "success"

    @property
    def eop_title(self) -> Mapping[str, str] | None:
        """The title of the EOP code (en, fr), or None for ``other`` and ``success``."""
        return EOP_TITLES.get(self.code)

    def code_for(self, profile: str = "eop") -> str:
        """The code a client following ``profile`` (one of :data:`PROFILES`) must report."""
        if profile == "eop":
            return self.expected_code
        if profile == "rfc3463":
            return self.rfc3463
        if profile == "postfix":
            return self.postfix or self.rfc3463
        if profile in ALTERNATE_PROFILES:
            return self.alternates.get(profile, self.expected_code)
        raise ValueError(f"unknown code profile {profile!r}; expected one of " + ", ".join(PROFILES))


# --------------------------------------------------------------------------
# Parsing one file.


def _id_ok(text: str) -> bool:
    """Lowercase ASCII letters and digits in groups joined by single hyphens (no regex to compile)."""
    return (
        text != ""
        and _ID_CHARS.issuperset(text)
        and not text.startswith("-")
        and not text.endswith("-")
        and "--" not in text
    )


def _where(path: Path) -> str:
    """The file as the user should see it: relative to the working directory when inside it."""
    if path.is_absolute():
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)
    return str(path)


def _fail(t: Table, name: str, value: object, expected: str) -> ScenarioError:
    return ScenarioError(t.where, t.key(name), value, expected)


def _is_reserved(name: str) -> bool:
    norm = normalize_name(name)
    return norm == RESERVED_TLD or norm.endswith("." + RESERVED_TLD)


def _enhanced(t: Table, name: str, classes: str, *, required: bool, why: str = "") -> str | None:
    """Read an enhanced status code (like 4.7.5) whose class is among ``classes``."""
    hint = ENHANCED_HINT if classes == "245" else f"an enhanced status code of class {'/'.join(classes)}"
    if not t.has(name):
        if required:
            raise _fail(t, name, None, f"{hint} (required{why})")
        return None
    value = t.raw(name)
    if not isinstance(value, str) or not enhanced_ok(value) or value[0] not in classes:
        raise _fail(t, name, value, hint)
    return value


def _texts(t: Table, name: str, required: Sequence[str]) -> dict[str, str]:
    """Read a table of one text per language; ``required`` ones must be there, all distinct."""
    if not t.has(name):
        raise _fail(t, name, None, _texts_hint(required))
    lt = t.table(name)
    lt.done(LANGUAGES)
    texts: dict[str, str] = {}
    for lang in LANGUAGES:
        if lt.has(lang):
            texts[lang] = " ".join(lt.string(lang).split())
        elif lang in required:
            raise _fail(
                lt, lang, None, f"a non-empty {_LANGUAGE_NAMES[lang]} text (required{_why(required)})"
            )
    _distinct(t.where, name, texts)
    return texts


def _texts_hint(required: Sequence[str]) -> str:
    if len(required) == len(LANGUAGES):
        return "a table with one text per language: " + ", ".join(LANGUAGES)
    return "a table with an English text (en) and, optionally, a French one (fr)"


def _why(required: Sequence[str]) -> str:
    # Only the package's own scenarios must be bilingual: say so, a user may wonder.
    return ", as in every scenario of the package's catalogue" if "fr" in required else ""


def _distinct(where: str, key: str, texts: Mapping[str, str]) -> None:
    first = texts[LANGUAGES[0]]
    for lang in LANGUAGES[1:]:
        if texts.get(lang) == first:
            raise ScenarioError(
                where,
                f"{key}.{lang}",
                texts[lang],
                f"a {_LANGUAGE_NAMES[lang]} text, not a copy of the English one (or no {lang} key)",
            )


def _explain(t: Table, required: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    if not t.has("explain"):
        if "fr" not in required:
            return {}, {}  # a user's own scenario may go without an explanation
        raise _fail(t, "explain", None, "a table [explain.en] and [explain.fr], each with cause and fix")
    et = t.table("explain")
    et.done(LANGUAGES)
    cause: dict[str, str] = {}
    fix: dict[str, str] = {}
    for lang in LANGUAGES:
        if not et.has(lang):
            if lang not in required:
                continue
            raise _fail(
                et, lang, None, f"a table [explain.{lang}] with cause and fix (required{_why(required)})"
            )
        lt = et.table(lang)
        lt.done(_EXPLAIN_KEYS)
        for key, out in (("cause", cause), ("fix", fix)):
            if not lt.has(key):
                raise _fail(lt, key, None, f"a non-empty {_LANGUAGE_NAMES[lang]} text (required)")
            out[lang] = " ".join(lt.string(key).split())
    for key, texts in (("cause", cause), ("fix", fix)):
        for lang in LANGUAGES[1:]:
            if lang in texts and texts[lang] == texts[LANGUAGES[0]]:
                raise ScenarioError(
                    t.where,
                    f"explain.{lang}.{key}",
                    texts[lang],
                    f"a {_LANGUAGE_NAMES[lang]} text, not a copy of the English one",
                )
    return cause, fix


def _with_fallback(texts: Mapping[str, str]) -> Mapping[str, str]:
    """Every language, the missing ones showing the English text (or nothing, without one)."""
    english = texts.get(LANGUAGES[0], "")
    return MappingProxyType({lang: texts.get(lang, english) for lang in LANGUAGES})


def _address(t: Table, key: str, value: str) -> str:
    local, at, domain = value.rpartition("@")
    # A plain dot-atom: the address ends up in shell commands (mailfakes check).
    if not at or not local_part_ok(local) or not name_ok(normalize_name(domain)):
        raise _fail(
            t,
            key,
            value,
            "a mail address like user@contoso.test (letters, digits, '.', '-', '_', '+'; "
            "neither part starting with '-')",
        )
    if not _is_reserved(domain):
        raise _fail(
            t, key, value, f"an address under the reserved .{RESERVED_TLD} domain, like user@contoso.test"
        )
    return f"{local}@{normalize_name(domain)}"


def _parse_target(t: Table, world: WorldSpec) -> Target:
    if not t.has("target"):
        raise _fail(t, "target", None, "a table [target] with at least mail_domain")
    tt = t.table("target")
    tt.done(_TARGET_KEYS)
    zone = world.zone
    host_names = [h.name for h in world.hosts]
    if not tt.has("mail_domain"):
        raise _fail(tt, "mail_domain", None, "a DNS name like contoso.test (required)")
    mail_domain = check_name(tt, "mail_domain", tt.string("mail_domain"), zone)
    smart_host = None
    if tt.has("smart_host"):
        smart_host = check_name(tt, "smart_host", tt.string("smart_host"), zone)
    connect_by_ip = tt.boolean("connect_by_ip", False)
    if connect_by_ip:
        if smart_host is None:
            raise _fail(
                tt, "connect_by_ip", True, "true only with a smart_host that names a host of the world"
            )
        if smart_host not in host_names:
            raise _fail(
                tt,
                "smart_host",
                smart_host,
                "a host of the world when connect_by_ip = true: one of "
                + (", ".join(host_names) or "(none)"),
            )
    require_tls = tt.boolean("require_tls", True)
    mail_from = _address(tt, "mail_from", tt.string("mail_from", DEFAULT_MAIL_FROM))
    if tt.has("rcpt_to"):
        rcpts = tt.string_list("rcpt_to")
        if not rcpts:
            raise _fail(tt, "rcpt_to", [], "at least one address")
    else:
        rcpts = [f"user@{mail_domain}"]
    rcpt_to = tuple(_address(tt, f"rcpt_to[{i}]", r) for i, r in enumerate(rcpts))
    credentials = tt.boolean("credentials", True)
    if tt.has("credentials"):
        host = next((h for h in world.hosts if h.name == smart_host), None)
        if host is None or host.kind != "smtp" or host.smtp.auth is None:
            raise _fail(
                tt,
                "credentials",
                credentials,
                "no credentials key unless the smart host has an auth table (it names that account)",
            )
    timeout = None
    if tt.has("timeout"):
        value = tt.raw("timeout")
        lo, hi = TARGET_TIMEOUT_RANGE
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise _fail(tt, "timeout", value, f"a number of seconds from {lo:g} to {hi:g}")
        timeout = float(value)
    return Target(
        smart_host=smart_host,
        mail_domain=mail_domain,
        connect_by_ip=connect_by_ip,
        require_tls=require_tls,
        mail_from=mail_from,
        rcpt_to=rcpt_to,
        credentials=credentials,
        timeout=timeout,
    )


def _check_world(where: str, world: WorldSpec) -> None:
    """Catalogue rules on top of parse_world: every name under the reserved .test domain."""
    if not _is_reserved(world.zone):
        raise ScenarioError(
            where, "world.zone", world.zone, f"{RESERVED_TLD!r} or a zone under .{RESERVED_TLD}"
        )
    for i, r in enumerate(world.records):
        if r.type in ("MX", "CNAME") and r.value != "." and not _is_reserved(r.value):
            raise ScenarioError(
                where,
                f"world.records[{i}].value",
                r.value,
                f"a name under the reserved .{RESERVED_TLD} domain",
            )


def _replied_codes(world: WorldSpec) -> list[str]:
    """Enhanced codes that some SMTP host of the world sends of its own accord."""
    codes: list[str] = []
    for h in world.hosts:
        if h.kind != "smtp":
            continue
        replies = [h.smtp.greeting, *h.smtp.replies.values()]
        if h.smtp.greylist is not None:
            replies.append(h.smtp.greylist.reply)
        replies += _limit_replies(h.smtp)
        codes += [r.enhanced for r in replies if r is not None and r.enhanced and r.enhanced not in codes]
        a = h.smtp.auth
        if a is not None:  # its authentication's replies (mailfakes.auth)
            own = [a.required.enhanced if a.required is not None else None]
            own.append({"bad_credentials": "5.7.8", "temporary": "4.7.0"}.get(a.fault or ""))
            own.append("5.7.60" if a.send_as else None)
            codes += [c for c in own if c and c not in codes]
        if not h.smtp.advertises("ENHANCEDSTATUSCODES"):
            # No enhanced code goes out: a client makes up x.0.0 from the reply's first digit (RFC 3463 3.1).
            made_up = [f"{r.code // 100}.0.0" for r in replies if r is not None and 400 <= r.code < 600]
            codes += [c for c in dict.fromkeys(made_up) if c not in codes]
    return codes


def _limit_replies(plan: Any) -> list[Any]:
    """The replies a host's limits send: over the size, the recipient, the rate and the session limits."""
    from .faults import TOO_MANY_CONNECTIONS, TOO_MANY_RECIPIENTS, Reply

    out: list[Any] = []
    if plan.max_size is not None:
        out.append(Reply(552, "Message size exceeds fixed maximum message size", "5.3.4"))
    if plan.max_recipients is not None:
        out.append(TOO_MANY_RECIPIENTS)
    if plan.rate_limit is not None:
        out.append(plan.rate_limit.refusal)
    if plan.max_sessions is not None:
        out.append(TOO_MANY_CONNECTIONS)
    if not plan.advertises("SMTPUTF8"):  # a UTF-8 address to a host without SMTPUTF8 (RFC 6531 3.6)
        out.append(Reply(553, "Must declare SMTPUTF8 to send a non-ASCII address", "5.6.7"))
    return out


def _codes_by_profile(t: Table, profiles: Sequence[str]) -> dict[str, str]:
    """A table of one code per profile (``[alternates]``, ``[queue.last_error]``): EOP or enhanced codes."""
    t.done(tuple(profiles))
    codes: dict[str, str] = {}
    for profile in profiles:
        if t.has(profile):
            value = t.raw(profile)
            if not isinstance(value, str) or not (value in EOP_CODES or enhanced_ok(value)):
                raise _fail(t, profile, value, "one of " + ", ".join(EOP_CODES) + " or an enhanced code")
            codes[profile] = value
    return codes


_REPORT_POLICIES: Final = ("tlsa", "sts", "no-policy-found")


def _parse_tls_report(t: Table, world: WorldSpec, target: Target) -> TlsReportExpectation:
    from .faults import TLS_RESULT_TYPES as RESULT_TYPES

    rt = t.table("tls_report")
    rt.done(("policy", "result"))
    policy = rt.choice("policy", _REPORT_POLICIES)
    result = rt.choice("result", (*RESULT_TYPES, "none"), "none")
    domain = target.mail_domain
    if not any(r.domain == domain for r in world.tls_rpt):
        raise _fail(
            t, "tls_report", t.raw("tls_report"), f"a world whose [world.tls_rpt.{domain!r}] says where"
        )
    return TlsReportExpectation(domain=domain, policy=policy, result=None if result == "none" else result)


def _parse_queue(t: Table) -> QueueExpectation:
    qt = t.table("queue")
    qt.done(_QUEUE_KEYS)
    outcome = qt.choice("outcome", _OUTCOMES)
    last = _codes_by_profile(qt.table("last_error"), PROFILES)
    at_least, at_most = 1, None
    if qt.has("attempts"):
        at = qt.table("attempts")
        at.done(("at_least", "at_most"))
        at_least = at.integer("at_least", 1, lo=1, hi=10_000)
        at_most = at.integer("at_most", 0, lo=1, hi=10_000) if at.has("at_most") else None
        if at_most is not None and at_most < at_least:
            raise _fail(at, "at_most", at_most, f"at least at_least ({at_least})")
    duplicates = qt.boolean("duplicates", False)
    return QueueExpectation(
        outcome=outcome,
        last_error=MappingProxyType(last),
        at_least=at_least,
        at_most=at_most,
        duplicates=duplicates,
    )


def parse_scenario(data: Mapping[str, Any], where: str, path: Path | None, *, own: bool = True) -> Scenario:
    """Build a Scenario from the parsed TOML of the file at ``path`` (shown as ``where``).

    ``own`` (a user's scenario) asks for English texts only and lets ``explain``
    out; ``own=False`` applies the rules of the package's catalogue, where every
    text is in English and French. ``path`` None is a scenario written inline
    (:func:`from_dict`), whose id no file name has to match.
    """
    required = OWN_LANGUAGES if own else LANGUAGES
    t = Table(data, where, "")
    t.done(_TOP_KEYS)  # a misspelt key is reported before the required key it hides

    if not t.has("id"):
        named = f"the file name without .toml ({path.stem!r})" if path else "an id like my-smtp-case"
        raise _fail(t, "id", None, f"{named} (required)")
    sid = t.string("id")
    if not _id_ok(sid):
        raise _fail(t, "id", sid, "lowercase letters, digits and single hyphens, like tls-cert-expired")
    if path is not None and sid != path.stem:
        raise _fail(t, "id", sid, f"the file name without .toml ({path.stem!r})")

    code = t.choice("code", CODES)
    server_code: str | None = None
    if code == "other":
        server_code = _enhanced(t, "server_code", "45", required=True, why=" when code = 'other'")
    elif code == "success":
        server_code = _enhanced(t, "server_code", "2", required=True, why=" when code = 'success'")
    elif t.has("server_code"):
        raise _fail(
            t, "server_code", t.raw("server_code"), "no server_code unless code is 'other' or 'success'"
        )
    classes = "2" if code == "success" else "45"
    rfc3463 = _enhanced(t, "rfc3463", classes, required=True)
    assert rfc3463 is not None
    postfix = _enhanced(t, "postfix", classes, required=False)

    alternates = _codes_by_profile(t.table("alternates"), ALTERNATE_PROFILES)

    title = _texts(t, "title", required)
    for lang, text in title.items():
        if len(text) > 100:
            raise ScenarioError(where, f"title.{lang}", text, "a title of at most 100 characters")
    cause, fix = _explain(t, required)
    languages = tuple(lang for lang in LANGUAGES if lang in title)

    if not t.has("world"):
        raise _fail(t, "world", None, "a table [world] describing the hosts and DNS (required)")
    world = parse_world(t.raw("world"), where=where, path="world")
    _check_world(where, world)
    target = _parse_target(t, world)

    if code == "other":
        replied = _replied_codes(world)
        if server_code not in replied:
            raise _fail(
                t,
                "server_code",
                server_code,
                "the enhanced code of a reply some host of the world sends: "
                + (", ".join(replied) or "(none)"),
            )

    queue = _parse_queue(t) if t.has("queue") else None
    sources = tuple(t.string_list("sources"))
    tls_report = _parse_tls_report(t, world, target) if t.has("tls_report") else None
    sd = world.sender_domain
    if sd is not None:
        for key, name in (("mail_domain", target.mail_domain), ("smart_host", target.smart_host)):
            if name is not None and in_zone(name, sd):
                raise _fail(t, f"target.{key}", name, f"a name outside the sender's domain {sd!r}")
        sender = target.mail_from.rpartition("@")[2]
        if sender != sd:
            raise _fail(
                t,
                "world.sender_domain",
                sd,
                f"the domain of target.mail_from ({sender}): its bounces go there",
            )
    return Scenario(
        queue=queue,
        sources=sources,
        tls_report=tls_report,
        id=sid,
        code=code,
        server_code=server_code,
        rfc3463=rfc3463,
        postfix=postfix,
        alternates=MappingProxyType(alternates),
        title=_with_fallback(title),
        cause=_with_fallback(cause),
        fix=_with_fallback(fix),
        target=target,
        world=world,
        path=path if path is not None else Path(f"<{sid}>"),
        languages=languages,
    )


def _syntax_error(where: str, err: tomllib.TOMLDecodeError, text: str) -> ScenarioError:
    reason = str(err)
    m = re.search(_TOML_POS_RE, reason)
    if m:
        line, col = int(m.group(1)), int(m.group(2))
        reason = reason[: m.start()]
    else:  # "(at end of document)"
        reason = re.sub(r"\s*\(at end of document\)\s*$", "", reason)
        line, col = text.count("\n") + 1, 1
    return ScenarioError(
        where,
        f"line {line}",
        reason,
        "valid TOML",
        message=f"{where}: line {line}, column {col}: invalid TOML: {reason}",
    )


def load_file(path: str | os.PathLike[str], *, own: bool = True) -> Scenario:
    """Read and check one scenario file. Raises ScenarioError (OSError if unreadable).

    A file of your own needs English texts only (see :func:`parse_scenario`)::

        scenario = load_file("tests/scenarios/my-relay-refuses.toml")
    """
    p = Path(path)
    return _parsed(_read_toml(p, _where(p)), _where(p), p, own=own)


def _read_toml(path: Path, where: str) -> dict[str, Any]:
    """The TOML data of one file, or the ScenarioError of a file that is not UTF-8 TOML."""
    import tomllib  # not needed when the catalogue's decoded files are cached

    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScenarioError(where, "(file)", raw[e.start : e.end], "a UTF-8 text file") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _syntax_error(where, e, text) from None


def _parsed(data: Mapping[str, Any], where: str, path: Path | None, *, own: bool) -> Scenario:
    try:
        return parse_scenario(data, where, path, own=own)
    except ScenarioError:
        raise
    except SpecError as e:
        raise ScenarioError(e.where, e.key, e.value, e.expected) from None


def from_dict(data: Mapping[str, Any], *, where: str | None = None) -> Scenario:
    """A scenario of your own written as a dict, with the keys of a scenario file.

    English texts only are required, ``explain`` may be left out, and the id
    matches no file name. ``where`` names it in error messages::

        scenario = from_dict({
            "id": "relay-refuses", "code": "4.4.316", "rfc3463": "4.4.1",
            "title": {"en": "Our relay is switched off"},
            "target": {"smart_host": "relay.contoso.test", "mail_domain": "contoso.test"},
            "world": {"zone": "test", "hosts": {"relay.contoso.test": {"kind": "refuse"}}},
        })
    """
    if not isinstance(data, Mapping):
        raise ScenarioError(
            where or "(inline scenario)", "(top level)", data, "a dict with the keys of a scenario file"
        )
    sid = data.get("id")
    shown = where or (f"inline scenario {sid!r}" if isinstance(sid, str) else "inline scenario")
    return _parsed(data, shown, None, own=True)


# --------------------------------------------------------------------------
# The catalogue.


def _scenario_files(directory: Path) -> list[Path]:
    """Every *.toml under ``directory``, subdirectories included (hidden ones skipped)."""
    found: list[Path] = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        found += [Path(root, f) for f in sorted(files) if f.endswith(".toml") and not f.startswith(".")]
    return found


def _sort_key(s: Scenario) -> tuple[int, str]:
    return (CODES.index(s.code), s.id)


# The package's catalogue keeps the decoded TOML of its files (never a parsed
# Scenario) in its __pycache__, each file's entry valid while its size and
# mtime stay the same: decoding is most of what `mailfakes list` would spend
# (and importing tomllib most of `show`), and every check of parse_scenario
# still runs on every load. Never used for a directory of yours; not written
# under PYTHONDONTWRITEBYTECODE, as Python's own .pyc files.
_CACHE_NAME: Final = f"catalogue.{sys.implementation.cache_tag}.marshal"
_CACHE_FORMAT: Final = 1

_Decoded = dict[str, tuple[int, int, dict[str, Any]]]  # path -> (size, mtime_ns, data)


def _cache_file() -> Path:
    return CATALOGUE_DIR / "__pycache__" / _CACHE_NAME


def _read_cache() -> _Decoded:
    try:
        version, entries = marshal.loads(_cache_file().read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    if version != _CACHE_FORMAT or not isinstance(entries, dict):
        return {}
    return entries


def _write_cache(entries: _Decoded) -> None:
    if sys.dont_write_bytecode:
        return
    cache = _cache_file()
    try:
        blob = marshal.dumps((_CACHE_FORMAT, entries))
    except ValueError:  # a TOML date or time: marshal cannot keep it, so nothing is cached
        return
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    try:
        cache.parent.mkdir(exist_ok=True)
        tmp.write_bytes(blob)
        os.replace(tmp, cache)  # readers see the old cache or the new one, never half of one
    except OSError:  # a read-only installation: it just starts a little slower
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _decode(path: Path, entries: _Decoded) -> tuple[dict[str, Any], bool]:
    """The TOML data of ``path``, from ``entries`` if still valid; and whether it was decoded anew."""
    st = path.stat()
    entry = entries.get(str(path))
    if entry is not None and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
        return entry[2], False
    data = _read_toml(path, _where(path))  # a file that does not decode raises: nothing cached
    entries[str(path)] = (st.st_size, st.st_mtime_ns, data)
    return data, True


def _load_dir(directory: Path, *, own: bool = True, cached: bool = False) -> dict[str, Scenario]:
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a scenario directory")
    files = _scenario_files(directory)
    entries = _read_cache() if cached else {}
    decoded: dict[str, dict[str, Any]] = {}
    fresh = False
    for path in files:
        decoded[str(path)], new = _decode(path, entries)
        fresh = fresh or new
    if cached and (fresh or len(entries) != len(files)):
        _write_cache({str(p): entries[str(p)] for p in files})
    seen: dict[str, Scenario] = {}
    for path in files:
        s = _parsed(decoded[str(path)], _where(path), path, own=own)
        if s.id in seen:
            raise ScenarioError(
                _where(path),
                "id",
                s.id,
                f"an id used by one file only; {_where(seen[s.id].path)} has the same id",
            )
        seen[s.id] = s
    return {s.id: s for s in sorted(seen.values(), key=_sort_key)}


@frozen
class Headline:
    """What ``mailfakes list`` shows of a package scenario: read from its file's head, its world
    left unparsed (``show``, ``serve``, ``check`` and the test suite check every file in full)."""

    id: str
    code: str
    expected_code: str
    title: Mapping[str, str]
    smart_host: str | None
    mail_domain: str


def headlines() -> list[Headline]:
    """The package catalogue's headlines, in catalogue order (about 1 ms a file less than a load)."""
    if _default_catalogue.cache_info().currsize:  # loaded already: the same facts, checked
        return [
            Headline(s.id, s.code, s.expected_code, s.title, s.target.smart_host, s.target.mail_domain)
            for s in _default_catalogue()
        ]
    files = _scenario_files(CATALOGUE_DIR)
    entries = _read_cache()
    out: list[Headline] = []
    fresh = False
    for path in files:
        data, new = _decode(path, entries)
        fresh = fresh or new
        title = data.get("title", {})
        target = data.get("target", {})
        code = str(data.get("code", "other"))
        out.append(
            Headline(
                id=str(data.get("id", path.stem)),
                code=code,
                expected_code=str(data.get("server_code") or code),
                title=MappingProxyType(
                    {lang: str(title.get(lang) or title.get("en", "")) for lang in LANGUAGES}
                ),
                smart_host=target.get("smart_host"),
                mail_domain=str(target.get("mail_domain", "")),
            )
        )
    if fresh or len(entries) != len(files):
        _write_cache({str(p): entries[str(p)] for p in files})
    return sorted(out, key=lambda h: (CODES.index(h.code) if h.code in CODES else len(CODES), h.id))


@functools.cache
def _default_catalogue() -> tuple[Scenario, ...]:
    return tuple(_load_dir(CATALOGUE_DIR, own=False, cached=True).values())


def load_catalogue(directory: str | os.PathLike[str] | None = None) -> dict[str, Scenario]:
    """All scenarios of ``directory`` (default: this package, cached), by id.

    The package's own files must have every text in English and French; a
    directory of yours needs English only.

    Sorted by code (the order of :data:`CODES`), then id. Each call returns a
    new dict; the scenarios themselves are immutable.
    """
    if directory is None:
        return {s.id: s for s in _default_catalogue()}
    return _load_dir(Path(directory))


@functools.cache
def _get_one(path: Path) -> Scenario:
    entries = _read_cache()
    data, _ = _decode(path, entries)  # a new entry waits for the next load of the whole catalogue
    return _parsed(data, _where(path), path, own=False)


def clear_cache() -> None:
    """Forget the cached default catalogue (after editing its files)."""
    _default_catalogue.cache_clear()
    _get_one.cache_clear()


def get(scenario_id: str, catalogue: Mapping[str, Scenario] | None = None) -> Scenario:
    """The scenario with this id; UnknownScenario (a KeyError) suggests close ids.

    From the package's catalogue, only the file ``<id>.toml`` is read and
    checked when the catalogue is not loaded yet (every file is read on a miss,
    to suggest close ids). Example::

        s = get("tls-cert-expired")
        print(s.code, s.title["en"])   # 4.7.320 Server certificate expired
    """
    if catalogue is None:
        if _default_catalogue.cache_info().currsize == 0 and _id_ok(scenario_id):
            path = CATALOGUE_DIR / f"{scenario_id}.toml"
            if path.is_file():
                return _get_one(path)
        catalogue = load_catalogue()
    cat = catalogue
    try:
        return cat[scenario_id]
    except KeyError:
        raise UnknownScenario(scenario_id, cat) from None


def select(
    ids_or_globs: Sequence[str] = (),
    code: str | None = None,
    catalogue: Mapping[str, Scenario] | None = None,
) -> list[Scenario]:
    """Scenarios whose id matches one of ``ids_or_globs`` (all when empty), optionally of one code.

    Patterns are fnmatch globs (``tls-cert-*``); results follow the order of
    the patterns, then catalogue order, without repeats. A pattern that
    matches nothing raises UnknownScenario. ``code`` matches the scenario's
    ``code`` (``4.4.312``, ``other``, ...) or its expected code (``5.1.1``).
    Example::

        for s in select(["tls-cert-*"], code="4.7.320"):
            print(s.id)
    """
    import fnmatch

    cat = load_catalogue() if catalogue is None else catalogue
    if isinstance(ids_or_globs, str):
        ids_or_globs = (ids_or_globs,)
    if code is not None and code not in CODES and not enhanced_ok(code):
        raise ValueError(
            f"unknown code {code!r}; expected one of " + ", ".join(CODES) + " or an enhanced code"
        )
    chosen: list[str] = []
    for pattern in ids_or_globs or ("*",):
        matches = [i for i in cat if fnmatch.fnmatchcase(i, pattern)]
        if not matches:
            raise UnknownScenario(pattern, cat)
        chosen += [i for i in matches if i not in chosen]
    found = [cat[i] for i in chosen]
    if code is not None:
        found = [s for s in found if code in (s.code, s.expected_code)]
    return found
