"""The README tells the truth: its catalogue table matches scenarios/*.toml."""

from __future__ import annotations

from pathlib import Path

from mailfakes import catalogue as scenarios
from mailfakes.markdown import markdown_table, with_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_catalogue_table_is_in_sync():
    text = README.read_text()
    expected = with_table(text, markdown_table(scenarios.load_catalogue()))
    assert text == expected, "README catalogue table is stale: run 'make readme-table'"


def test_readme_opens_with_the_two_commands():
    head = README.read_text().split("\n## ", 1)[0]
    assert "make demo" in head and "make test" in head
