"""Render lanes: consecutive frames' denoisers on CUDA streams of their own, running at once.

At batch 1 the SDXL UNet leaves most of an H100 idle: at 512 px its matrix products have 256 or 1024
rows, a few dozen output tiles on 132 SMs. With ``--overlap on`` two frames are in flight (one
decoding, one in its UNet); with lanes, frame i+1's UNet no longer waits for frame i's on one stream:
it runs on the next lane's stream beside it (bench/lanes_probe.py, H100, the full-size UNet as one
graph: 8.52 ms alone, 13.24 ms for two at once, 6.62 a frame). A change that comes alone still runs
alone, as fast as before.

Each lane has its own stream and its own ``FrameGraphs`` (its own memory pool: two graphs of one pool
must never replay at once); lane 0 is the renderer's own graphs, the ones the warm-up captures.

Ordering, with CUDA events (no host synchronisation):
- a frame's lane waits until the previous frame's inputs are in place (``loaded``, recorded between
  loading its graph's inputs and its replay): whatever that frame queued before its replay (its new
  prompt's text, an input image's latents, a LoRA fold, a cache entry a later frame reads) is done
  before this frame reads anything, while the two replays run at once;
- a ``serial`` frame (a batch of channels, or a frame that folds LoRAs into the shared weights) runs
  on lane 0 after every lane's frames are done: nothing in flight reads weights it changes;
- work queued on the thread's own stream before a frame (a warm-up, a frame rendered without the
  overlap) comes first; ``join`` makes that stream wait for every lane's frames, for what runs there
  after them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .graphs import FrameGraphs


class RenderLanes:
    """The lanes of one device, used from its render thread only."""

    def __init__(self, device: torch.device, count: int):
        if count < 1:
            raise ValueError(f"render lanes: {count}; at least 1")
        self.device = device
        self.count = count
        self.streams = [torch.cuda.Stream(device) for _ in range(count)]
        # lane 0 replays the renderer's own graphs (None); the others their own, each its own pool
        self.graphs: list[FrameGraphs | None] = [None] + [FrameGraphs() for _ in range(count - 1)]
        self._loaded = [torch.cuda.Event() for _ in range(count)]
        self._ended = [torch.cuda.Event() for _ in range(count)]
        self._last: int | None = None  # the lane of the previous frame
        self._next = 0
        self.current: int | None = None
        self._loaded_now = False  # the current frame recorded its ``loaded``

    @property
    def keys(self) -> frozenset[tuple]:
        """(lane, key) of each graph the lanes after lane 0 captured (lane 0's are the renderer's)."""
        return frozenset((lane, key) for lane, graphs in enumerate(self.graphs) if graphs is not None
                         for key in graphs.keys())

    def clear(self) -> None:
        for graphs in self.graphs:
            if graphs is not None:
                graphs.clear()

    @contextmanager
    def frame(self, serial: bool = False) -> Iterator[int]:
        """Queue a frame's work on its lane (the current stream inside); yields the lane's index."""
        lane = 0 if serial else self._next
        self._next = (lane + 1) % self.count
        stream = self.streams[lane]
        stream.wait_stream(torch.cuda.current_stream(self.device))
        # (waiting for an event never recorded, a lane not used yet, waits for nothing)
        if self._last is not None:
            stream.wait_event(self._loaded[self._last])
        if serial:
            for other in range(self.count):
                if other != lane:
                    stream.wait_event(self._ended[other])
        self.current = lane
        try:
            with torch.cuda.stream(stream):
                yield lane
        finally:
            self.current = None
            if not self._loaded_now:  # no frame graph (a batch's, or a failure): the next waits for all of it
                self._loaded[lane].record(stream)
            self._loaded_now = False
            self._ended[lane].record(stream)
            self._last = lane

    @contextmanager
    def capturing(self, lane: int) -> Iterator[None]:
        """Graphs looked up inside are lane ``lane``'s (a warm-up captures them; nothing is queued)."""
        self.current = lane
        try:
            yield
        finally:
            self.current = None

    def loaded(self) -> None:
        """Call between loading a frame graph's inputs and its replay (the runner does)."""
        if self.current is not None:
            self._loaded[self.current].record(self.streams[self.current])
            self._loaded_now = True

    def join(self) -> None:
        """The thread's own stream waits for every lane's frames (before work queued there after them)."""
        main = torch.cuda.current_stream(self.device)
        for ended in self._ended:
            main.wait_event(ended)
