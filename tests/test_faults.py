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
    ('replies.MAIL = { code = 550 }\nclose_at = { point = "after_rcpt" }', "close_at.point", "MAIL"),
    ("replies.RCPT = { code = 550 }\nreplies.DATA = { code = 354 }", "replies.DATA", "RCPT"),
    ('replies.DATA = { code = 554 }\nclose_at = { point = "in_data" }', "close_at.point", "DATA"),
    ('replies.MAIL = { code = 250, close = "rst" }\ndelays_ms.RCPT = 10', "delays_ms.RCPT", "close"),
    ("greeting = { code = 421 }\nreplies.EHLO = { code = 250 }", "replies.EHLO", "421"),
    ('greeting = { code = 554 }\nclose_at = { point = "after_greeting" }', "close_at.point", "554"),
    ('close_at = { point = "before_greeting" }\ngreeting = { code = 220 }', "greeting", "before_greeting"),
    ('close_at = { point = "before_greeting" }\ndelay_ms = 50', "delay_ms", "before_greeting"),
    ('close_at = { point = "before_greeting" }\nreplies.QUIT = { code = 221 }', "replies.QUIT", "before"),
    ('close_at = { point = "before_greeting" }\nextensions_off = ["SIZE"]', "extensions_off", "greeting"),
    ('replies.STARTTLS = { code = 220, text = "Go ahead" }', "replies.STARTTLS", "start TLS"),
    ('tls = "none"\nreplies.STARTTLS = { code = 454 }', "replies.STARTTLS", "starttls"),
    ('tls = "starttls_broken"\nreplies.STARTTLS = { code = 454 }', "replies.STARTTLS", "starttls"),
    ('replies.STARTTLS = { code = 454 }\ncert = "expired"', "cert", "no handshake"),
    (
        'replies.STARTTLS = { code = 454 }\nclose_at = { point = "after_starttls" }',
        "close_at.point",
        "handshake",
    ),
    ('tls = "starttls_refused"\ncert = "self_signed"', "cert", "starttls_refused"),
    ('tls = "starttls_broken"\ncert = "expired"', "cert", "starttls_broken"),
    ('tls = "implicit_broken"\ncert = "wrong_host"', "cert", "implicit_broken"),
    ('tls = "none"\ncert = "expired"', "cert", "none"),
    ('tls = "implicit"\nclose_at = { point = "after_starttls" }', "close_at.point", "starttls"),
]

# Combinations that look alike but each fault applies: they must load.
COMPATIBLE = [
    'replies.EHLO = { code = 550 }\nreplies.MAIL = { code = 250, text = "ok then" }',  # HELO fallback
    'replies.MAIL = { code = 550 }\nreplies.QUIT = { code = 221, text = "bye" }',
    "replies.MAIL = { code = 451 }\ndelays_ms.MAIL = 20",
    'replies.RCPT = { code = 250 }\nclose_at = { point = "in_data", after_bytes = 10 }',
    'greeting = { code = 220, text = "slow" }\nclose_at = { point = "after_greeting" }',
    'tls = "starttls_refused"\nreplies.STARTTLS = { code = 454, text = "TLS not available now" }',
    'tls = "starttls_legacy"\ncert = "expired"',
    "replies.STARTTLS = { code = 454 }\nreplies.MAIL = { code = 550 }",  # a client may go on in plaintext
    'close_at = { point = "after_final_dot" }\nreplies.DATA = { code = 354 }',
    'close_at = { point = "before_greeting", how = "rst" }\ntls = "implicit"',
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
    assert _parser_keys(world, "world") == {"zone", "hosts", "records", "dns_faults"}
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
