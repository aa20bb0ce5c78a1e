"""IPv6 hosts: the ``ipv6`` key, on the wire through raw sockets (``::1`` outside a namespace),
and the guard that accepts the namespace's own addresses only inside it."""

from __future__ import annotations

import socket

import dns.message
import dns.query
import dns.rcode
import pytest
from mailfakes import World
from mailfakes.netns import NetnsError, add_ipv6_address
from mailfakes.spec import SpecError, is_loopback, parse_world
from mailfakes.world import WorldError


def outcome(address: str, port: int) -> str:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect((address, port))
        except ConnectionRefusedError:
            return "refused"
        return s.recv(3).decode()


def rcode(world: World, name: str, rtype: str) -> tuple[str, list[str]]:
    reply = dns.query.udp(dns.message.make_query(name, rtype), world.dns_host, port=world.dns_port, timeout=2)
    return dns.rcode.to_text(reply.rcode()), [r.to_text() for rr in reply.answer for r in rr]


@pytest.mark.parametrize(
    ("ipv6", "v6", "v4"), [("dual", "220", "220"), ("refused", "refused", "220"), ("only", "220", "refused")]
)
def test_each_ipv6_mode_on_the_wire(make_world, ipv6, v6, v4):
    world = make_world({"hosts": {"mail.contoso.test": {"ipv6": ipv6}}})
    v4_address = world.address_of("mail.contoso.test")
    assert world.address6_of("mail.contoso.test") == "::1"
    assert [outcome("::1", world.port) for _ in range(3)] == [v6] * 3
    assert [outcome(v4_address, world.port) for _ in range(3)] == [v4] * 3
    assert rcode(world, "mail.contoso.test", "AAAA") == ("NOERROR", ["::1"])
    a = rcode(world, "mail.contoso.test", "A")
    assert a == ("NOERROR", []) if ipv6 == "only" else a == ("NOERROR", [v4_address])


def test_an_aaaa_servfail_leaves_the_a_answer_alone(make_world):
    world = make_world(
        {
            "hosts": {"mail.contoso.test": {"ipv6": "dual"}},
            "dns_faults": [{"name": "mail.contoso.test", "fault": "servfail", "types": ["AAAA"]}],
        }
    )
    assert [rcode(world, "mail.contoso.test", "AAAA")[0] for _ in range(3)] == ["SERVFAIL"] * 3
    assert [rcode(world, "mail.contoso.test", "A")[0] for _ in range(3)] == ["NOERROR"] * 3


def test_two_ipv6_hosts_outside_a_namespace_are_refused_before_anything_starts():
    with pytest.raises(WorldError, match="--netns"):
        World({"hosts": {"a.contoso.test": {"ipv6": "dual"}, "b.contoso.test": {"ipv6": "only"}}})


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ({"ipv6": "both"}, "ipv6"),
        ({"kind": "refuse", "ipv6": "dual"}, "ipv6"),
        ({"ipv6": "only", "a_record": True}, "a_record"),
        ({"ipv6": "refused", "a_record": False}, "a_record"),
    ],
)
def test_bad_ipv6_settings_name_their_key(host, key):
    with pytest.raises(SpecError) as caught:
        parse_world({"hosts": {"mail.contoso.test": host}})
    assert caught.value.key.endswith(key)


def test_the_namespace_prefix_is_not_loopback_outside_the_namespace():
    assert is_loopback("::1") and is_loopback("127.3.4.5")
    assert not is_loopback("fd6d:6169:6c66:102::2")
    assert not is_loopback("fd00::1")
    with pytest.raises(NetnsError, match="outside a mailfakes network namespace"):
        add_ipv6_address("fd6d:6169:6c66:102::2")
