"""``--overlap on``: a ``ChannelRenderer`` whose batches begin on the render thread and finish later.

``begin_batch`` (the renderer contract's two-halves form, bridge.core.renderer) queues a batch's
first half (tokenizing, text encoders, denoiser: the renderer's own graphs, cut before the
decoder) on the render thread's stream and its decode and copy to the host on the decode stream
(``speed/overlap.py``), and returns; the render queue begins the next batch while this one
decodes, and collects the pixels on the publishing thread. A single frame's new prompt runs its
text encoders on a third stream (``speed/text_stream.py``), beside the previous frame's denoiser.
A frame's pixels are those of ``render_batch``: the same compiled functions on the same inputs, in
two or three graphs instead of one.

Everything else (``render_batch``, ``batch_key``, LoRAs, transitions per channel) is the
``ChannelRenderer``'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...core.frame import Rendered
from ...core.renderer import Item
from ..speed.overlap import DecodeStream, Decoding
from ..speed.text_stream import TextStream
from .batch import ChannelRenderer
from .renderer import DiffusersRenderer


class Begun:
    """A batch in flight (``core.renderer.InFlight``): its frames once decoded, with the render thread's stages."""

    def __init__(self, decoding: Decoding, stages: dict[str, float]):
        self._decoding, self._stages = decoding, stages

    def result(self) -> list[Rendered]:
        frames = self._decoding.result()
        stages = {**self._stages, "decode_wait": self._decoding.wait_ms}
        return [Rendered(pixels, stages) for pixels in frames]


class OverlappedRenderer(ChannelRenderer):
    """A ``ChannelRenderer`` that splits ``begin_batch`` at the latents (render thread only)."""

    def __init__(self, inner: DiffusersRenderer, text_stream: bool = True, urgent_text: bool = False):
        """``text_stream``: a new prompt's text encoders on the third stream (off: in the first half's graph,
        the overlap before run S6; the bench's ``--overlap decode`` compares them); ``urgent_text``: that
        stream at a high priority (``TextStream``; the bench's ``--overlap urgent``)."""
        super().__init__(inner)
        self._decoder = DecodeStream(inner.device, graphs=inner.runner.graphed)
        # Only a graphed renderer's frames take a text stream (``DiffusersRenderer._render_graph``).
        self._text = TextStream(inner.device, urgent=urgent_text) if text_stream and inner.runner.graphed else None

    @property
    def text_graph_keys(self) -> frozenset[tuple]:
        """The text stream's graphs captured so far (one per token length)."""
        return frozenset() if self._text is None else self._text.keys

    @property
    def decode_graph_keys(self) -> frozenset[tuple]:
        """The decode stream's graphs captured so far (a frame's and each padded batch size's)."""
        return self._decoder.keys

    @torch.inference_mode()
    def begin_batch(self, items: Sequence[Item]) -> Begun:
        r = self.inner
        stream, params, scene = items[0]
        tiling = r.plan(params, scene).tiling  # one plan for the whole batch
        # Every latents buffer below is written after the decode in flight has copied its own.
        self._decoder.before_latents()
        if self._text is not None and (len(items) > 1 or params.loras != r.loras.applied):
            self._text.barrier()  # a LoRA fold (a batch may fold its own) waits for the text in flight
        if len(items) > 1:
            latents = self.device_frames(items, decode=False)  # a new batch size captures on first use
            decoding = self._decoder.decode(("decode-batch", tuple(latents.shape), tiling), r.calls.decode_batch,
                                            latents, len(items))
            return Begun(decoding, r.runner.stage_times())
        # Compiles and captures the cut graphs and the decode's once per graph key, before a live frame.
        r.warm(params, scene, decode=False, decoder=lambda latents: self._decode_one(latents, tiling).result())
        if self._text is not None:
            self._text.warm(r.parts.text.lengths, r.parts.text.rows, r.calls.encode)  # once per length
        latents = r.device_frame(params, scene, self.glider(stream), decode=False, text_stream=self._text)
        return Begun(self._decode_one(latents, tiling), r.runner.stage_times())

    def _decode_one(self, latents: torch.Tensor, tiling: str) -> Decoding:
        return self._decoder.decode(("decode", tuple(latents.shape), tiling), self.inner.calls.decode, latents, 1)
