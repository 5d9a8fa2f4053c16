"""Whole-frame CUDA graphs: one graph launch renders a frame.

The compiled text encoders, UNet steps and VAE decoder of one frame are captured together,
per (size, steps, guidance on/off, with or without text encoding). A frame then costs one
replay: no Python between kernels, no launch gaps. All graphs share one memory pool; this
is safe because replays never overlap and a graph's outputs are copied out before the next.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

import torch

log = logging.getLogger(__name__)

# Held while a frame graph is captured: in CUDA's global capture mode another thread's cudaMalloc
# or synchronisation invalidates the capture, so GPU work off the render thread (a LoRA's deltas
# moved to the device on the loader thread, lora_fold.place) takes it too.
CAPTURE_LOCK = threading.Lock()


class FrameGraph:
    """A captured frame with static input buffers; ``run`` copies inputs in and replays."""

    def __init__(self, fn: Callable[..., tuple], inputs: dict[str, torch.Tensor], pool, warmups: int = 2):
        self.inputs = inputs
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture: compiles, picks cuDNN algorithms
            for _ in range(warmups):
                fn(**inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with CAPTURE_LOCK, torch.cuda.graph(self.graph, pool=pool):
            self.outputs = fn(**inputs)

    def run(self, **values: torch.Tensor | tuple | float) -> tuple:
        for name, value in values.items():
            target = self.inputs[name]
            if isinstance(value, (tuple, list)):  # a tuple of tensors (T2I-Adapter features per level)
                for buffer, part in zip(target, value, strict=True):
                    buffer.copy_(part, non_blocking=True)
            elif isinstance(value, torch.Tensor):
                target.copy_(value, non_blocking=True)
            else:
                target.fill_(value)
        self.graph.replay()
        return self.outputs


class FrameGraphs:
    """Captures graphs on first use of a key and replays them after."""

    def __init__(self) -> None:
        self._pool = torch.cuda.graph_pool_handle()
        self._graphs: dict[tuple, FrameGraph] = {}

    def __contains__(self, key: tuple) -> bool:
        return key in self._graphs

    def keys(self) -> frozenset[tuple]:
        """The keys captured so far (a key that appears for a new prompt or seed is a bug)."""
        return frozenset(self._graphs)

    def get(self, key: tuple, fn: Callable[..., tuple], make_inputs: Callable[[], dict]) -> FrameGraph:
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._graphs[key] = FrameGraph(fn, make_inputs(), self._pool)
            log.debug("captured frame graph %s", key)
        return graph
