"""What the link's worker threads report to Blender's main thread (``Link.events()``); no bpy here.

Each is a frozen value: made on a worker thread, read on the main thread by ``live.py``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Connected:
    """The daemon answered ``/v1/health`` and took the settings queued before (``version``: the
    params version they made, 0 when there were none): frames older than that are not ours."""

    model: str
    device: str
    shm_name: str | None
    version: int = 0


@dataclass(frozen=True)
class Down:
    """The daemon could not be reached; the link retries after ``retry_s``."""

    reason: str
    retry_s: float


@dataclass(frozen=True)
class Rejected:
    """The daemon refused a change (the state there is unchanged)."""

    field: str | None
    message: str


@dataclass(frozen=True)
class Recorded:
    """The recorder's state after a start or stop (``GET /v1/record``)."""

    recording: bool
    files: tuple[str, ...]
    error: str | None


@dataclass(frozen=True)
class Accepted:
    version: int
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class LorasListed:
    """``GET /v1/loras`` after connecting: the file names and the active weights."""

    names: tuple[str, ...]
    active: dict


@dataclass(frozen=True)
class ControlTaken:
    """The daemon took a control image for ControlNet (or T2I-Adapter) ``name``."""

    name: str
    width: int
    height: int
    changed: bool


@dataclass(frozen=True)
class InputTaken:
    """The daemon took an input image (``changed``: new content) or dropped it (``cleared``)."""

    width: int = 0
    height: int = 0
    changed: bool = False
    cleared: bool = False
