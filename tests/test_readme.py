"""The README tells the truth: its catalogue table matches scenarios/*.toml, its fault table fakes/faults.py."""

from __future__ import annotations

from pathlib import Path

from mailfakes.markdown import regenerated

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_generated_tables_are_in_sync():
    text = README.read_text()
    assert regenerated(text) == text, "README catalogue or fault table is stale: run 'make readme-table'"


def test_readme_opens_with_the_two_commands():
    head = README.read_text().split("\n## ", 1)[0]
    assert "make demo" in head and "make test" in head
