"""``turbo-bridge bench --modes control``: ControlNets in the live path, and diffusers' ControlNet
pipeline call as the baseline in the same run.

``control`` expands to three runs: one full-size ControlNet with a new prompt every frame
(``control_prompt``), the same with a new control image every frame (``control_image``: scaled
and uploaded per frame, never a recompile), and two ControlNets at once (``control_two``). With
``--model random`` the ControlNets are the full-size SDXL architecture with random weights
(compute does not depend on weight values); with ``--model demo``, demo ControlNets.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import torch

from ..core.controls import ControlNetSpec
from ..core.params import Params
from ..core.scene import InputImage, Scene
from . import loader
from .controlnet import ControlNets, load_controlnet

RUNS = ("control_prompt", "control_image", "control_two")
NAMES = ("depth", "edges")
SCALE = 0.8
_variation = itertools.count()


def expand(modes: tuple[str, ...]) -> tuple[str, ...]:
    """``control`` stands for its three runs."""
    return tuple(run for mode in modes for run in (RUNS if mode == "control" else (mode,)))


def wanted(modes: tuple[str, ...]) -> bool:
    return any(mode in RUNS for mode in expand(modes))


def source(model: str) -> str:
    return "demo" if model == "demo" else "random"


def controlnets(model: str, unet_config, device: str, dtype: torch.dtype) -> ControlNets:
    return ControlNets({name: load_controlnet(ControlNetSpec(name, source(model)), unet_config, device, dtype)
                        for name in NAMES})


def params(mode: str, i: int, size: int, base: Params) -> Params:
    names = NAMES if mode == "control_two" else NAMES[:1]
    prompt = f"{base.prompt}, variation {next(_variation)}" if mode == "control_prompt" else base.prompt
    return base.merged({"prompt": prompt, "width": size, "height": size}).merged(
        {"controls": tuple((name, (("scale", SCALE),)) for name in names)})


def _image(size: int, i: int | None) -> InputImage:
    pixels = np.random.default_rng(1).integers(0, 256, (size, size, 4), np.uint8)
    if i is not None:
        pixels[0, 0, :3] = (i & 0xFF, (i >> 8) & 0xFF, 2)  # new content: scaled and uploaded again
    return InputImage.from_pixels(pixels, "bench")


def scene(mode: str, i: int, size: int) -> Scene:
    names = NAMES if mode == "control_two" else NAMES[:1]
    return Scene(controls=tuple((name, _image(size, i if mode == "control_image" else None)) for name in names))


def baseline(opts, device: torch.device, stats, sync, prompt: str) -> dict:
    """diffusers' StableDiffusionXLControlNetPipeline as a user would call it: fp16, one ControlNet, PIL in and out."""
    from diffusers import StableDiffusionXLControlNetPipeline
    from PIL import Image

    pipe = loader.load_pipeline(opts.model, str(device), torch.float16, opts.cache_dir)
    net = load_controlnet(ControlNetSpec(NAMES[0], source(opts.model)), pipe.unet.config, str(device), torch.float16)
    pipe = StableDiffusionXLControlNetPipeline.from_pipe(pipe, controlnet=net)
    size = opts.sizes[0]
    image = Image.fromarray(_image(size, None).pixels[..., :3])
    times = []
    for i in range(5 + min(opts.frames, 30)):
        start = time.perf_counter()
        pipe(prompt=f"{prompt}, variation {i}", image=image, num_inference_steps=1, guidance_scale=0.0,
             controlnet_conditioning_scale=SCALE, height=size, width=size,
             generator=torch.Generator("cpu").manual_seed(i), output_type="pil")
        sync(device)
        if i >= 5:
            times.append((time.perf_counter() - start) * 1e3)
    del pipe, net
    return {"what": "diffusers StableDiffusionXLControlNetPipeline call, fp16, one ControlNet, PIL in and out, "
                    "prompt change every call", "size": size, **stats(times)}


