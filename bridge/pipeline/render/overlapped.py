"""``--overlap on``: a ``ChannelRenderer`` whose frames begin on the render thread and finish later.

``begin_batch`` (the render queue's ``StagedRenderer`` contract) queues a batch's first stage
(tokenizing, text encoders, UNet: the renderer's own graphs, cut before the VAE) on the render
thread's stream and its VAE decode and copy to the host on the decode stream
(``speed/overlap.py``), and returns; the render queue begins the next batch while this one
decodes, and collects the pixels on the publishing thread. A frame's pixels are those of
``render_batch``: the same compiled functions on the same inputs, in two graphs instead of one.

Everything else (``render_batch``, ``batch_key``, LoRAs, transitions per channel) is the wrapped
``ChannelRenderer``'s.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import torch

from ...core.frame import Rendered
from ...core.params import Params, prompt_texts
from ...core.scene import Scene
from ..speed.optimize import progress
from ..speed.overlap import Decoding, DecodeStream
from .batch import ChannelRenderer, Item


class Begun:
    """A batch in flight (``core.frame.InFlight``): its frames once decoded, with the render thread's stages."""

    def __init__(self, decoding: Decoding, stages: dict[str, float]):
        self._decoding, self._stages = decoding, stages

    def result(self) -> list[Rendered]:
        frames = self._decoding.result()
        stages = {**self._stages, "decode_wait": self._decoding.wait_ms}
        return [Rendered(pixels, stages) for pixels in frames]


class OverlappedRenderer:
    """Wraps a ``ChannelRenderer``: the same frames, begun and finished apart (render thread only)."""

    def __init__(self, channels: ChannelRenderer):
        self.channels = channels
        self.inner = channels.inner
        self._decoder = DecodeStream(self.inner.device, graphs=self.inner._graphs is not None)
        self._warm: set[tuple] = set()

    # -- the ChannelRenderer's, unchanged ---------------------------------------------------
    @property
    def loras(self):
        return self.channels.loras

    def prompt_warnings(self, prompt: str) -> list[str]:
        return self.channels.prompt_warnings(prompt)

    def render(self, params: Params, scene: Scene = Scene()) -> Rendered:
        return self.channels.render(params, scene)

    def render_batch(self, items: Sequence[Item]) -> list[Rendered]:
        return self.channels.render_batch(items)

    def batch_key(self, params: Params, scene: Scene) -> Hashable | None:
        return self.channels.batch_key(params, scene)

    def forget(self, stream: str) -> None:
        self.channels.forget(stream)

    # -- the overlap ---------------------------------------------------------------------
    @torch.inference_mode()
    def begin_batch(self, items: Sequence[Item]) -> Begun:
        r = self.inner
        if len(items) == 1:
            stream, params, scene = items[0]
            self.channels.follow(stream)
            r.warm(params, scene)  # compiles (and captures the one-graph frames) once per graph key
            self._warm_split(params, scene)
            self._decoder.before_latents()
            latents = r.device_frame(params, scene, decode=False)
            key = ("decode", latents.shape, r._tiling.mode)
            return Begun(self._decoder.decode(key, r._decode, latents, 1), dict(r._stages))
        self._decoder.before_latents()
        latents = self.channels.device_frames(items, decode=False)  # compiles a new batch size on first use
        key = ("decode-batch", latents.shape, r._tiling.mode)
        return Begun(self._decoder.decode(key, self.channels._decode_batch, latents, len(items)), dict(r._stages))

    def _warm_split(self, params: Params, scene: Scene) -> None:
        """Capture the cut graphs (with and without text) and the decode graph before the first frame
        of a graph key uses them, as ``warm`` does for the one-graph frame: no capture on a live frame."""
        plan_key = self.inner._plan(params, scene).key
        if not self.inner.compile or plan_key in self._warm:
            return
        self._warm.add(plan_key)
        text = prompt_texts(params.prompt)[0]
        warm = Scene(scene.input, controls=scene.controls, style=scene.style)
        with progress(f"capturing the overlapped graphs for {params.width}x{params.height}"):
            for prompt in (text + " ", text):
                self._decoder.before_latents()
                latents = self.inner.device_frame(params.merged({"prompt": prompt}), warm, record=False, decode=False)
                key = ("decode", latents.shape, self.inner._tiling.mode)
                self._decoder.decode(key, self.inner._decode, latents, 1).result()
