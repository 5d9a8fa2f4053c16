"""The daemon's configuration: one frozen value built by the CLI (or by tests)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .core.access import Access, HttpLimits
from .core.cluster import ClusterSpec
from .core.controls import ControlNetSpec
from .core.params import Params

DEFAULT_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8787
DEFAULT_OSC_PORT = 9000
DEFAULT_SHM_NAME = "turbo-bridge"
MAX_RENDER_LANES = 4  # --render-lanes: beyond this the UNets only wait for each other's SMs


def default_cache_dir() -> Path:
    """``$TURBO_BRIDGE_CACHE``, else ``$XDG_CACHE_HOME/turbo-bridge``, else ``~/.cache/turbo-bridge``
    (an empty variable counts as unset)."""
    if os.environ.get("TURBO_BRIDGE_CACHE"):
        return Path(os.environ["TURBO_BRIDGE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or _home() / ".cache"
    return Path(base) / "turbo-bridge"


def _home() -> Path:
    if os.environ.get("HOME") or os.name == "nt":
        return Path.home()
    import pwd  # POSIX: what Python itself falls back to when HOME is absent

    return Path(pwd.getpwuid(os.getuid()).pw_dir)


def drop_empty_home() -> bool:
    """Treat ``HOME=''`` as unset for this process and the libraries it loads.

    An empty HOME makes ``~`` expand to ``/``, so every cache (ours, the model hub's, the compiler's)
    would land in ``/.cache``; without HOME, ``~`` is the password database's home. True if dropped.
    """
    if os.environ.get("HOME") == "":
        del os.environ["HOME"]
        return True
    return False


@dataclass(frozen=True)
class Config:
    model: str = "stabilityai/sdxl-turbo"  # or a folder, a .safetensors file, "demo", "demo-sd", "random",
    # "random-sd" (full size), "null" (no GPU work)
    scheduler: str | None = None  # None: the model's own; "euler_a", "euler", "lcm", "tcd"
    vae: str = "full"  # "full", "tiny" (TAESDXL) or a local AutoencoderTiny folder
    compile: str = "auto"  # auto: on for CUDA, off for CPU
    device: str | None = None  # None: cuda if present, else cpu; or a list "cuda:0,cuda:1", or "all"
    dtype: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    host: str = DEFAULT_HOST
    http_port: int = DEFAULT_HTTP_PORT
    osc_port: int = DEFAULT_OSC_PORT
    max_size: int = 1024
    shm_name: str | None = DEFAULT_SHM_NAME  # None: no shared memory
    output_dir: Path | None = None
    keep_frames: bool = False
    ndi: str | None = None  # an NDI source of this name sends every frame
    spout: str | None = None  # a Spout sender of this name shares every frame (Windows), NAME.CHANNEL per channel
    syphon: str | None = None  # a Syphon server of this name shares every frame (macOS), NAME.CHANNEL per channel
    cache_dir: Path = field(default_factory=default_cache_dir)
    initial: Params = Params()
    # The initial fields ("width", "height") left out on the command line: they take the model
    # family's own size (its Family.default_size: 512 for SD-Turbo/SDXL-Turbo, 1024 for SANA-Sprint).
    family_size: tuple[str, ...] = ()
    # --guidance left out: the first frame (and every new channel) takes the family's own guidance
    # (Family.default_guidance: 0 for the SD families, 4.5 for SANA-Sprint).
    family_guidance: bool = False
    lora_dir: Path | None = None  # None: loras/ in the cache dir
    access: Access = Access()  # token, extra Host names, CORS origins, OSC allow-list
    http: HttpLimits = HttpLimits()  # connection caps, request head and body timeouts
    max_channels: int = 4  # live streams, main included
    controlnets: tuple[ControlNetSpec, ...] = ()  # --controlnet NAME=SOURCE, loaded at start
    canny_thresholds: tuple[float, float] = (100.0, 200.0)  # preprocess canny: low, high (grey levels)
    compile_artifacts: bool = False  # the compiler's portable cache file in cache_dir/compile/artifacts
    compile_scope: str = "calls"  # calls: each model call compiled whole; blocks: the repeated blocks one by one
    compile_text: bool = True  # False: the text encoders run eagerly inside the frame graphs (a shorter start)
    render_spin_ms: float = 0.0  # the render thread polls this long for the next job before sleeping
    overlap: bool = False  # a frame's VAE decode on a second stream while the next frame's UNet runs
    # with overlap: consecutive frames' UNets on this many CUDA streams at once (each its own graphs)
    render_lanes: int = 1
    # "tiny": a batch of two or more channels' frames decodes with the family's tiny VAE (single frames keep --vae)
    batch_vae: str = "same"
    # a round waits up to this long for the channels of the rounds before to queue again (one batch); 0: off
    batch_window_ms: float = 0.0
    # at start, also capture the batch graphs of up to this many channels at the initial size and settings (1: none)
    warm_channels: int = 1
    ip_adapter: str | None = None  # --ip-adapter SOURCE: style images (demo, random, a folder, a file, a hub id)
    cluster: ClusterSpec | None = None  # --cluster ray: render on a Ray cluster's workers instead of --device


def lora_folder(config: Config) -> Path:
    """Where LoRA files are looked up: ``--lora-dir``, else ``loras/`` in the cache dir."""
    return Path(config.lora_dir) if config.lora_dir is not None else Path(config.cache_dir) / "loras"
