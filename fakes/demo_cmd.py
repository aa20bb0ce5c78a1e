"""``mailfakes demo``: the command around :mod:`mailfakes.demo`'s player."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from .command import check_writable, select


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from .demo import DEFAULT_TOUR, Player, render_html

    chosen = select(args.ids or ([] if args.code else list(DEFAULT_TOUR)), args.code)
    if args.html:
        check_writable(args.html)
    player = Player(out, lang=args.lang, pace=args.pace, step=args.step, timeout=args.timeout, stop=args.stop)
    results = player.play_all(chosen)
    if args.stop.is_set():
        return 1  # main turns a stop into the signal's exit status
    if args.html:
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(render_html(results, args.lang))
        print(f"mailfakes demo: wrote {args.html}", file=sys.stderr)
    return 0
