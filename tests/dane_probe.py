"""An independent DANE client for the tests: dnspython, ssl, hashlib and cryptography only.

It shares no code with ``mailfakes``. :class:`Validator` asks the world's
DNS with the DO bit and checks every RRSIG itself, from the exported trust
anchor down (DNSKEY of the anchor zone against the anchor's DS, then the DS
and DNSKEY of each signed zone below, then the RRset asked for); the AD bit
the server sets is recorded beside that verdict, never trusted.
:class:`BioTLS` opens TLS 1.2 over a connected socket through memory BIOs
and keeps what the server sent, so that :func:`certificate_chain` reads the
chain off the wire, as sent (in TLS 1.2 the Certificate message travels in
the clear). :func:`authenticate` checks that chain against TLSA records as
RFC 7672 3.1 has an SMTP client do.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import dns.dnssec
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

TIMEOUT = 2.0


# ----------------------------------------------------------------------
# DNSSEC, validated here


@dataclass(frozen=True)
class TrustAnchor:
    """The anchor zone's DS and DNSKEY, as the world's trust anchor file lists them."""

    zone: dns.name.Name
    ds: dns.rrset.RRset
    dnskey: dns.rrset.RRset


def load_trust_anchor(path: Path) -> TrustAnchor:
    """Read zone-file lines ``name ttl IN DS|DNSKEY rdata``; both types must be there, for one zone."""
    lines: dict[str, list[str]] = {}
    zones: set[dns.name.Name] = set()
    ttl = 0
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        owner, ttl_text, rdclass, rdtype, rdata = line.split(None, 4)
        if rdclass.upper() != "IN":
            raise ValueError(f"{path.name}: not class IN: {line!r}")
        zones.add(dns.name.from_text(owner))
        ttl = int(ttl_text)
        lines.setdefault(rdtype.upper(), []).append(rdata)
    if len(zones) != 1 or set(lines) != {"DS", "DNSKEY"}:
        raise ValueError(f"{path.name}: want the DS and DNSKEY of one zone, got {sorted(lines)} for {zones}")
    zone = zones.pop()
    sets = {t: dns.rrset.from_text_list(zone, ttl, "IN", t, v) for t, v in lines.items()}
    return TrustAnchor(zone, sets["DS"], sets["DNSKEY"])


class Insecure(LookupError):
    """A zone proven unsigned: its parent denies it a DS."""


@dataclass
class Lookup:
    """One RRset asked for with DO, and what this client made of it.

    ``status``: ``secure`` (every signature up to the anchor verified here),
    ``denied`` (NODATA, proven by a validated NSEC), ``bogus`` (a signature
    that does not verify, or a SERVFAIL whose data, asked again with CD, does
    not verify), ``insecure`` (no RRSIG, or signed by a zone proven unsigned),
    or ``failed`` (no answer, or an rcode with nothing to check). The AD bit
    the server set is in ``ad``: whether to trust it is the caller's choice.
    """

    name: str
    rdtype: str
    rcode: str
    ad: bool
    status: str
    rrset: dns.rrset.RRset | None = None
    reason: str = ""
    ede: tuple[int, ...] = ()  # Extended DNS Error codes of the answer (RFC 8914)
    cd_rcode: str = ""  # after a SERVFAIL: the rcode of the same question with CD
    cd_ad: bool = False

    @property
    def values(self) -> list[str]:
        return [rd.to_text() for rd in self.rrset] if self.rrset is not None else []


class Validator:
    """A validating stub resolver of its own, asking the world's DNS at ``server``:``port``."""

    def __init__(self, server: str, port: int, anchor: TrustAnchor, timeout: float = TIMEOUT) -> None:
        self.server, self.port, self.anchor, self.timeout = server, port, anchor, timeout
        self.keys: dict[dns.name.Name, dns.rrset.RRset] = {}  # validated DNSKEY RRsets
        self.insecure: set[dns.name.Name] = set()  # zones proven unsigned
        self.asked: list[tuple[str, str, bool]] = []  # (name, type, cd) of every query sent
        self.lookups: list[Lookup] = []  # every lookup() answered, in order

    def query(self, name: dns.name.Name, rdtype: str, *, cd: bool = False) -> dns.message.Message:
        flags = dns.flags.RD | (dns.flags.CD if cd else 0)
        q = dns.message.make_query(name, rdtype, want_dnssec=True, flags=flags)
        self.asked.append((name.to_text(omit_final_dot=True), rdtype, cd))
        resp = dns.query.udp(q, self.server, port=self.port, timeout=self.timeout)
        if resp.flags & dns.flags.TC:
            resp = dns.query.tcp(q, self.server, port=self.port, timeout=self.timeout)
        return resp

    @staticmethod
    def _sets(
        resp: dns.message.Message, name: dns.name.Name, rdtype: str
    ) -> tuple[dns.rrset.RRset | None, dns.rrset.RRset | None]:
        want = dns.rdatatype.from_text(rdtype)
        rrset = sig = None
        for s in resp.answer:
            if s.name != name:
                continue
            if s.rdtype == want:
                rrset = s
            elif s.rdtype == dns.rdatatype.RRSIG and s.covers == want:
                sig = s
        return rrset, sig

    def _check(self, name: dns.name.Name, rrset: dns.rrset.RRset, sig: dns.rrset.RRset) -> tuple[str, str]:
        """(status, why) of ``rrset``: ``secure`` when one RRSIG over it verifies with a validated
        key of its signer, ``insecure`` when the signer's zone is proven unsigned (its DS denied),
        else ``bogus``."""
        reasons = []
        for rrsig in sig:
            signer = rrsig.signer
            if not name.is_subdomain(signer):
                reasons.append(f"signer {signer} is not above {name}")
                continue
            try:
                keys = self.zone_keys(signer)
                dns.dnssec.validate_rrsig(rrset, rrsig, {signer: keys})
            except Insecure as exc:
                return "insecure", str(exc)
            except (dns.exception.ValidationFailure, LookupError) as exc:
                reasons.append(f"{signer}: {exc}")
                continue
            return "secure", ""
        return "bogus", "; ".join(reasons) or "no RRSIG"

    def _denial(self, resp: dns.message.Message, name: dns.name.Name, rdtype: str) -> tuple[str, str]:
        """(status, why) of a NODATA answer: ``denied`` when a validated NSEC at ``name`` lists
        neither ``rdtype`` nor CNAME (RFC 4035 5.4); for a DS, the NSEC must be the parent's, at a
        delegation (NS, no SOA)."""
        want = dns.rdatatype.from_text(rdtype)
        nsec = sig = None
        for s in resp.authority:
            if s.name == name and s.rdtype == dns.rdatatype.NSEC:
                nsec = s
            elif s.name == name and s.rdtype == dns.rdatatype.RRSIG and s.covers == dns.rdatatype.NSEC:
                sig = s
        if nsec is None or sig is None:
            return "failed", f"NODATA without a signed NSEC at {name}"
        if want == dns.rdatatype.DS and any(rrsig.signer == name for rrsig in sig):
            return "bogus", f"the NSEC denying the DS of {name} is signed by {name} itself"
        status, why = self._check(name, nsec, sig)
        if status != "secure":
            return status, f"the NSEC at {name}: {why}"
        types = set(nsec[0].to_text().split()[1:])
        if rdtype in types or "CNAME" in types:
            return "bogus", f"the NSEC at {name} lists {rdtype} or CNAME: {sorted(types)}"
        if want == dns.rdatatype.DS and ("NS" not in types or "SOA" in types):
            return "bogus", f"the NSEC at {name} is not a delegation's: {sorted(types)}"
        return "denied", ""

    def zone_keys(self, zone: dns.name.Name) -> dns.rrset.RRset:
        """The DNSKEY RRset of ``zone``, validated from the anchor; LookupError if it is not."""
        if zone in self.keys:
            return self.keys[zone]
        if zone in self.insecure:
            raise Insecure(f"the parent of {zone} proves it has no DS")
        if zone == self.anchor.zone:
            ds = self.anchor.ds
        else:
            if zone == dns.name.root or not zone.is_subdomain(self.anchor.zone):
                raise LookupError(f"{zone} is not under the trust anchor {self.anchor.zone}")
            found = self.lookup(zone.to_text(omit_final_dot=True), "DS")
            if found.status == "denied":  # RFC 4035 5.2: an insecure delegation
                self.insecure.add(zone)
                raise Insecure(f"the parent of {zone} proves it has no DS")
            if found.status != "secure" or found.rrset is None:
                raise LookupError(f"the DS of {zone} is {found.status}: {found.reason}")
            ds = found.rrset
        resp = self.query(zone, "DNSKEY")
        dnskey, sig = self._sets(resp, zone, "DNSKEY")
        found = Lookup(
            zone.to_text(omit_final_dot=True),
            "DNSKEY",
            dns.rcode.to_text(resp.rcode()),
            bool(resp.flags & dns.flags.AD),
            "bogus",
            dnskey,
        )
        self.lookups.append(found)
        if dnskey is None or sig is None:
            found.status = "failed"
            raise LookupError(f"no signed DNSKEY for {zone} ({found.rcode})")
        if zone == self.anchor.zone and not any(k in self.anchor.dnskey for k in dnskey):
            raise LookupError(f"no DNSKEY of {zone} is the anchor's")
        entry = [k for k in dnskey for d in ds if dns.dnssec.make_ds(zone, k, d.digest_type) == d]
        if not entry:
            raise LookupError(f"no DNSKEY of {zone} matches its DS")
        # The key the DS names signs the whole DNSKEY RRset (RFC 4035 5.2).
        entry_set = dns.rrset.from_rdata_list(zone, dnskey.ttl, entry)
        for rrsig in sig:
            try:
                dns.dnssec.validate_rrsig(dnskey, rrsig, {zone: entry_set})
            except dns.exception.ValidationFailure:
                continue
            found.status = "secure"
            self.keys[zone] = dnskey
            return dnskey
        raise LookupError(f"the DNSKEY RRset of {zone} is not signed by the key its DS names")

    def lookup(self, text: str, rdtype: str) -> Lookup:
        """Ask for ``text``/``rdtype`` with DO; on SERVFAIL ask again with CD and check what comes."""
        found = self._lookup(text, rdtype)
        self.lookups.append(found)
        return found

    def _lookup(self, text: str, rdtype: str) -> Lookup:
        name = dns.name.from_text(text)
        try:
            resp = self.query(name, rdtype)
        except (dns.exception.Timeout, OSError, EOFError) as exc:
            return Lookup(text, rdtype, "TIMEOUT", False, "failed", reason=str(exc))
        rcode = dns.rcode.to_text(resp.rcode())
        ad = bool(resp.flags & dns.flags.AD)
        ede = tuple(o.code for o in resp.options if isinstance(o, dns.edns.EDEOption))
        found = Lookup(text, rdtype, rcode, ad, "failed", ede=ede)
        if rcode == "SERVFAIL":
            checked = self.query(name, rdtype, cd=True)
            found.cd_rcode = dns.rcode.to_text(checked.rcode())
            found.cd_ad = bool(checked.flags & dns.flags.AD)
            rrset, sig = self._sets(checked, name, rdtype)
            if rrset is None or sig is None:
                found.reason = f"SERVFAIL, and with CD {found.cd_rcode} without a signed {rdtype}"
                return found
            found.rrset = rrset
            found.status, found.reason = self._check(name, rrset, sig)
            if found.status == "secure":
                found.reason = "SERVFAIL on an RRset that validates"
            return found
        rrset, sig = self._sets(resp, name, rdtype)
        found.rrset = rrset
        if rcode == "NOERROR" and rrset is None:
            found.status, found.reason = self._denial(resp, name, rdtype)
            return found
        if rcode != "NOERROR" or rrset is None:
            found.reason = f"{rcode} without a {rdtype} RRset"
            return found
        if sig is None:
            found.status, found.reason = "insecure", "no RRSIG"
            return found
        found.status, found.reason = self._check(name, rrset, sig)
        return found


# ----------------------------------------------------------------------
# TLS 1.2 through memory BIOs: the chain as the server sent it


class BioTLS:
    """A TLS 1.2 client over a connected plain socket, keeping every byte of the server's handshake.

    After :meth:`handshake`, ``recv``/``sendall``/``close`` carry application
    data, so a line-level SMTP client can go on over it.
    """

    def __init__(self, sock: socket.socket, server_hostname: str, bound: float = TIMEOUT) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # authentication is by TLSA, checked here from the chain
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)
        self.received = b""  # the server's bytes up to the end of the handshake
        sock.settimeout(bound)

    def _flush(self) -> None:
        out = self.outgoing.read()
        if out:
            self.sock.sendall(out)

    def _fill(self) -> bytes:
        data = self.sock.recv(65536)
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()
        return data

    def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                data = self._fill()
                self.received += data
                if not data:
                    raise ssl.SSLEOFError("the server closed during the TLS handshake") from None
                continue
            self._flush()
            return

    def version(self) -> str | None:
        return self.tls.version()

    def recv(self, size: int) -> bytes:
        while True:
            try:
                return self.tls.read(size)
            except ssl.SSLWantReadError:
                self._flush()
                if not self._fill():
                    return b""

    def sendall(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    def close(self) -> None:
        self.sock.close()


HANDSHAKE, CHANGE_CIPHER_SPEC = 22, 20
CERTIFICATE = 11  # HandshakeType.certificate (RFC 5246 7.4)


def certificate_chain(received: bytes) -> list[bytes]:
    """The DER certificates of the TLS 1.2 Certificate message in ``received`` (leaf first)."""
    handshake = b""
    while len(received) >= 5:
        ctype, length = received[0], int.from_bytes(received[3:5], "big")
        if ctype == CHANGE_CIPHER_SPEC:
            break  # what follows is encrypted
        if ctype == HANDSHAKE:
            handshake += received[5 : 5 + length]
        received = received[5 + length :]
    while len(handshake) >= 4:
        mtype, length = handshake[0], int.from_bytes(handshake[1:4], "big")
        body, handshake = handshake[4 : 4 + length], handshake[4 + length :]
        if mtype != CERTIFICATE:
            continue
        certs, rest = [], body[3 : 3 + int.from_bytes(body[:3], "big")]
        while rest:
            n = int.from_bytes(rest[:3], "big")
            certs.append(rest[3 : 3 + n])
            rest = rest[3 + n :]
        return certs
    return []


# ----------------------------------------------------------------------
# TLSA matching (RFC 6698 2.1, RFC 7672 3.1)


@dataclass(frozen=True)
class Tlsa:
    usage: int
    selector: int
    matching: int
    data: bytes

    @classmethod
    def from_text(cls, text: str) -> Tlsa:
        usage, selector, matching, *data = text.split()
        return cls(int(usage), int(selector), int(matching), bytes.fromhex("".join(data)))


def association(der: bytes, selector: int, matching: int) -> bytes:
    """Selector 0: the whole certificate, 1: its SubjectPublicKeyInfo; matching 0: as is, 1: SHA-256,
    2: SHA-512."""
    if selector == 0:
        selected = der
    else:
        key = x509.load_der_x509_certificate(der).public_key()
        selected = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    if matching == 1:
        return hashlib.sha256(selected).digest()
    if matching == 2:
        return hashlib.sha512(selected).digest()
    return selected


def dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [n.lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName)]


def name_ok(pattern: str, host: str) -> bool:
    """RFC 6125 6.4.3 as RFC 7672 3.2.3 allows: exact, or ``*.`` for one leftmost label."""
    if pattern == host:
        return True
    head, _, parent = host.partition(".")
    return pattern.startswith("*.") and bool(head) and bool(parent) and pattern[2:] == parent


@dataclass
class DaneVerdict:
    """``result``: ``ok`` or an RFC 8460 result type; ``matched``: the records that matched."""

    result: str
    matched: list[Tlsa] = field(default_factory=list)
    why: str = ""


def authenticate(records: list[Tlsa], chain: list[bytes], host: str, now: dt.datetime) -> DaneVerdict:
    """DANE-EE (3): the leaf matches, nothing else is checked. DANE-TA (2): a certificate the server
    sent matches, the leaf is signed by it (directly, or through the certificates between them),
    and the leaf is in date and names ``host``. Records of other usages are unusable."""
    usable = [r for r in records if r.usage in (2, 3) and r.selector in (0, 1) and r.matching in (0, 1, 2)]
    if not usable or not chain:
        return DaneVerdict("tlsa-invalid", why="no usable record" if chain else "no certificate")
    ee = [r for r in usable if r.usage == 3 and association(chain[0], r.selector, r.matching) == r.data]
    if ee:
        return DaneVerdict("ok", ee, "DANE-EE")
    certs = [x509.load_der_x509_certificate(d) for d in chain]
    for i in range(1, len(chain)):
        ta = [r for r in usable if r.usage == 2 and association(chain[i], r.selector, r.matching) == r.data]
        if not ta:
            continue
        try:
            for child, parent in itertools.pairwise(certs[: i + 1]):
                child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            return DaneVerdict("tlsa-invalid", ta, f"the leaf does not chain to the anchor: {exc!r}")
        leaf = certs[0]
        if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
            return DaneVerdict(
                "certificate-expired", ta, f"valid {leaf.not_valid_before_utc} to {leaf.not_valid_after_utc}"
            )
        names = dns_names(leaf)
        if not any(name_ok(n, host.lower().rstrip(".")) for n in names):
            return DaneVerdict("certificate-host-mismatch", ta, f"names {names}")
        return DaneVerdict("ok", ta, "DANE-TA")
    return DaneVerdict("tlsa-invalid", why="no record matches the chain")
