"""Finding the reported code in what a client produced."""

from __future__ import annotations

import pytest
from mailfakes.codes import (
    DANE_CODES,
    EOP_CODES,
    EOP_TITLES,
    MTA_STS_CODES,
    Failure,
    code_for,
    find_code,
    first_enhanced_code,
)


@pytest.mark.parametrize(
    ("report", "code"),
    [
        (
            "450 4.4.316 Connection refused [Message=...] [LastAttemptedServerName=mx1.contoso.test] [LastAttemptedIP=127.0.3.2:2525]",
            "4.4.316",
        ),
        ("2026-11-27T10:00:00 queue: deferred to 127.4.5.6:25 (450 4.4.312 DNS query failed)", "4.4.312"),
        ("status=deferred (host mx.contoso.test[127.0.0.2] said: 421 4.3.2 Service not available)", "4.3.2"),
        ("Remote server at 127.1.2.3 returned '550 5.1.1 User unknown'", "5.1.1"),
        ("[Message=451 5.7.3 STARTTLS is required] 450 4.4.317", "5.7.3"),  # the first code wins
        (b"250 2.0.0 Ok: queued", "2.0.0"),
        ("TLSv1.3 handshake with 127.0.0.1 failed", None),
        ("no code here, version 1.2.3 of nothing", None),
        ((421, b"4.3.2 Service not available"), "4.3.2"),
        ((250, "Ok"), None),
    ],
)
def test_find_code_in_text_and_replies(report, code):
    assert find_code(report) == code


def test_find_code_in_an_exception_uses_the_classifier():
    assert find_code(ConnectionRefusedError(111, "Connection refused")) == "4.4.316"
    assert find_code(ConnectionRefusedError(111, "Connection refused"), "rfc3463") == "4.4.1"


def test_find_code_in_objects_with_a_code():
    class Report:
        code = "4.7.320"

    assert find_code(Report()) == "4.7.320"
    assert find_code(Failure("certificate", "expired"), "eop-observed") == "4.4.317"


@pytest.mark.parametrize(
    ("failure", "eop", "observed", "rfc"),
    [
        (Failure("dns", "nxdomain"), "4.4.312", "4.4.312", "5.4.4"),
        (Failure("dns", "servfail"), "4.4.312", "4.4.312", "4.4.3"),
        (Failure("timeout"), "4.4.315", "4.4.315", "4.4.1"),
        (Failure("timeout", "connect"), "4.4.315", "4.4.315", "4.4.1"),
        (Failure("timeout", "reply"), "4.4.318", "4.4.318", "4.4.2"),
        (Failure("timeout", "greeting"), "4.4.318", "4.4.318", "4.4.2"),
        (Failure("refused"), "4.4.316", "4.4.316", "4.4.1"),
        (Failure("cannot_connect", "greeting_421", "4.3.2"), "4.4.317", "4.4.317", "4.3.2"),
        (Failure("cannot_connect", "no_starttls"), "4.4.317", "4.4.317", "4.7.4"),
        (Failure("closed"), "4.4.318", "4.4.318", "4.4.2"),
        (Failure("certificate", "hostname"), "4.7.320", "4.4.317", "4.7.5"),
        (Failure("server_reply", "", "5.1.1"), "5.1.1", "5.1.1", "5.1.1"),
        (Failure("delivered", "", "2.0.0"), "2.0.0", "2.0.0", "2.0.0"),
    ],
)
def test_code_for_each_profile(failure, eop, observed, rfc):
    assert code_for(failure, "eop") == eop
    assert code_for(failure, "eop-observed") == observed
    assert code_for(failure, "rfc3463") == rfc
    postfix = "4.3.5" if failure.cls == "dns" and failure.detail == "nxdomain" else rfc
    assert code_for(failure, "postfix") == postfix  # a relayhost that does not resolve: 4.3.5


def test_unknown_profile_is_an_error():
    with pytest.raises(ValueError, match="unknown profile"):
        code_for(Failure("dns"), "exim")


def test_every_eop_code_has_titles_in_both_languages():
    assert set(EOP_CODES.values()) | set(DANE_CODES.values()) | set(MTA_STS_CODES.values()) == set(EOP_TITLES)
    assert all(t["en"] and t["fr"] and t["en"] != t["fr"] for t in EOP_TITLES.values())


def test_first_enhanced_code_ignores_addresses():
    assert first_enhanced_code("127.4.4.312 and 127.4.4.1") is None
    assert first_enhanced_code("(4.4.1)") == "4.4.1"


@pytest.mark.parametrize(
    ("failure", "eop", "postfix"),
    [
        (Failure("dane", "starttls-not-supported"), "4.7.321", "4.7.4"),
        (Failure("dane", "certificate-expired"), "4.7.322", "4.7.5"),
        (Failure("dane", "tlsa-invalid"), "4.7.323", "4.7.5"),
        (Failure("dane", "dnssec-invalid"), "4.7.324", "4.7.5"),
        (Failure("dane", "certificate-host-mismatch"), "4.7.325", "4.7.5"),
        (Failure("mta_sts", "mx-mismatch"), "4.4.8", "4.7.5"),
        (Failure("mta_sts", "certificate-expired"), "4.7.5", "4.7.5"),
        (Failure("mta_sts", "starttls-not-supported"), "4.4.317", "4.7.4"),
    ],
)
def test_tls_policy_failures_have_their_codes(failure: Failure, eop: str, postfix: str) -> None:
    # Exchange Online's DANE codes 4.7.321-4.7.325 and MTA-STS 4.4.8 / 4.7.5 (Microsoft's NDR page);
    # Postfix's 4.7.4 (TLS not offered) and 4.7.5 (not verified, TLSA lookup error).
    assert code_for(failure, "eop") == eop
    assert code_for(failure, "eop-observed") == eop
    assert code_for(failure, "postfix") == postfix
    assert code_for(failure, "rfc3463") == postfix
