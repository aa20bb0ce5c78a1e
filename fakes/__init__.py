"""mailfakes: fault-injecting fake DNS and SMTP servers on loopback.

The public surface: :class:`World` (run a world), :func:`parse_world` (build
one from a dict), the spec values in :mod:`fakes.spec`, and the records in
:mod:`fakes.transcript`. Scenarios live in the ``scenarios`` package.
"""

from .events import Event, EventLog
from .spec import SpecError, WorldSpec, parse_world
from .transcript import Message, Transcript
from .world import PortInUse, World, WorldError

__all__ = [
    "Event",
    "EventLog",
    "Message",
    "PortInUse",
    "SpecError",
    "Transcript",
    "World",
    "WorldError",
    "WorldSpec",
    "parse_world",
]
__version__ = "0.1.0"
