"""Render failures in the log: a new failure with its traceback, the same one again as a counted line.

A render that fails the same way on every frame (a seed flood against a broken LoRA: 4,502
tracebacks, 10.9 MB of log in 10 s, issue 24 item 5) writes its traceback once, then at most one
line per ``REPEAT_S`` saying how many identical failures came since; ``/v1/health`` counts them all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

REPEAT_S = 10.0


class FailureLog:
    """Logs failures into ``log``, an identical one (same exception type and text) rate-limited."""

    def __init__(self, log: logging.Logger, clock: Callable[[], float] = time.monotonic):
        self._log, self._clock = log, clock
        self._last: tuple[str, str] | None = None
        self._logged_at = 0.0
        self._repeats = 0  # identical failures not logged since the last line

    def failed(self, message: str, exc: BaseException, traceback: bool = True) -> None:
        key = (type(exc).__name__, str(exc))
        now = self._clock()
        if key != self._last:
            self._last, self._logged_at, self._repeats = key, now, 0
            self._log.error("%s", message, exc_info=exc if traceback else None)
        elif now - self._logged_at >= REPEAT_S:
            self._log.error("%s (the same failure %d more times in %.0f s; traceback above)", message,
                            self._repeats + 1, now - self._logged_at)
            self._logged_at, self._repeats = now, 0
        else:
            self._repeats += 1

    def succeeded(self) -> None:
        """A good frame: the next failure is news again."""
        self._last = None
