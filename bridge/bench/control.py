"""``turbo-bridge bench --modes control``: ControlNets in the live path, and diffusers' ControlNet
pipeline call as the baseline in the same run.

``control`` expands to three runs: one full-size ControlNet with a new prompt every frame
(``control_prompt``), the same with a new control image every frame (``control_image``: scaled
and uploaded per frame, never a recompile), and two ControlNets at once (``control_two``). With
``--model random`` the ControlNets are the full-size SDXL architecture with random weights
(compute does not depend on weight values); with ``--model demo``, demo ControlNets.

``t2i`` expands to two runs of one T2I-Adapter (``random-t2i``: the published SDXL adapter
architecture; ``demo-t2i`` with ``--model demo``): a new prompt every frame (``t2i_prompt``, the
adapter's features cached) and a new control image every frame (``t2i_image``: the adapter runs
on it), with diffusers' StableDiffusionXLAdapterPipeline call as its baseline. A mode of its own:
its graphs compile apart from the ControlNets' (minutes each, cold).
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import torch

from ..core.controls import ControlNetSpec
from ..core.params import Params
from ..core.scene import InputImage, Scene
from ..pipeline.families.registry import family_of_pipeline
from ..pipeline.loading import loader
from ..pipeline.steering.controlnet import ControlNets, load_controlnet

RUNS = ("control_prompt", "control_image", "control_two")
T2I_RUNS = ("t2i_prompt", "t2i_image")
GROUPS = {"control": RUNS, "t2i": T2I_RUNS}
NAMES = ("depth", "edges")
ADAPTER = "sketch"
SCALE = 0.8
_variation = itertools.count()


def expand(modes: tuple[str, ...]) -> tuple[str, ...]:
    """``control`` and ``t2i`` stand for their runs."""
    return tuple(run for mode in modes for run in GROUPS.get(mode, (mode,)))


def wanted(modes: tuple[str, ...]) -> bool:
    return any(mode in RUNS for mode in expand(modes))


def wanted_t2i(modes: tuple[str, ...]) -> bool:
    return any(mode in T2I_RUNS for mode in expand(modes))


def source(model: str, kind: str = "") -> str:
    """The demo ControlNet (or adapter) for a demo model, the family's full-size random one otherwise."""
    from ..pipeline.loading.demo import is_demo

    return ("demo" if is_demo(model) else "random") + kind


def controlnets(model: str, unet_config, device: str, dtype: torch.dtype,
                modes: tuple[str, ...] = ("control",)) -> ControlNets:
    specs = [ControlNetSpec(name, source(model)) for name in NAMES] if wanted(modes) else []
    if wanted_t2i(modes):
        specs.append(ControlNetSpec(ADAPTER, source(model, "-t2i")))
    family = loader.model_family(model)
    return ControlNets({spec.name: load_controlnet(spec, unet_config, device, dtype, family) for spec in specs})


def _names(mode: str) -> tuple[str, ...]:
    return NAMES if mode == "control_two" else (ADAPTER,) if mode in T2I_RUNS else NAMES[:1]


def params(mode: str, i: int, size: int, base: Params) -> Params:
    names = _names(mode)
    prompt = f"{base.prompt}, variation {next(_variation)}" if mode.endswith("_prompt") else base.prompt
    return base.merged({"prompt": prompt, "width": size, "height": size}).merged(
        {"controls": tuple((name, (("scale", SCALE),)) for name in names)})


def _image(size: int, i: int | None) -> InputImage:
    pixels = np.random.default_rng(1).integers(0, 256, (size, size, 4), np.uint8)
    if i is not None:
        pixels[0, 0, :3] = (i & 0xFF, (i >> 8) & 0xFF, 2)  # new content: scaled and uploaded again
    return InputImage.from_pixels(pixels, "bench")


def scene(mode: str, i: int, size: int) -> Scene:
    return Scene(controls=tuple((name, _image(size, i if mode.endswith("_image") else None)) for name in _names(mode)))


def _pipeline_call(opts, device: torch.device, stats, sync, prompt: str, cls, component: str,
                   spec: ControlNetSpec, scale_arg: str, what: str) -> dict:
    """A diffusers pipeline with one ControlNet or adapter as a user would call it: fp16, PIL in and out."""
    from PIL import Image

    pipe = loader.load_pipeline(opts.model, str(device), torch.float16, opts.cache_dir)
    net = load_controlnet(spec, pipe.unet.config, str(device), torch.float16, family_of_pipeline(pipe))
    pipe = cls.from_pipe(pipe, **{component: net})
    size = opts.sizes[0]
    image = Image.fromarray(_image(size, None).pixels[..., :3])
    times = []
    for i in range(5 + min(opts.frames, 30)):
        start = time.perf_counter()
        pipe(prompt=f"{prompt}, variation {i}", image=image, num_inference_steps=1, guidance_scale=0.0,
             height=size, width=size, generator=torch.Generator("cpu").manual_seed(i), output_type="pil",
             **{scale_arg: SCALE})
        sync(device)
        if i >= 5:
            times.append((time.perf_counter() - start) * 1e3)
    del pipe, net
    return {"what": f"diffusers {cls.__name__} call, fp16, {what}, PIL in and out, prompt change every call",
            "size": size, **stats(times)}


def baseline(opts, device: torch.device, stats, sync, prompt: str) -> dict:
    """diffusers' StableDiffusionXLControlNetPipeline with one ControlNet."""
    from diffusers import StableDiffusionXLControlNetPipeline

    return _pipeline_call(opts, device, stats, sync, prompt, StableDiffusionXLControlNetPipeline, "controlnet",
                          ControlNetSpec(NAMES[0], source(opts.model)), "controlnet_conditioning_scale",
                          "one ControlNet")


def baseline_t2i(opts, device: torch.device, stats, sync, prompt: str) -> dict:
    """diffusers' StableDiffusionXLAdapterPipeline with one T2I-Adapter."""
    from diffusers import StableDiffusionXLAdapterPipeline

    return _pipeline_call(opts, device, stats, sync, prompt, StableDiffusionXLAdapterPipeline, "adapter",
                          ControlNetSpec(ADAPTER, source(opts.model, "-t2i")), "adapter_conditioning_scale",
                          "one T2I-Adapter")
