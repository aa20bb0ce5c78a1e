"""The world's clock: world time, in seconds since the world started.

A world's faults can be scheduled by time ("refuse for the first 2 hours",
"greylist for 5 minutes"). Two clocks say what time it is:

- :class:`RealClock` (the default): world time runs with real time, scaled
  when the scenario (or the caller) says how long one of its hours lasts, so
  any client meets the schedule as it runs (``hour=2.0``: two real seconds
  per world hour, a day in 48 s);
- :class:`VirtualClock`: world time moves only when the driver moves it
  (``World.advance``), so a queue's 24 hours pass in milliseconds while
  every attempt still goes over real sockets.

Both map a real instant (``time.monotonic()``, as transcripts and DNS
queries are stamped) to world time, so records can be placed on the
world's time line after the fact. Durations are written like ``"90s"``,
``"5m"``, ``"2h"``, ``"1d"``, ``"1h30m"`` or a number of seconds
(:func:`parse_duration`).
"""

from __future__ import annotations

import bisect
import time
from typing import Final

HOUR: Final = 3600.0
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": HOUR, "d": 24 * HOUR}
_PART: Final = r"(\d+(?:\.\d+)?)(ms|s|m|h|d)"  # compiled by the first duration read, not at import
DURATION_RULE: Final = (
    'a duration like "90s", "5m", "2h", "1d" or "1h30m" (units ms, s, m, h, d), or a number of seconds'
)


def parse_duration(value: object) -> float | None:
    """Seconds for a duration as written in a scenario or on the command line; None when it is not one.

    Example::

        parse_duration("1h30m")   # 5400.0
        parse_duration(45)        # 45.0
        parse_duration("soon")    # None
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if 0 <= value < float("inf") else None  # nan fails both
    if not isinstance(value, str):
        return None
    text = value.strip().lower().replace(" ", "")
    import re

    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)  # a plain number of seconds (no exponent, no inf or nan)
    total, pos, last = 0.0, 0, float("inf")
    for m in re.finditer(_PART, text):
        size = _UNITS[m.group(2)]
        if m.start() != pos or size >= last:  # each unit once, the largest first: 1h30m, not 30m1h
            return None
        total += float(m.group(1)) * size
        pos, last = m.end(), size
    return total if text and pos == len(text) else None


def format_duration(seconds: float) -> str:
    """A world duration for people: ``"0s"``, ``"45s"``, ``"5m"``, ``"2h"``, ``"1h30m"``, ``"1d2h"``."""
    if seconds < 60:
        return f"{seconds:.2g}s" if 0 < seconds < 1 else f"{round(seconds)}s"
    whole = round(seconds)
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, whole = divmod(whole, size)
        if n:
            out += f"{n}{unit}"
    return out


class Clock:
    """World time. ``now()`` is seconds since the world started; ``at(mono)`` the world time of a
    real instant; ``real_delay(seconds)`` how long (real seconds) a world span lasts, or None
    when world time does not pass by itself (a virtual clock)."""

    virtual: bool = False

    def start(self) -> None:
        """The world starts now (its time 0)."""

    def now(self) -> float:
        raise NotImplementedError

    def at(self, mono: float) -> float:
        raise NotImplementedError

    def real_delay(self, seconds: float) -> float | None:
        raise NotImplementedError


class RealClock(Clock):
    """World time runs with real time; ``hour`` is how many real seconds one world hour lasts.

    Example::

        clock = RealClock(hour=1.0)   # a world day lasts 24 real seconds
        clock.start()
        clock.real_delay(7200)        # 2.0
    """

    def __init__(self, hour: float = HOUR) -> None:
        if not hour > 0:
            raise ValueError(f"an hour must last more than 0 seconds, not {hour!r}")
        self.hour = float(hour)
        self.scale = HOUR / self.hour  # world seconds per real second
        self.origin = time.monotonic()

    def start(self) -> None:
        self.origin = time.monotonic()

    def now(self) -> float:
        return self.at(time.monotonic())

    def at(self, mono: float) -> float:
        return max(0.0, (mono - self.origin) * self.scale)

    def real_delay(self, seconds: float) -> float:
        return max(0.0, seconds) / self.scale

    def __repr__(self) -> str:
        return f"RealClock(hour={self.hour:g})"


class VirtualClock(Clock):
    """World time that moves only when :meth:`set` moves it, never backwards.

    Example::

        clock = VirtualClock()
        clock.set(7200.0)
        clock.now()   # 7200.0
    """

    virtual = True

    def __init__(self) -> None:
        self._t = 0.0
        # Real instants at which the time was set, and the world time from then on.
        self._marks: list[float] = [time.monotonic()]
        self._values: list[float] = [0.0]

    def start(self) -> None:
        """Back to world time 0 (a world's start, or its reset: a new record begins)."""
        self._t = 0.0
        self._marks = [time.monotonic()]
        self._values = [0.0]

    def now(self) -> float:
        return self._t

    def set(self, seconds: float) -> None:
        if seconds < self._t:
            raise ValueError(f"world time moves forward only: it is {self._t:g} s, not {seconds:g} s")
        if seconds == self._t:
            return
        self._t = float(seconds)
        self._marks.append(time.monotonic())
        self._values.append(self._t)

    def at(self, mono: float) -> float:
        i = bisect.bisect_right(self._marks, mono) - 1
        return self._values[max(i, 0)]

    def real_delay(self, seconds: float) -> None:
        return None

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._t:g})"
