"""A signed world's DNS (DNSSEC) through real UDP and TCP on loopback, checked by dnspython.

dnspython is the independent client: it parses the exported trust anchor,
makes the DS of each DNSKEY it is served (dns.dnssec.make_ds) and verifies
every RRSIG (dns.dnssec.validate); the test itself checks that an NSEC
covers the name it denies, by dnspython's canonical order of names. The
server runs on an asyncio loop in a background thread; every wait is a
bounded socket timeout.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import dns.dnssec
import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from mailfakes.dns import FakeDNS
from mailfakes.spec import Record, WorldSpec, parse_world
from prerequisites import require
from test_dns import LoopThread  # an asyncio loop in a thread, as the DNS tests use

T = TypeVar("T")
HOST = "127.0.0.1"
TLSA_HEX = "0123456789abcdef" * 4
ADDRS = {"mx.contoso.test": "127.0.0.2", "mx.signed.test": "127.0.0.3", "mx.other.test": "127.0.0.4"}
RECORDS: list[dict[str, Any]] = [
    {"name": "contoso.test", "type": "MX", "value": "mx.contoso.test"},
    {"name": "signed.test", "type": "MX", "value": "mx.signed.test"},
    {"name": "_25._tcp.mx.signed.test", "type": "TLSA", "value": f"3 1 1 {TLSA_HEX}"},
    {"name": "a.b.deep.test", "type": "A", "value": "127.0.0.9"},
    {"name": "www.contoso.test", "type": "CNAME", "value": "mx.signed.test"},
]
ZONE = dns.name.from_text("test.")
SUB = dns.name.from_text("signed.test.")


def world(
    *faults: dict[str, Any], signed: bool = True, zones: tuple[str, ...] = ("signed.test",)
) -> WorldSpec:
    data: dict[str, Any] = {
        "zone": "test",
        "hosts": {name: {} for name in ADDRS},
        "records": RECORDS,
        "dns_faults": list(faults),
    }
    if signed:
        data["dnssec"] = {"zones": list(zones)}
    return parse_world(data)


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


Serve = Callable[..., FakeDNS]


@pytest.fixture
def serve(loop_thread: LoopThread) -> Iterator[Serve]:
    started: list[FakeDNS] = []

    def make(spec: WorldSpec | None = None, **kw: Any) -> FakeDNS:
        kw.setdefault("address_of", ADDRS.__getitem__)
        server = FakeDNS(spec or world(), **kw)
        loop_thread.run(server.start())
        started.append(server)
        return server

    yield make
    for server in started:
        loop_thread.run(server.stop())


def ask(
    server: FakeDNS,
    name: str,
    rdtype: str = "A",
    *,
    do: bool = True,
    cd: bool = False,
    ad: bool = False,
    tcp: bool = False,
    payload: int = 1232,
) -> dns.message.Message:
    if do:
        query = dns.message.make_query(name, rdtype, want_dnssec=True, payload=payload)
    else:
        query = dns.message.make_query(name, rdtype)  # no EDNS at all
    if cd:
        query.flags |= dns.flags.CD
    if ad:
        query.flags |= dns.flags.AD
    if tcp:
        return dns.query.tcp(query, HOST, port=server.port, timeout=2.0)
    return dns.query.udp(query, HOST, port=server.port, timeout=2.0)


def rrset(
    msg: dns.message.Message, section: str, name: str | dns.name.Name, rdtype: str, covers: str | None = None
) -> dns.rrset.RRset:
    owner = dns.name.from_text(name) if isinstance(name, str) else name
    sec = getattr(msg, section)
    return msg.find_rrset(
        sec,
        owner,
        dns.rdataclass.IN,
        dns.rdatatype.from_text(rdtype),
        dns.rdatatype.from_text(covers) if covers else dns.rdatatype.NONE,
    )


def sigs(msg: dns.message.Message, section: str = "answer") -> list[dns.rrset.RRset]:
    return [r for r in getattr(msg, section) if r.rdtype == dns.rdatatype.RRSIG]


def anchor_rrsets(text: str) -> dict[str, dns.rrset.RRset]:
    """The trust anchor's lines as rrsets by type, read by dnspython."""
    out: dict[str, dns.rrset.RRset] = {}
    for line in text.splitlines():
        owner, ttl, klass, rdtype, rdata = line.split(None, 4)
        assert klass == "IN"
        out[rdtype] = dns.rrset.from_text(owner, int(ttl), klass, rdtype, rdata)
    return out


def keys_of(
    server: FakeDNS, zone: dns.name.Name, ds: dns.rrset.RRset, *, tcp: bool = False
) -> dns.rrset.RRset:
    """The zone's DNSKEY rrset, checked against ``ds`` and its own RRSIG."""
    resp = ask(server, zone.to_text(), "DNSKEY", tcp=tcp)
    assert resp.rcode() == dns.rcode.NOERROR
    keys = rrset(resp, "answer", zone, "DNSKEY")
    assert {dns.dnssec.make_ds(zone, k, "SHA256") for k in keys} & set(ds)
    dns.dnssec.validate(keys, rrset(resp, "answer", zone, "RRSIG", "DNSKEY"), {zone: keys})
    return keys


def chain_keys(server: FakeDNS) -> dict[dns.name.Name, dns.rrset.RRset]:
    anchor = anchor_rrsets(server.trust_anchor())
    top = keys_of(server, ZONE, anchor["DS"])
    assert set(top) == set(anchor["DNSKEY"])
    resp = ask(server, "signed.test", "DS")
    ds = rrset(resp, "answer", SUB, "DS")
    dns.dnssec.validate(ds, rrset(resp, "answer", SUB, "RRSIG", "DS"), {ZONE: top})
    return {ZONE: top, SUB: keys_of(server, SUB, ds, tcp=True)}


def validated(msg: dns.message.Message, name: str, rdtype: str, keys: dict[dns.name.Name, Any]) -> None:
    dns.dnssec.validate(rrset(msg, "answer", name, rdtype), rrset(msg, "answer", name, "RRSIG", rdtype), keys)


def covers(nsec_owner: dns.name.Name, nsec_next: dns.name.Name, name: dns.name.Name) -> bool:
    """An NSEC from ``nsec_owner`` to ``nsec_next`` covers ``name`` (canonical order, the last wraps)."""
    if nsec_next <= nsec_owner:  # the last NSEC of the zone: its next is the apex
        return nsec_owner < name
    return nsec_owner < name < nsec_next


def nsecs(msg: dns.message.Message, keys: dict[dns.name.Name, Any]) -> list[tuple[dns.name.Name, Any]]:
    """The NSEC records of the authority section, each validated with its RRSIG."""
    out = []
    for rs in msg.authority:
        if rs.rdtype == dns.rdatatype.NSEC:
            dns.dnssec.validate(rs, rrset(msg, "authority", rs.name, "RRSIG", "NSEC"), keys)
            out += [(rs.name, r) for r in rs]
    return out


def types_of(nsec: Any) -> set[str]:
    return set(nsec.to_text().split()[1:])


# ----------------------------------------------------------------------
# The chain of trust


def test_chain_from_the_trust_anchor_to_a_mx_and_tlsa(serve: Serve) -> None:
    server = serve()
    keys = chain_keys(server)
    resp = ask(server, "signed.test", "MX")
    assert resp.flags & dns.flags.AD
    assert [r.to_text() for r in rrset(resp, "answer", "signed.test", "MX")] == ["10 mx.signed.test."]
    validated(resp, "signed.test", "MX", keys)
    resp = ask(server, "mx.signed.test", "A", tcp=True)
    validated(resp, "mx.signed.test", "A", keys)
    assert [r.to_text() for r in rrset(resp, "answer", "mx.signed.test", "A")] == ["127.0.0.3"]
    resp = ask(server, "_25._tcp.mx.signed.test", "TLSA")
    assert resp.flags & dns.flags.AD
    assert [r.to_text() for r in rrset(resp, "answer", "_25._tcp.mx.signed.test", "TLSA")] == [
        f"3 1 1 {TLSA_HEX}"
    ]
    validated(resp, "_25._tcp.mx.signed.test", "TLSA", keys)
    sig = rrset(resp, "answer", "_25._tcp.mx.signed.test", "RRSIG", "TLSA")[0]
    assert sig.signer == SUB and sig.labels == 5 and sig.algorithm == 13
    now = time.time()
    assert sig.inception < now < sig.expiration
    # In the world's own zone, signed by its key.
    resp = ask(server, "contoso.test", "MX")
    validated(resp, "contoso.test", "MX", keys)
    assert rrset(resp, "answer", "contoso.test", "RRSIG", "MX")[0].signer == ZONE


def test_cname_across_zones_each_rrset_signed_by_its_zone(serve: Serve) -> None:
    server = serve()
    keys = chain_keys(server)
    resp = ask(server, "WWW.Contoso.test", "A")  # the answer keeps the client's case; signatures hold
    assert resp.flags & dns.flags.AD
    validated(resp, "www.contoso.test", "CNAME", keys)
    validated(resp, "mx.signed.test", "A", keys)


def test_sub_zone_apex_has_its_soa_ns_and_keys(serve: Serve) -> None:
    server = serve()
    keys = chain_keys(server)
    for rdtype in ("SOA", "NS"):
        resp = ask(server, "signed.test", rdtype)
        validated(resp, "signed.test", rdtype, keys)
        assert rrset(resp, "answer", "signed.test", "RRSIG", rdtype)[0].signer == SUB
    assert rrset(ask(server, "signed.test", "SOA"), "answer", "signed.test", "SOA")[
        0
    ].mname == dns.name.from_text("ns.signed.test.")


def test_trust_anchor_is_written_and_kept_across_reset_and_set_spec(serve: Serve, tmp_path: Path) -> None:
    server = serve()
    text = server.trust_anchor()
    lines = text.splitlines()
    assert (
        len(lines) == 2
        and lines[0].startswith("test. 3600 IN DS ")
        and lines[1].startswith("test. 3600 IN DNSKEY 257 3 13 ")
    )
    path = tmp_path / "anchor.txt"
    server.write_trust_anchor(path)
    assert path.read_text() == text
    server.reset()
    assert server.trust_anchor() == text
    server.set_spec(world({"name": "contoso.test", "fault": "no_ad"}))
    assert server.trust_anchor() == text
    keys_of(server, ZONE, anchor_rrsets(text)["DS"])


def test_unsigned_world_has_no_trust_anchor(serve: Serve) -> None:
    server = serve(world(signed=False))
    with pytest.raises(ValueError, match="not signed"):
        server.trust_anchor()


# ----------------------------------------------------------------------
# Authenticated denial


def test_nxdomain_proven_by_the_covering_and_wildcard_nsec(serve: Serve) -> None:
    server = serve()
    keys = chain_keys(server)
    for qname, encloser in (("nope.test.", "test."), ("x.mx.signed.test.", "mx.signed.test.")):
        resp = ask(server, qname, "A")
        assert resp.rcode() == dns.rcode.NXDOMAIN
        assert resp.flags & dns.flags.AD
        proof = nsecs(resp, keys)
        name = dns.name.from_text(qname)
        wildcard = dns.name.from_text("*." + encloser)
        assert any(covers(owner, r.next, name) for owner, r in proof), proof
        assert any(covers(owner, r.next, wildcard) for owner, r in proof), proof
        soa = [rs for rs in resp.authority if rs.rdtype == dns.rdatatype.SOA]
        assert [rs.name.to_text() for rs in soa] == [("signed.test." if "signed" in qname else "test.")]
        dns.dnssec.validate(soa[0], rrset(resp, "authority", soa[0].name, "RRSIG", "SOA"), keys)


def test_nodata_proven_by_the_nsec_at_the_name(serve: Serve) -> None:
    server = serve()
    keys = chain_keys(server)
    resp = ask(server, "mx.signed.test", "MX")
    assert resp.rcode() == dns.rcode.NOERROR and not resp.answer
    assert resp.flags & dns.flags.AD
    proof = nsecs(resp, keys)
    at = [r for owner, r in proof if owner == dns.name.from_text("mx.signed.test.")]
    assert at and "MX" not in types_of(at[0]) and "A" in types_of(at[0])


def test_empty_non_terminal_nodata_proven_by_the_nsec_covering_it(serve: Serve) -> None:
    server = serve()
    keys = chain_keys(server)
    ent = dns.name.from_text("deep.test.")
    resp = ask(server, "deep.test", "A")
    assert resp.rcode() == dns.rcode.NOERROR and not resp.answer
    proof = nsecs(resp, keys)
    # No NSEC at the name; one covers it whose next name lies below it (RFC 5155 calls this an ENT).
    assert all(owner != ent for owner, _ in proof)
    assert any(covers(owner, r.next, ent) and r.next.is_subdomain(ent) for owner, r in proof), proof


def test_delegation_nsec_on_the_parent_side(serve: Serve) -> None:
    server = serve(world(zones=("signed.test", "other.test")))
    keys = chain_keys(server)
    # A query for the NSEC of a sub-zone's apex gets the child's own.
    resp = ask(server, "signed.test", "NSEC")
    validated(resp, "signed.test", "NSEC", keys)
    assert rrset(resp, "answer", "signed.test", "RRSIG", "NSEC")[0].signer == SUB
    assert {"SOA", "DNSKEY", "MX"} <= types_of(rrset(resp, "answer", "signed.test", "NSEC")[0])
    # The parent's, at the delegation point, covers the names after it in the parent zone.
    resp = ask(server, "signeda.test", "A")
    assert resp.rcode() == dns.rcode.NXDOMAIN
    proof = nsecs(resp, keys)
    at = [r for owner, r in proof if owner == SUB]
    assert at and types_of(at[0]) == {"NS", "DS", "RRSIG", "NSEC"}
    assert covers(SUB, at[0].next, dns.name.from_text("signeda.test."))
    assert rrset(resp, "authority", SUB, "RRSIG", "NSEC")[0].signer == ZONE
    assert all(not owner.is_subdomain(SUB) or owner == SUB for owner, _ in proof)


def test_without_do_no_dnssec_records_unless_asked_for(serve: Serve) -> None:
    server = serve()
    resp = ask(server, "signed.test", "MX", do=False)
    assert resp.answer and not sigs(resp)
    assert resp.edns < 0
    resp = ask(server, "nope.test", "A", do=False)
    assert resp.rcode() == dns.rcode.NXDOMAIN
    assert [rs.rdtype for rs in resp.authority] == [dns.rdatatype.SOA]
    for name, rdtype in (("test", "DNSKEY"), ("signed.test", "DS"), ("signed.test", "NSEC")):
        resp = ask(server, name, rdtype, do=False)
        assert rrset(resp, "answer", name, rdtype) and not sigs(resp)
    resp = ask(server, "contoso.test", "RRSIG", do=False)
    assert [rs.covers for rs in sigs(resp)] and dns.rdatatype.MX in {rs.covers for rs in sigs(resp)}


# ----------------------------------------------------------------------
# The AD bit


def test_ad_only_on_secure_answers_asked_with_do_or_ad(serve: Serve) -> None:
    server = serve()
    assert ask(server, "contoso.test", "MX").flags & dns.flags.AD
    assert ask(server, "contoso.test", "MX", do=False, ad=True).flags & dns.flags.AD
    assert not ask(server, "contoso.test", "MX", do=False).flags & dns.flags.AD
    assert ask(server, "contoso.test", "MX").ednsflags & dns.flags.DO  # DO echoed
    recorded = [(q.flags, q.dnssec, q.ad) for q in server.queries]
    assert recorded == [
        (("DO",), "secure", True),
        (("AD",), "secure", True),
        ((), "secure", False),
        (("DO",), "secure", True),
    ]


def test_unsigned_world_never_signs_nor_sets_ad(serve: Serve) -> None:
    server = serve(world(signed=False))
    resp = ask(server, "contoso.test", "MX", ad=True)
    assert resp.answer and not sigs(resp) and not resp.flags & dns.flags.AD
    assert not resp.ednsflags & dns.flags.DO
    resp = ask(server, "nope.test", "A")
    assert [rs.rdtype for rs in resp.authority] == [dns.rdatatype.SOA]
    resp = ask(server, "test", "DNSKEY")
    assert resp.rcode() == dns.rcode.NOERROR and not resp.answer
    q = server.queries[0]
    assert (q.flags, q.dnssec, q.ad) == (("DO", "AD"), None, False)
    event = q.event()
    assert "dnssec" not in event.data and "dnssec" not in event.text


# ----------------------------------------------------------------------
# Faults


def test_bad_signature_servfail_without_cd_records_and_failing_rrsig_with_cd(serve: Serve) -> None:
    server = serve(world({"name": "mx.signed.test", "fault": "bad_signature", "types": ["A"]}))
    keys = chain_keys(server)
    resp = ask(server, "mx.signed.test", "A")
    assert resp.rcode() == dns.rcode.SERVFAIL and not resp.answer
    assert [e.code for e in resp.extended_errors()] == [dns.edns.EDECode.DNSSEC_BOGUS]
    resp = ask(server, "mx.signed.test", "A", cd=True)
    assert resp.rcode() == dns.rcode.NOERROR and not resp.flags & dns.flags.AD
    with pytest.raises(dns.dnssec.ValidationFailure):
        validated(resp, "mx.signed.test", "A", keys)
    # Other names and types are untouched.
    validated(ask(server, "signed.test", "MX"), "signed.test", "MX", keys)
    assert ask(server, "mx.signed.test", "TLSA").flags & dns.flags.AD
    outcomes = [
        (q.name, q.qtype, q.rcode, q.dnssec, q.fault) for q in server.queries if q.name == "mx.signed.test"
    ]
    assert outcomes[:2] == [
        ("mx.signed.test", "A", "SERVFAIL", "bogus", "bad_signature"),
        ("mx.signed.test", "A", "NOERROR", "bogus", "bad_signature"),
    ]


def test_expired_signature_fails_validation_for_expiry(serve: Serve) -> None:
    server = serve(world({"name": "contoso.test", "fault": "expired_signature", "types": ["MX"]}))
    keys = chain_keys(server)
    resp = ask(server, "contoso.test", "MX", tcp=True)
    assert resp.rcode() == dns.rcode.SERVFAIL
    assert [e.code for e in resp.extended_errors()] == [dns.edns.EDECode.SIGNATURE_EXPIRED]
    resp = ask(server, "contoso.test", "MX", cd=True)
    assert not resp.flags & dns.flags.AD
    sig = rrset(resp, "answer", "contoso.test", "RRSIG", "MX")[0]
    now = time.time()
    assert sig.inception < sig.expiration < now
    with pytest.raises(dns.dnssec.ValidationFailure):
        validated(resp, "contoso.test", "MX", keys)
    with pytest.raises(dns.dnssec.ValidationFailure, match="expired"):
        dns.dnssec.validate_rrsig(rrset(resp, "answer", "contoso.test", "MX"), sig, keys)
    # At the time it was valid, the signature verifies: only its dates are wrong.
    dns.dnssec.validate(
        rrset(resp, "answer", "contoso.test", "MX"),
        rrset(resp, "answer", "contoso.test", "RRSIG", "MX"),
        keys,
        now=sig.expiration - 60,
    )


def test_broken_key_of_a_sub_zone_makes_all_of_it_bogus(serve: Serve) -> None:
    server = serve(world({"name": "signed.test", "fault": "bad_signature"}))  # no types: its DNSKEY too
    assert ask(server, "mx.signed.test", "A").rcode() == dns.rcode.SERVFAIL
    assert ask(server, "_25._tcp.mx.signed.test", "TLSA").rcode() == dns.rcode.SERVFAIL
    resp = ask(server, "mx.signed.test", "A", cd=True)
    assert rrset(resp, "answer", "mx.signed.test", "A") and not resp.flags & dns.flags.AD
    assert ask(server, "contoso.test", "MX").flags & dns.flags.AD  # the parent is fine


def test_missing_ds_proven_absent_and_the_sub_zone_insecure(serve: Serve) -> None:
    server = serve(world({"name": "signed.test", "fault": "missing_ds"}))
    anchor = anchor_rrsets(server.trust_anchor())
    top = {ZONE: keys_of(server, ZONE, anchor["DS"])}
    resp = ask(server, "signed.test", "DS")
    assert resp.rcode() == dns.rcode.NOERROR and not resp.answer
    assert resp.flags & dns.flags.AD  # the absence is itself secure
    proof = nsecs(resp, top)
    at = [r for owner, r in proof if owner == SUB]
    assert at and types_of(at[0]) == {"NS", "RRSIG", "NSEC"}
    for name, rdtype in (("mx.signed.test", "A"), ("_25._tcp.mx.signed.test", "TLSA"), ("signed.test", "MX")):
        resp = ask(server, name, rdtype, ad=True)
        assert resp.rcode() == dns.rcode.NOERROR and resp.answer
        assert not resp.flags & dns.flags.AD
    assert {q.dnssec for q in server.queries if q.name != "signed.test" or q.qtype == "MX"} >= {"insecure"}
    assert ask(server, "contoso.test", "MX").flags & dns.flags.AD


def test_no_ad_valid_signatures_without_ad(serve: Serve) -> None:
    server = serve(world({"name": "contoso.test", "fault": "no_ad", "types": ["MX"]}))
    keys = chain_keys(server)
    resp = ask(server, "contoso.test", "MX", ad=True)
    assert not resp.flags & dns.flags.AD
    validated(resp, "contoso.test", "MX", keys)
    assert ask(server, "signed.test", "MX").flags & dns.flags.AD
    q = server.queries[-2]
    assert (q.name, q.fault, q.dnssec, q.ad) == ("contoso.test", "no_ad", "secure", False)


def test_nxdomain_fault_in_a_signed_zone_is_proven(serve: Serve) -> None:
    server = serve(world({"name": "mx.contoso.test", "fault": "nxdomain"}))
    keys = chain_keys(server)
    resp = ask(server, "mx.contoso.test", "A")
    assert resp.rcode() == dns.rcode.NXDOMAIN and resp.flags & dns.flags.AD
    proof = nsecs(resp, keys)
    assert any(covers(owner, r.next, dns.name.from_text("mx.contoso.test.")) for owner, r in proof)


# ----------------------------------------------------------------------
# Size, records added later, the query log


def test_big_signed_answer_truncated_over_udp_whole_over_tcp(serve: Serve) -> None:
    server = serve()
    resp = ask(server, "test", "ANY", payload=512)
    assert resp.flags & dns.flags.TC and not resp.answer
    resp = ask(server, "test", "ANY", tcp=True)
    types = {rs.rdtype for rs in resp.answer}
    assert {
        dns.rdatatype.SOA,
        dns.rdatatype.NS,
        dns.rdatatype.DNSKEY,
        dns.rdatatype.NSEC,
        dns.rdatatype.RRSIG,
    } <= types
    keys = {ZONE: rrset(resp, "answer", ZONE, "DNSKEY")}
    for rdtype in ("SOA", "NS", "DNSKEY", "NSEC"):
        validated(resp, "test.", rdtype, keys)
    assert [q.dnssec for q in server.queries] == ["indeterminate", "secure"]


def test_add_records_served_signed_and_replaced(serve: Serve) -> None:
    server = serve()
    keys = chain_keys(server)
    first = Record(name="_25._tcp.mx.contoso.test", type="TLSA", value=f"3 1 1 {TLSA_HEX.upper()}")
    server.add_records([first])
    resp = ask(server, "_25._tcp.mx.contoso.test", "TLSA")
    assert [r.to_text() for r in rrset(resp, "answer", "_25._tcp.mx.contoso.test", "TLSA")] == [
        f"3 1 1 {TLSA_HEX}"
    ]
    validated(resp, "_25._tcp.mx.contoso.test", "TLSA", keys)
    second = Record(name="_25._tcp.mx.signed.test", type="TLSA", value="2 0 1 " + "ff" * 32)
    server.add_records([second])
    resp = ask(server, "_25._tcp.mx.contoso.test", "TLSA")
    assert resp.rcode() == dns.rcode.NXDOMAIN
    name = dns.name.from_text("_25._tcp.mx.contoso.test.")
    assert any(covers(owner, r.next, name) for owner, r in nsecs(resp, keys))
    resp = ask(server, "_25._tcp.mx.signed.test", "TLSA")
    got = sorted(r.to_text() for r in rrset(resp, "answer", "_25._tcp.mx.signed.test", "TLSA"))
    assert got == sorted([f"3 1 1 {TLSA_HEX}", "2 0 1 " + "ff" * 32])
    validated(resp, "_25._tcp.mx.signed.test", "TLSA", keys)


def test_add_records_before_start_and_in_an_unsigned_world(loop_thread: LoopThread) -> None:
    server = FakeDNS(world(signed=False), address_of=ADDRS.__getitem__)
    server.add_records([Record(name="_25._tcp.mx.contoso.test", type="TLSA", value=f"3 1 1 {TLSA_HEX}")])
    loop_thread.run(server.start())
    try:
        resp = ask(server, "_25._tcp.mx.contoso.test", "TLSA")
        assert [r.to_text() for r in rrset(resp, "answer", "_25._tcp.mx.contoso.test", "TLSA")] == [
            f"3 1 1 {TLSA_HEX}"
        ]
        assert not sigs(resp) and not resp.flags & dns.flags.AD
    finally:
        loop_thread.run(server.stop())


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (Record(name="x.example.org", type="A", value="127.0.0.1"), "not in the world's zone"),
        (Record(name="x.test", type="TLSA", value="3 1 1 abc"), "usage selector matching hex"),
        (Record(name="x.test", type="TLSA", value="300 1 1 ab"), "0 to 255"),
        (Record(name="x.test", type="A", value="::1"), "not an IPv6"),
        (Record(name="x.test", type="SRV", value="0 0 25 x.test"), "type not served"),  # type: ignore[arg-type]
    ],
)
def test_add_records_refuses_what_it_cannot_serve(record: Record, message: str) -> None:
    server = FakeDNS(world())
    with pytest.raises(ValueError, match=message):
        server.add_records([record])


def test_web_hosts_get_an_a_record(serve: Serve) -> None:
    spec = parse_world(
        {
            "zone": "test",
            "hosts": {"mx.contoso.test": {}},
            "records": [{"name": "contoso.test", "type": "MX", "value": "mx.contoso.test"}],
            "mta_sts": {"contoso.test": {}},
            "dnssec": {"zones": []},
        }
    )
    addrs = {"mx.contoso.test": "127.0.0.2", "mta-sts.contoso.test": "127.0.0.7"}
    server = serve(spec, address_of=addrs.__getitem__)
    keys = {ZONE: keys_of(server, ZONE, anchor_rrsets(server.trust_anchor())["DS"])}
    resp = ask(server, "mta-sts.contoso.test", "A")
    assert [r.to_text() for r in rrset(resp, "answer", "mta-sts.contoso.test", "A")] == ["127.0.0.7"]
    validated(resp, "mta-sts.contoso.test", "A", keys)
    resp = ask(server, "_mta-sts.contoso.test", "TXT")
    validated(resp, "_mta-sts.contoso.test", "TXT", keys)


def test_the_query_log_shows_the_dnssec_view(serve: Serve) -> None:
    server = serve(world({"name": "mx.signed.test", "fault": "bad_signature"}))
    ask(server, "mx.signed.test", "A", cd=True, ad=True)
    ask(server, "example.org", "A")
    first, refused = server.queries
    assert (first.flags, first.dnssec, first.ad, first.rcode) == (
        ("DO", "AD", "CD"),
        "bogus",
        False,
        "NOERROR",
    )
    assert first.answers[0] == "A 127.0.0.3" and first.answers[1].startswith("RRSIG A 13 3 300 ")
    event = first.event()
    assert (event.data["flags"], event.data["dnssec"], event.data["ad"]) == (
        ("DO", "AD", "CD"),
        "bogus",
        False,
    )
    assert "dnssec bogus" in event.text and "DO+AD+CD" in event.text
    assert (refused.rcode, refused.dnssec) == ("REFUSED", "indeterminate")


def test_a_timed_missing_ds_follows_the_world_clock(serve: Serve) -> None:
    now = [0.0]
    server = serve(world({"name": "signed.test", "fault": "missing_ds", "until": "1h"}), clock=lambda: now[0])
    resp = ask(server, "signed.test", "DS")
    assert resp.rcode() == dns.rcode.NOERROR and not resp.answer
    assert not ask(server, "mx.signed.test", "A").flags & dns.flags.AD
    now[0] = 7200.0
    keys = chain_keys(server)  # the DS is back and validates
    resp = ask(server, "mx.signed.test", "A")
    assert resp.flags & dns.flags.AD
    validated(resp, "mx.signed.test", "A", keys)
    resp = ask(server, "signeda.test", "A")
    at = [r for owner, r in nsecs(resp, keys) if owner == SUB]
    assert at and "DS" in types_of(at[0])


# ----------------------------------------------------------------------
# Unbound, a validating resolver, forwarding to the fake with its trust anchor


def unbound_says(server: FakeDNS, tmp_path: Path, name: str, rdtype: str) -> str:
    """unbound-host's last line for ``name``/``rdtype``, validated from the world's trust anchor.

    Everything is forwarded to the fake on loopback (no root priming, no other
    server); ``test.`` is taken out of Unbound's built-in local zones.
    """
    anchor = tmp_path / "anchor"
    server.write_trust_anchor(anchor)
    conf = tmp_path / "unbound.conf"
    conf.write_text(
        "server:\n"
        f'  trust-anchor-file: "{anchor}"\n'
        "  do-not-query-localhost: no\n"
        '  local-zone: "test." nodefault\n'
        "  qname-minimisation: no\n"
        "forward-zone:\n"
        '  name: "."\n'
        f"  forward-addr: {HOST}@{server.port}\n"
    )
    done = subprocess.run(
        ["unbound-host", "-C", str(conf), "-v", "-t", rdtype, name],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return next((line for line in (done.stdout + done.stderr).splitlines() if line.strip()), "")


@pytest.mark.parametrize(
    ("faults", "name", "rdtype", "verdict"),
    [
        ((), "contoso.test", "MX", "mail is handled by 10 mx.contoso.test. (secure)"),
        ((), "_25._tcp.mx.signed.test", "TLSA", f"has TLSA record 3 1 1 {TLSA_HEX.upper()} (secure)"),
        ((), "nope.test", "A", "not found: 3(NXDOMAIN). (secure)"),
        ((), "x.mx.signed.test", "A", "not found: 3(NXDOMAIN). (secure)"),
        ((), "deep.test", "A", "has no address (secure)"),
        ((), "mx.signed.test", "MX", "has no mail handler record (secure)"),
        (
            ({"name": "mx.signed.test", "fault": "bad_signature"},),
            "mx.signed.test",
            "A",
            "(BOGUS (security failure))",
        ),
        (
            ({"name": "contoso.test", "fault": "expired_signature"},),
            "contoso.test",
            "MX",
            "(BOGUS (security failure))",
        ),
        (({"name": "signed.test", "fault": "missing_ds"},), "signed.test", "DS", "has no DS record (secure)"),
        (
            ({"name": "signed.test", "fault": "missing_ds"},),
            "mx.signed.test",
            "A",
            "has address 127.0.0.3 (insecure)",
        ),
        (
            ({"name": "mx.contoso.test", "fault": "nxdomain"},),
            "mx.contoso.test",
            "A",
            "not found: 3(NXDOMAIN). (secure)",
        ),
    ],
)
def test_unbound_validates_what_the_fake_says(
    serve: Serve, tmp_path: Path, faults: tuple[dict[str, Any], ...], name: str, rdtype: str, verdict: str
) -> None:
    require({"unbound-host": "unbound-host"}, netns=False)  # CI installs it: it must run there
    server = serve(world(*faults))
    line = unbound_says(server, tmp_path, name, rdtype)
    assert line.endswith(verdict), line
