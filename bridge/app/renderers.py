"""One warm renderer per device: ``--device`` resolved, each device's pipeline loaded with its
ControlNets and IP-Adapter, compiled and warmed up for the initial size, timed by start-up phase.

Runs on the device's render thread (``bridge.app.engine`` calls the renderer factory there); imports
``bridge.pipeline`` (torch, diffusers) only when called.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from dataclasses import replace

from ..config import Config, lora_folder
from ..core.errors import ConfigError
from ..core.params import SIZE_MULTIPLE, Params
from ..core.renderer import NullRenderer, Renderer
from ..core.scene import Scene
from ..engine.startup import StartupPhases
from .warm_batches import warm_batches

log = logging.getLogger(__name__)


NULL_INFO = {"model": "null", "family": "none", "device": "none", "dtype": "none", "compile": False}
PROMPT_CHECK_MAX_BYTES = 16 << 20  # a tokenizer or two; a model that came along would be gigabytes


def load_renderer(config: Config) -> tuple[Renderer, dict]:
    """Load the configured pipeline and warm it up for the initial size (on the GPU thread)."""
    log.info("cache folder %s (demo model, compile caches)", config.cache_dir)
    if config.model == "null":
        return NullRenderer(), NULL_INFO
    return _load_model(config)  # several channels' frames batched, each with its own transitions


def initial_params(config: Config, info: dict) -> Params:
    """The first frame's parameters: the sizes and guidance left out on the command line are the
    model family's own (``info["default_size"]`` within --max-size, ``info["default_guidance"]``);
    every size a multiple of the family's, the guidance one it takes."""
    default = min(info.get("default_size", config.initial.width), config.max_size)
    multiple = info.get("size_multiple", SIZE_MULTIPLE)
    family = {side: default - default % multiple for side in config.family_size}
    if config.family_guidance:
        family["guidance"] = info.get("default_guidance", config.initial.guidance)
    initial = config.initial.merged(family)
    for side in ("width", "height"):
        if getattr(initial, side) % multiple:
            raise ConfigError(f"--{side} {getattr(initial, side)}: the {info.get('family')} family renders sizes "
                              f"that are multiples of {multiple}")
    if initial.guidance < info.get("min_guidance", 0.0):
        raise ConfigError(f"--guidance {initial.guidance:g}: the {info.get('family')} family's guidance is an input "
                          f"its model was distilled with, from {info['min_guidance']:g} up "
                          f"({info['default_guidance']:g} by default: leave --guidance out); 0 does not turn it off")
    return initial


def lora_refusal(info: dict) -> str | None:
    """Why every LoRA change is refused, for a model family that takes none (``info["steering"]``)."""
    if "lora" in info.get("steering", ("lora",)):
        return None
    return f"the {info.get('family')} family takes no LoRAs (LoRAs are SD U-Net/CLIP weights)"


def load_worker_renderer(config: Config) -> tuple[Renderer, dict, Callable[[str], list[str]]]:
    """``load_renderer`` in a cluster's renderer worker (``bridge.cluster.worker``), with the prompt check
    that the daemon runs on its event loop: it pickles without the model (the family's tokenizer).

    A worker renders every round whole (``render_batch``: the daemon's queue for it waits for the frames), so
    it loads without ``--overlap``: the warm-ups (the first frame's, ``--warm-channels``' batches) then capture
    the graphs its rounds replay, not the overlap's split ones, which no worker round would ever use."""
    log.info("cache folder %s (demo model, compile caches)", config.cache_dir)
    if config.model == "null":
        return NullRenderer(), NULL_INFO, NullRenderer().prompt_warnings
    if config.overlap:
        log.info("--overlap on: a cluster worker renders each round whole (the daemon waits for its frames); "
                 "loaded without the overlap")
    channels, info = _load_model(replace(config, overlap=False))
    check = channels.inner.prompt_check
    if len(pickle.dumps(check)) > PROMPT_CHECK_MAX_BYTES:
        raise ConfigError(f"--cluster: the {channels.inner.family.name} family's prompt check does not travel without "
                          f"its model; this family renders on local devices only (--device)")
    return channels, info, check


def _load_model(config: Config):
    """The configured model family's renderer of channels (``ChannelRenderer``, or ``OverlappedRenderer``
    with --overlap on) around its warm ``DiffusersRenderer``, and its health info."""
    phases = StartupPhases()
    with phases("imports"):  # torch, diffusers, transformers: seconds before anything else can happen
        from ..pipeline.families.registry import check_steering
        from ..pipeline.loading import loader
        from ..pipeline.loading.demo import is_demo, no_tiny_decoder
        from ..pipeline.render.batch import ChannelRenderer
        from ..pipeline.render.overlapped import OverlappedRenderer
        from ..pipeline.render.renderer import DiffusersRenderer
        from ..pipeline.speed.optimize import Tuning, configure_compile_cache
        from ..pipeline.steering.demo_loras import demo_lora_folder

    # Steering the family does not support is refused before anything loads (one line naming the family).
    family = loader.model_family(config.model)
    check_steering(family, requested_steering(config))
    if config.batch_vae == "tiny":
        no_tiny_decoder(family, "--batch-vae tiny", "--batch-vae same")
    # the device's runtime (CUDA's initialisation), the compiler's set-up (Inductor's import): seconds on a GPU
    with phases("setup"):
        device = config.device if config.device not in (None, "auto") else loader.default_device()
        loader.check_device(config.device, device)  # a CPU-only torch with --device cuda: one line, no traceback
        loader.bind_thread(device)  # this is the device's render thread: everything after runs here
        dtype = loader.resolve_dtype(config.dtype, device)
        compile = loader.compile_wanted(config.compile, device)
        artifacts = None
        if compile:
            configure_compile_cache(config.cache_dir)
    if compile:
        if config.compile_artifacts:
            from ..pipeline.speed.compile_artifacts import CompileArtifacts

            artifacts = CompileArtifacts.for_renderer(config.cache_dir, config.model, config.vae, dtype, device,
                                                      **compiled_setup(config))
            with phases("compile_artifacts"):
                artifacts.load()
    elif config.compile_artifacts:
        log.info("--compile-artifacts on: nothing to do, this daemon does not compile (%s, --compile %s)", device,
                 config.compile)
    with phases("model"):  # the pipeline modules' own (lazy) imports count here
        vae = None if config.vae == "full" else loader.load_tiny_vae(config.vae, config.model, device, dtype)
        pipe = loader.load_pipeline(config.model, device, dtype, config.cache_dir, vae=vae, scheduler=config.scheduler)
        batch_vae = None  # --batch-vae same, or a pipeline whose own VAE is the tiny one
        if config.batch_vae == "tiny":
            batch_vae = loader.tiny_vae_for_batches(pipe, config.model, device, dtype)
        # before any fusing; a family without LoRAs gets none
        demo_loras = demo_lora_folder(config.cache_dir, pipe) if is_demo(config.model) and "lora" in family.steering \
            else None
        renderer = DiffusersRenderer(pipe, device, dtype, compile=compile, lora_dir=lora_folder(config),
                                     demo_loras=demo_loras,
                                     controlnets=load_controlnets(config, pipe, device, dtype),
                                     canny_thresholds=config.canny_thresholds,
                                     ip_adapter=load_ip_adapter(config, pipe, device, dtype),
                                     tuning=Tuning(compile_scope=config.compile_scope,
                                                   compile_text=config.compile_text),
                                     batch_vae=batch_vae)
    family = renderer.family
    # What the engine must know of the family: its sizes, its guidance, and the rows a frame costs
    # (guidance_mode, the denoiser's: "cfg" or "embedded"; Limits.rows).
    facts = {"default_size": family.default_size, "size_multiple": family.size_multiple,
             "default_guidance": family.default_guidance, "min_guidance": family.min_guidance,
             "guidance_mode": renderer.parts.denoiser.guidance}
    initial = initial_params(config, {**facts, "family": family.name})
    # Several channels' frames batched, each with its own transitions; with --overlap on, a batch's
    # decode runs on a second CUDA stream while the next batch begins.
    channels = OverlappedRenderer(renderer, lanes=config.render_lanes) if config.overlap else ChannelRenderer(renderer)
    if config.overlap and channels.lanes < config.render_lanes:
        log.warning("--render-lanes %d: frames here are not replayed as CUDA graphs (%s, compile %s), so they run on "
                    "one stream: one lane", config.render_lanes, device, compile)
    if compile:  # compile and capture for the initial size, the graphs the daemon will replay, before the ports open
        with phases("warm_up"):
            if config.overlap:
                channels.begin_batch([("main", initial, Scene())]).result()  # main's first frame anyway
            else:
                renderer.render(initial)
        log.info("warm-up for %dx%d done in %.1f s", initial.width, initial.height,
                 phases.seconds["warm_up"])
        if config.warm_channels > 1:  # the batch graphs of several channels, before the artefact file is saved
            with phases("warm_batches"):
                warm_batches(channels, initial, config.warm_channels)
        if artifacts is not None:
            renderer.after_compile = artifacts.save  # later sizes and graphs too
            with phases("compile_artifacts_save"):
                artifacts.save()
    elif config.warm_channels > 1:
        log.info("--warm-channels %d: nothing to capture, this daemon does not compile (%s, --compile %s)",
                 config.warm_channels, device, config.compile)
    log.info("start-up (%s): %s", device, phases.summary())
    info = {"model": config.model, "family": renderer.family.name, "scheduler": renderer.sampler, "device": device,
            "dtype": str(dtype).removeprefix("torch."), "vae": config.vae, "compile": compile,
            "compile_scope": config.compile_scope if compile else None,
            "compile_text": config.compile_text if compile else None,
            "batch_vae": config.batch_vae,  # eager too: it decides the pixels of a batch's rows
            "controlnets": {spec.name: spec.source for spec in config.controlnets},
            "t2i_adapters": sorted(renderer.controlnets.adapters), "ip_adapter": config.ip_adapter,
            "startup_s": phases.rounded(), "overlap": config.overlap,
            "render_lanes": channels.lanes if config.overlap else 1, **facts,
            "steering": sorted(renderer.family.steering)}
    return channels, info


def compiled_setup(config: Config) -> dict:
    """What the compiled graphs depend on besides the model, VAE, dtype and device (``CompileArtifacts``' name).
    ``--batch-vae tiny`` beside ``--vae full`` adds a tiny decoder's batch graphs (but for a model whose own VAE is
    tiny, SDXS-512: known once loaded, a file of its own all the same); with ``--vae tiny`` it adds none. Where it
    adds none it is left out, so that the files of every other setup keep their names."""
    batch_vae = {"batch_vae": "tiny"} if config.batch_vae == "tiny" and config.vae == "full" else {}
    return {"controlnets": [s.source for s in config.controlnets], "ip_adapter": config.ip_adapter,
            "compile_scope": config.compile_scope, **batch_vae}


def requested_steering(config: Config) -> set[str]:
    """The steering the configuration asks of the model at start (``families.parts.STEERING`` names)."""
    return ({"controlnet"} if config.controlnets else set()) | ({"ip_adapter"} if config.ip_adapter else set()) \
        | ({"lora"} if config.lora_dir is not None else set())  # an explicit --lora-dir


def resolve_devices(spec: str | None) -> list[str | None]:
    """``--device``: one device, a comma-separated list (one resident pipeline each), or ``all`` GPUs."""
    if spec is None:
        return [None]
    if spec == "all":
        from ..pipeline.loading import loader

        return loader.all_devices()
    return [part.strip() for part in spec.split(",") if part.strip()] or [None]


def load_controlnets(config: Config, pipe, device: str, dtype):
    """The ``--controlnet`` models, each loaded once (with progress) and resident."""
    from ..pipeline.families.registry import family_of_pipeline
    from ..pipeline.steering.controlnet import ControlNets, load_controlnet

    family = family_of_pipeline(pipe)
    return ControlNets({spec.name: load_controlnet(spec, pipe.unet.config, device, dtype, family)
                        for spec in config.controlnets})


def load_ip_adapter(config: Config, pipe, device: str, dtype):
    """The ``--ip-adapter`` (image encoder, projection, K/V weights), loaded once and resident; or None."""
    if config.ip_adapter is None:
        return None
    from ..pipeline.families.registry import family_of_pipeline
    from ..pipeline.steering.ip_adapter import load_ip_adapter as load

    return load(config.ip_adapter, pipe.unet, device, dtype, family_of_pipeline(pipe))
