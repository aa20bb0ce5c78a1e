"""The fault table: one place for every fault, its values, its contradictions.

Validation reads the table and refuses faults that can never apply as
written, with the usual file/key/value message; the README's copy of the
table and the keys the parser accepts agree with it; a wire test shows the
precedence the table states.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from mailfakes import World, faults
from mailfakes.catalogue import load_file
from mailfakes.spec import SpecError, parse_world

README = Path(__file__).resolve().parent.parent / "README.md"

HEAD = """id = "my-case"
code = "4.4.318"
rfc3463 = "4.4.2"
[title]
en = "My case"
[target]
smart_host = "mx1.contoso.test"
mail_domain = "contoso.test"
[world.hosts."mx1.contoso.test"]
"""

# (what the host table holds, the key refused, a word of the reason)
CONTRADICTIONS = [
    ('replies.MAIL = { code = 250 }\nclose_at = { point = "after_mail" }', "replies.MAIL", "after_mail"),
    (
        'replies.EHLO = { code = 250 }\nclose_at = { point = "after_ehlo", how = "rst" }',
        "replies.EHLO",
        "cut",
    ),
    ('replies.DATA_END = { code = 451 }\nclose_at = { point = "in_data" }', "replies.DATA_END", "in_data"),
    (
        'replies.DATA_END = { code = 250 }\nclose_at = { point = "after_final_dot" }',
        "replies.DATA_END",
        "dot",
    ),
    ('replies.MAIL = { code = 550 }\nclose_at = { point = "in_data" }', "close_at.point", "MAIL"),
    ("replies.RCPT = { code = 550 }\nreplies.DATA_END = { code = 250 }", "replies.DATA_END", "RCPT"),
    ('replies.DATA = { code = 554 }\nclose_at = { point = "in_data" }', "close_at.point", "DATA"),
    (
        'extensions_off = ["PIPELINING"]\nreplies.MAIL = { code = 550 }\nclose_at = { point = "after_rcpt" }',
        "close_at.point",
        "PIPELINING",
    ),
    ('replies.MAIL = { code = 250, close = "rst" }\ndelays_ms.RCPT = 10', "delays_ms.RCPT", "close"),
    ("greeting = { code = 421 }\nreplies.EHLO = { code = 250 }", "replies.EHLO", "421"),
    ("greeting = { code = 421 }\nreplies.QUIT = { code = 221 }", "replies.QUIT", "421"),
    ("greeting = { code = 554 }\nreplies.DATA_END = { code = 250 }", "replies.DATA_END", "554"),
    ('close_at = { point = "after_greeting" }\ndelays_ms.NOOP = 5', "delays_ms.NOOP", "after_greeting"),
    (
        'close_at = { point = "before_greeting" }\ngreeting = { code = 220 }',
        "greeting",
        "before the greeting",
    ),
    ('close_at = { point = "before_greeting" }\ndelay_ms = 50', "delay_ms", "before the greeting"),
    ('close_at = { point = "before_greeting" }\nreplies.QUIT = { code = 221 }', "replies.QUIT", "before"),
    ('close_at = { point = "before_greeting" }\nextensions_off = ["SIZE"]', "extensions_off", "greeting"),
    ('close_at = { point = "after_ehlo" }\nextensions_off = ["SIZE"]', "extensions_off", "EHLO"),
    ('tls = "implicit_broken"\ngreeting = { code = 220, text = "hello" }', "greeting", "implicit_broken"),
    ('tls = "implicit_broken"\nclose_at = { point = "after_mail" }', "close_at.point", "implicit_broken"),
    ('replies.STARTTLS = { code = 220, text = "Go ahead" }', "replies.STARTTLS", "start TLS"),
    ('tls = "starttls_broken"\nreplies.STARTTLS = { code = 454 }', "replies.STARTTLS", "starttls_broken"),
    ('replies.STARTTLS = { code = 454 }\ncert = "expired"', "cert", "no handshake"),
    (
        'replies.STARTTLS = { code = 454 }\nclose_at = { point = "after_starttls" }',
        "close_at.point",
        "handshake",
    ),
    ('cert = "expired"\nclose_at = { point = "after_ehlo" }', "cert", "STARTTLS"),
    ('cert = "expired"\ngreeting = { code = 421 }', "cert", "STARTTLS"),
    ('tls = "starttls_refused"\ncert = "self_signed"', "cert", "starttls_refused"),
    ('tls = "starttls_broken"\ncert = "expired"', "cert", "starttls_broken"),
    ('tls = "implicit_broken"\ncert = "wrong_host"', "cert", "implicit_broken"),
    ('tls = "none"\ncert = "expired"', "cert", "none"),
    ('tls = "implicit"\nclose_at = { point = "after_starttls" }', "close_at.point", "STARTTLS"),
    ('replies.EHLO = { code = 354, text = "odd" }', "replies.EHLO", "3xx"),
    ("replies.DATA = { code = 250 }", "replies.DATA", "354"),
    (
        'extensions_off = ["ENHANCEDSTATUSCODES"]\nreplies.MAIL = { code = 550, enhanced = "5.7.1" }',
        "replies.MAIL.enhanced",
        "ENHANCEDSTATUSCODES",
    ),
    ('delay_ms = 2000\ndelays_ms."*" = 1', "delays_ms.*", "delay_ms"),
    ("schedule = { fail_first = 2 }", "schedule", "limit"),
    ('schedule = { fail_first = 2 }\nextensions_off = ["SIZE"]', "schedule", "limit"),
]

# Combinations that look alike but each fault applies: they must load.
COMPATIBLE = [
    'replies.EHLO = { code = 550 }\nreplies.MAIL = { code = 250, text = "ok then" }',  # HELO fallback
    'replies.MAIL = { code = 550 }\nreplies.QUIT = { code = 221, text = "bye" }',
    "replies.MAIL = { code = 451 }\ndelays_ms.MAIL = 20",
    'replies.RCPT = { code = 250 }\nclose_at = { point = "in_data", after_bytes = 10 }',
    'greeting = { code = 220, text = "slow" }\nclose_at = { point = "after_greeting" }',
    'greeting = { code = 554 }\nclose_at = { point = "after_greeting", how = "rst" }',
    'greeting = { code = 554, text = "no service" }\nreplies.EHLO = { code = 503 }',  # the client QUITs, or meets 503
    'tls = "starttls_refused"\nreplies.STARTTLS = { code = 454, text = "TLS not available now" }',
    'tls = "none"\nreplies.STARTTLS = { code = 500, enhanced = "5.5.2", text = "unrecognized command" }',  # Exim
    'tls = "implicit"\nreplies.STARTTLS = { code = 503 }',
    'tls = "starttls_legacy"\ncert = "expired"',
    'tls = "starttls_legacy"\nclose_at = { point = "after_starttls" }',  # a client that takes TLS 1.1 meets it
    "replies.STARTTLS = { code = 454 }\nreplies.MAIL = { code = 550 }",  # a client may go on in plaintext
    'close_at = { point = "after_starttls" }\nreplies.MAIL = { code = 550 }',  # so may a plaintext client
    'replies.HELO = { code = 421, close = "fin" }\nreplies.MAIL = { code = 550 }',  # EHLO clients never say HELO
    'close_at = { point = "after_final_dot" }\nreplies.DATA = { code = 354 }',
    'close_at = { point = "before_greeting", how = "rst" }\ntls = "implicit"',
    # Pipelining clients send RCPT and DATA with MAIL, so those replies are met (Postfix's own answer):
    'replies.RCPT = { code = 550, enhanced = "5.1.1" }\nreplies.DATA = { code = 554, text = "no valid recipients" }',
    "replies.MAIL = { code = 550 }\nreplies.RCPT = { code = 503 }",
    "replies.MAIL = { code = 452 }\ndelays_ms.RCPT = 50",
    'replies.MAIL = { code = 550 }\nclose_at = { point = "after_rcpt" }',
    "schedule = { fail_first = 1 }\ngreeting = { code = 421 }",
]


def _write(tmp_path: Path, host_table: str) -> Path:
    path = tmp_path / "my-case.toml"
    path.write_text(HEAD + host_table + "\n")
    return path


@pytest.mark.parametrize(("table", "refused", "reason"), CONTRADICTIONS)
def test_contradictions_are_refused_with_file_key_and_value(
    tmp_path: Path, table: str, refused: str, reason: str
) -> None:
    path = _write(tmp_path, table)
    with pytest.raises(SpecError) as caught:
        load_file(path)
    message = str(caught.value)
    assert message.startswith(f'{path}: world.hosts."mx1.contoso.test".{refused}: '), message
    assert "is not valid; expected " in message
    assert reason in message.split("expected", 1)[1], message


@pytest.mark.parametrize("table", COMPATIBLE)
def test_faults_that_each_apply_are_accepted(tmp_path: Path, table: str) -> None:
    load_file(_write(tmp_path, table))


def test_validate_command_prints_the_contradiction_and_exits_1(tmp_path: Path) -> None:
    path = _write(tmp_path, CONTRADICTIONS[0][0])
    run = subprocess.run(
        [sys.executable, "-m", "mailfakes", "validate", str(path)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1
    assert f'FAIL {path}: world.hosts."mx1.contoso.test".replies.MAIL: ' in run.stdout
    assert "1 invalid" in run.stdout
    assert run.stderr == ""


def test_an_inline_world_gets_the_same_refusal() -> None:
    with pytest.raises(SpecError) as caught:
        parse_world({"hosts": {"mx1.contoso.test": {"replies": {"STARTTLS": {"code": 250}}}}})
    assert caught.value.key == 'hosts."mx1.contoso.test".replies.STARTTLS'


@pytest.mark.parametrize(
    "dns_faults",
    [
        [{"name": "contoso.test", "fault": "servfail"}, {"name": "contoso.test", "fault": "nxdomain"}],
        [
            {"name": "contoso.test", "fault": "servfail", "types": ["MX", "A"]},
            {"name": "contoso.test", "fault": "nodata", "types": ["A"]},
        ],
        [{"name": "contoso.test", "fault": "drop", "delay_ms": 100}],
    ],
)
def test_dns_faults_that_overlap_or_cannot_apply_are_refused(dns_faults: list[dict[str, object]]) -> None:
    with pytest.raises(SpecError) as caught:
        parse_world({"dns_faults": dns_faults}, "inline")
    index = len(dns_faults) - 1
    assert caught.value.key.startswith(f"dns_faults[{index}].")


def test_dns_faults_on_other_types_of_one_name_are_accepted() -> None:
    spec = parse_world(
        {
            "dns_faults": [
                {"name": "contoso.test", "fault": "servfail", "types": ["MX"]},
                {"name": "contoso.test", "fault": "nxdomain", "types": ["A", "AAAA"]},
            ]
        }
    )
    assert [f.fault for f in spec.dns_faults] == ["servfail", "nxdomain"]


# -- the table, the types, the parser and the README agree --------------------


@pytest.mark.parametrize(
    ("table_key", "literal"),
    [
        ("kind", faults.HostKind),
        ("close", faults.CloseHow),
        ("tls", faults.TlsMode),
        ("cert", faults.CertKind),
        ("close_at", faults.ClosePoint),
        ("extensions_off", faults.Extension),
        ("dns_faults", faults.DnsFaultKind),
        ("dns_faults.tcp", faults.TcpFallback),
        ("records", faults.RecordType),
    ],
)
def test_each_choice_of_the_table_is_a_value_of_its_type(table_key: str, literal: object) -> None:
    assert faults.values(table_key) == get_args(literal)
    assert all(c.effect for c in faults.key(table_key).choices)


def _parser_keys(data: dict[str, object], where: str) -> set[str]:
    """The keys the parser knows at one level, from its own refusal of an unknown key."""
    with pytest.raises(SpecError) as caught:
        parse_world(data)
    assert caught.value.key.endswith("no_such_key"), caught.value.key
    expected = caught.value.expected
    assert expected.startswith("one of "), (where, expected)
    return set(expected.removeprefix("one of ").split(", "))


def _readme_keys() -> list[tuple[str, str]]:
    section = README.read_text().split("<!-- faults:start -->", 1)[1].split("<!-- faults:end -->", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| where")]
    keys = []
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        keys.append((cells[0], cells[1].strip("`")))
    return keys


def test_the_readme_documents_every_key_of_the_table_in_order() -> None:
    assert _readme_keys() == [(k.scope, k.key) for k in faults.TABLE]


def test_the_table_documents_every_key_the_parser_accepts() -> None:
    documented = {k.key.split(".", 1)[0] for k in faults.TABLE}
    host = {"hosts": {"mx1.contoso.test": {"no_such_key": 1}}}
    world = {"no_such_key": 1}
    dns = {"dns_faults": [{"name": "contoso.test", "fault": "servfail", "no_such_key": 1}]}
    record = {
        "records": [{"name": "contoso.test", "type": "MX", "value": "mx1.contoso.test", "no_such_key": 1}]
    }
    host_keys = _parser_keys(host, "host")
    assert host_keys <= documented, host_keys - documented
    assert _parser_keys(world, "world") == {
        "zone",
        "hosts",
        "records",
        "dns_faults",
        "hour",
        "sender_domain",
        "dnssec",
        "mta_sts",
        "tls_rpt",
    }
    assert {"hour", "sender_domain", "dnssec", "mta_sts", "tls_rpt"} <= documented
    # The sub-keys of a DNS fault and of a record are in the table's "written" column.
    dns_form = faults.key("dns_faults").form
    for k in _parser_keys(dns, "dns fault"):
        assert re.search(rf"\b{k}\b", dns_form), k
    record_form = faults.key("records").form
    for k in _parser_keys(record, "record"):
        assert re.search(rf"\b{k}\b", record_form), k
    # And every host-level key of the table is one the parser takes.
    table_host_keys = {k.key.split(".", 1)[0] for k in faults.TABLE if k.scope in ("host", "smtp host")}
    assert table_host_keys <= host_keys, table_host_keys - host_keys


def test_show_describes_faults_in_the_table_s_words() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "mailfakes", "show", "tls-cert-expired"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert faults.key("cert").effect("expired") in run.stdout


# -- the precedence the table states, on the wire -----------------------------


def _dialogue(ip: str, port: int, *lines: str) -> list[bytes]:
    got = []
    with socket.create_connection((ip, port), timeout=5) as s:
        f = s.makefile("rwb")
        got.append(f.readline())
        for line in lines:
            f.write(line.encode() + b"\r\n")
            f.flush()
            while True:
                reply = f.readline()
                got.append(reply)
                if reply[3:4] != b"-":
                    break
    return got


def test_a_reply_override_wins_over_the_tls_mode_s_own_answer() -> None:
    spec = parse_world(
        {
            "hosts": {
                "mx1.contoso.test": {
                    "tls": "starttls_refused",
                    "replies": {"STARTTLS": {"code": 454, "enhanced": "4.7.0", "text": "TLS is resting"}},
                    "delays_ms": {"STARTTLS": 1},
                }
            }
        }
    )
    with World(spec) as world:
        ip, port = world.address_of("mx1.contoso.test"), world.port
        got = _dialogue(ip, port, "EHLO client.test", "STARTTLS", "QUIT")
    assert got[-2] == b"454 4.7.0 TLS is resting\r\n"
    assert got[-1].startswith(b"221")


def test_the_faults_command_prints_the_table_the_readme_shows() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "mailfakes", "faults", "--json"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    import json

    rows = json.loads(run.stdout)
    assert [(r["scope"], r["key"]) for r in rows] == _readme_keys()
    tls = next(r for r in rows if r["key"] == "tls")
    assert {v["value"] for v in tls["values"]} == set(get_args(faults.TlsMode))
    one = subprocess.run(
        [sys.executable, "-m", "mailfakes", "faults", "no-such-key"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert one.returncode == 2
    assert one.stderr.startswith(
        "mailfakes faults: error: no key 'no-such-key' in the fault table; keys: zone"
    )


def test_a_null_mx_has_priority_0_by_default_and_no_other() -> None:
    spec = parse_world({"records": [{"name": "contoso.test", "type": "MX", "value": "."}]})
    assert spec.records[0].priority == 0
    with pytest.raises(SpecError) as caught:
        parse_world({"records": [{"name": "contoso.test", "type": "MX", "value": ".", "priority": 10}]})
    assert caught.value.key == "records[0].priority"


def test_an_error_s_key_leads_to_its_row_of_the_table() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "mailfakes", "faults", "close_at.point"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("close_at  (smtp host)")
    assert faults.key('world.hosts."mx1.contoso.test".replies.MAIL').key == "replies.CMD"
    assert faults.key("dns_faults[1].tcp").key == "dns_faults.tcp"


def test_a_schedule_limits_only_what_it_limits_in_the_description() -> None:
    spec = parse_world(
        {
            "hosts": {
                "mx1.contoso.test": {
                    "greeting": {"code": 421},
                    "a_record": False,
                    "schedule": {"fail_first": 2},
                }
            }
        }
    )
    phrases = faults.describe_host(spec.hosts[0])
    assert phrases.index("for its first 2 session(s) only") < phrases.index("no A record")
