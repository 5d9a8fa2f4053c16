"""Overlap: a frame's VAE decode and copy to the host on a second CUDA stream.

While frame N decodes here, frame N+1's text encoders and UNet run on the render thread's stream:
at batch 1 neither fills the GPU (issue 27's stage split: text encoders 2.7 ms, UNet 8.7, VAE
decode 7.7 on an H100). ``DecodeStream.decode`` is called on the render thread right after a
frame's latents were queued on the current stream; it returns at once with a ``Decoding`` whose
``result`` (on the publishing thread) waits for the pixels.

Ordering, with CUDA events (no host synchronisation on the render thread):
- the decode stream waits for the latents (an event recorded after the first stage);
- the next frame's first stage on the same render lane (``lanes.py``; one lane: every frame) waits
  until this decode has copied the latents into its own graph input (``before_latents``): the first
  stage's graph of that lane writes the same output buffer again;
- each decode copies into its own pinned host buffer (a free list: one per frame in flight), so a
  later frame never overwrites pixels not yet read;
- ``idle`` says whether the last frame queued here (a decode, or a whole frame's pixels given to
  ``finished``) has its pixels in host memory: then a new frame has nothing to overlap with.
The decode graphs have their own ``FrameGraphs``, hence their own memory pool: they replay while
the first stage's graphs replay on the other stream, and two graphs of one pool must not overlap.
Without CUDA (the CPU), ``decode`` runs at once and ``result`` returns its pixels: the same
arithmetic, no overlap (tests check the pixels and the ordering there).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import torch


class Decoding:
    """One decode in flight: ``result`` waits for it and returns its frames (H x W x 4 uint8 each)."""

    def __init__(self, rows: int, done: torch.cuda.Event | None, host: torch.Tensor, give_back: Callable | None):
        self._rows, self._done, self._host, self._give_back = rows, done, host, give_back
        self.wait_ms = 0.0

    def ready(self) -> bool:
        """Whether the frames are in host memory (``cudaEventQuery``: never waits)."""
        return self._done is None or self._done.query()

    def result(self) -> list[np.ndarray]:
        start = time.perf_counter()
        if self._done is not None:
            self._done.synchronize()
        pixels = self._host.numpy()
        frames = [pixels[i].copy() for i in range(self._rows)]
        if self._give_back is not None:
            self._give_back(self._host)
            self._give_back = None
        self.wait_ms = (time.perf_counter() - start) * 1e3
        return frames


class DecodeStream:
    """The decode stream of one device, its graphs and pinned buffers; used from the render thread."""

    def __init__(self, device: torch.device, graphs: bool, lanes: int = 1):
        """``graphs``: replay each decode as a CUDA graph (the compiled renderer); else call it.
        ``lanes``: the render lanes whose latents it decodes (``lanes.py``)."""
        self.device = device
        self._cuda = device.type == "cuda"
        self._stream = torch.cuda.Stream(device) if self._cuda else None
        # per render lane: the last decode of that lane's latents has copied them
        self._taken = [torch.cuda.Event() for _ in range(lanes)] if self._cuda else []
        self._graphs = None
        if self._cuda and graphs:
            from .graphs import FrameGraphs

            self._graphs = FrameGraphs()
        self._free: dict[tuple, list[torch.Tensor]] = {}
        self._lock = threading.Lock()  # the free list: taken on the render thread, given back on the publisher
        self._last: torch.cuda.Event | None = None  # the last frame's pixels copied to the host

    @property
    def keys(self) -> frozenset[tuple]:
        """The decode graphs captured so far (one per latents shape and tiling)."""
        return self._graphs.keys() if self._graphs is not None else frozenset()

    def idle(self) -> bool:
        """Whether every frame queued here has its pixels in host memory (asked on the render thread, without
        waiting: a new frame then has no decode to overlap with). Without CUDA frames finish as they are queued."""
        return self._last is None or self._last.query()

    def finished(self, rgba: torch.Tensor) -> Decoding:
        """A frame decoded on the current stream (RGBA uint8, (H, W, 4)): its copy to the host queued there."""
        rgba = rgba.reshape(-1, *rgba.shape[-3:])
        if not self._cuda:
            return Decoding(1, None, rgba, None)
        return self._to_host(rgba, 1, torch.cuda.current_stream(self.device))

    def before_latents(self, lane: int = 0) -> None:
        """Call before queueing a frame's first stage on render lane ``lane``: it must not overwrite
        that lane's latents still being copied."""
        if self._cuda:
            torch.cuda.current_stream(self.device).wait_event(self._taken[lane])

    def decode(self, key: tuple, fn: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor,
               rows: int, lane: int = 0) -> Decoding:
        """Queue ``fn(latents)`` (RGBA uint8, (H, W, 4) or (B, H, W, 4)) and its copy to the host after
        the work queued so far on the current stream; ``rows``: the frames to return (batch order);
        ``lane``: the render lane whose first stage wrote ``latents``."""
        if not self._cuda:
            rgba = fn(latents)
            return Decoding(rows, None, rgba.reshape(-1, *rgba.shape[-3:]), None)
        ready = torch.cuda.Event()
        ready.record(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._stream):
            self._stream.wait_event(ready)
            if self._graphs is not None:
                graph = self._graphs.get(key, fn, lambda: {"latents": torch.zeros_like(latents)})
                graph.load(latents=latents)
                self._taken[lane].record(self._stream)
                rgba = graph.replay()
            else:  # eager: the decoder reads the latents while it runs
                latents.record_stream(self._stream)  # their memory is not reused before that
                rgba = fn(latents)
                self._taken[lane].record(self._stream)
            return self._to_host(rgba.reshape(-1, *rgba.shape[-3:]), rows, self._stream)

    def _to_host(self, rgba: torch.Tensor, rows: int, stream: torch.cuda.Stream) -> Decoding:
        # on ``stream`` (the current one): into a pinned buffer of the free list, then the event ``result`` waits for
        host = self._pinned(tuple(rgba.shape))
        host.copy_(rgba, non_blocking=True)
        done = self._last = torch.cuda.Event()
        done.record(stream)
        return Decoding(rows, done, host, self._give_back)

    def _pinned(self, shape: tuple) -> torch.Tensor:
        with self._lock:
            free = self._free.setdefault(shape, [])
            if free:
                return free.pop()
        return torch.empty(shape, dtype=torch.uint8, pin_memory=True)

    def _give_back(self, host: torch.Tensor) -> None:
        with self._lock:
            self._free.setdefault(tuple(host.shape), []).append(host)
