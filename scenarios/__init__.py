"""The scenario catalogue: one TOML file per failure (or success) a delivery client must report.

``load_catalogue()`` reads and checks every ``*.toml`` of this package;
``get(id)`` and ``select(globs, code=...)`` pick from it; ``markdown_table``
renders the README table. See :mod:`scenarios.catalogue` for the file format.
"""

from .catalogue import (
    ALTERNATE_PROFILES,
    CATALOGUE_DIR,
    CODES,
    EOP_CODES,
    EOP_TITLES,
    LANGUAGES,
    PROFILES,
    Scenario,
    ScenarioError,
    Target,
    UnknownScenario,
    clear_cache,
    get,
    load_catalogue,
    load_file,
    parse_scenario,
    select,
)
from .markdown import markdown_table, wire_summary

__all__ = [
    "ALTERNATE_PROFILES",
    "CATALOGUE_DIR",
    "CODES",
    "EOP_CODES",
    "EOP_TITLES",
    "LANGUAGES",
    "PROFILES",
    "Scenario",
    "ScenarioError",
    "Target",
    "UnknownScenario",
    "clear_cache",
    "get",
    "load_catalogue",
    "load_file",
    "markdown_table",
    "parse_scenario",
    "select",
    "wire_summary",
]
