"""``turbo-bridge serve``: its options and the ``Config`` they make (``config_from_args``, which refuses
a bad option in one line). The daemon itself is ``bridge.app``'s; the entry point of every command
and its logging: ``cli``; the measuring commands: ``cli_tools``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .config import (
    DEFAULT_HOST,
    DEFAULT_HTTP_PORT,
    DEFAULT_OSC_PORT,
    DEFAULT_SHM_NAME,
    MAX_RENDER_LANES,
    Config,
    default_cache_dir,
)
from .core.access import Access, HttpLimits
from .core.cluster import ClusterSpec
from .core.controls import ControlNetSpec, check_specs
from .core.errors import ConfigError, ValidationError
from .core.params import Limits, Params, parse_changes
from .texshare.link import name_error


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {text}")
    return value


def add_serve(sub) -> None:
    """The ``serve`` command and its options, on the command parser's subparsers ``sub``."""
    serve = sub.add_parser("serve", help="run the daemon (REST + OSC + shared memory)")
    serve.add_argument("--model", default="stabilityai/sdxl-turbo",
                       help="hub id, local diffusers folder, single-file SDXL, SD 2.x or SD 1.x checkpoint "
                            "(.safetensors), 'demo'/'demo-sd'/'demo-sd15'/'demo-sdxs'/'demo-sana' (offline, small "
                            "SDXL/SD 2.x/SD 1.5/SDXS-512/SANA-Sprint, random weights), "
                            "'random'/'random-sd'/'random-sd15'/'random-sdxs'/'random-sana'/'random-sana-1.6b' (the "
                            "full architectures, random weights: benchmarks) or 'null' (no GPU work: measures the "
                            "bridge itself)")
    serve.add_argument("--scheduler", default=None, choices=["euler_a", "euler", "lcm", "tcd"],
                       help="sampler (default: the model's own): euler_a (SDXL-Turbo), euler (SD-Turbo; "
                            "Lightning with trailing spacing), lcm (LCM, LCM-LoRA), tcd (Hyper-SD, TCD)")
    serve.add_argument("--vae", default="full",
                       help="'full' (default), 'tiny' (TAESDXL or TAESD decoder, by model family) or a local folder")
    serve.add_argument("--controlnet", action="append", default=[], metavar="NAME=SOURCE",
                       help="an SDXL ControlNet, resident (repeatable): SOURCE is a hub id, a diffusers folder, a "
                            "single .safetensors file, 'demo' (small, random weights, for --model demo) or 'random' "
                            "(full size, random weights: benchmarks), or an SDXL T2I-Adapter (the kind read from its "
                            "config; 'demo-t2i', 'random-t2i'); its image is PUT /v1/control/NAME")
    serve.add_argument("--ip-adapter", default=None, metavar="SOURCE",
                       help="an SDXL IP-Adapter for style images (PUT /v1/style, parameter style_scale): a weight "
                            "file, a folder holding one (with image_encoder/), a hub id such as h94/IP-Adapter "
                            "(optionally /path/to/weights.safetensors), 'demo' (small, random weights, for --model "
                            "demo) or 'random' (full size with a ViT-H image encoder, random weights: benchmarks)")
    serve.add_argument("--canny-thresholds", default="100,200", metavar="LOW,HIGH",
                       help="the control images' canny preprocessing: hysteresis thresholds in grey levels")
    serve.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                       help="torch.compile + CUDA graphs (auto: on for CUDA); off keeps the eager path")
    serve.add_argument("--compile-artifacts", default="off", choices=["on", "off"],
                       help="on: load the compiler's portable cache file (cache-dir/compile/artifacts) before "
                            "compiling and write it after each compile: a restart on a machine with empty compile "
                            "caches loads instead of compiling")
    serve.add_argument("--compile-scope", default="calls", choices=["calls", "blocks"],
                       help="what torch.compile compiles: each model call whole (calls), or the denoiser's repeated "
                            "blocks one by one (blocks: smaller graphs, each class traced once, a shorter first "
                            "start; docs/benchmarks.md compares their frame rates)")
    serve.add_argument("--compile-text", default="on", choices=["on", "off"],
                       help="off: the text encoders are not compiled (run eagerly, still inside the frame's CUDA "
                            "graphs): less to compile at start, unfused kernels in each prompt change; with "
                            "--compile-scope blocks, the quick start (docs/reference/models.md)")
    serve.add_argument("--device", default=None,
                       help="cuda, cuda:1, cpu (default: cuda if present); a list (cuda:0,cuda:1) or 'all': "
                            "one resident pipeline per device, channels placed by load")
    serve.add_argument("--max-channels", type=int, default=4,
                       help="live streams (channels) at most, main included (default 4)")
    serve.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                       help="auto: bf16 on CUDA, fp32 on CPU")
    serve.add_argument("--host", default=DEFAULT_HOST,
                       help="bind address for HTTP and OSC (default loopback); any other needs --token and --osc-allow")
    serve.add_argument("--token", default=None,
                       help="HTTP/WebSocket clients must send 'Authorization: Bearer TOKEN' (default "
                            "$TURBO_BRIDGE_TOKEN, which, unlike this option, other users cannot see in ps)")
    serve.add_argument("--osc-allow", action="append", default=[], metavar="ADDRESS[/PREFIX]",
                       help="OSC senders allowed besides loopback (repeatable, or comma-separated)")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="Host header names accepted besides the bind address and localhost (repeatable)")
    serve.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                       help="web origin (scheme://host[:port]) whose pages may call the API (repeatable)")
    serve.add_argument("--http-port", type=_port, default=DEFAULT_HTTP_PORT,
                       help="HTTP port: REST, the live page, WebSocket, MJPEG (0: a free one, logged at start)")
    serve.add_argument("--osc-port", type=_port, default=DEFAULT_OSC_PORT,
                       help="OSC port, UDP (0: a free one, logged at start)")
    serve.add_argument("--max-size", type=int, default=1024, help="largest width/height accepted")
    serve.add_argument("--shm-name", default=DEFAULT_SHM_NAME, help="shared-memory segment name ('' disables)")
    serve.add_argument("--lora-dir", type=Path, default=None,
                       help="folder of LoRA files (*.safetensors, diffusers/PEFT or kohya keys), named by their "
                            "stem in the loras parameter (default: loras/ in the cache dir)")
    serve.add_argument("--output-dir", type=Path, default=None, help="keep latest.png here, replaced atomically")
    serve.add_argument("--keep-frames", action="store_true", help="with --output-dir: also frame-NNNNNN.png")
    serve.add_argument("--ndi", default=None, metavar="NAME", help="send every frame as an NDI source of this name "
                       "(needs cyndilib)")
    serve.add_argument("--spout", default=None, metavar="NAME",
                       help="Windows: share every frame as the Spout sender NAME, channel C's as NAME.C (needs "
                            "turbo-bridge[spout])")
    serve.add_argument("--syphon", default=None, metavar="NAME",
                       help="macOS: share every frame as the Syphon server NAME, channel C's as NAME.C (needs "
                            "turbo-bridge[syphon])")
    serve.add_argument("--cache-dir", type=Path, default=None,
                       help="demo model, demo LoRAs and compile caches (default $TURBO_BRIDGE_CACHE, else "
                            "$XDG_CACHE_HOME/turbo-bridge, else ~/.cache/turbo-bridge)")
    serve.add_argument("--max-connections", type=int, default=HttpLimits.max_connections,
                       help="open HTTP connections in all (lowered to leave room in the file limit); at the cap "
                            "an idle or slow one is closed, else the newcomer gets 503")
    serve.add_argument("--max-connections-per-address", type=int, default=HttpLimits.max_per_address,
                       help="open HTTP connections from one client address")
    serve.add_argument("--render-spin-ms", type=float, default=0.0, metavar="MS",
                       help="after each frame the render thread polls this long for the next change before it "
                            "sleeps (0: sleep at once); trades a CPU core while changes keep coming for less latency")
    serve.add_argument("--overlap", default="off", choices=["on", "off"],
                       help="on: while a frame's VAE decode runs (on a second CUDA stream), the next change's text "
                            "encoders and UNet start, and a new prompt's text encoders run on a third stream beside "
                            "the previous frame's UNet: more frames per second from a stream of changes; a lone "
                            "change renders as with off. Frames publish in order, latest-wins as always")
    serve.add_argument("--render-lanes", type=int, default=1, metavar="N",
                       help=f"with --overlap on: up to N frames' UNets run at once, each on a CUDA stream "
                            f"of its own with its own captured graphs (1 to {MAX_RENDER_LANES}); at batch 1 one UNet "
                            "leaves most of a large GPU idle, so a stream of changes gets more frames per second "
                            "(a lone change renders as with 1; each lane holds its own graphs' memory). Batches of "
                            "several channels, transitions, and frames with an input image, ControlNets, a style "
                            "image, a blend, classifier-free guidance or new LoRAs render one at a time. Needs "
                            "compiled frames on a GPU (elsewhere: one lane)")
    serve.add_argument("--batch-vae", default="same", choices=["same", "tiny"],
                       help="what decodes a batch of several channels' frames (one round, one shape): same (--vae's "
                            "decoder) or tiny (the family's tiny decoder, a fraction of the full VAE's cost per row: "
                            "more frames per second while several channels render; a channel's frames look slightly "
                            "different while it shares a round, a frame alone keeps --vae's decoder). Not for "
                            "SANA-Sprint, which has no tiny decoder")
    serve.add_argument("--batch-window-ms", type=float, default=0.0, metavar="MS",
                       help="with several channels: a round of frames waits up to MS for the channels of the round "
                            "before and of the batches in flight (those of one shape) to change again, so they render "
                            "as one batch instead of drifting into rounds of their own (0: a round starts with "
                            "whoever is waiting); a lone channel never waits")
    serve.add_argument("--warm-channels", type=int, default=1, metavar="N",
                       help="at start, also capture the batch graphs that rounds of 2..N channels at the initial "
                            "size and settings render with, so the first rounds of several channels replay instead of "
                            "stopping every channel while they compile (seconds to minutes each on a GPU; 1: none)")
    cluster = serve.add_argument_group("rendering on a Ray cluster (needs turbo-bridge[cluster]; docs/scaling.md)")
    cluster.add_argument("--cluster", default=None, choices=["ray"],
                         help="render the channels on a Ray cluster's renderer workers (one per GPU) instead of "
                              "--device; this daemon keeps every client door")
    cluster.add_argument("--cluster-address", default=None, metavar="HOST:PORT",
                         help="the cluster's head to join (default $RAY_ADDRESS); outside loopback it must be in "
                              "--cluster-allow and run Ray's token authentication")
    cluster.add_argument("--cluster-workers", type=int, default=None, metavar="N",
                         help="N renderer workers; without an address, start a local cluster (loopback only) for them")
    cluster.add_argument("--cluster-allow", action="append", default=[], metavar="NETWORK",
                         help="a private network the cluster's address may be in besides loopback (repeatable, or "
                              "comma-separated); Ray's ports must not be reachable from anywhere else")
    initial = serve.add_argument_group("initial parameters (diffusers' --num_inference_steps and --guidance_scale "
                                       "spellings work too)")
    initial.add_argument("--prompt", default="", help="the first frame's prompt")
    initial.add_argument("--negative-prompt", "--negative_prompt", dest="negative_prompt", default="",
                         help="what guidance steers away from (with --guidance above 0)")
    initial.add_argument("--seed", default="0", help="0 to 2**64-1")
    initial.add_argument("--steps", "--num_inference_steps", dest="steps", type=int, default=1, help="1 to 8")
    initial.add_argument("--guidance", "--guidance_scale", dest="guidance", type=float, default=None,
                         help="classifier-free guidance, 0 to 30 (0: off); SANA-Sprint's embedded guidance, 1 to "
                              "30; default: the model family's (0; SANA-Sprint: 4.5)")
    for side in ("width", "height"):
        initial.add_argument(f"--{side}", type=int, default=None,
                             help="a multiple of 8 (32 for SANA-Sprint), 64 to --max-size; default: the model "
                                  "family's size (512; SANA-Sprint: 1024)")


def config_from_args(args: argparse.Namespace) -> Config:
    from .app.warm_batches import check_warm_channels  # the daemon's package: only for serve

    if args.max_channels < 1:
        raise ValidationError("max_channels", f"--max-channels must be at least 1 (main), got {args.max_channels}")
    if args.max_size < 64 or args.max_size % 8:
        raise ValidationError("max_size", f"--max-size must be a multiple of 8, at least 64, got {args.max_size}")
    cluster = None
    if args.cluster is not None:
        if args.device is not None:
            raise ConfigError("--device places channels on this host's GPUs; with --cluster ray they render on the "
                              "cluster's workers (one per GPU): leave --device out")
        cluster = ClusterSpec.from_options(args.cluster, args.cluster_address or os.environ.get("RAY_ADDRESS") or None,
                                           args.cluster_workers, args.cluster_allow)
    elif args.cluster_address or args.cluster_workers or args.cluster_allow:
        raise ConfigError("--cluster-address, --cluster-workers and --cluster-allow go with --cluster ray")
    sizes = {side: value for side, value in (("width", args.width), ("height", args.height)) if value is not None}
    guidance = {} if args.guidance is None else {"guidance": args.guidance}
    changes = parse_changes({"prompt": args.prompt, "negative_prompt": args.negative_prompt, "seed": args.seed,
                             "steps": args.steps, **guidance, **sizes},
                            Limits(args.max_size))
    return Config(model=args.model, scheduler=args.scheduler, vae=args.vae, compile=args.compile, device=args.device,
                  dtype=args.dtype, host=args.host, http_port=args.http_port, osc_port=args.osc_port,
                  max_size=args.max_size,
                  shm_name=args.shm_name or None, output_dir=args.output_dir, keep_frames=args.keep_frames,
                  ndi=args.ndi or None, spout=_sender_name("spout", args.spout),
                  syphon=_sender_name("syphon", args.syphon),
                  cache_dir=args.cache_dir or default_cache_dir(), initial=Params().merged(changes),
                  family_size=tuple(side for side in ("width", "height") if side not in sizes),
                  family_guidance=args.guidance is None,
                  lora_dir=args.lora_dir,
                  access=Access.from_options(args.token or os.environ.get("TURBO_BRIDGE_TOKEN") or None,
                                             args.allow_host, args.cors_origin, args.osc_allow),
                  controlnets=_controlnets(args.controlnet), canny_thresholds=_thresholds(args.canny_thresholds),
                  render_spin_ms=_milliseconds("--render-spin-ms", args.render_spin_ms),
                  compile_artifacts=args.compile_artifacts == "on",
                  compile_scope=args.compile_scope, compile_text=args.compile_text == "on",
                  overlap=args.overlap == "on", render_lanes=_render_lanes(args.render_lanes, args.overlap == "on"),
                  batch_vae=args.batch_vae,
                  batch_window_ms=_milliseconds("--batch-window-ms", args.batch_window_ms),
                  warm_channels=check_warm_channels(args.warm_channels, args.max_channels),
                  ip_adapter=args.ip_adapter or None,
                  http=HttpLimits(max_connections=args.max_connections,
                                  max_per_address=args.max_connections_per_address),
                  max_channels=args.max_channels, cluster=cluster)


def _sender_name(kind: str, name: str | None) -> str | None:
    if not name:
        return None
    if (problem := name_error(kind, name)) is not None:
        raise ConfigError(f"--{kind}: {problem}")
    return name


def _controlnets(texts: list[str]) -> tuple[ControlNetSpec, ...]:
    specs = tuple(ControlNetSpec.parse(text) for text in texts)
    check_specs(specs)
    return specs


def _thresholds(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--canny-thresholds takes LOW,HIGH (e.g. 100,200), got {text!r}") from None
    if not 0 <= low <= high <= 2000:
        raise ConfigError(f"--canny-thresholds needs 0 <= LOW <= HIGH (grey-level gradients), got {text!r}")
    return low, high


def _render_lanes(lanes: int, overlap: bool) -> int:
    if not 1 <= lanes <= MAX_RENDER_LANES:
        raise ConfigError(f"--render-lanes takes 1..{MAX_RENDER_LANES}, got {lanes}")
    if lanes > 1 and not overlap:
        raise ConfigError(f"--render-lanes {lanes} runs frames side by side in the overlapped pipeline: "
                          "add --overlap on")
    return lanes


def _milliseconds(option: str, ms: float) -> float:
    """A wait in milliseconds (--render-spin-ms, --batch-window-ms): 0 to one second."""
    if not 0 <= ms <= 1000:
        raise ConfigError(f"{option} takes 0..1000 ms, got {ms:g}")
    return ms
