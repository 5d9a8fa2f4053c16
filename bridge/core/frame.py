"""A rendered frame and what the renderer hands back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from .params import Params
from .scene import Scene


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


class Renderer(Protocol):
    """What the scheduler needs from a pipeline. ``render`` runs on the GPU thread only."""

    def render(self, params: Params, scene: Scene = Scene()) -> Rendered: ...

    def prompt_warnings(self, prompt: str) -> list[str]: ...


@runtime_checkable
class InFlight(Protocol):
    """A batch's frames whose GPU work is queued; ``result`` waits for them (in the batch's order)."""

    def result(self) -> list[Rendered]: ...


@runtime_checkable
class StagedRenderer(Protocol):
    """A renderer that queues a batch's GPU work and returns before it is done (``--overlap on``).

    ``begin_batch`` runs on the render thread; the render queue then takes the next batch while
    this one finishes, and calls ``InFlight.result`` on the device's publishing thread, in order.
    Items are (channel, params, scene), as for ``render_batch``."""

    def begin_batch(self, items: Sequence[tuple[str, Params, Scene]]) -> InFlight: ...


class NullRenderer:
    """A renderer that does no GPU work: a flat frame whose colour follows the seed.

    Used to measure the bridge's own overhead and in tests of the plumbing.
    """

    def __init__(self) -> None:
        self.calls = 0

    def render(self, params: Params, scene: Scene = Scene()) -> Rendered:
        self.calls += 1
        rgba = bytes((params.seed & 0xFF, (params.seed >> 8) & 0xFF, len(params.prompt) & 0xFF, 255))
        pixels = np.empty((params.height, params.width, 4), np.uint8)
        pixels.view(np.uint32)[...] = np.frombuffer(rgba, np.uint32)[0]  # one word fill: memset speed
        return Rendered(pixels)

    def prompt_warnings(self, prompt: str) -> list[str]:
        return []
