"""The renderer contract: everything the engine may ask of a renderer, and its reference implementation.

The engine (render queues, schedulers, the LoRA gate) sees a renderer through ``Renderer`` only.
A renderer serves several streams (channels): it renders one frame, or a batch of frames of
several streams that share a ``batch_key``; it keeps per-stream state (what a stream showed last,
for transitions) until told to ``forget`` the stream; it may have a LoRA folder (``lora_catalog``).
``render``, ``render_batch`` and ``forget`` run on the render thread only; ``batch_key``,
``prompt_warnings`` and the catalog's non-blocking members on the event loop.

``NullRenderer`` is the reference implementation: no model, flat frames, batches included.
"""

from __future__ import annotations

from typing import Any, Hashable, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

from .frame import Rendered
from .params import Params
from .scene import Scene

Item = tuple[str, Params, Scene]  # (stream, params, scene): one frame of a batch


class LoraCatalog(Protocol):
    """A renderer's LoRA folder (``bridge.pipeline.steering.lora.LoraCatalog``).

    ``names`` and ``ready`` never block (the event loop asks them); ``load`` and ``scan`` do
    (file IO: the engine runs them on a loader thread)."""

    @property
    def folder(self) -> Any: ...  # where the files are (a path), for messages and health

    @property
    def names(self) -> frozenset[str]: ...

    def ready(self, names: Iterable[str]) -> bool: ...

    def load(self, name: str) -> Any: ...

    def scan(self) -> list: ...  # the files found, each with ``to_json()``


@runtime_checkable
class Renderer(Protocol):
    """What the engine needs from a pipeline (``isinstance`` checks the members exist, for tests)."""

    @property
    def lora_catalog(self) -> LoraCatalog | None:
        """The LoRA folder the engine loads files from before a change applies; None: no LoRAs."""

    def render(self, params: Params, scene: Scene = Scene()) -> Rendered:
        """One frame of the stream ``main``."""

    def batch_key(self, params: Params, scene: Scene) -> Hashable | None:
        """Frames with equal keys may render as one batch; None: this frame renders alone."""

    def render_batch(self, items: Sequence[Item]) -> list[Rendered]:
        """The frames of ``items`` (one per stream, equal batch keys, or a single item), in order;
        each is the frame its stream would get alone."""

    def forget(self, stream: str) -> None:
        """``stream`` is gone or moved elsewhere: drop what was kept for it."""

    def prompt_warnings(self, prompt: str) -> list[str]:
        """What the user should know about a prompt (e.g. the text encoder cuts it); event loop."""


class NullRenderer:
    """The reference renderer: no model, a flat frame whose colour follows the seed and the prompt's length.

    Used to measure the bridge's own overhead and in tests of the plumbing. Frames of one size
    batch together (a batch is its frames rendered one by one: the same pixels as alone).
    """

    lora_catalog: LoraCatalog | None = None

    def __init__(self) -> None:
        self.calls = 0

    def render(self, params: Params, scene: Scene = Scene()) -> Rendered:
        self.calls += 1
        # A blend shows its heaviest text, so its ends are exactly the frames of their texts.
        text = params.prompt if isinstance(params.prompt, str) else max(params.prompt, key=lambda part: part[1])[0]
        rgba = bytes((params.seed & 0xFF, (params.seed >> 8) & 0xFF, len(text) & 0xFF, 255))
        pixels = np.empty((params.height, params.width, 4), np.uint8)
        pixels.view(np.uint32)[...] = np.frombuffer(rgba, np.uint32)[0]  # one word fill: memset speed
        return Rendered(pixels)

    def batch_key(self, params: Params, scene: Scene) -> Hashable | None:
        return params.width, params.height

    def render_batch(self, items: Sequence[Item]) -> list[Rendered]:
        return [self.render(params, scene) for _, params, scene in items]

    def forget(self, stream: str) -> None:
        """Nothing is kept per stream."""

    def prompt_warnings(self, prompt: str) -> list[str]:
        return []
