"""The public surface: what ``import mailfakes`` offers, each name documented with an example."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import mailfakes
import pytest


@pytest.mark.parametrize("name", mailfakes.__all__)
def test_each_public_name_resolves_and_shows_an_example(name: str) -> None:
    obj = getattr(mailfakes, name)
    doc = obj.__doc__ or ""
    assert doc.strip(), f"mailfakes.{name} has no docstring"
    assert "::" in doc or ">>>" in doc, f"mailfakes.{name}'s docstring has no example"


def test_the_catalogue_functions_are_the_catalogues() -> None:
    s = mailfakes.scenario("tls-cert-expired")
    assert s.code == "4.7.320"
    assert [x.id for x in mailfakes.scenarios(["tls-cert-expired"])] == ["tls-cert-expired"]


def test_one_version_everywhere() -> None:
    assert importlib.metadata.version("mailfakes") == mailfakes.__version__
    out = subprocess.run(
        [sys.executable, "-m", "mailfakes", "--version"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0 and out.stdout.strip() == f"mailfakes {mailfakes.__version__}"


def test_an_unknown_name_is_a_clear_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'mailfakes' has no attribute 'Wrold'"):
        mailfakes.Wrold  # noqa: B018
