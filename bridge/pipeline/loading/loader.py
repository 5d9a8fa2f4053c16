"""Loading a pipeline once at start: a hub id, a local folder, a single-file checkpoint, or a
demo/random model of a bundled architecture (``demo.py``; families: ``families/``)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import torch

from ...core.errors import ConfigError, ModelNotFoundError, UnsupportedModelError
from ..families.family import Family
from ..families.registry import FAMILIES, SUPPORTED, family_of_index, family_of_pipeline
from ..families.sana import SANA
from ..families.sd2 import SD2
from ..families.sd15 import SD15
from ..families.sdxl import SDXL
from ..speed.optimize import progress

log = logging.getLogger(__name__)

DEFAULT_MODEL = "stabilityai/sdxl-turbo"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(requested: str | None, device: str) -> None:
    """Refuse, in one line, a device this torch cannot use; log one line when a GPU sits unused."""
    from .devices import TorchBuild
    from .devices import check_device as verdict

    warning = verdict(TorchBuild.current(), requested, device)
    if warning:
        log.warning("%s", warning)


def compile_wanted(choice: str, device: str) -> bool:
    """``--compile``: ``auto`` compiles on CUDA only (on the CPU compiling takes minutes and gains little)."""
    return choice == "on" or (choice == "auto" and device.startswith("cuda"))


def bind_thread(device: str) -> None:
    """Make ``device`` this thread's current CUDA device (the render thread of that device).

    Streams, events and CUDA graph captures use the thread's current device: without this, the
    render thread of ``cuda:1`` would capture on ``cuda:0``'s stream.
    """
    index = torch.device(device).index
    if device.startswith("cuda") and index is not None:  # plain "cuda" is the current device already
        torch.cuda.set_device(index)


def all_devices() -> list[str]:
    """``--device all``: every CUDA device (one resident pipeline each)."""
    check_device("all", "cuda")  # a CPU-only torch or no visible GPU: said in one line
    count = torch.cuda.device_count()
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


def model_family(model: str) -> Family:
    """The family a ``--model`` value will load as, without loading it (for the tiny VAE's choice)."""
    from .demo import NAMES
    from .single_file import detect_family, is_single_file

    if model in NAMES:
        return NAMES[model][0]
    local = Path(model).expanduser()
    if local.is_file() or is_single_file(model):
        return detect_family(local) if local.is_file() else SDXL
    if (local / "model_index.json").is_file():
        return _folder_family(local)
    return next((family for hints, family in HUB_HINTS if any(hint in model.lower() for hint in hints)), SDXL)


# A hub id's family before it is downloaded (its steering is checked before anything loads); the
# loaded pipeline's own class and text encoder decide in the end (``family_of_pipeline``).
HUB_HINTS = ((("sana",), SANA), (("sd-turbo", "stable-diffusion-2", "sdxs-512"), SD2),
             (("stable-diffusion-v1", "sd-v1", "sd15", "sd-1.5", "sd1.5", "lcm-sd15", "sdv1-5"), SD15))


def _folder_family(folder: Path) -> Family:
    index = json.loads((folder / "model_index.json").read_text())
    text = folder / "text_encoder/config.json"
    family = family_of_index(index, json.loads(text.read_text()) if text.is_file() else None)
    if family is None:
        raise UnsupportedModelError(
            f"{folder} is a {index.get('_class_name', 'unknown')} model folder; --model takes {SUPPORTED} models")
    return family


def _with_scheduler(pipe, scheduler: str | None):
    """Replace the model's scheduler by the ``--scheduler`` one (built from the model's config)."""
    from ..families.schedule import scheduler_named

    if scheduler:
        try:
            pipe.scheduler = scheduler_named(scheduler, pipe.scheduler.config)
        except ValueError as exc:
            raise ConfigError(f"--scheduler: {exc}") from None
    try:
        family_of_pipeline(pipe).sampler(pipe.scheduler)
    except ValueError as exc:
        raise ConfigError(f"{exc}; pick one with --scheduler") from None
    return pipe


def load_pipeline(model: str, device: str, dtype: torch.dtype, cache_dir: Path, vae=None,
                  scheduler: str | None = None, configs: Path | None = None):
    """Load a pipeline of a known family onto ``device``; raises ``ModelNotFoundError`` or
    ``UnsupportedModelError`` with a way out.

    ``model``: a hub id, a local diffusers folder, a single-file ``.safetensors`` checkpoint in
    the original (LDM/SGM) layout, ``demo``/``demo-sd``/``demo-sd15``/``demo-sdxs`` (small, random
    weights, built once into ``cache_dir``) or ``random``/``random-sd``/``random-sd15``/``random-sdxs``/
    ``random-sana``/``random-sana-1.6b``
    (the full architecture with random weights, in memory: for benchmarks; compute does not depend
    on weight values). ``vae``, if
    given, replaces the pipeline's own VAE (which is then not loaded). ``scheduler``: a
    ``--scheduler`` name replacing the model's own scheduler. ``configs``: for a single file,
    a diffusers folder of its architecture instead of the bundled one (the demo models' files).
    """
    _quiet_transformers()
    from .demo import NAMES
    from .single_file import detect_family, is_single_file, load_single_file

    if model in NAMES and not NAMES[model].demo:
        from .demo import build_random_pipeline

        arch = NAMES[model].architecture
        with progress(f"building the full {arch.configs.name} architecture ({arch.family.name}) with random weights"):
            pipe = build_random_pipeline(demo=False, dtype=dtype, device=device, vae=vae, family=arch)
        return _with_scheduler(pipe, scheduler)
    if model in NAMES:
        from .demo import ensure_demo

        source = str(ensure_demo(cache_dir, NAMES[model].architecture))
    else:
        source = model
    local = Path(source).expanduser()
    if is_single_file(source) and not local.exists():
        raise ModelNotFoundError(f"model file {source} does not exist")
    if local.is_file():
        family = detect_family(local)
        start = time.perf_counter()
        log.info("loading %s (%s single file) onto %s (%s)", local, family.name, device,
                 str(dtype).removeprefix("torch."))
        try:
            pipe = load_single_file(local, family, dtype, vae=vae, configs=configs)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise UnsupportedModelError(
                f"{local.name}: keys look like {family.description} but it did not load as one "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
        return _finish(pipe, device, dtype, start, scheduler)
    if local.exists() and not (local / "model_index.json").is_file():
        raise ModelNotFoundError(
            f"{source} is not a diffusers model folder (no model_index.json); pass a folder saved "
            "with save_pretrained, a single .safetensors checkpoint, a hub id such as stabilityai/sdxl-turbo, "
            "or --model demo")
    # A folder's family is read from its model_index.json (refusing SD 1.x, SD3, FLUX... in one
    # line); a hub id's from the pipeline class diffusers resolves.
    family = _folder_family(local) if local.exists() else None
    start = time.perf_counter()
    log.info("loading %s onto %s (%s)", source, device, str(dtype).removeprefix("torch."))
    target = str(local) if local.exists() else source
    kwargs = {"dtype": dtype, **({"vae": vae} if vae is not None else {})}
    if not local.exists() and dtype != torch.float32:
        kwargs["variant"] = "fp16"  # the published half-precision weights: half the download
    import diffusers

    cls = getattr(diffusers, family.pipeline) if family else diffusers.DiffusionPipeline
    try:
        try:
            pipe = cls.from_pretrained(target, **kwargs)
        except ValueError as exc:  # no fp16 variant in that repository: take the full weights
            if "variant" not in str(exc) or "variant" not in kwargs:
                raise
            kwargs.pop("variant")
            pipe = cls.from_pretrained(target, **kwargs)
    except OSError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")
        raise ModelNotFoundError(
            f"model {source!r} is not available{' (HF_HUB_OFFLINE is set)' if offline else ''}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. Download it once with "
            f"network access (`hf download {DEFAULT_MODEL}`), pass a local diffusers folder, "
            "or run offline with --model demo (random weights, noise frames)") from exc
    if type(pipe).__name__ not in {family.pipeline for family in FAMILIES.values()}:
        raise UnsupportedModelError(f"{source} is a {type(pipe).__name__}; --model takes {SUPPORTED} models")
    return _finish(pipe, device, dtype, start, scheduler)


def _finish(pipe, device: str, dtype: torch.dtype, start: float, scheduler: str | None):
    if dtype == torch.float16 and getattr(pipe.vae.config, "force_upcast", False):
        pipe.vae.to(torch.float32)  # the SDXL VAE overflows in fp16; bf16 has the range
    pipe.to(device)
    if torch.device(device).type == "cpu":
        _own_weights(pipe)
    pipe.set_progress_bar_config(disable=True)
    log.info("%s model loaded in %.1f s", family_of_pipeline(pipe).name, time.perf_counter() - start)
    return _with_scheduler(pipe, scheduler)


def _own_weights(pipe) -> None:
    """On the CPU, copy every weight into memory of its own, one tensor at a time.

    Loaders map safetensors files and, on the CPU, may keep the tensors there: a file replaced or
    truncated on disk under a running daemon would change or fault its weights, and a mapped tensor
    starts wherever the file puts it (8-byte aligned) where a copy is 64-byte aligned. The CPU's matrix
    kernels round by alignment: the same weights gave another pooled text embedding (2.4e-7) and other
    pixels loaded from a folder than from a single file (transformers 5.25, safetensors 0.8). On a GPU,
    ``pipe.to`` has copied them already."""
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            _own_module_weights(module)


def _own_module_weights(module: torch.nn.Module) -> None:
    """``_own_weights`` for one module (one loaded apart from a pipeline)."""
    for tensor in (*module.parameters(), *module.buffers()):
        tensor.data = tensor.data.clone()


def load_tiny_vae(source: str, model: str, device: str, dtype: torch.dtype,
                  way_out: str = "pass a local folder with --vae PATH; --vae full needs no extra download"):
    """The model family's tiny decoder: ``tiny`` (hub madebyollin/taesdxl or madebyollin/taesd)
    or a local folder; ``way_out``: what the error for one not downloaded offers besides the download.

    With a demo or random model it is built from the bundled config with random weights, like
    the rest of those pipelines.
    """
    _quiet_transformers()
    from diffusers import AutoencoderTiny

    from .demo import NAMES, no_tiny_decoder

    family = model_family(model)
    no_tiny_decoder(family)
    if model in NAMES and source == "tiny":
        from .demo import build_tiny_vae

        return build_tiny_vae(dtype, device, family)
    target = family.tiny_vae if source == "tiny" else source
    try:
        vae = AutoencoderTiny.from_pretrained(target, dtype=dtype)
    except OSError as exc:
        raise ModelNotFoundError(
            f"tiny VAE {target!r} is not available: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. "
            f"Download it once with network access (`hf download {target}`) or {way_out}") from exc
    vae = vae.to(device).eval().requires_grad_(False)
    if torch.device(device).type == "cpu":
        # As a loaded pipeline's own modules (``_finish``): a tiny VAE that stays out of the pipeline
        # (--batch-vae tiny, a random model's --vae PATH) would otherwise keep the file's mapped pages.
        _own_module_weights(vae)
    return vae


def tiny_vae_for_batches(pipe, model: str, device: str, dtype: torch.dtype):
    """``--batch-vae tiny``: the family's tiny VAE to decode batches of channels' frames with, or None where the
    pipeline's own VAE is a tiny one already (``--vae tiny``, a tiny VAE folder, SDXS-512's own decoder): the
    batches decode with that one, and nothing more loads."""
    from diffusers import AutoencoderTiny

    if isinstance(pipe.vae, AutoencoderTiny):
        return None
    return load_tiny_vae("tiny", model, device, dtype, way_out="use --batch-vae same (no extra download)")


def not_available(what: str, source: str, exc: OSError, local: str, builders: str) -> ModelNotFoundError:
    """The error for a model that is neither here nor downloadable, with the ways out."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ModelNotFoundError(f"{what} {source!r} is not available: {reason}. Download it once with network access "
                              f"(`hf download {source}`), pass {local}, or use {builders} (random weights)")
