"""``turbo-bridge bench --modes decode``: the full VAE's decode alone, for each decoder knob setting.

With the full VAE the decode is the largest stage of a frame (7.7 ms of 19 on an H100), its time
in the convolutions at 256 and 512 px. For every combination of ``--vae-compile-modes``,
``--cudnn-benchmark`` and ``--vae-channels-last`` the decoder is compiled afresh on a fresh thread
(a fresh cuDNN plan cache), captured as a CUDA graph as in a frame, and replayed on the same latents:
median and p99 ms, the compile time, and the largest pixel difference from the first combination (a
knob may change rounding, not the picture). The knobs that help become ``speed/optimize.Tuning``'s
defaults, but cuDNN's benchmark stays off (frames must not depend on the thread: ``Tuning``).
"""

from __future__ import annotations

import itertools
import logging
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from ..pipeline.families.registry import family_of_pipeline
from ..pipeline.loading import loader
from ..pipeline.speed.optimize import compiled
from .measure import BenchOptions, stats, sync

log = logging.getLogger(__name__)

REPLAYS = 100


def measure_decode(opts: BenchOptions, device: torch.device, dtype_name: str) -> list[dict]:
    dtype = loader.DTYPES[dtype_name]
    pipe = loader.load_pipeline(opts.model, str(device), dtype, opts.cache_dir)  # the full VAE
    parts = family_of_pipeline(pipe).parts(pipe, device, dtype)
    vae = parts.decoder.module
    size = opts.sizes[0]
    shape = parts.denoiser.latent_shape(size, size)
    latents = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(0)).to(device, dtype)

    def decode(latents: torch.Tensor) -> torch.Tensor:  # the renderer's decode of one frame (ModelCalls)
        return parts.decoder.decode(latents)[0]

    def timed(mode: str, benchmark: bool, channels_last: bool) -> tuple:
        loader.bind_thread(str(device))
        torch._dynamo.reset()
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = benchmark
            vae.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        fn = compiled(decode, device, mode) if opts.compile else decode
        started = time.perf_counter()
        with torch.inference_mode():
            fn(latents)  # compiles (and, with max-autotune, benchmarks its kernel choices)
            sync(device)
            compile_s = time.perf_counter() - started
            run = _graphed(fn, latents) if device.type == "cuda" else (lambda: fn(latents))
            times = []
            for _ in range(REPLAYS):
                start = time.perf_counter()
                pixels = run()
                sync(device)
                times.append((time.perf_counter() - start) * 1e3)
            return pixels.cpu().numpy().astype(int), compile_s, times

    results, first = [], None
    for mode, benchmark, channels_last in itertools.product(opts.vae_compile_modes, opts.cudnn_benchmarks,
                                                            opts.vae_channels_lasts):
        # Each on a thread of its own: cuDNN keeps its plans per thread, keyed without the benchmark
        # flag, so on one thread the first combination's engines would be every later one's.
        with ThreadPoolExecutor(1, thread_name_prefix="decode-knobs") as thread:
            pixels, compile_s, times = thread.submit(timed, mode, benchmark, channels_last).result()
        first = pixels if first is None else first
        results.append({"dtype": dtype_name, "size": size, "compile_mode": mode, "cudnn_benchmark": benchmark,
                        "channels_last": channels_last, **stats(times), "compile_s": round(compile_s, 1),
                        "max_abs_vs_first": int(abs(pixels - first).max()),
                        "mean_ms": round(statistics.fmean(times), 3)})
        log.info("VAE decode %s", results[-1])
    return results  # the caller frees the device memory once the model is dropped


def _graphed(fn, latents: torch.Tensor):
    """One CUDA graph of the decode, as a frame replays it; a call replays it on ``latents``."""
    from ..pipeline.speed.graphs import FrameGraphs

    graph = FrameGraphs().get(("decode",), fn, lambda: {"latents": torch.zeros_like(latents)})
    return lambda: graph.run(latents=latents)
