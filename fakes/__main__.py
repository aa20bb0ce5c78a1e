"""``python -m mailfakes``: the same as the ``mailfakes`` command."""

import sys

from .cli import main

sys.exit(main())
