"""What a world saw of a client's queue: its delivery attempts, the messages, the bounces.

A client that retries shows up as a series of DNS lookups and sessions; this
module groups them into the attempts the fakes can tell apart, places them on
the world's clock, and reads the non-delivery reports that came back to the
sender's domain. What the fakes cannot see, they do not invent: a refused
SYN (RST from the kernel) or an unanswered one never reaches a user-space
server, so an attempt that met one is seen only through the lookups that
came before it (a client that resolves at every attempt, as MTAs do, shows
each one; one that connects to an address it keeps shows none).

Grouping, over the lookups of the target's names and the sessions to its
hosts (the sender domain's own names and MX are left out: the bounce goes
there), in order of arrival. On a virtual clock, everything seen at one
instant of world time is one attempt (a queue cannot retry without the clock
moving on). On a real clock, a new attempt starts when the client asks again
for a name and type it asked already in the current attempt, or connects
again to a host it connected to already in it, except for what is still the
same attempt:

- a repeat that comes within :data:`IMMEDIATE` (real seconds) of the end of
  what came before it: a lookup asked again at connect time, a plaintext
  retry right after a failed TLS handshake;
- a query asked again within :data:`RETRANSMIT` of one that got no answer,
  or from the same source address and port as one that got SERVFAIL or no
  answer: the resolver's own retries.

A client that retries faster than that is counted as one attempt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from .values import frozen

IMMEDIATE: Final = 0.1  # real seconds: a repeat this soon after the last thing seen is the same attempt
RETRANSMIT: Final = 5.0  # real seconds: a resolver's retry of a query that got no answer

if TYPE_CHECKING:
    from typing import Protocol

    from .clock import Clock
    from .dns import DnsQuery
    from .dsn import Bounce
    from .spec import WorldSpec
    from .transcript import Message, Transcript

    class World(Protocol):
        """What these functions read of a :class:`mailfakes.world.World` (not imported: it imports us)."""

        @property
        def spec(self) -> WorldSpec: ...
        @property
        def clock(self) -> Clock: ...
        @property
        def sender_mx(self) -> str | None: ...
        @property
        def sessions(self) -> list[Transcript]: ...
        @property
        def messages(self) -> list[Message]: ...
        @property
        def dns_queries(self) -> list[Any]: ...


@frozen
class Attempt:
    """One delivery attempt as the fakes saw it.

    ``at``: world seconds since the world started (see :mod:`mailfakes.clock`)
    when its first lookup or session came; ``sessions`` and ``lookups`` in
    order; ``delivered``: a host of the target kept a message in one of its
    sessions. ``summary`` says in a line how it ended.
    """

    at: float
    sessions: tuple[Any, ...]  # Transcript
    lookups: tuple[Any, ...]  # DnsQuery
    delivered: bool
    summary: str

    def describe(self) -> str:
        from .clock import format_duration

        return f"+{format_duration(self.at)}: {self.summary}"


def _under(name: str, domain: str | None) -> bool:
    return domain is not None and (name == domain or name.endswith("." + domain))


def _session_summary(t: Transcript, kept: bool) -> str:
    """How a session ended, in a line: the refusal that ended it (its last 4xx or 5xx reply, not the
    250 to the RSET or the 221 to the QUIT that followed), or the message kept, or how it closed."""
    replies = t.server_lines()
    refusals = [r for r in replies if r[:1] in ("4", "5")]
    last = refusals[-1] if refusals else (replies[-1] if replies else None)
    host = t.host
    if kept:
        return f"{host}: message accepted"
    ended = {
        "server-fin": "the server closed the connection",
        "server-rst": "the server reset the connection",
        "server-close": "the server closed after its reply",
        "client": "the client closed",
        "timeout": "the session timed out",
        "stop": "the world stopped",
        "schedule": "the host stopped listening (its schedule)",
    }.get(t.ended_by or "", "still open")
    if t.tls_error:
        return f"{host}: TLS failed ({t.tls_error}); {ended}"
    return f"{host}: {last or 'no reply'}; {ended}"


def attempts_of(world: World) -> list[Attempt]:
    """The delivery attempts ``world`` saw (see the module's text for how they are grouped)."""
    domain = world.spec.sender_domain
    sender_mx = world.sender_mx
    clock = world.clock
    sessions = [t for t in world.sessions if t.host != sender_mx]
    kept = {m.session_id for m in world.messages if m.host != sender_mx}
    lookups = [q for q in world.dns_queries if q.name and not _under(q.name.rstrip(".").lower(), domain)]
    items: list[tuple[float, bool, Any]] = [(t.opened, True, t) for t in sessions]
    items += [(q.time, False, q) for q in lookups]
    items.sort(key=lambda item: (item[0], item[1]))

    out: list[Attempt] = []
    group_sessions: list[Transcript] = []
    group_lookups: list[DnsQuery] = []
    asked: dict[tuple[str, str], DnsQuery] = {}
    connected: set[str] = set()
    start = 0.0

    def close_group() -> None:
        if not group_sessions and not group_lookups:
            return
        delivered = any(t.session_id in kept for t in group_sessions)
        if group_sessions:
            last = group_sessions[-1]
            summary = _session_summary(last, last.session_id in kept)
        else:
            failed = [q for q in group_lookups if q.rcode != "NOERROR" or not q.answers]
            if failed:
                q = failed[-1]
                summary = f"DNS {q.qtype} {q.name} → {q.rcode if q.rcode != 'NOERROR' else 'no records'}"
            else:
                summary = (
                    "lookups only: no session came (a refused or unanswered SYN never reaches the fakes)"
                )
        out.append(Attempt(start, tuple(group_sessions), tuple(group_lookups), delivered, summary))

    last_seen = 0.0  # monotonic: when the current attempt's latest item ended

    def new_group(at_mono: float) -> None:
        nonlocal group_sessions, group_lookups, asked, connected, start
        close_group()
        group_sessions, group_lookups, asked, connected = [], [], {}, set()
        start = clock.at(at_mono)

    for mono, is_session, item in items:
        empty = not group_sessions and not group_lookups
        if empty:
            start = clock.at(mono)
        elif clock.virtual:
            if clock.at(mono) > start:
                new_group(mono)
        elif mono - last_seen > IMMEDIATE:
            if not is_session:
                key = (item.name.lower(), item.qtype)
                before = asked.get(key)
                retry = before is not None and (
                    (before.rcode == "DROPPED" and mono - before.time <= RETRANSMIT)
                    or (before.rcode in ("DROPPED", "SERVFAIL") and before.peer == item.peer)
                )
                if before is not None and not retry:
                    new_group(mono)
            elif item.host in connected:
                new_group(mono)
        if not is_session:
            asked[(item.name.lower(), item.qtype)] = item
            group_lookups.append(item)
            last_seen = max(last_seen, mono)
        else:
            connected.add(item.host)
            group_sessions.append(item)
            last_seen = max(last_seen, item.last_time)
    close_group()
    return out


def deliveries_of(world: World) -> list[Message]:
    """The messages the target's hosts kept (the sender domain's MX left out), in order."""
    sender_mx = world.sender_mx
    return [m for m in world.messages if m.host != sender_mx]


def message_id(m: Message) -> str | None:
    """The Message-ID header of a kept message (None when it has none)."""
    head = m.content.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    for line in head.splitlines():
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"message-id":
            return value.strip().decode("ascii", "replace") or None
    return None


def duplicates_of(world: World) -> dict[str, int]:
    """Message-IDs the target's hosts kept more than once, with how many copies."""
    counts: dict[str, int] = {}
    for m in deliveries_of(world):
        mid = message_id(m)
        if mid is not None:
            counts[mid] = counts.get(mid, 0) + 1
    return {mid: n for mid, n in counts.items() if n > 1}


def bounces_of(world: World) -> list[Bounce]:
    """Each recipient entry of the DSNs that arrived at the sender domain's MX, in order."""
    sender_mx = world.sender_mx
    if sender_mx is None:
        return []
    from .dsn import parse  # the email package: only when bounces are read (not on serve's path)

    opened = {t.session_id: t.opened for t in world.sessions}
    out: list[Bounce] = []
    for m in world.messages:
        if m.host != sender_mx:
            continue
        mono = opened.get(m.session_id)
        at = world.clock.at(mono) if mono is not None else None
        sender = "" if m.mail_from in ("", "<>") else m.mail_from  # aiosmtpd keeps a null sender as <>
        out += parse(m.content, envelope_from=sender, envelope_to=m.rcpt_tos, at=at)
    return out
