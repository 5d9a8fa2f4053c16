"""The renderer contract: everything the engine may ask of a renderer, and its reference implementation.

The engine (render queues, schedulers, the LoRA gate) sees a renderer through ``Renderer`` only.
A renderer serves several streams (channels): it renders one frame, or a batch of frames of
several streams that share a ``batch_key``; it keeps per-stream state (what a stream showed last,
for transitions) until told to ``forget`` the stream; it may have a LoRA folder (``lora_catalog``).
``render``, ``render_batch``, ``begin_batch`` and ``forget`` run on the render thread only;
``batch_key``, ``prompt_warnings`` and the catalog's non-blocking members on the event loop.

A batch can also be rendered in two halves (``--overlap on``): ``begin_batch`` queues its work and
returns an ``InFlight``, whose ``result`` (on the device's publishing thread) waits for the frames;
meanwhile the render thread begins the next batch (a lone batch, with nothing to overlap, it collects
itself once ``ready``). A renderer that cannot split its frames renders
them in ``begin_batch`` and returns them ``Finished``.

``NullRenderer`` is the reference implementation: no model, flat frames, batches included.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .frame import Rendered
from .params import Params
from .scene import Scene

Item = tuple[str, Params, Scene]  # (stream, params, scene): one frame of a batch
# Batches begun and not yet published, at most, by a queue that overlaps them (engine/overlap_queue.py;
# the bench's overlapped loop too): one decoding, one in its text encoders and UNet; a renderer with
# more render lanes may have one per lane.
MAX_IN_FLIGHT = 2


@runtime_checkable
class InFlight(Protocol):
    """A batch begun (``Renderer.begin_batch``): its work queued, its frames not yet in host memory."""

    def result(self) -> list[Rendered]:
        """Wait for the batch's frames, in the order of its items; called once, in the order the batches
        began: on the publishing thread, or on the render thread for a lone batch once ``ready``."""

    def ready(self) -> bool:
        """Whether ``result`` would return without waiting for the device; never blocks (the render thread
        polls it while a lone batch decodes, bridge.engine.overlap_queue)."""


@dataclass(frozen=True)
class Finished:
    """An ``InFlight`` whose frames are rendered already (a renderer that does not split its frames)."""

    frames: tuple[Rendered, ...]

    def result(self) -> list[Rendered]:
        return list(self.frames)

    def ready(self) -> bool:
        return True


class LoraCatalog(Protocol):
    """A renderer's LoRA folder (``bridge.pipeline.steering.lora.LoraCatalog``).

    ``names``, ``ready`` and ``pin`` never block (the event loop calls them); ``load`` and ``scan``
    do (file IO: the engine runs them on a loader thread). ``pin`` names every LoRA the channels of
    the device use now: those stay loaded (bounded by the LoRA gate's ``capacity``), so the render
    thread never reads a file."""

    @property
    def folder(self) -> Any: ...  # where the files are (a path), for messages and health

    @property
    def names(self) -> frozenset[str]: ...

    def ready(self, names: Iterable[str]) -> bool: ...

    def load(self, name: str) -> Any: ...

    def scan(self) -> list: ...  # the files found, each with ``to_json()``

    def pin(self, names: frozenset[str]) -> None: ...  # what the channels use now stays loaded; never blocks


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

    def begin_batch(self, items: Sequence[Item]) -> InFlight:
        """``render_batch``'s frames in two halves: the work queued here, the frames from ``result``.

        Pixels and per-stream state are ``render_batch``'s: what a stream showed last is recorded
        here, so the next batch, begun before this one's ``result``, follows it. A renderer that
        cannot split its frames renders them here and returns them ``Finished``."""

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

    def begin_batch(self, items: Sequence[Item]) -> InFlight:
        """No GPU work to leave running: the frames are rendered here (``--overlap on`` then only
        overlaps the publishing of a frame with the rendering of the next)."""
        return Finished(tuple(self.render_batch(items)))

    def forget(self, stream: str) -> None:
        """Nothing is kept per stream."""

    def prompt_warnings(self, prompt: str) -> list[str]:
        return []
