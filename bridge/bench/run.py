"""``turbo-bridge bench``: frame rates, stage times and memory of the render path, measured on this machine.

VRAM (before load, loaded, first frame, after N frames, peak), first-frame latency, median
FPS and jitter over N frames, a per-stage breakdown, bf16 vs fp16, sizes, full vs tiny VAE,
what changes every frame (the prompt, the seed, the input image: encoded and rendered
image-to-image, or the seed of an image-to-image frame), and the plain diffusers call as the
baseline in the same run. ``--model random`` (default) builds the full SDXL-Turbo architecture with random
weights: compute does not depend on weight values, so no download is needed.

The command's run: the baselines, every (dtype, VAE) configuration (``bench_measure.py``, with
the frames of each mode from ``bench_frames.py``), the memory budget's verdict, and the figures
saved to JSON after each step; ``bench_report.py`` formats them for the terminal.
"""

from __future__ import annotations

import itertools
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import torch

from ..outputs.shm import ShmWriter
from ..pipeline.speed.optimize import configure_compile_cache
from . import control as bench_control
from . import style as bench_style
from .frames import OWN_RUNS, PROMPT
from .measure import BenchOptions, baseline, free_memory, measure, stats, sync
from .memory_budget import MemoryBudget, OverBudget, out_of_memory
from .report import format_report

__all__ = ["BenchOptions", "format_report", "machine", "run_bench"]  # what the CLI and the GPU tests import

log = logging.getLogger(__name__)


def _profiling(modes) -> Iterator[tuple[str, Callable]]:
    """(mode, its rows' measure) of the profiling modes asked for, imported only then (the profiler's
    modules): ``kernels``, each stage's GPU time kernel by kernel (kernels.py); ``timeline``, an
    overlapped frame's interval GPU stream by stream (timeline.py); ``lone``, a lone frame's time,
    overlap off against on (lone_timeline.py)."""
    if "kernels" in modes:
        from .kernels import measure_kernels

        yield "kernels", measure_kernels
    if "timeline" in modes:
        from .timeline import measure_timeline

        yield "timeline", measure_timeline
    if "lone" in modes:
        from .lone_timeline import measure_lone

        yield "lone", measure_lone


def run_bench(opts: BenchOptions, json_path: Path | None) -> dict:
    """Every run of ``opts``; the report so far is saved to ``json_path`` after each step (a crash keeps it)."""
    device = torch.device(opts.device)
    if opts.compile:
        configure_compile_cache(opts.cache_dir)
    budget = MemoryBudget.apply(opts.memory_budget_gb, device) if opts.memory_budget_gb is not None else None
    report: dict = {"machine": machine(device), "options": {k: (str(v) if isinstance(v, Path) else v)
                                                              for k, v in asdict(opts).items()}, "runs": []}

    def save() -> None:
        if json_path:
            json_path.write_text(json.dumps(report, indent=2))

    if opts.baseline:
        try:
            report["baseline"] = baseline(opts, device)
            log.info("baseline: median %.2f ms", report["baseline"]["median_ms"])
        except Exception as exc:  # the plain call not fitting the budget is a finding, not the end
            if budget is None or not out_of_memory(exc):
                raise
            report["baseline_error"] = str(budget.over("the plain diffusers call, the baseline", exc))
            log.warning("%s", report["baseline_error"])
            free_memory(device)
        save()
        if bench_control.wanted(opts.modes):
            report["control_baseline"] = bench_control.baseline(opts, device, stats, sync, PROMPT)
            free_memory(device)
            log.info("ControlNet baseline: median %.2f ms", report["control_baseline"]["median_ms"])
            save()
        if bench_control.wanted_t2i(opts.modes):
            report["t2i_baseline"] = bench_control.baseline_t2i(opts, device, stats, sync, PROMPT)
            free_memory(device)
            log.info("T2I-Adapter baseline: median %.2f ms", report["t2i_baseline"]["median_ms"])
            save()
    if "decode" in opts.modes:  # the VAE decode alone, per decoder knob setting (bench/decode.py)
        from .decode import measure_decode

        for dtype_name in opts.dtypes:
            report.setdefault("decode", []).extend(measure_decode(opts, device, dtype_name))
            free_memory(device)
            save()
    for mode, measure_rows in _profiling(opts.modes):
        for dtype_name, vae_name in itertools.product(opts.dtypes, opts.vaes):
            for rows in measure_rows(opts, device, dtype_name, vae_name):
                report.setdefault(mode, []).extend(rows)
                save()
            free_memory(device)
    frame_modes = [m for m in opts.modes if m not in OWN_RUNS]
    with ShmWriter(f"tb-bench-{uuid.uuid4().hex[:8]}", max(opts.sizes), max(opts.sizes)) as shm:
        for dtype_name, vae_name in itertools.product(opts.dtypes, opts.vaes):
            if not frame_modes:
                break
            try:
                runs = measure(opts, device, dtype_name, vae_name, shm, report.setdefault("lora", []))
            except Exception as exc:
                if budget is None or not out_of_memory(exc):
                    raise
                error = budget.over(f"{dtype_name}, {vae_name} VAE, sizes {opts.sizes}, modes {opts.modes}", exc)
                report["memory_budget"] = {**budget.verdict(report["runs"]), "fits": False, "error": str(error)}
                save()
                raise error from None
            report["runs"] += [asdict(r) for r in runs]
            if bench_style.wanted(opts.modes):
                report.setdefault("ip_adapter", []).extend(bench_style.summary(runs))
            if budget is not None:
                report["memory_budget"] = budget.verdict(report["runs"])
            save()
    if budget is not None and not report["memory_budget"]["fits"]:
        raise OverBudget(f"every run finished under the allocator's cap, but the device had "
                         f"{report['memory_budget']['peak_in_use_gb']} GB in use (CUDA context included): more than "
                         f"the {opts.memory_budget_gb:g} GB budget. Figures in {json_path}")
    return report


def machine(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(card=props.name, memory_gb=round(props.total_memory / 1e9, 1), cuda=torch.version.cuda)
    return info
