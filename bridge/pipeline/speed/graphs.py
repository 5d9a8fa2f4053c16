"""Whole-frame CUDA graphs: one graph launch renders a frame.

The compiled text encoders, UNet steps and VAE decoder of one frame are captured together,
per (size, steps, guidance on/off, with or without text encoding). A frame then costs one
replay: no Python between kernels, no launch gaps. The graphs of one ``FrameGraphs`` share one
memory pool; this is safe because their replays never overlap (one stream) and a graph's outputs
are copied out before the next. Graphs that replay at the same time as these (the overlapped
decode, ``overlap.py``) keep their own ``FrameGraphs``, hence their own pool.

Captures never disturb another thread (issue 31), for three reasons:
- thread-local capture mode: in CUDA's default global mode, any other thread's cudaMalloc,
  synchronisation or kernel-module load during a capture invalidates it, so two devices' render
  threads (``--device cuda:0,cuda:1``), or a LoRA being placed on the loader thread, could break
  each other's captures. Thread-local mode forbids those calls only to the capturing thread;
- each ``FrameGraphs`` captures on its own stream, on its own device: ``torch.cuda.graph``'s
  default capture stream is one per process, made on whichever device asked first. The streams
  come from torch's pool (32 per device, handed out round-robin by ``torch.cuda.Stream()``), so
  they are made once per ``FrameGraphs`` (capture and warm-up) and every other user makes its
  few streams once too (the decode and text streams, the LoRA loader's): no pool entry comes round twice;
- no ``torch.cuda.graph`` context: on entry it synchronises and empties the allocator's cache of
  every device, which frees memory under another thread's feet, and the allocator refuses to
  empty a device's cache while a capture is under way there (an internal assert).
So no process-wide lock is needed (tests/pipeline/test_gpu_graphs.py captures and replays on two
threads at once while a third allocates, copies and synchronises).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)

CAPTURE_MODE = "thread_local"  # other threads' CUDA calls cannot invalidate a capture (see above)


class FrameGraph:
    """A captured frame with static input buffers; ``run`` copies inputs in and replays."""

    def __init__(self, fn: Callable[..., tuple], inputs: dict[str, torch.Tensor], pool, stream: torch.cuda.Stream,
                 side: torch.cuda.Stream, warmups: int = 2):
        """``stream``: the capture stream, ``side``: the warm-up's (this thread's, on this device)."""
        self.inputs = inputs
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture: compiles, picks cuDNN algorithms
            for _ in range(warmups):
                fn(**inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.graph.capture_begin(pool=pool, capture_error_mode=CAPTURE_MODE)
            try:
                self.outputs = fn(**inputs)
            finally:
                self.graph.capture_end()
        torch.cuda.current_stream().wait_stream(stream)

    def run(self, **values: torch.Tensor | tuple | float) -> tuple:
        self.load(**values)
        return self.replay()

    def replay(self) -> tuple:
        """Replay on the current stream, with the inputs loaded so far; the (static) outputs."""
        self.graph.replay()
        return self.outputs

    def load(self, **values: torch.Tensor | tuple | float) -> None:
        """Copy the inputs into the static buffers (on the current stream), without replaying."""
        load_inputs(self.inputs, values)


def load_inputs(buffers: dict, values: dict) -> None:
    """Copy ``values`` into a graph's input ``buffers`` of the same names (on the current stream)."""
    for name, value in values.items():
        target = buffers[name]
        if isinstance(value, (tuple, list)):  # a tuple of tensors (T2I-Adapter features per level)
            for buffer, part in zip(target, value, strict=True):
                buffer.copy_(part, non_blocking=True)
        elif isinstance(value, torch.Tensor):
            target.copy_(value, non_blocking=True)
        else:
            target.fill_(value)


class FrameGraphs:
    """Captures graphs on first use of a key and replays them after."""

    def __init__(self) -> None:
        self._pool = torch.cuda.graph_pool_handle()
        self._stream = torch.cuda.Stream()  # on the current device: the render thread's
        self._side = torch.cuda.Stream()
        self._graphs: dict[tuple, FrameGraph] = {}

    def clear(self) -> None:
        """Drop every captured graph; the next use of a key captures again, into a new pool.

        A pool dies with its last graph, in the device allocator and in the pinned-host allocator
        alike: capturing into it again trips their ``use_count > 0`` asserts (seen on the H100 and
        the H200). A ``torch.cuda.MemPool`` keeps only the device side alive, so a new pool it is."""
        self._graphs.clear()
        self._pool = torch.cuda.graph_pool_handle()

    def __contains__(self, key: tuple) -> bool:
        return key in self._graphs

    def keys(self) -> frozenset[tuple]:
        """The keys captured so far (a key that appears for a new prompt or seed is a bug)."""
        return frozenset(self._graphs)

    def get(self, key: tuple, fn: Callable[..., tuple], make_inputs: Callable[[], dict]) -> FrameGraph:
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._graphs[key] = FrameGraph(fn, make_inputs(), self._pool, self._stream, self._side)
            log.debug("captured frame graph %s", key)
        return graph
