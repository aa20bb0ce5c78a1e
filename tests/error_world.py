"""What the error-classification tests share: one world with a host for every failure, and catching helpers.

``tests/test_classify.py`` holds ``classify`` to real exceptions raised against
it; ``tests/test_readers.py`` holds the Python reader to the same exceptions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

# Every host a test may ask for; serve() starts a world with just the ones it names.
SPEC: dict[str, Any] = {
    "hosts": {
        "ok.contoso.test": {},
        "refuse.contoso.test": {"kind": "refuse"},
        "blackhole.contoso.test": {"kind": "blackhole"},
        "silent.contoso.test": {"kind": "silent"},
        "greet421.contoso.test": {
            "greeting": {"code": 421, "enhanced": "4.3.2", "text": "Service not available"}
        },
        "ehlo421.contoso.test": {
            "replies": {"EHLO": {"code": 421, "enhanced": "4.3.2", "text": "Going away", "close": "fin"}}
        },
        "notls.contoso.test": {"tls": "none"},
        "tls454.contoso.test": {"tls": "starttls_refused"},
        "tlsbroken.contoso.test": {"tls": "starttls_broken"},
        "cut-before-greeting.contoso.test": {"close_at": {"point": "before_greeting"}},
        "cut-ehlo.contoso.test": {"close_at": {"point": "after_ehlo"}},
        "cut-tls.contoso.test": {"close_at": {"point": "after_starttls"}},
        "cut-rst.contoso.test": {"kind": "close_on_accept", "close": "rst"},
        "rcpt550.contoso.test": {
            "replies": {"RCPT": {"code": 550, "enhanced": "5.1.1", "text": "User unknown"}}
        },
        "rcpt550bare.contoso.test": {
            # A server without ENHANCEDSTATUSCODES: its replies carry no enhanced code.
            "replies": {"RCPT": {"code": 550, "text": "No such user here"}},
            "extensions_off": ["ENHANCEDSTATUSCODES"],
        },
        "mail452.contoso.test": {
            "replies": {"MAIL": {"code": 452, "enhanced": "4.3.1", "text": "Insufficient system resources"}}
        },
        "data451.contoso.test": {
            "replies": {"DATA_END": {"code": 451, "enhanced": "4.3.0", "text": "Local error in processing"}}
        },
        "slow-ehlo.contoso.test": {"delays_ms": {"EHLO": 3000}},
        **{
            f"{kind.replace('_', '-')}.contoso.test": {"cert": kind}
            for kind in (
                "expired",
                "not_yet_valid",
                "wrong_host",
                "untrusted_ca",
                "self_signed",
                "missing_intermediate",
            )
        },
        "nodata.contoso.test": {"a_record": False},
    },
    "records": [{"name": "nodata.contoso.test", "type": "TXT", "value": "no address here"}],
    "dns_faults": [
        {"name": "nx.contoso.test", "fault": "nxdomain"},
        {"name": "servfail.contoso.test", "fault": "servfail"},
        {"name": "refused.contoso.test", "fault": "refused"},
        {"name": "drop.contoso.test", "fault": "drop"},
        {"name": "trunc-servfail.contoso.test", "fault": "truncate", "tcp": "servfail"},
        {"name": "trunc-refused.contoso.test", "fault": "truncate", "tcp": "refused"},
        {"name": "trunc-drop.contoso.test", "fault": "truncate", "tcp": "drop"},
    ],
}


def raised(fn: Callable[[], object]) -> BaseException:
    """The exception ``fn`` raises (the test fails if it returns)."""
    try:
        result = fn()
    except Exception as exc:
        return exc
    pytest.fail(f"expected an exception, got {result!r}")


def araised(make: Callable[[], Awaitable[object]]) -> BaseException:
    """The exception an aiosmtplib coroutine raises, on a fresh loop, bounded."""

    async def bounded() -> object:
        return await asyncio.wait_for(make(), 5)

    return raised(lambda: asyncio.run(bounded()))
