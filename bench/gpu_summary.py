"""The summary table of a GPU session (bench/gpu_session.sh): ``python bench/gpu_summary.py OUT``.

Reads what the session left in OUT (junit XML of the test files, the JSON of bench and latency
runs) and prints one short table per kind; a missing file is a step that did not run or was cut.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def tests(out: Path) -> list[str]:
    """One row per junit file (and one per failed test under it), then the totals; none without files."""
    from bridge.bench.report import table_head, table_row

    columns = ["test file", "passed", "failed", "errors", "skipped", "s"]
    lines, total = [], [0] * 4
    for xml in sorted(out.glob("junit-*.xml")):
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        n, failed, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        counts = [n - failed - errors - skipped, failed, errors, skipped]
        total = [a + b for a, b in zip(total, counts)]
        lines.append(table_row([xml.stem.removeprefix("junit-"), *counts, f"{float(suite.get('time', 0)):.0f}"]))
        for case in suite.iter("testcase"):
            for bad in (*case.findall("failure"), *case.findall("error")):
                failure = f"  FAILED {case.get('name')}: {(bad.get('message') or '')[:150]}"
                lines.append(table_row([failure] + [""] * (len(columns) - 1)))
    return [*table_head(columns), *lines, table_row(["all", *total, ""])] if lines else []


def benches(out: Path) -> list[str]:
    from bridge.bench.report import overlap_mode, table_head, table_row

    lines = []
    for path in sorted(out.glob("bench-*.json")):
        report = json.loads(path.read_text())
        base = report.get("baseline")
        lines.append(f"{path.name}: {report['machine'].get('card')}, torch {report['machine']['torch']}"
                     + (f"; plain diffusers call {base['median_ms']:.2f} ms" if base else ""))
        if report["runs"]:  # none with --modes timeline alone: no empty table
            lines += table_head(["size", "VAE", "change", "overlap", "median ms", "FPS", "p99 ms", "latency ms",
                                 "begin ms", "x baseline", "first frame s", "lone frame ms"])
        for r in report["runs"]:  # FPS: an overlapped stream's from its length (render lanes publish in bursts)
            ratio = f"{base['median_ms'] * r['fps'] / 1e3:.1f}" if base else "-"
            begin = f"{r['begin_ms']:.2f}" if r.get("begin_ms") is not None else "-"
            lines.append(table_row([r["size"], r["vae"], r["mode"], overlap_mode(r.get("overlap")),
                                    f"{r['median_ms']:.2f}", f"{r['fps']:.1f}", f"{r['p99_ms']:.2f}",
                                    f"{r.get('latency_ms') or r['median_ms']:.2f}", begin, ratio,
                                    r.get("first_frame_s") or "-", r.get("lone_ms") or "-"]))
        for r in report["runs"]:
            if r.get("stages_ms"):
                lines.append(f"stages ({r['size']}, {r['vae']}): "
                             + ", ".join(f"{k} {v:.2f}" for k, v in r["stages_ms"].items()))
        vram = {(r["size"], r["vae"]): r.get("vram_gb") for r in report["runs"] if r.get("vram_gb")}
        for (size, vae), v in vram.items():
            lines.append(f"VRAM ({size}, {vae}), GB: in use {v.get('after_frames')}, loaded {v.get('loaded')}, "
                         f"peak allocated {v.get('peak_allocated')}")
    for path in sorted(out.glob("decode-*.json")):
        for r in json.loads(path.read_text()).get("decode", []):
            lines.append(f"{path.stem}: VAE decode {r['compile_mode']}, cudnn benchmark {r['cudnn_benchmark']}, "
                         f"channels-last {r['channels_last']}: {r['median_ms']:.3f} ms (p99 {r['p99_ms']:.3f}), "
                         f"max |diff| {r['max_abs_vs_first']}, compile {r['compile_s']} s")
    return lines


def source(path: Path, report: dict) -> str:
    """The line above a profiling run's rows: its file, card, torch and model."""
    machine = report["machine"]
    return f"{path.name}: {machine.get('card')}, torch {machine['torch']}, model {report['options']['model']}"


def kernels(out: Path) -> list[str]:
    """``bench --modes kernels`` runs: the report's own table and top kernels (``bridge/bench/report.py``)."""
    from bridge.bench.report import kernel_lines

    lines = []
    for path in sorted(out.glob("kernels-*.json")):
        report = json.loads(path.read_text())
        lines.append(source(path, report))
        lines += kernel_lines(report.get("kernels", []))
    return lines


def timelines(out: Path) -> list[str]:
    """``bench --modes timeline`` and ``lone`` rows, from any bench JSON: the report's own lines
    (``bridge/bench/report.py``)."""
    from bridge.bench.report import lone_lines, timeline_lines

    lines = []
    for path in sorted(out.glob("bench-*.json")):
        report = json.loads(path.read_text())
        if report.get("timeline") or report.get("lone"):
            lines.append(source(path, report))
            lines += timeline_lines(report.get("timeline", [])) + lone_lines(report.get("lone", []))
    return lines


def latencies(out: Path) -> list[str]:
    lines = []
    for path in sorted([*out.glob("latency-*.json"), *out.glob("start-*.json")]):
        r = json.loads(path.read_text())
        stream, seeds, lone = r.get("stream") or {}, r.get("seed_stream") or {}, r.get("lone_batches")
        lines.append(f"{path.stem}: OSC->frame p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f}, "
                     f"render {r['mean_render_ms']:.2f}, start to ready {r['startup_s']} s"
                     + (f" ({', '.join(f'{k} {v}' for k, v in r['startup_phases'].items())})"
                        if r.get("startup_phases") else "")
                     + (f"; lone batches {lone['lone_collected_here']} collected on the render thread, "
                        f"{lone['lone_handed_over']} handed over" if lone else "")
                     + (f"; stream {stream['fps']:.1f} FPS, p50 {stream['p50_ms']:.2f} ms" if stream else "")
                     + (f"; seed stream {seeds['fps']:.1f} FPS, p50 {seeds['p50_ms']:.2f} ms" if seeds else ""))
    for path in sorted(out.glob("channels*.json")):
        r = json.loads(path.read_text())
        # what the daemon rendered in that phase (bridge/bench/phase_render.py); runs before S9 did not record it
        together = r.get("together_phase")
        lines.append(f"{path.stem}: alone {r['alone_fps']:.1f} FPS p50 {r['alone_p50_ms']:.2f}; "
                     f"{r['channels']} channels {r['total_fps']:.1f} FPS ({r['speedup']:.2f}x), "
                     f"per channel {r['per_channel_fps']}, p50 {r.get('per_channel_p50_ms')}"
                     + (f"; together: {together['frames']} frames in {together['batches']} batches "
                        f"({together['mean_rows_per_batch']:.2f} rows each; rows: batches {together['batch_rows']}), "
                        f"batches in flight {together['mean_batches_in_flight']}" if together else "")
                     + f" (overlap {r.get('overlap', 'not recorded')})")
    one, two = out / "channels4-one-gpu.json", out / "channels8-two-gpus.json"
    if one.exists() and two.exists():  # issue 31's target: >= 1.9x
        ratio = json.loads(two.read_text())["total_fps"] / json.loads(one.read_text())["total_fps"]
        lines.append(f"8 channels on two GPUs against 4 on one, total frames/s: {ratio:.2f}x")
    return lines


def probes(out: Path) -> list[str]:
    """The JSON line each probe step printed last (bench/precompile_probe.py), by step; the lanes probe's JSON."""
    lines = []
    order = ("cold", "warm", "save", "load")  # the part's order
    for log in sorted(out.glob("precompile-*.log"), key=lambda f: order.index(f.stem.split("-")[-1])
                      if f.stem.split("-")[-1] in order else len(order)):
        found = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]
        lines.append(f"{log.stem}: {found[-1] if found else 'no result (see its log)'}")
    for path in sorted(out.glob("lanes-probe*.json")):
        lines.append(f"{path.stem}: {json.dumps(json.loads(path.read_text()))}")
    return lines


def main(out: Path) -> None:
    # benches and kernels format with bridge/bench/report.py: this checkout's (it imports no torch)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    for title, lines in (("GPU tests", tests(out)), ("bench", benches(out)), ("kernels by stage", kernels(out)),
                         ("timelines (overlapped, lone)", timelines(out)), ("through the daemon", latencies(out)),
                         ("probes", probes(out))):
        if lines:
            print(f"== {title}")
            print("\n".join(lines))
    info = out / "gpu.txt"
    if info.exists():
        print("== machine\n" + info.read_text().strip())
    steps = out / "steps.txt"
    if steps.exists():
        print("== steps (rc 124: cut by its time limit)\n" + steps.read_text().strip())


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "gpu-out"))
