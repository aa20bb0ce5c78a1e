"""Faults changed while a world runs: ``world.host(NAME).fail_next(...)``, ``.set(...)``, ``.heal()``.

A scenario fixes a host's faults when the world starts; a test (or the operator
of a training room) can change them between sessions, the way users of other
fake servers ask to "fail exactly the next N messages". Each change applies
from the next session the host accepts (a session under way keeps its plan),
is checked like the scenario's own keys (the fault table, its
contradictions), and is recorded as a ``fault`` event of the world, so the
record says when the host changed. ``world.reset()`` puts every host back to
its scenario. Example::

    with World(parse_world({"hosts": {"mail.contoso.test": {}}})) as w:
        w.host("mail.contoso.test").fail_next(2, reply="451 4.3.0 Try again later")
        # the next two sessions get 451 4.3.0 to MAIL FROM; the third is healthy again
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from .faults import Reply, SmtpPlan, describe_plan
from .spec import Table, WorldSpec, parse_smtp_plan

if TYPE_CHECKING:
    from collections.abc import Callable

    from .events import EventLog
    from .smtp import HostServer


class World(Protocol):
    """What a control needs of a running world (mailfakes.World is one)."""

    spec: WorldSpec
    events: EventLog

    def server_of(self, name: str) -> HostServer | None: ...

    def on_loop(self, fn: Callable[[], None], timeout: float = 5.0) -> None: ...


_REPLY: Final = re.compile(r"([245]\d\d)(?:\s+([245]\.\d{1,3}\.\d{1,3}))?(?:\s+(.*))?")
CONTROLLABLE: Final = ("smtp", "silent", "close_on_accept")


def reply_of(value: str | Reply | Mapping[str, Any]) -> dict[str, Any]:
    """A reply as the fault table writes it, from ``"451 4.3.0 text"``, a Reply or a table."""
    if isinstance(value, Reply):
        out: dict[str, Any] = {"code": value.code}
        if value.enhanced:
            out["enhanced"] = value.enhanced
        if value.text:
            out["text"] = value.text
        if value.close:
            out["close"] = value.close
        return out
    if isinstance(value, Mapping):
        return dict(value)
    m = _REPLY.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"reply {value!r}: expected a code and text like '451 4.3.0 Try again later'")
    code, enhanced, text = m.groups()
    out = {"code": int(code)}
    if enhanced:
        out["enhanced"] = enhanced
    if text:
        out["text"] = text
    return out


class HostControl:
    """The faults of one host of a running world, changed between sessions."""

    def __init__(self, world: World, name: str) -> None:
        self.world = world
        self.name = name.rstrip(".").lower()
        spec = next((h for h in world.spec.hosts if h.name == self.name), None)
        if spec is None:
            known = ", ".join(h.name for h in world.spec.hosts) or "none"
            raise KeyError(f"no host {name!r} in this world (hosts: {known})")
        if spec.kind not in CONTROLLABLE:
            raise ValueError(
                f"host {self.name} is of kind {spec.kind}: faults are changed at run time on kinds "
                + ", ".join(CONTROLLABLE)
                + " (a refused or unanswered SYN is the kernel's, not a session's)"
            )

    def __repr__(self) -> str:
        return f"<HostControl {self.name}>"

    # -- the changes ------------------------------------------------------

    def set(self, **keys: Any) -> SmtpPlan:
        """From the next session on, these SMTP keys of the fault table (``greeting``, ``replies``,
        ``tls``, ``cert``, ``close_at``, ``delays_ms``, ``extensions_off``, ``greylist``...) and
        nothing else, until the next change. Returns the plan. Raises SpecError for a bad key or
        value, and changes nothing then."""
        plan = self._plan(keys, "set")
        self._apply(plan, None, "set: " + self._said(plan))
        return plan

    def fail_next(
        self, n: int, reply: str | Reply | Mapping[str, Any] | None = None, *, at: str = "MAIL", **keys: Any
    ) -> SmtpPlan:
        """The next ``n`` sessions meet the fault, then the host is what it was before: ``reply``
        (``"451 4.3.0 Try again later"``) to the command ``at`` (MAIL by default: the message is
        refused), and/or other SMTP keys as for :meth:`set`."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1_000_000:
            raise ValueError(f"fail_next({n!r}): a number of sessions from 1")
        if reply is not None:
            replies = dict(keys.pop("replies", {}) or {})
            replies[at] = reply_of(reply)
            keys["replies"] = replies
        if not keys:
            raise ValueError("fail_next(): say what fails: a reply, or SMTP keys such as greeting=...")
        plan = self._plan(keys, f"fail_next({n})")
        self._apply(plan, n, f"the next {n} session(s): " + self._said(plan))
        return plan

    def heal(self) -> None:
        """From the next session on, a healthy server (STARTTLS, a valid certificate), until the
        next change: whatever the scenario or a schedule says."""
        plan = self._server().healthy
        self._apply(plan, None, "healed: a healthy server from the next session")

    def restore(self) -> None:
        """From the next session on, the host as its scenario (and schedule) has it."""
        self._apply(None, None, "restored: the scenario's own faults from the next session")

    # -- internals ----------------------------------------------------------

    def _plan(self, keys: Mapping[str, Any], call: str) -> SmtpPlan:
        data = dict(keys)
        # A reply may be written as its line ("451 4.3.0 Try again later") for the greeting and replies.
        if isinstance(data.get("greeting"), str | Reply):
            data["greeting"] = reply_of(data["greeting"])
        if isinstance(data.get("replies"), Mapping):
            data["replies"] = {
                cmd: reply_of(r) if isinstance(r, str | Reply) else r for cmd, r in data["replies"].items()
            }
        t = Table(data, f"world.host({self.name!r}).{call}", "")
        plan = parse_smtp_plan(t)
        t.done()
        return plan

    def _said(self, plan: SmtpPlan) -> str:
        return "; ".join(describe_plan(plan)).replace("`", "") or "a healthy server"

    def _server(self) -> HostServer:
        server = self.world.server_of(self.name)
        if server is None:
            raise ValueError(f"host {self.name} has no SMTP server now (is the world running?)")
        return server

    def _apply(self, plan: SmtpPlan | None, sessions: int | None, said: str) -> None:
        def change() -> None:
            self._server().control(plan, sessions)
            self.world.events.emit("fault", self.name, f"changed at run time: {said}", control=True)

        self.world.on_loop(change)
