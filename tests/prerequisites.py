"""What the real-client tests need, and the rule for when it is missing.

A missing program or namespace skips the test with the reason; under CI
(MAILFAKES_REQUIRE_REAL_CLIENTS=1, set by .ci/run, which installs them) it
fails instead, so these tests can never pass by not running.
"""

from __future__ import annotations

import os
import shutil

import pytest
from mailfakes.netns import NetnsError, unshare_command

REQUIRED = os.environ.get("MAILFAKES_REQUIRE_REAL_CLIENTS") == "1"


def require(programs: dict[str, str], *, netns: bool = True, root: str = "") -> None:
    """Skip (or, in CI, fail) unless every program is installed, and the namespace and root if asked.

    ``programs`` maps a command to the Debian package that has it; ``root``
    is the reason root is needed, when it is.
    """
    missing = [
        f"{cmd} is not installed (Debian package {pkg})"
        for cmd, pkg in programs.items()
        if not shutil.which(cmd)
    ]
    if root and os.geteuid() != 0:
        missing.append(root)
    if netns:
        try:
            unshare_command()
        except NetnsError as exc:
            missing.append(str(exc))
    if missing:
        if REQUIRED:
            pytest.fail("; ".join(missing) + " (required in CI: .ci/run installs it)")
        pytest.skip("; ".join(missing))
