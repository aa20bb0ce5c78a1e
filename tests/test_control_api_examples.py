"""The README's Jest-style example (examples/control-api.test.mjs) runs against a control server.

node's own test runner drives the API with fetch and speaks SMTP with node's net module, so the
example is a client written in another language, proven against the real server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from mailfakes.control_api import ControlServer
from prerequisites import require

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "control-api.test.mjs"


def test_the_jest_style_example_passes_against_the_control_api():
    require({"node": "nodejs"}, netns=False)
    with ControlServer(port=0) as control:
        done = subprocess.run(
            ["node", "--test", str(EXAMPLE)],
            env={**os.environ, "MAILFAKES_CONTROL": control.url},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "# pass 2" in done.stdout and "# fail 0" in done.stdout, done.stdout
