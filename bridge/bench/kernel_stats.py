"""What a frame stage's GPU kernels were (``bench --modes kernels``): each kernel's category from its
name, and per stage the time the GPU was busy, idle, and the top kernels. Pure functions of names
and times (microseconds, one clock for CPU ranges and kernels, as torch's profiler gives them): no torch.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass

CATEGORIES = ("convolution", "gemm", "attention", "norm", "pointwise", "copy", "other")
TOP = 12  # kernels listed per stage, by total time
OUTSIDE = "(outside stages)"  # the row of kernels that ran in no stage's window (none expected: say so if any)

# Lower-case name fragments, tried in order: the first rule that matches wins, so a name that fits
# several goes where it belongs (fmha_cutlassF is attention, not a CUTLASS GEMM; cuDNN's
# nchwToNhwcKernel is a layout copy, not a convolution; an implicit GEMM is a convolution).
_ATTENTION = ("flash", "fmha", "attention", "sdpa", "attn")
_CONVOLUTION = ("conv", "fprop", "dgrad", "wgrad", "implicit", "winograd", "im2col")
_RULES = (
    ("copy", ("memcpy", "memset")),
    ("attention", _ATTENTION),
    ("copy", ("nchwtonhwc", "nhwctonchw", "transpose", "upsample", "copy", "catarray")),
    ("convolution", _CONVOLUTION),
    ("gemm", ("gemm", "cutlass", "cublas", "nvjet", "matmul", "gemv", "splitkreduce", "_mm", "bmm")),
    ("norm", ("norm", "moments", "welford", "reduce", "softmax")),
    ("pointwise", ("elementwise", "pointwise", "silu", "gelu", "sigmoid", "fill")),
    ("convolution", ("cudnn",)),  # cuDNN runs the convolutions here; its layout and SDPA kernels matched above
)
# Inductor names its kernels by kind: a prefix says more than the fused ops after it
# (triton_poi_fused__to_copy_ is a pointwise cast, triton_tem_fused_addmm_ a GEMM template)
_INDUCTOR = (("triton_poi_", "pointwise"), ("triton_red_", "norm"), ("triton_per_", "norm"))


@dataclass(frozen=True)
class Kernel:
    """One kernel's run on the GPU (or a copy, a memset)."""
    name: str
    start_us: float
    end_us: float


@dataclass(frozen=True)
class Window:
    """One run of a frame stage: its profiler range on the CPU, synchronised at both ends, so every
    kernel of the stage ran inside it. Stages do not nest."""
    stage: str
    start_us: float
    end_us: float


def category(name: str) -> str:
    """One of ``CATEGORIES`` for a kernel name as the profiler reports it (CUPTI's, demangled)."""
    low = name.lower()
    for prefix, kind in _INDUCTOR:
        if low.startswith(prefix):
            return kind
    if low.startswith("triton_tem_"):  # an Inductor template: a convolution, attention or a matmul
        return next((kind for kind, words in (("convolution", _CONVOLUTION), ("attention", _ATTENTION))
                     if any(w in low for w in words)), "gemm")
    return next((kind for kind, words in _RULES if any(w in low for w in words)), "other")


def short_name(name: str, width: int = 90) -> str:
    """A kernel's name for a table: no ``void``, no namespaces that every ATen kernel shares, no
    argument list; cut at ``width``."""
    text = name.removeprefix("void ")
    for common in ("at::native::", "(anonymous namespace)::", "c10::", "std::"):
        text = text.replace(common, "")
    if text.endswith(")") and ("::" in text or "<" in text):  # a C++ signature: drop its arguments
        depth = 0
        for i in range(len(text) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(text[i], 0)
            if depth == 0:
                text = text[:i]
                break
    return text if len(text) <= width else text[:width - 3] + "..."


def busy_us(intervals: list[tuple[float, float]]) -> float:
    """The length of the union of ``intervals``: time the GPU ran at least one of them."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def attribute(kernels: list[Kernel], windows: list[Window]) -> tuple[dict[int, list[Kernel]], list[Kernel]]:
    """Each kernel to the window (by index into ``windows``) it started in; those in none, apart."""
    order = sorted(range(len(windows)), key=lambda i: windows[i].start_us)
    starts = [windows[i].start_us for i in order]
    inside: dict[int, list[Kernel]] = defaultdict(list)
    outside = []
    for kernel in kernels:
        at = bisect.bisect_right(starts, kernel.start_us) - 1
        if at >= 0 and kernel.start_us <= windows[order[at]].end_us:
            inside[order[at]].append(kernel)
        else:
            outside.append(kernel)
    return inside, outside


def stage_rows(kernels: list[Kernel], windows: list[Window], frames: int) -> list[dict]:
    """Per stage (in the order stages first ran), figures per frame over ``frames`` frames: its runs
    (windows), the stage's window, GPU busy time (the union of its kernels), idle (window - busy: sync, launches,
    CPU work such as tokenizing), gaps (idle between its first and last kernel: a launch-bound
    stage's mark), kernels by category, and the top kernels by total time."""
    inside, outside = attribute(kernels, windows)
    stages: dict[str, list[int]] = {}
    for i, window in enumerate(windows):
        stages.setdefault(window.stage, []).append(i)
    rows = []
    for stage, indices in stages.items():
        window_us = busy = gaps = 0.0
        ran: list[Kernel] = []
        for i in indices:
            mine = inside.get(i, [])
            spans = [(k.start_us, min(k.end_us, windows[i].end_us)) for k in mine]
            ran_us = busy_us(spans)
            window_us += windows[i].end_us - windows[i].start_us
            busy += ran_us
            if mine:  # from the first kernel's start to the last one's end, less the time one ran
                gaps += max(end for _, end in spans) - min(start for start, _ in spans) - ran_us
            ran += mine
        rows.append({"stage": stage, "runs": round(len(indices) / frames, 2), "window_ms": _ms(window_us, frames),
                     "busy_ms": _ms(busy, frames), "idle_ms": _ms(window_us - busy, frames),
                     "gaps_ms": _ms(gaps, frames), **_kernel_figures(ran, frames)})
    if outside:
        busy = busy_us([(k.start_us, k.end_us) for k in outside])
        rows.append({"stage": OUTSIDE, "runs": None, "window_ms": None, "busy_ms": _ms(busy, frames), "idle_ms": None,
                     "gaps_ms": None, **_kernel_figures(outside, frames)})
    return rows


def _kernel_figures(kernels: list[Kernel], frames: int) -> dict:
    """Count, time and mean duration of ``kernels`` per frame, by category, and the top ``TOP`` by total time."""
    by_category: dict[str, list[float]] = defaultdict(list)
    by_name: dict[str, list[float]] = defaultdict(list)
    for k in kernels:
        by_category[category(k.name)].append(k.end_us - k.start_us)
        by_name[k.name].append(k.end_us - k.start_us)
    total = sum(sum(v) for v in by_category.values())
    top = sorted(by_name.items(), key=lambda item: -sum(item[1]))[:TOP]
    return {"kernels": round(len(kernels) / frames, 2), "kernel_ms": _ms(total, frames),
            "mean_us": round(total / len(kernels), 2) if kernels else None,
            "categories": {c: {"ms": _ms(sum(by_category[c]), frames), "count": round(len(by_category[c]) / frames, 2),
                               "mean_us": round(sum(by_category[c]) / len(by_category[c]), 2)}
                           for c in CATEGORIES if by_category.get(c)},
            "top": [{"name": short_name(name), "category": category(name), "count": round(len(times) / frames, 2),
                     "ms": _ms(sum(times), frames)} for name, times in top]}


def _ms(total_us: float, frames: int) -> float:
    return round(total_us / frames / 1e3, 4)
