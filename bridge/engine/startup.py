"""Where the daemon's start-up time goes: named phases, logged as they start and end."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager

log = logging.getLogger(__name__)


class StartupPhases:
    """``with phases("imports"): ...`` times a phase (seconds add up when a name repeats)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        log.info("start-up: %s ...", name.replace("_", " "))
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def rounded(self) -> dict[str, float]:
        return {name: round(s, 2) for name, s in self.seconds.items()}

    def summary(self) -> str:
        parts = [f"{name.replace('_', ' ')} {s:.1f} s" for name, s in self.seconds.items()]
        return f"{', '.join(parts)}; {sum(self.seconds.values()):.1f} s in all"
