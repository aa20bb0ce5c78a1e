"""This repository's own test configuration (users get fixtures from the plugin).

``make_world`` starts worlds that are always stopped at teardown, and every
test is checked for leaked world threads and for errors raised inside the
fakes' thread, so a failure inside a server never passes silently.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from mailfakes import World


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests (a real MTA over many scenarios) first: pytest-xdist then runs them beside
    the rest instead of after it, and the whole run ends sooner."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def _world_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mailfakes-world"]


@pytest.fixture
def make_world() -> Iterator[Callable[..., World]]:
    worlds: list[World] = []

    def start(spec: Any, **kwargs: Any) -> World:
        world = World(spec, **kwargs)
        worlds.append(world)
        return world.start()

    yield start
    errors = []
    for world in worlds:
        world.stop()
        errors += world.events.errors()
    assert not errors, f"errors inside the fakes: {errors}"


@pytest.fixture(autouse=True)
def _no_leaked_world_threads() -> Iterator[None]:
    before = set(_world_threads())
    yield
    leaked = [t for t in _world_threads() if t not in before and t.is_alive()]
    assert not leaked, f"world threads left running: {leaked}"
