"""DNSSEC signing for the fake DNS: keys, DNSKEY, DS, RRSIG and NSEC (RFC 4033-4035).

Pure functions on wire-format bytes; names are tuples of lower-cased wire
labels (``(b"mx", b"test")``, the root is ``()``), as :mod:`mailfakes.dns`
keeps them. One algorithm: ECDSA P-256 with SHA-256 (algorithm 13, RFC 6605),
signatures in their 64-byte ``r || s`` form; DS digests are SHA-256 (digest
type 2). ``cryptography`` is imported by the first key made or checked, not
with this module, so that unsigned worlds never load it.

:class:`NsecChain` is a zone's NSEC chain (RFC 4034 4, RFC 4035 3.1.3): the
owner names in canonical order (RFC 4034 6.1), each with the types it holds,
and the NSEC records that deny a name (NXDOMAIN: the one covering it and the
one covering the wildcard at its closest encloser) or a type (NODATA: the one
at the name, or, for an empty non-terminal, the one covering it).
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import struct
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

__all__ = [
    "ALGORITHM",
    "DIGEST_SHA256",
    "KSK_FLAGS",
    "TYPE_CODES",
    "NsecChain",
    "ZoneKey",
    "canonical_key",
    "corrupt",
    "dnskey_rdata",
    "ds_rdata",
    "key_tag",
    "name_wire",
    "nsec_rdata",
    "rrsig_rdata",
    "type_bitmap",
    "type_name",
    "validity",
]

Name = tuple[bytes, ...]

ALGORITHM: Final = 13  # ECDSAP256SHA256 (RFC 6605)
DIGEST_SHA256: Final = 2  # DS digest type (RFC 4509)
PROTOCOL: Final = 3  # the DNSKEY protocol field is always 3 (RFC 4034 2.1.2)
KSK_FLAGS: Final = 257  # Zone Key + Secure Entry Point: one key per zone signs everything (a CSK)
CLASS_IN: Final = 1
DAY: Final = 86400

TYPE_CODES: Final[Mapping[str, int]] = {
    "A": 1,
    "NS": 2,
    "CNAME": 5,
    "SOA": 6,
    "MX": 15,
    "TXT": 16,
    "AAAA": 28,
    "DS": 43,
    "RRSIG": 46,
    "NSEC": 47,
    "DNSKEY": 48,
    "TLSA": 52,
}
_TYPE_NAMES: Final = {code: name for name, code in TYPE_CODES.items()}
RRSIG: Final = TYPE_CODES["RRSIG"]
NSEC: Final = TYPE_CODES["NSEC"]


def type_name(code: int) -> str:
    """A type's mnemonic, or ``TYPEnnn`` (RFC 3597) for one without a name here."""
    return _TYPE_NAMES.get(code, f"TYPE{code}")


def name_wire(name: Name) -> bytes:
    """A name's canonical wire form: uncompressed, ASCII letters lower-cased (RFC 4034 6.2)."""
    return b"".join(bytes([len(label)]) + label.lower() for label in name) + b"\x00"


def canonical_key(name: Name) -> tuple[bytes, ...]:
    """Sort key giving the canonical order of names (RFC 4034 6.1): labels compared from the root."""
    return tuple(label.lower() for label in reversed(name))


def name_text(name: Name) -> str:
    """A name in presentation form with its final dot (labels assumed printable)."""
    return "".join(label.decode("ascii", "backslashreplace") + "." for label in name) or "."


def key_tag(dnskey: bytes) -> int:
    """The key tag of a DNSKEY's rdata (RFC 4034 appendix B)."""
    acc = 0
    for i, octet in enumerate(dnskey):
        acc += octet if i & 1 else octet << 8
    acc += (acc >> 16) & 0xFFFF
    return acc & 0xFFFF


def dnskey_rdata(flags: int, public_key: bytes) -> bytes:
    """DNSKEY rdata: flags, protocol 3, algorithm 13 and the 64-byte public key ``x || y``."""
    return struct.pack("!HBB", flags, PROTOCOL, ALGORITHM) + public_key


def ds_rdata(owner: Name, dnskey: bytes) -> bytes:
    """DS rdata for the DNSKEY ``dnskey`` at ``owner`` (RFC 4034 5.1.4), digest SHA-256."""
    digest = hashlib.sha256(name_wire(owner) + dnskey).digest()
    return struct.pack("!HBB", key_tag(dnskey), ALGORITHM, DIGEST_SHA256) + digest


def validity(now: float | None = None, *, expired: bool = False) -> tuple[int, int]:
    """``(inception, expiration)`` in seconds since the epoch.

    Valid: from a day ago to 30 days ahead. ``expired``: from a week ago to yesterday.
    """
    t = int(time.time() if now is None else now)
    if expired:
        return t - 7 * DAY, t - DAY
    return t - DAY, t + 30 * DAY


class ZoneKey:
    """A zone's signing key (ECDSA P-256), its DNSKEY rdata and key tag."""

    __slots__ = ("_private", "apex", "dnskey", "flags", "public_key", "tag")

    def __init__(self, apex: Name, flags: int = KSK_FLAGS) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self.apex = tuple(label.lower() for label in apex)
        self.flags = flags
        self._private: EllipticCurvePrivateKey = ec.generate_private_key(ec.SECP256R1())
        numbers = self._private.public_key().public_numbers()
        self.public_key = numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")
        self.dnskey = dnskey_rdata(flags, self.public_key)
        self.tag = key_tag(self.dnskey)

    def ds(self) -> bytes:
        """The DS rdata the parent publishes for this key."""
        return ds_rdata(self.apex, self.dnskey)

    def sign(self, data: bytes) -> bytes:
        """An ECDSA P-256/SHA-256 signature of ``data`` as 64 bytes ``r || s`` (RFC 6605 4)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        r, s = decode_dss_signature(self._private.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def __repr__(self) -> str:
        return f"ZoneKey({name_text(self.apex)!r}, flags={self.flags}, tag={self.tag})"


def _labels(owner: Name) -> int:
    """The RRSIG labels field: the owner's labels, less the root and a leading ``*``."""
    return len(owner) - 1 if owner and owner[0] == b"*" else len(owner)


def rrsig_rdata(
    key: ZoneKey,
    owner: Name,
    rtype: int,
    ttl: int,
    rdatas: Iterable[bytes],
    inception: int,
    expiration: int,
) -> bytes:
    """The RRSIG rdata signing the RRset ``owner``/``rtype`` made of ``rdatas`` (canonical rdata).

    The signed data is the RRSIG rdata before its signature, then each RR in
    canonical form (RFC 4034 3.1.8.1, 6.2, 6.3): lower-cased owner, class IN,
    the original TTL, the rdata in canonical order, duplicates removed. The
    rdatas must already be canonical (uncompressed, names lower-cased).
    """
    head = struct.pack(
        "!HBBIIIH",
        rtype,
        ALGORITHM,
        _labels(owner),
        ttl & 0xFFFFFFFF,
        expiration & 0xFFFFFFFF,
        inception & 0xFFFFFFFF,
        key.tag,
    ) + name_wire(key.apex)
    rr_head = name_wire(owner) + struct.pack("!HHI", rtype, CLASS_IN, ttl & 0xFFFFFFFF)
    body = b"".join(rr_head + struct.pack("!H", len(rd)) + rd for rd in sorted(set(rdatas)))
    return head + key.sign(head + body)


def corrupt(rrsig: bytes) -> bytes:
    """The same RRSIG with its last signature octet changed: it no longer verifies."""
    return rrsig[:-1] + bytes([rrsig[-1] ^ 0xFF])


def type_bitmap(types: Iterable[int]) -> bytes:
    """The NSEC type bit maps field (RFC 4034 4.1.2): one block per window of 256 types."""
    windows: dict[int, bytearray] = {}
    for code in sorted(set(types)):
        window, low = divmod(code, 256)
        bits = windows.setdefault(window, bytearray())
        index = low // 8
        if len(bits) <= index:
            bits.extend(bytes(index + 1 - len(bits)))
        bits[index] |= 0x80 >> (low % 8)
    return b"".join(struct.pack("!BB", w, len(bits)) + bytes(bits) for w, bits in sorted(windows.items()))


def nsec_rdata(next_name: Name, types: Iterable[int]) -> bytes:
    """NSEC rdata: the next owner name (uncompressed) and the type bit maps."""
    return name_wire(next_name) + type_bitmap(types)


# -- presentation ----------------------------------------------------------------


def _time_text(t: int) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(t))


def dnskey_text(rdata: bytes) -> str:
    flags, protocol, algorithm = struct.unpack_from("!HBB", rdata)
    return f"{flags} {protocol} {algorithm} {base64.b64encode(rdata[4:]).decode()}"


def ds_text(rdata: bytes) -> str:
    tag, algorithm, digest_type = struct.unpack_from("!HBB", rdata)
    return f"{tag} {algorithm} {digest_type} {rdata[4:].hex().upper()}"


def rrsig_text(rdata: bytes, *, signature: bool = True) -> str:
    """An RRSIG in presentation form; ``signature=False`` leaves out the base64 signature."""
    covered, algorithm, labels, ttl, expiration, inception, tag = struct.unpack_from("!HBBIIIH", rdata)
    signer, end = _read_name(rdata, 18)
    text = (
        f"{type_name(covered)} {algorithm} {labels} {ttl} {_time_text(expiration)} "
        f"{_time_text(inception)} {tag} {name_text(signer)}"
    )
    if signature:
        text += " " + base64.b64encode(rdata[end:]).decode()
    return text


def nsec_text(rdata: bytes) -> str:
    next_name, end = _read_name(rdata, 0)
    types: list[str] = []
    i = end
    while i + 2 <= len(rdata):
        window, length = rdata[i], rdata[i + 1]
        for j, octet in enumerate(rdata[i + 2 : i + 2 + length]):
            types += [type_name(window * 256 + j * 8 + b) for b in range(8) if octet & (0x80 >> b)]
        i += 2 + length
    return " ".join([name_text(next_name), *types])


def _read_name(data: bytes, offset: int) -> tuple[Name, int]:
    labels: list[bytes] = []
    while data[offset]:
        length = data[offset]
        labels.append(data[offset + 1 : offset + 1 + length])
        offset += 1 + length
    return tuple(labels), offset + 1


# -- NSEC chain ----------------------------------------------------------------------


class NsecChain:
    """The NSEC chain of the zone at ``apex``, from the types each owner name holds.

    ``types`` maps each owner name of the zone (the apex, names with records,
    delegation points; never an empty non-terminal nor a name below a
    delegation) to its RR types; RRSIG and NSEC are added to every owner's
    bitmap. Names must be under ``apex``.
    """

    __slots__ = ("_keys", "apex", "owners", "types")

    def __init__(self, apex: Name, types: Mapping[Name, Iterable[int]]) -> None:
        self.apex = apex
        merged: dict[Name, frozenset[int]] = {apex: frozenset()}
        for name, codes in types.items():
            if name[len(name) - len(apex) :] != apex or len(name) < len(apex):
                raise ValueError(f"{name_text(name)} is not in the zone {name_text(apex)}")
            merged[name] = merged.get(name, frozenset()) | frozenset(codes)
        self.types: dict[Name, frozenset[int]] = {n: t | {RRSIG, NSEC} for n, t in merged.items()}
        self.owners: list[Name] = sorted(self.types, key=canonical_key)
        self._keys = [canonical_key(n) for n in self.owners]

    def next_of(self, owner: Name) -> Name:
        """The owner after ``owner`` in canonical order (the apex after the last)."""
        i = bisect.bisect_left(self._keys, canonical_key(owner))
        if i == len(self.owners) or self.owners[i] != owner:
            raise KeyError(name_text(owner))
        return self.owners[(i + 1) % len(self.owners)]

    def rdata(self, owner: Name) -> bytes:
        """The NSEC rdata at ``owner``."""
        return nsec_rdata(self.next_of(owner), self.types[owner])

    def covering(self, name: Name) -> Name:
        """The owner whose NSEC covers ``name``: the last owner not after it in canonical order."""
        i = bisect.bisect_right(self._keys, canonical_key(name)) - 1
        return self.owners[max(i, 0)]

    def exists(self, name: Name) -> bool:
        """``name`` owns records, or is an empty non-terminal (an owner lies below it)."""
        if name in self.types:
            return True
        i = bisect.bisect_right(self._keys, canonical_key(name))
        if i == len(self.owners):
            return False
        below = self.owners[i]
        return len(below) > len(name) and below[len(below) - len(name) :] == name

    def closest_encloser(self, name: Name) -> Name:
        """The longest ancestor of ``name`` (itself excluded) that exists; the apex at the least."""
        for i in range(1, len(name) - len(self.apex) + 1):
            ancestor = name[i:]
            if self.exists(ancestor):
                return ancestor
        return self.apex

    def nxdomain_proof(self, name: Name) -> list[Name]:
        """The owners of the NSECs proving ``name`` does not exist (RFC 4035 3.1.3.2)."""
        owners = [self.covering(name)]
        wildcard = self.covering((b"*", *self.closest_encloser(name)))
        if wildcard not in owners:
            owners.append(wildcard)
        return owners

    def nodata_proof(self, name: Name) -> list[Name]:
        """The owner of the NSEC proving ``name`` has no record of a type it lacks (RFC 4035 3.1.3.1).

        The NSEC at the name, or for an empty non-terminal the one covering it
        (whose next name lies below it).
        """
        return [name if name in self.types else self.covering(name)]

    def without(self, name: Name) -> NsecChain:
        """This chain as if ``name`` and every name below it did not exist (not the apex)."""
        if name == self.apex:
            raise ValueError("the apex of a zone cannot be removed from its chain")
        n = len(name)
        kept = {o: t for o, t in self.types.items() if not (len(o) >= n and o[len(o) - n :] == name)}
        return NsecChain(self.apex, kept)

    def with_types(self, name: Name, codes: Iterable[int]) -> NsecChain:
        """This chain with ``name`` holding exactly ``codes`` (plus RRSIG and NSEC)."""
        changed: dict[Name, Iterable[int]] = {o: t for o, t in self.types.items() if o != name}
        changed[name] = codes
        return NsecChain(self.apex, changed)
