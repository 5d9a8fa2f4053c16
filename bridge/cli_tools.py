"""The measuring commands: ``turbo-bridge bench`` (frame rate, latency, VRAM and stage times of the
renderer in this process) and ``turbo-bridge latency`` (OSC in to frame out, through a real daemon):
their options and what they run. Torch is imported only once a command runs."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from .config import default_cache_dir
from .core.errors import ConfigError

log = logging.getLogger("bridge")
ParseServe = Callable[[list[str]], argparse.Namespace]


def add_bench(sub) -> None:
    bench = sub.add_parser("bench", help="measure frame rate, latency, VRAM and stage times on this machine")
    bench.add_argument("--model", default="random",
                       help="'random'/'random-sd'/'random-sd15'/'random-sdxs'/'random-sana'/'random-sana-1.6b' (full "
                            "SDXL-Turbo/SD-Turbo/SD 1.5/SDXS-512/SANA-Sprint 0.6B/1.6B architecture, random weights; "
                            "no download), 'demo', 'demo-sd', 'demo-sd15', 'demo-sdxs', 'demo-sana', "
                            "a folder or a single .safetensors file")
    bench.add_argument("--weights", choices=["random"], default=None, help="same as --model random")
    bench.add_argument("--device", default=None,
                       help="cuda, cuda:1 or cpu (default: cuda if present). On the CPU a full-size model is refused "
                            "with an estimate of its run time unless --device cpu is given")
    bench.add_argument("--frames", type=int, default=100,
                       help="timed frames per run (after one untimed); profiled frames per size with --modes kernels, "
                            "per size and change with --modes timeline; lone frames per variant with --modes lone "
                            "(at most 30)")
    bench.add_argument("--sizes", default="512", help="comma-separated, e.g. 512,640,768,1024")
    bench.add_argument("--dtypes", default="bf16", help="comma-separated: bf16,fp16")
    bench.add_argument("--vaes", default=None, help="comma-separated: full,tiny (default: both, or full alone for a "
                       "family without a tiny decoder: SANA-Sprint)")
    bench.add_argument("--modes", default="prompt,seed",
                       help="what changes every frame: prompt, seed, input (a new input image: VAE encode + "
                            "image-to-image), img2img (the seed of an image-to-image frame), control (ControlNets: a "
                            "new prompt, a new control image every frame, two ControlNets; with diffusers' ControlNet "
                            "pipeline as a second baseline), t2i (one T2I-Adapter: a new prompt, a new control image "
                            "every frame; with diffusers' adapter pipeline as a baseline), lora (switching LoRAs), "
                            "ip-adapter (style images: adapter off, an unchanged style image, style_scale moved, a new "
                            "style image every frame; loads 'demo' with --model demo, else 'random': SDXL IP-Adapter "
                            "with a ViT-H image encoder), decode (the full VAE's decode alone, for every setting of "
                            "--vae-compile-modes, --cudnn-benchmark and --vae-channels-last), kernels (where each "
                            "stage's GPU time goes: --frames frames with a new prompt each under torch.profiler, per "
                            "stage the busy, idle and gap time, the kernels by category and the top 12; a compiled "
                            "CUDA renderer profiles each stage replayed as its CUDA graph and launched without one), "
                            "timeline (where an overlapped frame's interval goes, as --overlap on runs it: three "
                            "CUDA streams; a new prompt, then a new seed, every frame, --frames frames under "
                            "torch.profiler; per frame between publications the GPU's busy and idle time, the CPU "
                            "phase each idle gap fell in (begin, collect, publish), each stream's busy time and "
                            "kernels by category, the time streams ran at once, the longest gaps; with the interval "
                            "unprofiled beside), lone (where a lone change's frame spends its time: --frames frames, "
                            "at most 30, a new prompt and seed each after a 50 ms pause, rendered overlap off, on, "
                            "on with the pixels collected on another thread as the daemon does, and on split into "
                            "its streams as before the lone frame's one graph; unprofiled, "
                            "then under torch.profiler: the CPU's time before the first kernel, the GPU's span, "
                            "busy and idle, the time after the last kernel, each stream's busy time)")
    bench.add_argument("--tilings", default="none", help="comma-separated: none,x,y,xy (seamless tiling on vs off)")
    bench.add_argument("--sinks", default="", help="comma-separated: record,ndi: each run again with these sinks "
                       "on the render thread (their publish time measured; ndi needs cyndilib)")
    bench.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                       help="torch.compile + CUDA graphs, as serve's --compile (auto: on for CUDA, off on the CPU)")
    bench.add_argument("--no-baseline", action="store_true", help="skip the plain diffusers call")
    bench.add_argument("--memory-budget-gb", type=float, default=None,
                       help="cap this process's GPU memory (e.g. 24) to show the run fits")
    # Removed with FP8, its only other value; still read so an old script gets FP8_REMOVED, not argparse's usage
    bench.add_argument("--precision", default=None, help=argparse.SUPPRESS)
    bench.add_argument("--overlap", default="off",
                       help="comma-separated: off, on, decode, urgent, lanes2, lanes3, lanes4 (each mode again as a "
                            "stream whose next frame begins while this one decodes, as serve --overlap on: frames/s "
                            "between publications and latency; decode: the decode stream alone, without the text "
                            "stream, for a comparison; urgent: as on, the text stream at a high CUDA priority; lanesN: "
                            "as on with serve's --render-lanes N, N frames in flight)")
    bench.add_argument("--vae-compile-modes", default="default",
                       help="comma-separated: default, max-autotune-no-cudagraphs (the VAE decoder's torch.compile "
                            "mode); frame runs take the first, --modes decode times each")
    bench.add_argument("--cudnn-benchmark", default="off",
                       help="comma-separated: off, on (as above; on picks engines by timing, per thread: the "
                            "daemon keeps it off so the same params give the same pixels)")
    bench.add_argument("--vae-channels-last", default="on", help="comma-separated: on, off (as above)")
    bench.add_argument("--fused-text-qkv", default="on", choices=["on", "off"],
                       help="one Q/K/V matrix product per CLIP text-encoder layer on the compiled CUDA path (off: "
                            "three, as transformers runs them): run prompt or kernels modes with each to compare")
    bench.add_argument("--denoiser-compile-mode", default="default",
                       choices=COMPILE_MODES,
                       help="the denoiser's torch.compile mode (max-autotune: Triton templates timed against "
                            "cuBLAS/cuDNN per matrix product and convolution, a much longer first compile; "
                            "-epilogue: with their pointwise epilogues fused in, which the default turns off; "
                            "run S10, H100: max-autotune made SDXL's U-Net slower, 10.9 against about 8.5 ms)")
    bench.add_argument("--compile-scope", default="calls", choices=["calls", "blocks"],
                       help="as serve's --compile-scope: each model call compiled whole, or the denoiser's repeated "
                            "blocks one by one (the table gives the first frame's compile)")
    bench.add_argument("--compile-text", default="on", choices=["on", "off"],
                       help="as serve's --compile-text: off runs the text encoders eagerly inside the frame graphs")
    bench.add_argument("--cache-dir", type=Path, default=None,
                       help="as serve's --cache-dir (demo model, compile caches)")
    bench.add_argument("--json", type=Path, default=Path("bench.json"), help="where to write the figures")


def add_latency(sub) -> None:
    latency = sub.add_parser("latency", help="OSC in -> frame in shared memory, through a real daemon")
    latency.add_argument("--model", default="null",
                         help="'null' (no GPU work: the bridge's own overhead), 'random', ...")
    latency.add_argument("--vae", default="full", help="the daemon's --vae: full or tiny")
    latency.add_argument("--size", type=int, default=512, help="the frames' width and height")
    latency.add_argument("--count", type=int, default=300, help="changes measured (after 10 untimed ones)")
    latency.add_argument("--rate", type=float, default=20.0, help="changes per second (steady)")
    latency.add_argument("--input", default="none", choices=["none", "shm", "rest"],
                         help="what each change is: none (an OSC prompt change), shm or rest (a new input image: "
                              "image-to-image from this process's input segment, or PUT /v1/input)")
    latency.add_argument("--control", default="", metavar="NAME",
                         help="steer every frame with ControlNet or T2I-Adapter NAME (pass its --controlnet "
                              "NAME=SOURCE to the daemon after --): a fixed control image at scale 0.8")
    latency.add_argument("--stream-rate", type=float, default=0.0, metavar="HZ",
                         help="after the one-at-a-time changes, --count changes at HZ that do not wait for frames "
                              "(a slider, a sequencer): frames per second and change-to-frame p50 of that stream")
    latency.add_argument("--stream-seeds", action="store_true",
                         help="with --stream-rate: then as many changes again at HZ, each a new seed alone with "
                              "the prompt unchanged (the text encoders' output is reused): that stream's figures")
    latency.add_argument("--channels", type=int, default=1,
                         help="N > 1: N channels, each a closed loop of new prompts (total and per-channel FPS, "
                              "one channel's OSC-to-frame p50 alone and with the others; and what the daemon "
                              "rendered in each phase: frames, rounds, batches by rows, batches in flight)")
    latency.add_argument("--seconds", type=float, default=20.0, help="with --channels: length of each phase")
    latency.add_argument("--json", type=Path, default=None, help="also write the figures here")
    latency.add_argument("daemon_args", nargs=argparse.REMAINDER, help="after --: more `serve` options")


def _csv(text: str, kind=str) -> tuple:
    return tuple(kind(part) for part in text.split(",") if part)


FP8_REMOVED = ("--precision was removed with FP8, its only other value: FP8 measured slower than bf16 on an H100 "
               "(SDXL-Turbo, 512x512, full VAE: 46.1 vs 49.1 FPS, UNet 10.12 vs 8.73 ms; docs/benchmarks.md, "
               "2026-12-06); leave --precision out (bf16 or fp16: --dtypes)")
DECODER_MODES = ("default", "max-autotune-no-cudagraphs")  # as bridge.pipeline.speed.optimize (no torch here)
COMPILE_MODES = (*DECODER_MODES, "max-autotune-epilogue")  # the denoiser's: as optimize.COMPILE_MODES


def _switches(option: str, text: str) -> tuple[bool, ...]:
    return tuple(value == "on" for value in _choices(option, text, ("off", "on")))


def _choices(option: str, text: str, accepted: tuple[str, ...]) -> tuple[str, ...]:
    values = _csv(text)
    wrong = [v for v in values if v not in accepted]
    if wrong or not values:
        raise ConfigError(f"{option} takes a comma-separated list of {', '.join(accepted)}; got {text!r}")
    return values


def bench_options(args: argparse.Namespace):
    """``bench``'s options: the device resolved, ``--compile auto`` as serve reads it (on for CUDA only)."""
    if args.precision is not None:  # before torch is imported: an old script's error comes at once
        raise ConfigError(FP8_REMOVED)
    from .bench import run as bench
    from .bench.report import OVERLAP_MODES
    from .pipeline.loading import loader

    device = args.device or loader.default_device()
    model = "random" if args.weights else args.model
    vaes = _csv(args.vaes) if args.vaes else ("full", "tiny") if loader.model_family(model).tiny_vae else ("full",)
    return bench.BenchOptions(
        model=model, device=device,
        frames=args.frames, sizes=_csv(args.sizes, int), dtypes=_csv(args.dtypes), vaes=vaes,
        modes=_csv(args.modes), tilings=_csv(args.tilings), sinks=_csv(args.sinks),
        compile=loader.compile_wanted(args.compile, device), baseline=not args.no_baseline,
        memory_budget_gb=args.memory_budget_gb,
        overlaps=_choices("--overlap", args.overlap, OVERLAP_MODES),
        vae_compile_modes=_choices("--vae-compile-modes", args.vae_compile_modes, DECODER_MODES),
        cudnn_benchmarks=_switches("--cudnn-benchmark", args.cudnn_benchmark),
        vae_channels_lasts=_switches("--vae-channels-last", args.vae_channels_last),
        fused_text_qkv=args.fused_text_qkv == "on", compile_scope=args.compile_scope,
        compile_text=args.compile_text == "on",
        denoiser_mode=args.denoiser_compile_mode,
        cache_dir=args.cache_dir or default_cache_dir())


def run_bench_command(args: argparse.Namespace) -> None:
    from .bench import cpu_estimate
    from .bench import run as bench
    from .pipeline.loading import loader

    opts = bench_options(args)
    loader.check_device(args.device, opts.device)
    if not opts.device.startswith("cuda"):
        cpu_estimate.guard("bench", opts.model, args.device, cpu_estimate.bench_work(opts))
    report = bench.run_bench(opts, args.json)
    sys.stdout.write(bench.format_report(report) + "\n")
    log.info("figures written to %s", args.json)


def check_latency_device(args: argparse.Namespace, daemon_args: list[str], parse_serve: ParseServe) -> None:
    """``latency`` runs ``serve`` with ``daemon_args``: a full-size model on the CPU is refused (or, with
    ``--device cpu`` after ``--``, warned) with an estimate, like ``bench``."""
    if args.model == "null":  # no model, no torch
        return
    from .bench import cpu_estimate
    from .pipeline.loading import loader

    serve = parse_serve(["--model", args.model, *daemon_args])
    device = serve.device or loader.default_device()
    loader.check_device(serve.device, device)
    if not device.startswith("cuda"):
        # the 10 warm-up changes, the timed ones, then as many again as a stream (--stream-rate), and again (seeds)
        streams = (1 + args.stream_seeds) if args.stream_rate > 0 else 0
        frames = args.channels if args.channels > 1 else args.count * (1 + streams) + 10
        dtype = "fp32" if serve.dtype == "auto" else serve.dtype
        cpu_estimate.guard("latency", args.model, serve.device, [cpu_estimate.Work(frames, args.size, args.vae, dtype)])


def run_latency_command(args: argparse.Namespace, parse_serve: ParseServe) -> None:
    """``parse_serve(options)``: the daemon's ``serve`` options as the CLI parses them (its device, dtype)."""
    daemon_args = [a for a in args.daemon_args if a != "--"]
    if args.stream_seeds and not args.stream_rate > 0:
        raise ConfigError("--stream-seeds follows a stream of changes: add --stream-rate HZ (e.g. 200)")
    check_latency_device(args, daemon_args, parse_serve)
    if args.channels > 1:
        from .bench import multichannel

        report = multichannel.run_multichannel(args.model, args.vae, args.size, args.channels, args.seconds,
                                               daemon_args)
        sys.stdout.write(multichannel.format_multichannel(report) + "\n")
        if args.json:
            args.json.write_text(multichannel.to_json(report))
        return
    from .bench.latency import format_latency, run_latency, to_json

    report = run_latency(args.model, args.vae, args.size, args.count, args.rate, daemon_args, via=args.input,
                         control=args.control, stream_rate_hz=args.stream_rate, stream_seeds=args.stream_seeds)
    sys.stdout.write(format_latency(report) + "\n")
    if args.json:
        args.json.write_text(to_json(report))
