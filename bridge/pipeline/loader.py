"""Loading a pipeline once at start: the hub id, a local folder, or the demo model."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

from ..core.errors import ConfigError, ModelNotFoundError
from .optimize import progress

log = logging.getLogger(__name__)

DEFAULT_MODEL = "stabilityai/sdxl-turbo"
TINY_VAE = "madebyollin/taesdxl"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def all_devices() -> list[str]:
    """``--device all``: every CUDA device (one resident pipeline each)."""
    count = torch.cuda.device_count()
    if count == 0:
        raise ConfigError("--device all: no CUDA device found; use --device cpu")
    return [f"cuda:{i}" for i in range(count)]


def resolve_dtype(name: str | None, device: str) -> torch.dtype:
    if name is None or name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return DTYPES[name]


def _quiet_transformers() -> None:
    # transformers warns at import about optional image processors the text pipeline never uses;
    # diffusers warns on every dtype cast of a model without fp32-only modules.
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    tlog.set_verbosity_error()
    dlog.set_verbosity_error()


def load_pipeline(model: str, device: str, dtype: torch.dtype, cache_dir: Path, vae=None):
    """Load a StableDiffusionXLPipeline onto ``device``; raises ``ModelNotFoundError`` with a way out.

    ``model``: a hub id, a local diffusers folder, ``demo`` (small, random weights, built once
    into ``cache_dir``) or ``random`` (the full SDXL-Turbo architecture with random weights, in
    memory: for benchmarks; compute does not depend on weight values). ``vae``, if given,
    replaces the pipeline's own VAE (which is then not loaded).
    """
    _quiet_transformers()
    from diffusers import StableDiffusionXLPipeline

    if model == "random":
        from .demo import build_random_pipeline

        with progress("building the full SDXL-Turbo architecture with random weights"):
            return build_random_pipeline(demo=False, dtype=dtype, device=device, vae=vae)
    if model == "demo":
        from .demo import ensure_demo

        source = str(ensure_demo(cache_dir))
    else:
        source = model
    local = Path(source).expanduser()
    if local.exists() and not (local / "model_index.json").is_file():
        raise ModelNotFoundError(
            f"{source} is not a diffusers model folder (no model_index.json); pass a folder saved "
            "with save_pretrained, a hub id such as stabilityai/sdxl-turbo, or --model demo")
    start = time.perf_counter()
    log.info("loading %s onto %s (%s)", source, device, str(dtype).removeprefix("torch."))
    target = str(local) if local.exists() else source
    kwargs = {"dtype": dtype, **({"vae": vae} if vae is not None else {})}
    if not local.exists() and dtype != torch.float32:
        kwargs["variant"] = "fp16"  # the published half-precision weights: half the download
    try:
        try:
            pipe = StableDiffusionXLPipeline.from_pretrained(target, **kwargs)
        except ValueError as exc:  # no fp16 variant in that repository: take the full weights
            if "variant" not in str(exc) or "variant" not in kwargs:
                raise
            kwargs.pop("variant")
            pipe = StableDiffusionXLPipeline.from_pretrained(target, **kwargs)
    except OSError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")
        raise ModelNotFoundError(
            f"model {source!r} is not available{' (HF_HUB_OFFLINE is set)' if offline else ''}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. Download it once with "
            f"network access (`hf download {DEFAULT_MODEL}`), pass a local diffusers folder, "
            "or run offline with --model demo (random weights, noise frames)") from exc
    if dtype == torch.float16 and getattr(pipe.vae.config, "force_upcast", False):
        pipe.vae.to(torch.float32)  # the SDXL VAE overflows in fp16; bf16 has the range
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    log.info("model loaded in %.1f s", time.perf_counter() - start)
    return pipe


def load_tiny_vae(source: str, model: str, device: str, dtype: torch.dtype):
    """The TAESDXL decoder: ``tiny`` (hub madebyollin/taesdxl) or a local folder.

    With the ``demo`` or ``random`` model it is built from the bundled config with random
    weights, like the rest of those pipelines.
    """
    _quiet_transformers()
    from diffusers import AutoencoderTiny

    if model in ("demo", "random") and source == "tiny":
        from .demo import build_tiny_vae

        return build_tiny_vae(dtype, device)
    target = TINY_VAE if source == "tiny" else source
    try:
        vae = AutoencoderTiny.from_pretrained(target, dtype=dtype)
    except OSError as exc:
        raise ModelNotFoundError(
            f"tiny VAE {target!r} is not available: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. "
            f"Download it once with network access (`hf download {TINY_VAE}`) or pass a local folder "
            "with --vae PATH; --vae full needs no extra download") from exc
    return vae.to(device).eval().requires_grad_(False)
