"""The terminal report of ``turbo-bridge bench``: the measured figures as lines and a table."""

from __future__ import annotations

from .kernel_stats import CATEGORIES

# The LoRA run's optional figures: (key, how it reads); one not measured is left out, not printed as None.
LORA_EXTRAS = (("fold_ms", "fold alone {} ms"), ("first_fold_frame_ms", "first fold's frame {} ms"),
               ("first_switch_frame_ms", "first switch's frame {} ms"), ("switch_max_ms", "slowest switch {} ms"),
               ("switch_slow", "stalled switches (frame, ms) {}"))


OVERLAP_MODES = ("off", "on", "decode", "urgent", "lanes2", "lanes3", "lanes4")  # bench --overlap


def lanes_of(overlap: str) -> int:
    """The render lanes of a bench overlap mode: N for "lanesN" (serve's --render-lanes N), else one."""
    return int(overlap.removeprefix("lanes")) if overlap.startswith("lanes") else 1


def overlap_mode(value: str | bool | None) -> str:
    """A run's overlap as off, on, decode, urgent or lanesN (reports written before the text stream said true
    or false)."""
    if value is True:
        return "on"
    return "off" if value is None or value is False else value


def format_report(report: dict) -> str:
    lines = [f"machine: {report['machine']}"]
    budget = report.get("memory_budget")
    if budget:
        lines.append(f"memory budget {budget['budget_gb']:g} GB (allocator capped at {budget['allocator_cap_gb']} GB "
                     f"of the card's {budget['card_gb']:g} GB, {budget['context_gb']} GB CUDA context): "
                     f"{'fits' if budget['fits'] else 'does NOT fit'}; peak allocated "
                     f"{budget['peak_allocated_gb']} GB, reserved {budget['peak_reserved_gb']} GB, device in use "
                     f"{budget['peak_in_use_gb']} GB (CUDA context included)")
    if report.get("baseline_error"):
        lines.append(f"baseline: {report['baseline_error']}")
    base = report.get("baseline")
    if base:
        lines.append(f"baseline ({base['what']}): median {base['median_ms']:.2f} ms = {base['fps']:.1f} FPS")
    for key, label in (("control_baseline", "ControlNet"), ("t2i_baseline", "T2I-Adapter")):
        control = report.get(key)
        if control:
            lines.append(f"{label} baseline ({control['what']}): median {control['median_ms']:.2f} ms = "
                         f"{control['fps']:.1f} FPS")
    vram = any(r["vram_gb"] for r in report["runs"])  # measured on CUDA only: no column elsewhere
    head = ["dtype", "VAE", "size", "change/frame", "tiling", "sinks", "median ms", "FPS", "p99 ms", "std ms",
            "x baseline", "first frame s", "lone frame ms"] + (["VRAM GB used (loaded / after)"] if vram else [])
    if report["runs"]:  # none with --modes decode or kernels alone: no empty table
        lines += table_head(head)
    for r in report["runs"]:
        # from the frame rate: an overlapped stream's (with render lanes, bursty) is its length's, not its median's
        ratio = f"{base['median_ms'] * r['fps'] / 1e3:.1f}" if base and base["size"] == r["size"] else "-"
        streams = overlap_mode(r.get("overlap"))
        kind = {"on": "", "decode": " (decode only)", "urgent": " (urgent text stream)"}.get(
            streams, f" ({lanes_of(streams)} render lanes)" if streams.startswith("lanes") else f" ({streams})")
        begin = f", begin {r['begin_ms']:.2f} ms" if r.get("begin_ms") is not None else ""
        dtype = r["dtype"] + ("" if streams == "off" else f" + overlap{kind} (latency {r['latency_ms']:.2f} ms{begin})")
        cells = [dtype, r["vae"], r["size"], r["mode"], r.get("tiling", "none"), r.get("sinks", "shm"),
                 f"{r['median_ms']:.2f}", f"{r['fps']:.1f}", f"{r['p99_ms']:.2f}", f"{r['std_ms']:.2f}", ratio,
                 "-" if r["first_frame_s"] is None else r["first_frame_s"],  # an overlapped run: none of its own
                 "-" if r.get("lone_ms") is None else f"{r['lone_ms']:.2f}"]  # a report from before it: none
        if vram:
            v = r["vram_gb"]
            cells.append(f"{v.get('loaded', '-')} / {v.get('after_frames', '-')} "
                         f"(peak alloc {v.get('peak_allocated', '-')})")
        lines.append(table_row(cells))
    for r in report.get("decode", []):
        lines.append(f"VAE decode alone ({r['dtype']}, {r['size']}, compile mode {r['compile_mode']}, cuDNN benchmark "
                     f"{'on' if r['cudnn_benchmark'] else 'off'}, "
                     f"channels-last {'on' if r['channels_last'] else 'off'}): "
                     f"median {r['median_ms']:.3f} ms, p99 {r['p99_ms']:.3f}; max |diff| from the first variant "
                     f"{r['max_abs_vs_first']}; compile {r['compile_s']:.1f} s")
    lines += kernel_lines(report.get("kernels", []))
    lines += timeline_lines(report.get("timeline", []))
    lines += lone_lines(report.get("lone", []))
    for r in report.get("lora", []):
        lines.append(f"LoRA ({r['dtype']}, {r['vae']} VAE, {r['what']}): base {r['base_ms']:.2f} ms, folded "
                     f"{r['folded_ms']:.2f} ms ({r['folded_vs_base_pct']:+.2f}%), switching frame "
                     f"{r['switch_frame_ms']:.2f} ms (+{r['switch_extra_ms']:.2f}, p99 {r['switch_p99_ms']:.2f}), "
                     f"weight moved every frame {r['reweight_frame_ms']:.2f} ms (+{r['reweight_extra_ms']:.2f}), "
                     "no recompile" + _measured(r, LORA_EXTRAS))
    for r in report.get("ip_adapter", []):
        extras = ", ".join(f"{k.removesuffix('_extra_ms')} {v:+.2f}" for k, v in r.items() if k.endswith("_extra_ms"))
        lines.append(f"IP-Adapter ({r['dtype']}, {r['vae']} VAE, {r['size']}, new seed every frame)"
                     + _measured(r, (("style_off_ms", "adapter off {:.2f} ms"),)) + f"; ms added per frame: {extras}; "
                     "no recompile")
    for r in report["runs"]:
        for name, ms in r.get("sink_ms", {}).items():
            lines.append(f"render-thread cost of the {name} sink ({r['vae']} VAE, {r['size']}, {r['mode']}, tiling "
                         f"{r.get('tiling', 'none')}): median {ms['median']:.3f} ms, p99 {ms['p99']:.3f}, "
                         f"max {ms['max']:.3f}")
    for r in report["runs"]:
        if r["stages_ms"]:
            stages = ", ".join(f"{k} {v:.2f}" for k, v in r["stages_ms"].items())
            what = {"input": "new input", "control_prompt": "one ControlNet, prompt change",
                    "t2i_prompt": "one T2I-Adapter, prompt change",
                    "style_new": "IP-Adapter, new style image"}.get(r["mode"],
                                                                                                  "prompt change")
            lines.append(f"stages ms ({r['dtype']}, {r['vae']} VAE, {r['size']}, {what}, synced per stage): {stages}")
    return "\n".join(lines)


def _measured(figures: dict, parts: tuple[tuple[str, str], ...]) -> str:
    """The parts whose figure was measured (present, not None), each after ", "; nothing for the rest."""
    return "".join(f", {template.format(figures[key])}" for key, template in parts if figures.get(key) is not None)


def kernel_lines(rows: list[dict]) -> list[str]:
    """``--modes kernels``: a table of the stages' GPU time per frame, by category, then each stage's
    top kernels (``bench/gpu_summary.py`` prints the same lines)."""
    if not rows:
        return []
    lines = [("GPU kernels per frame by stage, ms (new prompt every frame, synced per stage; path graphs: each stage "
              "replayed as its CUDA graph, launches: the same compiled functions, every kernel launched on its own; "
              "runs: the stage's runs per frame, busy: some kernel running, idle: the stage's window less busy, "
              "gaps: idle between its first and last kernel; per category: ms (kernels)):"),
             *table_head(["dtype", "VAE", "size", "path", "stage", "runs", "window", "busy", "idle", "gaps", "kernels",
                          "mean us", *CATEGORIES])]
    for r in rows:
        cells = [r["dtype"], r["vae"], r["size"], r["path"], r["stage"], _figure(r["runs"], "g"),
                 *(_figure(r[k], ".3f") for k in ("window_ms", "busy_ms", "idle_ms", "gaps_ms")), f"{r['kernels']:g}",
                 _figure(r["mean_us"], ".1f")]
        cells += [f"{c['ms']:.3f} ({c['count']:g})" if c else "-" for c in (r["categories"].get(k) for k in CATEGORIES)]
        lines.append(table_row(cells))
    seen: dict[tuple[str, str], float] = {}
    for r in rows:
        seen[r["path"], r["device"]] = seen.get((r["path"], r["device"]), 0) + r["kernels"]
    for (path, device), count in seen.items():
        if not count:
            lines.append(f"no device kernels seen on path {path}: " + (
                "profiled on the CPU, whose ops are no device kernels (the windows are the stages' times)"
                if device != "cuda" else "this torch/CUPTI reports no kernels inside CUDA graph replays; read the "
                "launches rows"))
    for r in rows:
        if r["top"]:
            lines.append(f"top kernels ({r['dtype']}, {r['vae']} VAE, {r['size']}, {r['path']}, {r['stage']}), "
                         "ms per frame, kernels per frame, category:")
            lines += [f"  {t['ms']:8.3f}  x{t['count']:<6g} {t['category']:<11} {t['name']}" for t in r["top"]]
    return lines


def timeline_lines(rows: list[dict]) -> list[str]:
    """``--modes timeline``: per (size, change) the medians of a frame between publications, then each
    stream's share and the longest idle gaps (``bench/gpu_summary.py`` prints the same lines)."""
    if not rows:
        return []
    lines = [("Overlapped frames (--overlap on: render, text and decode streams), medians per frame between two "
              "publications, ms: interval unprofiled and profiled, busy: some kernel on some stream, idle: none, "
              "at once: two or more streams busy, idle by gap length, idle by the CPU phase it fell in:"),
             *table_head(["dtype", "VAE", "size", "change", "unprofiled", "interval", "busy", "idle", "at once",
                          "longest gap us", "idle in gaps <10us / 10-100us / >=100us", "idle during"])]
    for r in rows:
        gaps = r["idle_by_gap_ms"]
        cells = [r["dtype"], r["vae"], r["size"], r["change"],
                 *(_figure(r[k], ".3f") for k in ("unprofiled_interval_ms", "interval_ms", "busy_ms", "idle_ms",
                                                   "overlap_ms")),
                 _figure(r["longest_gap_us"], ".1f"),
                 " / ".join(f"{v:.3f}" for v in gaps.values()) if gaps else "-",
                 _named_or_dash(r["idle_in_ms"])]
        lines.append(table_row(cells))
    for r in rows:
        what = f"({r['dtype']}, {r['vae']} VAE, {r['size']}, new {r['change']})"
        if r.get("note"):
            lines.append(f"timeline {what}: {r['note']}")
        lines.append(f"CPU phases {what}, ms per frame: " + _named(r["cpu_ranges_ms"]))
        lines += _streams_and_gaps(r, what, "frame")
    return lines


def lone_lines(rows: list[dict]) -> list[str]:
    """``--modes lone``: per (size, variant) the medians of a lone frame's call and its parts, then each
    stream's busy time and the longest idle gaps inside the calls (``bench/gpu_summary.py`` prints the same)."""
    if not rows:
        return []
    lines = [("Lone frames (a new prompt and seed after a pause; off: render_batch, on: begin_batch and its result, "
              "on-publisher: the result on another thread, as the daemon, on-split: on with lone_whole off), medians, "
              "ms: the call unprofiled and profiled, the CPU before the first kernel, the GPU from first to last "
              "kernel, busy in it, idle in it, after the last:"),
             *table_head(["dtype", "VAE", "size", "variant", "unprofiled", "call", "to first kernel", "GPU span",
                          "busy", "idle in span", "after last kernel", "kernels", "idle during"])]
    for r in rows:
        cells = [r["dtype"], r["vae"], r["size"], r["variant"],
                 *(_figure(r[k], ".3f") for k in ("unprofiled_ms", "call_ms", "to_first_kernel_ms", "span_ms",
                                                   "busy_ms", "idle_in_span_ms", "after_last_kernel_ms")),
                 f"{r['kernels']:g}", _named_or_dash(r["idle_in_ms"])]
        lines.append(table_row(cells))
    for r in rows:
        what = f"({r['dtype']}, {r['vae']} VAE, {r['size']}, {r['variant']})"
        if r.get("note"):
            lines.append(f"lone {what}: {r['note']}")
        lines += _streams_and_gaps(r, what, "call")
    return lines


def _streams_and_gaps(r: dict, what: str, unit: str) -> list[str]:
    """A timeline row's streams (busy, alone, kernels by category), then its longest idle gaps, each in
    its ``unit`` (a frame between publications, a lone call)."""
    lines = []
    for s in r["streams"]:
        lines.append(f"  {s['name']} {what}: busy {s['busy_ms']:.3f} ms, alone {s['alone_ms']:.3f}, "
                     f"{s['kernels']:g} kernels; {_named(s['categories'])}")
    if r["gaps"]:
        lines.append(f"  longest idle gaps {what}: " + "; ".join(
            f"{g['us']:.1f} us at {g['at_us']:.1f} us of {unit} {g['frame']} "
            f"({', '.join(g['during']) or 'no range'})" for g in r["gaps"]))
    return lines


def table_head(columns: list[str]) -> list[str]:
    """A markdown table's header and its rule, one cell per column (also bench/gpu_summary.py's tables)."""
    return [table_row(columns), "|" + " --- |" * len(columns)]


def table_row(cells: list) -> str:
    """A markdown table's row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _named(figures: dict[str, float]) -> str:
    """Figures as "name value, name value", three decimals, in the order given ("" for none)."""
    return ", ".join(f"{k} {v:.3f}" for k, v in figures.items())


def _named_or_dash(figures: dict[str, float] | None) -> str:
    """A table cell of ``_named`` figures: "-" for none (also a report from before they were measured)."""
    return _named(figures) if figures else "-"


def _figure(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
