"""A model family's description: what the loaders, builders and messages read, and how the
family makes the parts the renderer holds (``parts.py``).

Each family is one module (``sdxl.py``, ``sd2.py``, ``sd15.py``, ``sana.py``) holding its ``Family`` value and its parts;
``registry.py`` lists them. The renderer and the loaders read a ``Family`` instead of branching
on the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

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
    parts: Callable[[object, str, "torch.dtype"], "Parts"]
    steering: frozenset[str]  # what besides the prompt may steer its frames (parts.STEERING names)
    # The sampler of a diffusers scheduler: sampler(scheduler) -> parts.Sampler; ValueError (one line)
    # for a scheduler the family cannot sample with (the --scheduler check at load).
    sampler: Callable[[object], "Sampler"]
    size_multiple: int = 8  # width and height are multiples of this (the latents' downscale x patch size)
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
