"""mailfakes: fault-injecting fake DNS and SMTP servers on loopback.

The public surface, all importable from here::

    from mailfakes import World, scenario, find_code

    s = scenario("tls-cert-expired")             # a catalogue scenario
    with World(s.world) as world:                 # its world, served on 127.x.y.z
        report = deliver_to(world)                # your client, pointed at it
    assert find_code(report) == s.code            # the code it reported

- :class:`World` runs a world (``parse_world`` builds one from a dict;
  ``Limits`` bounds what it keeps; its records are ``Transcript``,
  ``Message`` and ``Event``).
- The catalogue: ``scenario(id)``, ``scenarios(globs, code=...)``,
  ``load_scenario(path)`` (a file of your own) and ``scenario_from_dict(d)``;
  the whole module is :mod:`mailfakes.catalogue`.
- ``find_code(report_or_exception, profile)`` and ``classify(exc)`` read what a
  client reported; ``deliver(...)`` is the reference delivery client.

Names are imported on first use, so ``mailfakes list`` and a CLI that must
install its signal handlers early do not pay for aiosmtpd and OpenSSL.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .catalogue import from_dict as scenario_from_dict
    from .catalogue import get as scenario
    from .catalogue import load_file as load_scenario
    from .catalogue import select as scenarios
    from .classify import classify as classify
    from .client import deliver as deliver
    from .codes import find_code as find_code
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

# Public name -> (module, name there).
_HOMES = {
    "Event": (".events", "Event"),
    "EventLog": (".events", "EventLog"),
    "Limits": (".transcript", "Limits"),
    "Message": (".transcript", "Message"),
    "PortInUse": (".world", "PortInUse"),
    "SpecError": (".spec", "SpecError"),
    "Transcript": (".transcript", "Transcript"),
    "World": (".world", "World"),
    "WorldError": (".world", "WorldError"),
    "WorldSpec": (".spec", "WorldSpec"),
    "classify": (".classify", "classify"),
    "deliver": (".client", "deliver"),
    "find_code": (".codes", "find_code"),
    "load_scenario": (".catalogue", "load_file"),
    "parse_world": (".spec", "parse_world"),
    "scenario": (".catalogue", "get"),
    "scenario_from_dict": (".catalogue", "from_dict"),
    "scenarios": (".catalogue", "select"),
}

__all__ = [  # the same names as _HOMES, written out for readers and linters
    "Event",
    "EventLog",
    "Limits",
    "Message",
    "PortInUse",
    "SpecError",
    "Transcript",
    "World",
    "WorldError",
    "WorldSpec",
    "classify",
    "deliver",
    "find_code",
    "load_scenario",
    "parse_world",
    "scenario",
    "scenario_from_dict",
    "scenarios",
]
__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'mailfakes' has no attribute {name!r}")
    module, attr = home
    return getattr(importlib.import_module(module, __name__), attr)
