"""A rendered frame and what the renderer hands back (the renderer contract is ``renderer.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .params import Params


@dataclass(frozen=True)
class Rendered:
    """What a renderer returns: RGBA pixels (H x W x 4, uint8, top-left origin) and stage times."""

    pixels: np.ndarray
    stages_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Frame:
    """A published frame. ``seq`` counts frames from 1; ``version`` is the params version."""

    seq: int
    version: int
    params: Params
    pixels: np.ndarray
    render_ms: float
    published_ns: int

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])
