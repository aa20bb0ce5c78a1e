"""World specs: values that cannot work are refused before anything starts."""

from __future__ import annotations

import pytest
from mailfakes import SpecError, parse_world


@pytest.mark.parametrize(
    ("world", "key", "expected"),
    [
        ({"hosts": {"mx.test": {"greeting": {"code": 421, "text": "réessayez"}}}}, "greeting.text", "ASCII"),
        (
            {"hosts": {"mx.test": {"replies": {"RCPT": {"code": 550, "text": "a\r\nb"}}}}},
            "RCPT.text",
            "ASCII",
        ),
        ({"zone": "."}, "zone", "not the root"),
        ({"hosts": {("a" * 60) + ".test": {}}}, "hosts", "at most 64"),
        (
            {"hosts": {"mx.test": {"close_at": {"point": "after_starttls"}, "tls": "none"}}},
            "close_at.point",
            "tls",
        ),
        ({"hosts": {"mx.test": {"tsl": "none"}}}, 'hosts."mx.test".tsl', "unknown key"),
        ({"hosts": {"mx.test": {"kind": "refuse", "cert": "expired"}}}, "cert", "kind refuse"),
        ({"records": [{"name": "mx.test", "type": "A", "value": "8.8.8.8"}]}, "value", "loopback"),
        ({"hosts": {"mx.test": {"schedule": {"fail_first": 0}}}}, "fail_first", "from 1"),
        (
            {"hosts": {"mx.test": {"kind": "blackhole", "schedule": {"fail_first": 1}}}},
            "schedule",
            "only on kinds",
        ),
        ({"dns_faults": [{"name": "mx.test", "fault": "delay"}]}, "delay_ms", "required"),
        ({"hosts": {"mx.test": {"greeting": {"code": 421, "enhanced": "2.0.0"}}}}, "enhanced", "same class"),
    ],
)
def test_bad_world_values_name_their_key(world, key, expected):
    with pytest.raises(SpecError) as err:
        parse_world(world, where="inline")
    message = str(err.value)
    assert message.startswith("inline: ")
    assert key in message and expected in message


def test_a_good_world_parses_into_frozen_values():
    spec = parse_world(
        {
            "hosts": {
                "MX.Contoso.Test.": {
                    "cert": "expired",
                    "replies": {"RCPT": {"code": 550, "enhanced": "5.1.1"}},
                }
            },
            "records": [{"name": "contoso.test", "type": "MX", "value": "mx.contoso.test", "priority": 5}],
        }
    )
    host = spec.host("mx.contoso.test")
    assert host.smtp.cert == "expired"
    assert host.smtp.replies["RCPT"].line() == "550 5.1.1"
    assert spec.records[0].priority == 5
    with pytest.raises(AttributeError):
        host.kind = "refuse"  # type: ignore[misc]


@pytest.mark.parametrize("cert", ["untrusted_ca", "self_signed", "missing_intermediate"])
def test_a_dane_ta_record_for_a_certificate_the_ca_did_not_issue_is_refused(cert):
    with pytest.raises(
        SpecError, match=r'hosts\."mx1\.contoso\.test"\.tlsa\.usage: 2 is not valid; expected 3'
    ):
        parse_world({"hosts": {"mx1.contoso.test": {"cert": cert, "tlsa": {"usage": 2}}}})
    # Said on purpose, it is a record that matches nothing; DANE-EE pins the leaf itself.
    parse_world({"hosts": {"mx1.contoso.test": {"cert": cert, "tlsa": {"usage": 2, "matches": False}}}})
    parse_world({"hosts": {"mx1.contoso.test": {"cert": cert, "tlsa": {"usage": 3}}}})


def test_the_crl_host_name_is_kept_for_the_crl_whoever_revokes():
    base = {"mx1.contoso.test": {}}
    policy = {"contoso.test": {"mx": ["mx1.contoso.test"], "cert": "revoked"}}
    with pytest.raises(SpecError, match=r"hosts: 'crl\.test' is not valid; expected no host named crl\.test"):
        parse_world({"hosts": {**base, "crl.test": {}}, "mta_sts": policy})
    rpt = {"contoso.test": {"rua": ["https://crl.test/reports"]}}
    with pytest.raises(
        SpecError, match=r"tls_rpt: 'crl\.test' is not valid; expected a report host other than"
    ):
        parse_world({"hosts": {"mx1.contoso.test": {"cert": "revoked"}}, "tls_rpt": rpt})
