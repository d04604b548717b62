"""Terminal output shared by the `lumen` subcommands (cli.py, captions_cli.py, evaluation)."""

from __future__ import annotations

import logging
import sys
import time

from desktop.library import Progress

log = logging.getLogger("desktop.cli")


class ProgressLine:
    """One self-rewriting stderr line: stage, count, images/s, ETA."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.last = 0.0
        self.stage = ""

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        final = p.total and p.done >= p.total
        if not final and now - self.last < 0.2 and p.stage == self.stage:
            return
        self.last, self.stage = now, p.stage
        if p.total:
            eta = f" ETA {_dur(p.eta_s)}" if p.eta_s is not None and not final else ""
            line = f"{p.stage:7s} {p.done}/{p.total} {p.rate:6.1f}/s{eta}"
        else:
            line = f"{p.stage:7s} {p.message}"
        if self.enabled:
            sys.stderr.write("\r\033[K" + line + ("\n" if final else ""))
            sys.stderr.flush()
        elif final or p.stage in ("scan", "index"):
            log.info("%s", line)


def _dur(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )
