"""The scenario catalogue: the real files load and cover every code; bad files fail clearly."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from mailfakes import catalogue as scenarios
from mailfakes.catalogue import (
    CODES,
    EOP_CODES,
    EOP_TITLES,
    LANGUAGES,
    Scenario,
    ScenarioError,
    UnknownScenario,
    get,
    load_catalogue,
    load_file,
    select,
)
from mailfakes.markdown import markdown_table
from mailfakes.spec import SpecError

# --------------------------------------------------------------------------
# The real catalogue.

MIN_PER_CODE = {
    "4.4.312": 5,
    "4.4.315": 1,
    "4.4.316": 1,
    "4.4.317": 4,
    "4.4.318": 4,
    "4.7.320": 5,
    "other": 2,
    "success": 1,
}


@pytest.fixture(scope="module")
def catalogue() -> dict[str, Scenario]:
    return load_catalogue()


def _names(s: Scenario) -> list[tuple[str, str]]:
    """Every DNS name or mail domain a scenario mentions, with where it comes from."""
    w, t = s.world, s.target
    out = [("world.zone", w.zone), ("target.mail_domain", t.mail_domain)]
    if t.smart_host:
        out.append(("target.smart_host", t.smart_host))
    out += [("target.mail_from", t.mail_from.rpartition("@")[2])]
    out += [("target.rcpt_to", r.rpartition("@")[2]) for r in t.rcpt_to]
    out += [("world.hosts", h.name) for h in w.hosts]
    out += [("world.records.name", r.name) for r in w.records]
    out += [
        ("world.records.value", r.value) for r in w.records if r.type in ("MX", "CNAME") and r.value != "."
    ]
    out += [("world.dns_faults.name", f.name) for f in w.dns_faults]
    return out


def test_catalogue_loads_with_enough_scenarios(catalogue: dict[str, Scenario]) -> None:
    assert len(catalogue) >= 25
    counts = Counter(s.code for s in catalogue.values())
    for code, minimum in MIN_PER_CODE.items():
        assert counts[code] >= minimum, f"{code}: {counts[code]} scenarios, want at least {minimum}"
    assert set(counts) <= set(CODES)


def test_catalogue_is_sorted_by_code_then_id(catalogue: dict[str, Scenario]) -> None:
    keys = [(CODES.index(s.code), s.id) for s in catalogue.values()]
    assert keys == sorted(keys)


def test_ids_match_file_names(catalogue: dict[str, Scenario]) -> None:
    for sid, s in catalogue.items():
        assert s.id == sid == s.path.stem
        assert s.path.suffix == ".toml"
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", sid)


def _sentences(text: str) -> int:
    return len(re.findall(r"[.!?](?:\s|$)", text))


def test_texts_in_both_languages_and_distinct(catalogue: dict[str, Scenario]) -> None:
    for s in catalogue.values():
        for field in ("title", "cause", "fix"):
            texts = getattr(s, field)
            assert set(texts) == set(LANGUAGES), (s.id, field)
            assert all(texts[lang].strip() for lang in LANGUAGES), (s.id, field)
            assert texts["en"] != texts["fr"], (s.id, field)
        for lang in LANGUAGES:
            assert 2 <= _sentences(s.cause[lang]) <= 4, (s.id, lang, "cause")
            assert 1 <= _sentences(s.fix[lang]) <= 3, (s.id, lang, "fix")


def test_all_names_under_reserved_test_domain(catalogue: dict[str, Scenario]) -> None:
    for s in catalogue.values():
        for where, name in _names(s):
            assert name == "test" or name.endswith(".test"), (s.id, where, name)


def test_codes_are_consistent(catalogue: dict[str, Scenario]) -> None:
    for s in catalogue.values():
        if s.code in EOP_CODES:
            assert s.server_code is None
            assert s.expected_code == s.code == s.code_for("eop")
            assert s.rfc3463[0] in "45"
        elif s.code == "other":
            assert s.server_code is not None and s.server_code[0] in "45"
            assert s.expected_code == s.server_code == s.rfc3463
        else:
            assert s.server_code == "2.0.0" == s.expected_code
        assert s.code_for("rfc3463") == s.rfc3463
        assert s.code_for("postfix") == (s.postfix or s.rfc3463)
        assert s.code_for("eop-observed") == s.alternates.get("eop-observed", s.expected_code)


def test_certificate_scenarios_have_observed_alternate(catalogue: dict[str, Scenario]) -> None:
    certs = [s for s in catalogue.values() if s.code == "4.7.320"]
    assert certs
    for s in certs:
        assert s.code_for("eop-observed") == "4.4.317", s.id
        assert s.code_for("eop") == "4.7.320"
    assert {s.world.hosts[0].smtp.cert for s in certs} >= {
        "expired",
        "not_yet_valid",
        "wrong_host",
        "untrusted_ca",
        "self_signed",
        "missing_intermediate",
    }


def test_unknown_profile_is_rejected(catalogue: dict[str, Scenario]) -> None:
    with pytest.raises(ValueError, match="eop-observed"):
        next(iter(catalogue.values())).code_for("exim")


def test_eop_titles_cover_the_six_codes() -> None:
    assert set(EOP_TITLES) == set(EOP_CODES)
    for titles in EOP_TITLES.values():
        assert set(titles) == set(LANGUAGES)


def test_catalogue_is_cached_but_returns_a_fresh_dict(catalogue: dict[str, Scenario]) -> None:
    again = load_catalogue()
    assert again is not catalogue
    assert list(again) == list(catalogue)
    assert all(again[i] is catalogue[i] for i in catalogue)


def test_markdown_table_has_one_row_per_scenario(catalogue: dict[str, Scenario]) -> None:
    table = markdown_table(catalogue.values())
    lines = table.splitlines()
    assert lines[0].startswith("| id | code | title |")
    assert len(lines) == 2 + len(catalogue)
    for line, s in zip(lines[2:], catalogue.values(), strict=True):
        assert line.startswith(f"| `{s.id}` | {s.code}")
        assert s.title["en"] in line
        assert line.count(" | ") == 3  # no stray pipes inside a cell
    assert markdown_table(catalogue) == table
    assert "NXDOMAIN" in table and "RST" in table


# --------------------------------------------------------------------------
# get() and select().


def test_get_returns_the_scenario(catalogue: dict[str, Scenario]) -> None:
    assert get("tls-cert-expired") is catalogue["tls-cert-expired"]


def test_get_unknown_id_suggests_close_match() -> None:
    with pytest.raises(UnknownScenario) as info:
        get("tls-cert-expird")
    assert isinstance(info.value, KeyError)
    assert "tls-cert-expird" in str(info.value)
    assert "tls-cert-expired" in str(info.value)
    assert "tls-cert-expired" in info.value.suggestions


def test_select_by_glob_and_code(catalogue: dict[str, Scenario]) -> None:
    certs = select(["tls-cert-*"])
    assert len(certs) >= 5 and all(s.code == "4.7.320" for s in certs)
    assert [s.id for s in select(code="4.4.316")] == [s.id for s in catalogue.values() if s.code == "4.4.316"]
    assert all(s.code == "4.4.312" for s in select(["dns-*"], code="4.4.312"))
    assert [s.id for s in select(code="5.1.1")] == ["queue-permanent-550", "smtp-rcpt-550-unknown-user"]
    assert len(select()) == len(catalogue)
    assert select("baseline-delivered")[0].id == "baseline-delivered"  # a lone string is one pattern


def test_select_keeps_pattern_order_without_repeats() -> None:
    got = [s.id for s in select(["tls-cert-expired", "dns-nxdomain", "tls-cert-*"])]
    assert got[:2] == ["tls-cert-expired", "dns-nxdomain"]
    assert len(got) == len(set(got))


def test_select_pattern_matching_nothing_fails() -> None:
    with pytest.raises(UnknownScenario, match="dns-nxdomain"):
        select(["dns-nxdomian"])
    with pytest.raises(ValueError, match=re.escape("4.4.312")):
        select(code="4.4.999x")


# --------------------------------------------------------------------------
# Bad scenario files: each error names the file, the dotted key and the value.

BASE = """\
id = "{id}"
code = "4.7.320"
rfc3463 = "4.7.5"

[title]
en = "Certificate expired"
fr = "Certificat expiré"

[explain.en]
cause = "The certificate is out of date. The client rejects it."
fix = "Renew the certificate."

[explain.fr]
cause = "Le certificat est périmé. Le client le rejette."
fix = "Renouvelez le certificat."

[target]
smart_host = "mail.contoso.test"
mail_domain = "contoso.test"

[world]
zone = "test"

[world.hosts."mail.contoso.test"]
kind = "smtp"
cert = "expired"
"""

MX_RECORD = """
[[world.records]]
name = "contoso.test"
type = "MX"
value = "mail.contoso.test"
priority = 10
"""


def write(directory: Path, text: str, stem: str = "bad", sid: str | None = None) -> Path:
    path = directory / f"{stem}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.replace("{id}", sid or stem), encoding="utf-8")
    return path


def edit(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def fails(path: Path, *fragments: str, own: bool = True) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load_file(path, own=own)
    message = str(info.value)
    assert path.name in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert isinstance(info.value, SpecError)
    return info.value


def test_base_file_is_valid(tmp_path: Path) -> None:
    s = load_file(write(tmp_path, BASE + MX_RECORD))
    assert s.id == "bad" and s.code == "4.7.320" and s.expected_code == "4.7.320"
    assert s.target.rcpt_to == ("user@contoso.test",)
    assert s.target.mail_from == "sender@fabrikam.test"
    assert s.target.require_tls is True and s.target.connect_by_ip is False
    assert s.code_for("eop-observed") == "4.7.320"  # no alternate: the documented code
    assert s.code_for("postfix") == "4.7.5"  # no postfix code: the RFC 3463 one


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, edit('code = "4.7.320"', 'code = "4.7.320'))
    err = fails(path, "line 2", "invalid TOML")
    assert err.key == "line 2"


@pytest.mark.parametrize(
    ("old", "key", "hint"),
    [
        ('mail_domain = "contoso.test"\n', "target.mail_domain", "required"),
        ('rfc3463 = "4.7.5"\n', "rfc3463", "required"),
        ('code = "4.7.320"\n', "code", "required"),
    ],
)
def test_missing_required_key(tmp_path: Path, old: str, key: str, hint: str) -> None:
    err = fails(write(tmp_path, edit(old, "")), f"{key}: missing", hint)
    assert err.key == key


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, edit('code = "4.7.320"', 'code = "4.7.320"\ncodde = "4.4.317"'))
    fails(path, "codde", "unknown key", "rfc3463")


def test_unknown_nested_key(tmp_path: Path) -> None:
    path = write(tmp_path, edit('cert = "expired"', 'cert = "expired"\ntsl = "none"'))
    fails(path, 'world.hosts."mail.contoso.test".tsl', "unknown key")


def test_unknown_key_in_target(tmp_path: Path) -> None:
    path = write(
        tmp_path, edit('mail_domain = "contoso.test"', 'mail_domain = "contoso.test"\nsmarthost = "x"')
    )
    fails(path, "target.smarthost", "unknown key", "smart_host")


def test_bad_code_lists_allowed_codes(tmp_path: Path) -> None:
    path = write(tmp_path, edit('code = "4.7.320"', 'code = "4.4.999"'))
    fails(path, "code: '4.4.999'", *EOP_CODES, "other", "success")


def test_bad_enum_in_world_lists_allowed_values(tmp_path: Path) -> None:
    path = write(tmp_path, edit('cert = "expired"', 'cert = "expird"'))
    fails(path, 'world.hosts."mail.contoso.test".cert', "'expird'", "not_yet_valid", "missing_intermediate")


def test_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + edit("priority = 10", 'priority = "high"', MX_RECORD))
    fails(path, "world.records[0].priority", "'high'", "integer")


def test_wrong_type_in_target(tmp_path: Path) -> None:
    path = write(
        tmp_path, edit('mail_domain = "contoso.test"', 'mail_domain = "contoso.test"\nrequire_tls = "yes"')
    )
    fails(path, "target.require_tls", "'yes'", "true or false")


@pytest.mark.parametrize("value", ["0", "0.1", "31", '"2s"', "true"])
def test_a_bad_target_timeout_is_refused_naming_the_key(tmp_path: Path, value: str) -> None:
    path = write(
        tmp_path, edit('mail_domain = "contoso.test"', f'mail_domain = "contoso.test"\ntimeout = {value}')
    )
    fails(path, "target.timeout", "seconds from 0.5 to 30")


def test_a_target_timeout_is_read_as_seconds(tmp_path: Path) -> None:
    path = write(tmp_path, edit('mail_domain = "contoso.test"', 'mail_domain = "contoso.test"\ntimeout = 2'))
    assert scenarios.load_file(path).target.timeout == 2.0


def test_non_loopback_address_rejected(tmp_path: Path) -> None:
    record = '\n[[world.records]]\nname = "mail.contoso.test"\ntype = "A"\nvalue = "8.8.8.8"\n'
    fails(write(tmp_path, BASE + record), "world.records[0].value", "'8.8.8.8'", "loopback")


def test_smart_host_outside_zone(tmp_path: Path) -> None:
    path = write(tmp_path, edit('smart_host = "mail.contoso.test"', 'smart_host = "mail.contoso.example"'))
    fails(path, "target.smart_host", "'mail.contoso.example'", "zone")


def test_world_name_outside_zone(tmp_path: Path) -> None:
    text = edit(
        'zone = "test"', 'zone = "contoso.test"', edit('"mail.contoso.test"]', '"mail.fabrikam.test"]')
    )
    fails(write(tmp_path, text), 'world.hosts."mail.fabrikam.test"', "'mail.fabrikam.test'", "contoso.test")


def test_zone_outside_reserved_domain(tmp_path: Path) -> None:
    text = BASE.replace("contoso.test", "contoso.example").replace('zone = "test"', 'zone = "example"')
    fails(write(tmp_path, text), "world.zone", "'example'", ".test")


def test_mx_value_outside_reserved_domain(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + edit('value = "mail.contoso.test"', 'value = "mx.contoso.com"', MX_RECORD))
    fails(path, "world.records[0].value", "'mx.contoso.com'", ".test")


def test_recipient_outside_reserved_domain(tmp_path: Path) -> None:
    text = edit(
        'mail_domain = "contoso.test"',
        'mail_domain = "contoso.test"\nrcpt_to = ["a@contoso.test", "b@x.com"]',
    )
    fails(write(tmp_path, text), "target.rcpt_to[1]", "'b@x.com'", ".test")


# The package's own scenarios (own=False) are bilingual; a user's own need English only.


def test_missing_french_title(tmp_path: Path) -> None:
    fails(
        write(tmp_path, edit('fr = "Certificat expiré"\n', "")),
        "title.fr: missing",
        "French",
        "as in every scenario of the package's catalogue",
        own=False,
    )


def test_missing_french_fix(tmp_path: Path) -> None:
    fails(
        write(tmp_path, edit('fix = "Renouvelez le certificat."\n', "")),
        "explain.fr.fix: missing",
        "French",
        own=False,
    )
    # Half an explanation is a slip, even in a user's own file.
    fails(write(tmp_path, edit('fix = "Renouvelez le certificat."\n', "")), "explain.fr.fix: missing")


def test_missing_french_explanation(tmp_path: Path) -> None:
    text = edit('[explain.fr]\ncause = "Le certificat est périmé. Le client le rejette."\n', "")
    text = edit('fix = "Renouvelez le certificat."\n', "", text)
    fails(write(tmp_path, text), "explain.fr: missing", "cause and fix", own=False)


ENGLISH_ONLY = """\
id = "{id}"
code = "4.4.316"
rfc3463 = "4.4.1"

[title]
en = "Our relay is switched off"

[target]
smart_host = "relay.contoso.test"
mail_domain = "contoso.test"

[world]
zone = "test"

[world.hosts."relay.contoso.test"]
kind = "refuse"
"""


def test_a_users_own_file_may_be_english_only(tmp_path: Path) -> None:
    s = load_file(write(tmp_path, ENGLISH_ONLY, stem="relay-off"))
    assert s.languages == ("en",)
    # Every reader (demo, show) asks for its language: the French one shows the English text.
    assert s.title["fr"] == s.title["en"] == "Our relay is switched off"
    assert s.cause["fr"] == s.cause["en"] == "" and s.fix["en"] == ""
    assert load_catalogue(tmp_path)["relay-off"].languages == ("en",)  # a user's directory too


def test_the_catalogue_rules_refuse_the_same_english_only_file(tmp_path: Path) -> None:
    path = write(tmp_path, ENGLISH_ONLY, stem="relay-off")
    fails(path, "title.fr: missing", "French", own=False)
    text = edit(
        'en = "Our relay is switched off"',
        'en = "Our relay is switched off"\nfr = "Relais éteint"',
        ENGLISH_ONLY,
    )
    fails(write(tmp_path, text, stem="relay-off"), "explain: missing", "[explain.fr]", own=False)


def test_a_users_own_file_needs_an_english_title(tmp_path: Path) -> None:
    text = edit('en = "Our relay is switched off"', 'fr = "Notre relais est éteint"', ENGLISH_ONLY)
    err = fails(write(tmp_path, text, stem="relay-off"), "title.en: missing", "English text (required)")
    assert err.key == "title.en"
    fails(
        write(tmp_path, edit("[title]\n", "[titel]\n", ENGLISH_ONLY), stem="relay-off"),
        "titel",
        "unknown key",
    )


def test_a_french_text_of_ones_own_is_kept(tmp_path: Path) -> None:
    text = edit(
        'en = "Our relay is switched off"',
        'en = "Our relay is switched off"\nfr = "Relais éteint"',
        ENGLISH_ONLY,
    )
    s = load_file(write(tmp_path, text, stem="relay-off"))
    assert s.languages == ("en", "fr") and s.title["fr"] == "Relais éteint"


def test_every_scenario_of_the_package_is_bilingual(catalogue: dict[str, Scenario]) -> None:
    assert all(s.languages == LANGUAGES for s in catalogue.values())
    for s in catalogue.values():  # and loads under the package's rules, file by file
        assert load_file(s.path, own=False).languages == LANGUAGES


def test_from_dict_builds_an_inline_scenario() -> None:
    s = scenarios.from_dict(
        {
            "id": "relay-off",
            "code": "4.4.316",
            "rfc3463": "4.4.1",
            "title": {"en": "Our relay is switched off"},
            "target": {"smart_host": "relay.contoso.test", "mail_domain": "contoso.test"},
            "world": {"zone": "test", "hosts": {"relay.contoso.test": {"kind": "refuse"}}},
        }
    )
    assert (s.id, s.expected_code, s.code_for("rfc3463"), s.languages) == (
        "relay-off",
        "4.4.316",
        "4.4.1",
        ("en",),
    )
    assert s.target.smart_host == "relay.contoso.test" and s.world.hosts[0].kind == "refuse"


def test_from_dict_errors_name_the_inline_scenario_and_the_key() -> None:
    with pytest.raises(
        ScenarioError,
        match=r"inline scenario 'relay-off': code: '4.4.999' is not valid; expected one of 4.4.312",
    ):
        scenarios.from_dict({"id": "relay-off", "code": "4.4.999"})
    with pytest.raises(ScenarioError, match=r"mine: world.hosts"):
        scenarios.from_dict(
            {
                "id": "x",
                "code": "4.4.316",
                "rfc3463": "4.4.1",
                "title": {"en": "x"},
                "target": {"mail_domain": "contoso.test"},
                "world": {"zone": "test", "hosts": {"mail.contoso.test": {"kind": "refuze"}}},
            },
            where="mine",
        )
    with pytest.raises(ScenarioError, match="a dict with the keys of a scenario file"):
        scenarios.from_dict(["not", "a", "dict"])  # type: ignore[arg-type]


def test_french_copy_of_english_rejected(tmp_path: Path) -> None:
    fails(write(tmp_path, edit("Renouvelez le certificat.", "Renew the certificate.")), "explain.fr.fix")


def test_unknown_language(tmp_path: Path) -> None:
    fails(
        write(tmp_path, edit('fr = "Certificat expiré"', 'fr = "Certificat expiré"\nde = "Abgelaufen"')),
        "title.de",
    )


def test_server_code_missing_for_other(tmp_path: Path) -> None:
    err = fails(
        write(tmp_path, edit('code = "4.7.320"', 'code = "other"')), "server_code: missing", "'other'"
    )
    assert err.key == "server_code"


def test_server_code_forbidden_for_eop_code(tmp_path: Path) -> None:
    path = write(tmp_path, edit('code = "4.7.320"', 'code = "4.7.320"\nserver_code = "5.1.1"'))
    fails(path, "server_code: '5.1.1'", "no server_code")


def test_server_code_must_come_from_the_world(tmp_path: Path) -> None:
    path = write(tmp_path, edit('code = "4.7.320"', 'code = "other"\nserver_code = "5.1.1"'))
    fails(path, "server_code: '5.1.1'", "reply")


def test_bad_enhanced_code(tmp_path: Path) -> None:
    fails(write(tmp_path, edit('rfc3463 = "4.7.5"', 'rfc3463 = "4.7"')), "rfc3463: '4.7'", "enhanced")


def test_unknown_alternate_profile(tmp_path: Path) -> None:
    text = edit("[title]", '[alternates]\neop-obsreved = "4.4.317"\n\n[title]')
    fails(write(tmp_path, text), "alternates.eop-obsreved", "eop-observed")


def test_connect_by_ip_needs_a_host_of_the_world(tmp_path: Path) -> None:
    text = edit('smart_host = "mail.contoso.test"', 'smart_host = "old.contoso.test"\nconnect_by_ip = true')
    fails(write(tmp_path, text), "target.smart_host", "'old.contoso.test'", "mail.contoso.test")


def test_id_must_match_file_name(tmp_path: Path) -> None:
    path = write(tmp_path, BASE, stem="tls-expired", sid="tls-cert-expired")
    err = fails(path, "id: 'tls-cert-expired'", "'tls-expired'")
    assert err.key == "id"


def test_id_must_be_lowercase_words(tmp_path: Path) -> None:
    fails(write(tmp_path, BASE, stem="Bad_Id"), "id: 'Bad_Id'", "lowercase")


def test_duplicate_ids_name_both_files(tmp_path: Path) -> None:
    first = write(tmp_path / "dns", BASE, stem="twice")
    second = write(tmp_path / "tls", BASE, stem="twice")
    with pytest.raises(ScenarioError) as info:
        load_catalogue(tmp_path)
    message = str(info.value)
    assert str(first.relative_to(tmp_path)) in message or str(first) in message
    assert "dns" in message and "tls" in message and "twice.toml" in message
    assert "id: 'twice'" in message
    assert str(second) in message


def test_load_catalogue_from_directory(tmp_path: Path) -> None:
    write(tmp_path, BASE, stem="b-expired")
    write(tmp_path, edit('code = "4.7.320"', 'code = "4.4.317"'), stem="a-tls")
    write(tmp_path, edit('code = "4.7.320"', 'code = "4.4.312"'), stem="z-dns")
    cat = load_catalogue(tmp_path)
    assert list(cat) == ["z-dns", "a-tls", "b-expired"]  # by code order, then id
    assert [s.id for s in select(["*-tls", "b-*"], catalogue=cat)] == ["a-tls", "b-expired"]
    with pytest.raises(UnknownScenario, match="a-tls"):
        get("a-tsl", catalogue=cat)


def test_package_exports() -> None:
    for name in scenarios.__all__:
        assert hasattr(scenarios, name), name


def test_the_headlines_list_reads_agree_with_the_full_load():
    """`mailfakes list` reads each file's head only; it must say what the checked scenarios say."""
    import subprocess
    import sys

    # A fresh process: the headlines come from the files (the full load is not in memory there).
    code = (
        "import json; from mailfakes import catalogue as c; "
        "print(json.dumps([[h.id, h.code, h.expected_code, dict(h.title), h.smart_host, h.mail_domain] "
        "for h in c.headlines()]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    read = [tuple(row) for row in json.loads(done.stdout)]
    full = [
        (s.id, s.code, s.expected_code, dict(s.title), s.target.smart_host, s.target.mail_domain)
        for s in scenarios.load_catalogue().values()
    ]
    assert read == full


def test_a_slow_scenario_declares_its_timeout_and_holds_back_well_past_it(
    catalogue: dict[str, Scenario],
) -> None:
    """A failure that rests on a wait (a delay, a stall) names the client's timeout, and every
    delay is at least three times it, so no correct client can be lucky; a delivered slow
    scenario (a trickle) names it too, and a whole reply comes well within it."""
    slow = []
    for s in catalogue.values():
        for h in s.world.hosts:
            plan = h.smtp
            waits = [ms for ms in plan.delays_ms.values() if ms]
            if not (waits or plan.stall_in_data or plan.trickle_bps):
                continue
            slow.append(s.id)
            assert s.target.timeout is not None, f"{s.id}: a slow host and no [target] timeout"
            assert all(ms >= 3000 * s.target.timeout for ms in waits), (s.id, waits)
            if plan.trickle_bps:
                # The largest thing the fakes send at once is their TLS flight (under 1 KB with their
                # EC certificates; 2 KB as a bound): in a fifth of the timeout at most.
                assert 2048 / plan.trickle_bps <= s.target.timeout / 5, s.id
    assert sorted(slow) == [
        "slow-final-dot-late",
        "slow-greeting-timeout",
        "slow-stall-mid-data",
        "slow-trickle-delivered",
    ]


def test_the_scenarios_timeout_reaches_the_client_over_the_runs_own() -> None:
    from mailfakes import World
    from mailfakes.facts import ClientFacts

    slow, plain = scenarios.get("slow-greeting-timeout"), scenarios.get("baseline-delivered")
    for s, expected, key in ((slow, "1", 1.0), (plain, "7", None)):
        with World(s.world) as w:
            facts = ClientFacts.of(s, w)
            assert facts.placeholders(7.0)["timeout"] == expected
            assert facts.as_json()["timeout"] == key
