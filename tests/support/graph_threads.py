"""Frames rendered on threads, compared bit for bit with reference frames: the GPU tests of issue 31
(``tests/pipeline/test_gpu_graphs.py`` on one GPU, ``test_gpu_two_devices.py`` on two).

A mismatch names the control, renderer, thread, round and frame, whether the text encoders ran for
it, the graph keys captured, how many pixels differ and by how much, and how often Dynamo compiled
on that thread (the fixtures compile every graph used: any compile is a recompile) with the guard
failures behind it. Imports torch only inside what runs on a GPU.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from bridge.core.params import Params


@dataclass(frozen=True)
class Frame:
    renderer: int
    round_no: int
    index: int
    path: str  # what rendered it: the with-text graph, the cached-embeddings graph (a round's second pass)...
    encoded: bool  # the renderer's text encoders ran for this frame
    keys: frozenset  # the graph keys captured after it
    thread: str
    pixels: np.ndarray


class Compiles:
    """Dynamo's compiles while active, per thread, and the guard failures that caused them.

    Dynamo compiles one frame at a time, under its lock, on the thread that called, and runs its
    start callbacks there. Nothing global stays changed: the callback is removed on exit."""

    def __init__(self) -> None:
        self.threads: Counter[str] = Counter()
        self.reasons: list[str] = []

    def _started(self, _args) -> None:
        self.threads[threading.current_thread().name] += 1

    def __enter__(self):
        from torch._dynamo.callback import callback_handler
        from torch._dynamo.utils import guard_failures

        self._before = {code: len(reasons) for code, reasons in guard_failures.items()}
        callback_handler.register_start_callback(self._started)
        return self

    def __exit__(self, *exc) -> None:
        from torch._dynamo.callback import callback_handler
        from torch._dynamo.utils import guard_failures

        callback_handler.remove_start_callback(self._started)
        self.reasons = [f"{getattr(code, 'co_name', code)}: {reason}" for code, reasons in guard_failures.items()
                        for reason in reasons[self._before.get(code, 0):]]

    def on(self, thread: str) -> str:
        return f"Dynamo compiled {self.threads[thread]} time(s) on {thread}"

    def report(self) -> list[str]:
        """A line per thread that compiled, with every guard failure seen (empty: no recompile)."""
        return [f"{self.on(thread)}; guard failures: {self.reasons or 'none recorded'}" for thread in self.threads]


def difference(got: np.ndarray, want: np.ndarray) -> str | None:
    """None when bit for bit equal, else how many pixels differ and by how much."""
    if np.array_equal(got, want):
        return None
    if got.shape != want.shape:
        return f"shape {got.shape}, not {want.shape}"
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    pixels = np.count_nonzero(diff.any(axis=-1))
    return f"{pixels} of {want.shape[0] * want.shape[1]} pixels differ, by up to {diff.max()}"


def render_rounds(renderer, index: int, params: list[Params], rounds: int, capture: bool) -> list[Frame]:
    """``rounds`` rounds of ``params`` (renderer number ``index``); ``capture``: drop the graphs first.

    A round clears the prompt cache and renders the frames twice: through the with-text graph, then
    through the cached-embeddings graph; with ``capture`` each graph is captured again on this thread."""
    frames = []
    for round_no in range(rounds):
        if capture:
            renderer.runner.forget_graphs()  # each graph below is captured again, on this thread, into a new pool
        renderer.text.clear()  # the first pass runs the text encoders inside the with-text graph
        for path in ("with-text graph", "cached-embeddings graph"):
            for i, p in enumerate(params):
                runs = renderer.text_encoder_runs
                pixels = renderer.render(p).pixels
                frames.append(Frame(index, round_no, i, path, renderer.text_encoder_runs > runs,
                                    renderer.graph_keys, threading.current_thread().name, pixels))
    return frames


def check(control: str, frames: list[Frame], want, compiles: Compiles, errors: list[str] = (),
          names: tuple[str, ...] = ("sdxl", "sd2")) -> None:
    """Fail with every mismatch, error and recompile of ``control`` (one message, not truncated);
    ``want[renderer][index]``: each frame's reference pixels; ``names``: the renderers' names, by number."""
    lines = list(errors)
    for f in frames:
        found = difference(f.pixels, want[f.renderer][f.index])
        if found:
            lines.append(f"{control}: {names[f.renderer]} on {f.thread}, round {f.round_no}, frame {f.index} "
                         f"({f.path}, text encoders "
                         f"{'ran' if f.encoded else 'did not run'}): {found}; {compiles.on(f.thread)}; "
                         f"graph keys {sorted(map(str, f.keys))}")
    for (renderer, thread), mine in _by_thread(frames).items():
        several = len({f.round_no for f in mine}) > 1
        if several and any(difference(f.pixels, want[f.renderer][f.index]) for f in mine):
            lines.append(f"{control}: {names[renderer]} on {thread}: its rounds "
                         + ("agree with each other (a difference fixed once per thread)" if _rounds_agree(mine)
                            else "differ from each other (a difference that moves: a race)"))
    lines += [f"{control}: {line}" for line in compiles.report()]
    if lines:
        pytest.fail(f"{len(lines)} finding(s), cuDNN benchmark {_cudnn_benchmark()}:\n" + "\n".join(lines),
                    pytrace=False)


def _by_thread(frames: list[Frame]) -> dict[tuple[int, str], list[Frame]]:
    grouped: dict[tuple[int, str], list[Frame]] = {}
    for f in frames:
        grouped.setdefault((f.renderer, f.thread), []).append(f)
    return grouped


def _rounds_agree(frames: list[Frame]) -> bool:
    first = {(f.index, f.path): f.pixels for f in frames if f.round_no == 0}
    return all(np.array_equal(f.pixels, first[(f.index, f.path)]) for f in frames)


def on_threads(jobs: dict[str, Callable[[], list[Frame]]], loader: bool = False,
               devices: dict[str, str] | None = None) -> tuple[list[Frame], list[str]]:
    """Each job on a new thread of that name, bound to its device in ``devices`` (cuda:0 if not named)
    as a device's render thread is, all released at once; with ``loader``, a thread placing LoRA-like
    tensors on cuda:0 until they end. Returns their frames and the errors raised (a thread still
    running after 600 s is one)."""
    import torch

    from bridge.pipeline.loading.loader import bind_thread
    from bridge.pipeline.steering.lora_deltas import _moved

    start, stop = threading.Barrier(len(jobs) + loader), threading.Event()
    frames: list[Frame] = []
    errors: list[str] = []
    placed = [0]

    def job(name: str, work: Callable[[], list[Frame]]) -> None:
        try:
            bind_thread((devices or {}).get(name, "cuda:0"))
            start.wait(60)
            frames.extend(work())
        except Exception as exc:  # noqa: BLE001 - reported with the thread that raised it
            errors.append(f"{name}: {type(exc).__name__}: {exc}")

    def place() -> None:  # what the LoRA loader thread does, concurrently, with no lock
        try:
            start.wait(60)
            while not stop.is_set():
                host = [torch.randn(64, 1280) for _ in range(8)]
                moved = _moved(host, torch.device("cuda:0"))
                if not all(torch.equal(m.cpu(), h) for m, h in zip(moved, host)):
                    errors.append("lora-loader-test: a placed tensor differs from its host copy")
                placed[0] += 1
        except Exception as exc:  # noqa: BLE001
            errors.append(f"lora-loader-test: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=job, args=(name, work), name=name) for name, work in jobs.items()]
    side = threading.Thread(target=place, name="lora-loader-test") if loader else None
    for t in (*threads, *([side] if side else [])):
        t.start()
    for t in threads:
        t.join(600)
    stop.set()
    if side:
        side.join(60)
        if not placed[0]:
            errors.append("lora-loader-test placed nothing while the renderers ran")
    errors += [f"{t.name}: still running after 600 s" for t in threads if t.is_alive()]
    for device in {(devices or {}).get(name, "cuda:0") for name in jobs}:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)  # every device's work, not only the main thread's current one
    return frames, errors


def _cudnn_benchmark() -> bool:
    import torch

    return torch.backends.cudnn.benchmark
