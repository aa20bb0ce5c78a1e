"""mailfakes: fault-injecting fake DNS and SMTP servers on loopback.

The public surface: :class:`World` (run a world), :func:`parse_world` (build
one from a dict), the spec values in :mod:`mailfakes.spec`, and the records in
:mod:`mailfakes.transcript`. The catalogue is :mod:`mailfakes.catalogue`.

Names are imported on first use, so ``mailfakes list`` and a CLI that must
install its signal handlers early do not pay for aiosmtpd and OpenSSL.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .events import Event as Event
    from .events import EventLog as EventLog
    from .spec import SpecError as SpecError
    from .spec import WorldSpec as WorldSpec
    from .spec import parse_world as parse_world
    from .transcript import Limits as Limits
    from .transcript import Message as Message
    from .transcript import Transcript as Transcript
    from .world import PortInUse as PortInUse
    from .world import World as World
    from .world import WorldError as WorldError

_HOMES = {
    "Event": ".events",
    "EventLog": ".events",
    "Limits": ".transcript",
    "Message": ".transcript",
    "PortInUse": ".world",
    "SpecError": ".spec",
    "Transcript": ".transcript",
    "World": ".world",
    "WorldError": ".world",
    "WorldSpec": ".spec",
    "parse_world": ".spec",
}

__all__ = sorted(_HOMES)
__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'mailfakes' has no attribute {name!r}")
    return getattr(importlib.import_module(home, __name__), name)
