"""``python -m scenarios [README.md ...]``: regenerate the catalogue table in place."""

import sys
from pathlib import Path

from .catalogue import load_catalogue
from .markdown import markdown_table, with_table

for name in sys.argv[1:] or ["README.md"]:
    path = Path(name)
    path.write_text(with_table(path.read_text(), markdown_table(load_catalogue())))
