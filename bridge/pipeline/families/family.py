"""A model family's description: what the loaders, builders and messages read, and how the
family makes the parts the renderer holds (``parts.py``).

Each family is one module (``sdxl.py``, ``sd2.py``, ``sd15.py``, ``sana.py``) holding its ``Family``
value and its parts; ``registry.py`` lists them. The renderer and the loaders read a ``Family``
instead of branching on the architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...core.params import img2img_schedule

if TYPE_CHECKING:
    import torch

    from .parts import Parts, Sampler

CONFIGS = Path(__file__).parent.parent / "configs"


@dataclass(frozen=True)
class Family:
    name: str  # reported by GET /v1/health ("sdxl", "sd2", "sd15")
    pipeline: str  # the diffusers pipeline class
    img2img_pipeline: str  # its image-to-image counterpart (reference checks)
    text_encoders: tuple[str, ...]  # pipeline attributes of the text encoders (loading, single files)
    tokenizers: tuple[str, ...]  # one per text encoder, same order
    configs: Path  # the bundled weightless model folder (configs, tokenizers, scheduler)
    tiny_vae: str | None  # hub id of the matching tiny autoencoder (None: the family has none)
    tiny_vae_config: Path | None  # its bundled config (the demo/random builders use it)
    default_size: int  # the size the model was trained at
    description: str  # for messages: what this family covers
    # The parts of a loaded pipeline of this family: parts(pipe, device, dtype) -> Parts.
    parts: Callable[[object, str, torch.dtype], Parts]
    steering: frozenset[str]  # what besides the prompt may steer its frames (parts.STEERING names)
    # The sampler of a diffusers scheduler: sampler(scheduler) -> parts.Sampler; ValueError (one line)
    # for a scheduler the family cannot sample with (the --scheduler check at load).
    sampler: Callable[[object], Sampler]
    size_multiple: int = 8  # width and height are multiples of this (the latents' downscale x patch size)
    denoiser: str = "unet"  # the denoiser's name in stage tables (benchmarks, --profile)
    # The guidance a frame gets when no client set one (--guidance left out), and the least that means
    # something: SD's 0 turns classifier-free guidance off; an embedded-guidance model was distilled
    # on values from 1 up (SANA-Sprint's card and pipeline use 4.5).
    default_guidance: float = 0.0
    min_guidance: float = 0.0
    # Image-to-image: (steps, strength) -> (schedule length, first step run), as the family's diffusers
    # img2img pipeline rounds them (core.params.img2img_schedule: SD's; scm.img2img_schedule: SANA's).
    img2img_schedule: Callable[[int, float], tuple[int, int]] = img2img_schedule
    # The plain diffusers call as its model card writes it (benchmark baselines, reference checks):
    # the dtype it loads in, and call_kwargs(steps) -> the call's extra keyword arguments.
    call_dtype: str = "fp16"
    call_kwargs: Callable[[int], dict] = lambda steps: {}

    # What its first text encoder's config says, where two families share a pipeline class (SD 1.x's
    # CLIP ViT-L: quick_gelu; SD 2.x's OpenCLIP ViT-H: gelu): how a pipeline or folder is told apart.
    text_signature: tuple[tuple[str, object], ...] = ()

    def owns(self, pipeline_class: str, text_config: dict | None) -> bool:
        """A pipeline of this class, whose first text encoder has this config (None: not known), is this family's."""
        if pipeline_class not in (self.pipeline, self.img2img_pipeline):
            return False
        return text_config is None or all(text_config.get(key) == value for key, value in self.text_signature)
