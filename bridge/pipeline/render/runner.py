"""Running a frame's stages: timed, eager or as CUDA graphs, and the copy of the pixels to the host.

Eager (CPU, or compiled without graphs) a stage is a plain call; with graphs (compiled, on CUDA) it
is captured on the first use of its key and replayed after. Either way the keys used are kept:
a new prompt or seed must never add one (the contract suite checks ``keys``). While profiling, each
stage is also a ``record_function`` range named ``stage:NAME`` (``bench --modes kernels`` attributes
the GPU's kernels by them); ``launching()`` runs the stages of a graphed runner as plain calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext

import numpy as np
import torch

from ..speed.lanes import RenderLanes
from ..speed.optimize import progress


class StageRunner:
    """Runs, times and keys the stages of frames on one device (the render thread only)."""

    def __init__(self, device: torch.device, graphs: bool, on_capture: Callable[[], None]):
        self.device = device
        self.profile = False  # synchronise per stage: honest stage times, a little slower
        self._cuda = device.type == "cuda"
        self._on_capture = on_capture  # after a capture that compiled new code (compile artefacts)
        self._graphs = None
        if graphs:
            from ..speed.graphs import FrameGraphs

            self._graphs = FrameGraphs()
        self._eager_keys: set[tuple] = set()
        self._launching = False  # see ``launching``
        self._stages: dict[str, float] = {}
        self._pinned: dict[tuple[int, int], torch.Tensor] = {}
        self._done = torch.cuda.Event() if self._cuda else None
        self._lanes: RenderLanes | None = None  # see ``on_lanes``

    @property
    def graphed(self) -> bool:
        """Whether stages run as CUDA graphs."""
        return self._graphs is not None

    @property
    def keys(self) -> frozenset[tuple]:
        """The keys of the graphs captured (or, without graphs, of the stages run) so far."""
        return self._graphs.keys() if self._graphs is not None else frozenset(self._eager_keys)

    def forget_graphs(self) -> None:
        """Drop the captured graphs (their pool goes with them): each key captures again on its next
        use, into a new pool (the GPU tests re-capture on two threads at once)."""
        if self._graphs is not None:
            self._graphs.clear()

    @contextmanager
    def on_lanes(self, lanes: RenderLanes):
        """While inside, graphs are looked up in (and captured into) the current lane's
        (``lanes.current``; lane 0 and no frame: the runner's own), and ``replay`` calls ``lanes.loaded``."""
        self._lanes = lanes
        try:
            yield
        finally:
            self._lanes = None

    def _frame_graphs(self):
        lane = None if self._lanes is None or self._lanes.current is None else self._lanes.graphs[self._lanes.current]
        return self._graphs if lane is None else lane

    def reset(self) -> None:
        """A new frame (or batch): its stage times start from nothing."""
        self._stages = {}

    @contextmanager
    def stage(self, name: str):
        """Time a stage of the frame; when profiling, synchronised on CUDA and a profiler range
        ``stage:NAME`` (the syncs inside it: every kernel of the stage runs within the range)."""
        with torch.profiler.record_function(f"stage:{name}") if self.profile else nullcontext():
            if self.profile and self._cuda:
                torch.cuda.synchronize(self.device)
            start = time.perf_counter()
            yield
            if self.profile and self._cuda:
                torch.cuda.synchronize(self.device)
        self._stages[name] = self._stages.get(name, 0.0) + (time.perf_counter() - start) * 1e3

    @contextmanager
    def launching(self):
        """While inside, a graphed runner calls each stage's (compiled) function instead of replaying
        its graph: every kernel launched on its own, as a profiler that cannot look inside graph
        replays sees them. The inputs are copied into buffers made as the graph's are (numbers as
        0-d device tensors), so the compiled functions see what they were compiled for: no recompile."""
        self._launching = True
        try:
            yield
        finally:
            self._launching = False

    def stage_times(self) -> dict[str, float]:
        """The stages since ``reset``, in ms."""
        return dict(self._stages)

    def graph(self, key: tuple, fn: Callable[..., tuple], inputs: Callable[[], dict]):
        """The CUDA graph of ``key`` (captured from ``fn`` on ``inputs()`` on first use)."""
        return self._frame_graphs().get(key, fn, inputs)

    def replay(self, graph, **values) -> tuple:
        """A frame graph's inputs loaded, then its replay (on the current stream); its outputs."""
        graph.load(**values)
        if self._lanes is not None:
            self._lanes.loaded()
        return graph.replay()

    def run(self, key: tuple, fn: Callable[..., object], label: str | None = None, **values):
        """One stage (or a batch's whole frame): plain, or as the graph of ``key``. ``label``: log
        the capture as a compile and call ``on_capture`` after it (a new batch size compiles)."""
        if self._graphs is None:
            self._eager_keys.add(key)
            values = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in values.items()}
            return fn(**values)

        def zeros(v):
            if isinstance(v, (tuple, list)):  # T2I-Adapter features: one tensor per level
                return tuple(torch.zeros_like(t, device=self.device) for t in v)
            return torch.zeros_like(v, device=self.device) if isinstance(v, torch.Tensor) \
                else torch.zeros((), device=self.device)

        def inputs() -> dict:
            return {k: zeros(v) for k, v in values.items()}

        if self._launching:
            from ..speed.graphs import load_inputs

            staged = inputs()
            load_inputs(staged, values)
            return fn(**staged)
        graphs = self._frame_graphs()
        if label is not None and key not in graphs:
            with progress(label, compiling=True):
                graph = graphs.get(key, fn, inputs)
            self._on_capture()
        else:
            graph = graphs.get(key, fn, inputs)
        return graph.run(**values)

    def to_host(self, rgba: torch.Tensor) -> np.ndarray:
        """A frame's (H, W, 4) pixels into host memory: the one sync of a frame on CUDA."""
        if not self._cuda:
            return rgba.numpy().copy()
        shape = tuple(rgba.shape[:2])
        if shape not in self._pinned:
            self._pinned[shape] = torch.empty(rgba.shape, dtype=torch.uint8, pin_memory=True)
        host = self._pinned[shape]
        host.copy_(rgba, non_blocking=True)
        self._done.record()
        self._done.synchronize()  # the one sync of a frame
        return host.numpy().copy()  # the pinned buffer is reused by the next frame
