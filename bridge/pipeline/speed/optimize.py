"""The fast path's knobs: memory layout, fused attention projections, torch.compile with
CUDA graphs, the persistent compile cache, and progress while compiling.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from .group_norm import swap_group_norms

log = logging.getLogger(__name__)


def configure_compile_cache(cache_dir: Path) -> Path:
    """Point Inductor's and Triton's caches at ``cache_dir/compile`` so a restart reuses them.

    Must run before the first compile; the environment variables reach Inductor's worker processes.
    """
    folder = Path(cache_dir) / "compile"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(folder / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(folder / "triton"))
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    import torch._inductor.config as inductor

    inductor.fx_graph_cache = True
    # The diffusers SDXL recipe: 1x1 convolutions as matmuls, no epilogue fusion into GEMMs.
    inductor.conv_1x1_as_mm = True
    inductor.epilogue_fusion = False
    # One graph per (size, steps, guidance on/off): allow many before Dynamo gives up.
    torch._dynamo.config.cache_size_limit = 64
    return folder


@dataclass(frozen=True)
class Tuning:
    """The compiled path's knobs (``turbo-bridge bench --vae-compile-modes/--cudnn-benchmark/--vae-channels-last/
    --fused-text-qkv/--compile-scope/--compile-text/--denoiser-compile-mode``): the VAE decoder's, the largest
    stage with the full VAE, dominated by its convolutions at 256 and 512 px; the text encoders' Q/K/V projections,
    which a prompt change runs; what is compiled (whole calls or blocks, the text encoders or not) and the
    denoiser's compile mode.

    cuDNN's benchmark stays off (issue 31): it times the candidate engines of each convolution shape
    once per thread (torch keeps cuDNN's plans in a thread-local cache, Conv_v8.cpp) and keeps the
    fastest of that moment, among those that fit the allocator's largest free block. Another render
    thread, another device or another start may so pick an engine that rounds differently, and the
    same params would not give the same pixels. Its heuristics pick by shape, dtype and GPU alone."""

    decoder_mode: str = "default"  # torch.compile mode of the VAE decode: or "max-autotune-no-cudagraphs"
    cudnn_benchmark: bool = False  # on: timed per thread, frames then depend on the thread (above)
    vae_channels_last: bool = True  # the VAE's weights and activations in NHWC (tensor cores' layout)
    # The VAE's GroupNorms from per-chunk statistics (group_norm.py): no copy of each activation before
    # its reduction. Run S5, H100, SD VAE decode at 512 px: 7.78 -> 6.33 ms, pixels as far from eager as before.
    # The SDXL UNet's GroupNorms the same way (run S7): UNet stage 8.80 against 8.65 ms, no gain: not kept.
    split_group_norm: bool = True
    # Each CLIP text-encoder layer's Q/K/V as one matrix product (clip_qkv.py): a prompt change runs the
    # text encoders at 77 tokens, six ~4 us GEMMs a layer, launch-bound (Run S5: SDXL's two 2.73 ms).
    fused_text_qkv: bool = True
    # "calls": each model call compiled whole; "blocks": the denoiser's repeated blocks one by one
    # (regions.py): a few small graphs to compile instead of one of the whole U-Net.
    compile_scope: str = "calls"
    # False: the text encoders run eagerly, still captured in the frame's CUDA graphs: no Dynamo trace of
    # them at start (run S7: their graph took 8.2 s of a warm start; S5: 31.8 s of a cold one), unfused kernels
    # in each prompt change. An A/B for the start-up targets (issue 27).
    compile_text: bool = True
    # torch.compile mode of the denoiser (its call, or its blocks): "max-autotune-no-cudagraphs" times
    # Triton templates against cuBLAS/cuDNN for each of its matrix products and convolutions (a longer
    # first compile, kept in the compile cache), "max-autotune-epilogue" with epilogue fusion (COMPILE_MODES);
    # the denoiser is the largest stage with the tiny VAE.
    denoiser_mode: str = "default"


DECODER_MODES = ("default", "max-autotune-no-cudagraphs")  # CUDA graphs are ours (graphs.py): none of Inductor's
# The denoiser's also: max-autotune with the matrix products' pointwise epilogues fused into Triton templates
# (configure_compile_cache turns that fusion off, as diffusers' SDXL recipe does; at batch 1, where the
# UNet's ~1400 kernels are bound by launches and gaps, fewer kernels may matter more: an A/B on the card).
EPILOGUE_MODE = "max-autotune-epilogue"
COMPILE_MODES = (*DECODER_MODES, EPILOGUE_MODE)


def compile_options(mode: str) -> dict:
    """torch.compile's keyword arguments for one of ``COMPILE_MODES`` (a mode, or Inductor options)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode {mode!r}: one of {', '.join(COMPILE_MODES)}")
    if mode == EPILOGUE_MODE:
        from torch._inductor import list_mode_options

        return {"options": {**list_mode_options("max-autotune-no-cudagraphs"), "epilogue_fusion": True}}
    return {"mode": None if mode == "default" else mode}


def prepare_modules(modules: list[torch.nn.Module], device: torch.device, tuning: Tuning = Tuning(),
                    decoder: torch.nn.Module | None = None) -> None:
    """channels_last and fused QKV projections where the module supports them (SDPA is default);
    ``decoder`` (the VAE) keeps its layout unless ``tuning.vae_channels_last``, and on CUDA gets its
    GroupNorms as ``SplitGroupNorm`` with ``tuning.split_group_norm``; on CUDA the CLIP text encoders'
    attention layers get one Q/K/V projection with ``tuning.fused_text_qkv``. The eager CPU path keeps
    diffusers' and transformers' own modules, whose pixels the families' tests match exactly."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = tuning.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if decoder is not None and tuning.split_group_norm:
            swapped = swap_group_norms(decoder)
            log.debug("VAE: %d GroupNorm(s) computed from per-chunk statistics", swapped)
    for module in modules:
        if hasattr(module, "fuse_qkv_projections"):
            module.fuse_qkv_projections()
        if device.type == "cuda" and tuning.fused_text_qkv:
            from .clip_qkv import fuse_clip_qkv  # here: transformers' modeling code takes seconds to import

            fused = fuse_clip_qkv(module)  # CLIP text encoders only: nothing else here has CLIP attention
            if fused:
                log.debug("%s: %d attention layer(s) with one Q/K/V projection", type(module).__name__, fused)
        if device.type == "cuda" and any(isinstance(m, torch.nn.Conv2d) for m in module.modules()) \
                and (module is not decoder or tuning.vae_channels_last):
            module.to(memory_format=torch.channels_last)


def compiled(fn: Callable, device: torch.device, mode: str = "default") -> Callable:
    """torch.compile, static shapes, one full graph; CUDA graphs are captured per whole frame
    (``graphs.py``), so Inductor's own per-function CUDA graphs stay off (``mode``: one of ``COMPILE_MODES``)."""
    return torch.compile(fn, fullgraph=True, dynamic=False, **compile_options(mode))


class CompileCounter:
    """Counts Dynamo's compiles while registered (its compile callbacks), for progress lines."""

    def __init__(self) -> None:
        self.done = 0
        self.last_s = 0.0
        self._started = 0.0
        self._handler = getattr(getattr(torch._dynamo, "callback", None), "callback_handler", None)

    def _start(self, _args) -> None:
        self._started = time.perf_counter()

    def _end(self, _args) -> None:
        self.done += 1
        self.last_s = time.perf_counter() - self._started

    def __enter__(self) -> CompileCounter:
        if self._handler is not None:
            self._handler.register_start_callback(self._start)
            self._handler.register_end_callback(self._end)
        return self

    def __exit__(self, *exc) -> None:
        if self._handler is not None:
            self._handler.remove_start_callback(self._start)
            self._handler.remove_end_callback(self._end)

    def __str__(self) -> str:
        if not self.done:
            return "tracing and compiling the first graph"
        return f"{self.done} graph(s) compiled so far, the last in {self.last_s:.1f} s"


@contextmanager
def progress(label: str, every: float = 10.0, compiling: bool = False):
    """Log ``label`` at start, every ``every`` seconds while the block runs, and when it ends.

    ``compiling``: the lines also say how many graphs Dynamo compiled so far (a cold start of the
    full model compiles for minutes: the operator sees it move)."""
    done = threading.Event()
    start = time.perf_counter()
    counter = CompileCounter() if compiling else None
    log.info("%s ...", label)

    def tick() -> None:
        while not done.wait(every):
            log.info("%s: still working, %.0f s%s", label, time.perf_counter() - start,
                     f" ({counter})" if counter is not None else "")

    ticker = threading.Thread(target=tick, name="progress", daemon=True)
    ticker.start()
    try:
        with counter if counter is not None else contextlib.nullcontext():
            yield
    finally:
        done.set()
        ticker.join()
        log.info("%s: done in %.1f s%s", label, time.perf_counter() - start,
                 f" ({counter.done} graph(s) compiled)" if counter is not None else "")
