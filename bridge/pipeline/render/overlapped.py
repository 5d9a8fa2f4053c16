"""``--overlap on``: a ``ChannelRenderer`` whose batches begin on the render thread and finish later.

``begin_batch`` (the renderer contract's two-halves form, bridge.core.renderer) queues a batch's
first half (tokenizing, text encoders, denoiser: the renderer's own graphs, cut before the
decoder) on the render thread's stream and its decode and copy to the host on the decode stream
(``speed/overlap.py``), and returns; the render queue begins the next batch while this one
decodes, and collects the pixels on the publishing thread. A single frame's new prompt runs its
text encoders on a third stream (``speed/text_stream.py``), beside the previous frame's denoiser.
With ``lanes`` > 1 (``--render-lanes``) consecutive frames' first halves run on render lanes
(``speed/lanes.py``): frame i+1's denoiser beside frame i's, each lane with its own graphs.
A frame's pixels are those of ``render_batch``: the same compiled functions on the same inputs, in
two or three graphs instead of one. A frame begun while none of this renderer's frames is on the GPU
(a lone change: nothing to overlap with) renders as ``render_batch`` does, in one graph, and only its
copy to the host is collected later (``lone_whole``): split into graphs on two or three streams, a lone
SD-Turbo change took 0.35-0.5 ms longer to render than with overlap off (runs S13 and S14, H100).

Everything else (``render_batch``, ``batch_key``, LoRAs, transitions per channel) is the
``ChannelRenderer``'s.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from ...core.frame import Rendered
from ...core.params import Params
from ...core.renderer import Item
from ...core.scene import Scene
from ..speed.lanes import RenderLanes
from ..speed.overlap import DecodeStream, Decoding
from ..speed.text_stream import TextStream
from .batch import ChannelRenderer
from .plan import FramePlan
from .renderer import DiffusersRenderer


def on_lanes(plan: FramePlan) -> bool:
    """Whether a plan's frames may run on any render lane: text to image without classifier-free guidance,
    ControlNets, T2I-Adapters or a style image. Every other frame runs stages whose graphs (a negative
    prompt's text encoders, an input image's encoder, control and style images) are captured once, on
    lane 0, so it runs there, after every lane's work; no lane captures graphs for its key."""
    return plan.start is None and not plan.cfg and not plan.controls and not plan.style


class Begun:
    """A batch in flight (``core.renderer.InFlight``): its frames once decoded, with the render thread's stages."""

    def __init__(self, decoding: Decoding, stages: dict[str, float]):
        self._decoding, self._stages = decoding, stages

    def ready(self) -> bool:
        return self._decoding.ready()

    def result(self) -> list[Rendered]:
        frames = self._decoding.result()
        stages = {**self._stages, "decode_wait": self._decoding.wait_ms}
        return [Rendered(pixels, stages) for pixels in frames]


class OverlappedRenderer(ChannelRenderer):
    """A ``ChannelRenderer`` that splits ``begin_batch`` at the latents (render thread only)."""

    def __init__(self, inner: DiffusersRenderer, text_stream: bool = True, urgent_text: bool = False,
                 lanes: int = 1, lone_whole: bool = True):
        """``text_stream``: a new prompt's text encoders on the third stream (off: in the first half's graph,
        the overlap before run S6; the bench's ``--overlap decode`` compares them); ``urgent_text``: that
        stream at a high priority (``TextStream``; the bench's ``--overlap urgent``); ``lanes``: render lanes
        for single frames (``RenderLanes``; a graphed renderer's, with the text stream: otherwise one);
        ``lone_whole``: a single frame begun with none in flight renders in one graph (one lane only; off: split
        as every other frame, the bench's ``--modes lone`` compares them)."""
        super().__init__(inner)
        self._lone_whole = lone_whole
        if lanes < 1:
            raise ValueError(f"render lanes: {lanes}; at least 1")
        if lanes > 1 and not text_stream:
            raise ValueError("render lanes need the text stream (a new prompt's embeddings are read on every lane)")
        graphed = inner.runner.graphed
        self._lanes = RenderLanes(inner.device, lanes) if graphed and lanes > 1 else None
        self._decoder = DecodeStream(inner.device, graphs=graphed, lanes=self.lanes)
        # Only a graphed renderer's frames take a text stream (``DiffusersRenderer._render_graph``).
        self._text = TextStream(inner.device, urgent=urgent_text, readers=self._lanes.streams if self._lanes else ()) \
            if text_stream and graphed else None
        self._warm: set[tuple] = set()  # plan keys whose graphs every lane has

    @property
    def lanes(self) -> int:
        """The render lanes in use (one where frames are not graphed: eager frames run on one stream)."""
        return 1 if self._lanes is None else self._lanes.count

    @property
    def lone_whole(self) -> bool:
        """Whether a single frame begun with none in flight renders in one graph (``__init__``). One lane
        only: with several, a cached prompt's embeddings are read on every lane's stream, and only the
        text stream marks them so."""
        return self._lone_whole and self._lanes is None

    @property
    def text_graph_keys(self) -> frozenset[tuple]:
        """The text stream's graphs captured so far (one per token length)."""
        return frozenset() if self._text is None else self._text.keys

    @property
    def decode_graph_keys(self) -> frozenset[tuple]:
        """The decode stream's graphs captured so far (a frame's and each padded batch size's)."""
        return self._decoder.keys

    @property
    def lane_graph_keys(self) -> frozenset[tuple]:
        """(lane, key) of the graphs the render lanes after the first captured so far (the first's are the
        renderer's)."""
        return frozenset() if self._lanes is None else self._lanes.keys

    def render_batch(self, items: Sequence[Item]) -> list[Rendered]:
        if self._lanes is not None:
            self._lanes.join()  # on the render thread's own stream: after every lane's frames
        return super().render_batch(items)

    @torch.inference_mode()
    def begin_batch(self, items: Sequence[Item]) -> Begun:
        r = self.inner
        stream, params, scene = items[0]
        plan = r.plan(params, scene)
        tiling = plan.tiling  # one plan for the whole batch
        # On lane 0 after every frame in flight: a batch (which may fold its own LoRAs), a LoRA fold, and a
        # frame whose stages run graphs besides the frame's own (a blend's or a negative prompt's text
        # encoders, an input image's encoder, control and style images: captured once, on lane 0).
        serial = len(items) > 1 or params.loras != r.loras.applied or not (
            isinstance(params.prompt, str) and scene.glide is None and on_lanes(plan))
        if len(items) == 1:
            self._warm_up(params, scene, plan, serial)
        # nothing of ours on the GPU: nothing to overlap with, so one graph as render_batch (one lane only)
        whole = len(items) == 1 and self.lone_whole and self._decoder.idle()
        with self._lane(serial) as lane:
            # Every latents buffer below is written after the decode in flight has copied its own.
            self._decoder.before_latents(lane)
            if self._text is not None and serial:
                self._text.barrier()  # a LoRA fold (a batch may fold its own) waits for the text in flight
            if whole:
                rgba = r.device_frame(params, scene, self.glider(stream))
                return Begun(self._decoder.finished(rgba), r.runner.stage_times())
            if len(items) > 1:
                latents = self.device_frames(items, decode=False)  # a new batch size captures on first use
                decoding = self._decoder.decode(("decode-batch", tuple(latents.shape), tiling), r.calls.decode_batch,
                                                latents, len(items), lane)
                return Begun(decoding, r.runner.stage_times())
            latents = r.device_frame(params, scene, self.glider(stream), decode=False, text_stream=self._text)
            return Begun(self._decode_one(latents, tiling, lane), r.runner.stage_times())

    @contextmanager
    def _lane(self, serial: bool) -> Iterator[int]:
        if self._lanes is None:
            yield 0
            return
        with self._lanes.frame(serial) as lane, self.inner.runner.on_lanes(self._lanes):
            yield lane

    def _warm_up(self, params: Params, scene: Scene, plan: FramePlan, serial: bool) -> None:
        """Compile and capture a frame's cut graphs and its decode's once per graph key (``plan``'s, the
        frame's), before a live frame, on the render thread's own stream; then every other lane's cut graph."""
        r = self.inner
        key = plan.key
        if r.compile and key not in self._warm:
            if self._lanes is not None:
                self._lanes.join()  # a warm-up frame may fold LoRAs: after every lane's frames
            if self._text is not None and serial:
                self._text.barrier()
        r.warm(params, scene, decode=False)
        if r.compile and key not in self._warm:
            self._warm_decode(params, scene, plan)
        if self.lone_whole:
            r.warm(params, scene)  # the one-graph frame too, for a frame begun with none in flight
        if self._text is not None:
            self._text.warm(r.parts.text.lengths, r.parts.text.rows, r.calls.encode)  # once per length
        if key in self._warm:
            return
        if self._lanes is not None and r.compile and on_lanes(plan):
            r.begin(plan, params.loras)  # the key's tiling (and LoRAs: every lane was joined above) for the captures
            with r.runner.on_lanes(self._lanes):
                for lane in range(1, self._lanes.count):
                    with self._lanes.capturing(lane):
                        r.frame_graph(plan, None, decode=False)  # the cached-embeddings graph: the text has its stream
        self._warm.add(key)  # after the lanes' captures: one that failed is tried again by the key's next frame

    def _warm_decode(self, params: Params, scene: Scene, plan: FramePlan) -> None:
        """Compile and capture this renderer's decode graph for ``plan``'s latents (their exact shape and
        dtype: one frame's, cut before the decoder) before a live frame. The decode stream and its graphs are
        this overlapped renderer's own, so a renderer warm from other frames (``render_batch``'s, another
        overlapped renderer's) has not captured them: its ``warm`` skips the frames they would be decoded from."""
        r = self.inner
        warm = Scene(scene.input, controls=scene.controls, style=scene.style)  # no transition: nothing recorded
        latents = r.device_frame(params, warm, r.glider, record=False, decode=False)
        self._decode_one(latents, plan.tiling, 0).result()

    def _decode_one(self, latents: torch.Tensor, tiling: str, lane: int) -> Decoding:
        return self._decoder.decode(("decode", tuple(latents.shape), tiling), self.inner.calls.decode, latents, 1,
                                    lane)
