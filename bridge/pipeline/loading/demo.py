"""Random-weight pipelines of each bundled architecture, built locally: the offline demo models
(``demo``: SDXL, ``demo-sd``: SD 2.x, ``demo-sd15``: SD 1.5, ``demo-sdxs``: SDXS-512, ``demo-sana``:
SANA-Sprint) and the full-size architectures for GPU benchmarks (``random``, ``random-sd``,
``random-sd15``, ``random-sdxs``, ``random-sana``; SANA-Sprint's builders: ``sana_build.py``).

Both are written as an ordinary diffusers model folder (configs, safetensors, the real CLIP
tokenizer files bundled with the project) and loaded back through the same code path as a
downloaded model. Their frames are noise: the weights are random.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from ..families.family import CONFIGS, Family
from ..families.sana import SANA
from ..families.sd2 import SD2
from ..families.sd15 import SD15
from ..families.sdxl import SDXL
from .seeded import seeded_init

log = logging.getLogger(__name__)

REFERENCE = SDXL.configs
DEMO_VERSION = 1  # bump when the demo architecture changes, so caches rebuild

# A small SDXL: the same block types, text-time conditioning and two CLIP text encoders
# (the second with a projection), scaled down to run a 512x512 frame on two CPU cores.
DEMO_UNET = {
    "block_out_channels": [32, 64], "layers_per_block": 1, "sample_size": 64,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "attention_head_dim": [2, 4], "transformer_layers_per_block": [1, 1],
    "cross_attention_dim": 64, "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 80, "use_linear_projection": True,
    "norm_num_groups": 32, "in_channels": 4, "out_channels": 4,
}
DEMO_TEXT = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
             "num_hidden_layers": 2, "projection_dim": 32}
DEMO_VAE = {
    "block_out_channels": [8, 16, 32, 32], "layers_per_block": 1, "norm_num_groups": 4,
    "latent_channels": 4, "in_channels": 3, "out_channels": 3, "sample_size": 512,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "scaling_factor": 0.13025, "force_upcast": False,
}
# The SD 2.x demo: the same small blocks, one text encoder, no text-time conditioning.
DEMO_SD_UNET = {key: value for key, value in DEMO_UNET.items()
                if key not in ("addition_embed_type", "addition_time_embed_dim",
                               "projection_class_embeddings_input_dim")}
DEMO_SD_UNET["cross_attention_dim"] = DEMO_TEXT["hidden_size"]
DEMO_SD_VAE = {**DEMO_VAE, "scaling_factor": 0.18215}
# The SD 1.5 demo keeps SD 1.5's layout: attention at the highest resolution (the first down block),
# none at the lowest, convolutional projections in and out of its transformers.
DEMO_SD15_UNET = {**DEMO_SD_UNET, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "use_linear_projection": False}
# The SDXS demo keeps SDXS's pruning: one layer per block, no mid block.
DEMO_SDXS_UNET = {**DEMO_SD_UNET, "mid_block_type": None}


@dataclass(frozen=True)
class Architecture:
    """A bundled architecture: its family, its weightless folder and the small UNet of its demo
    (empty for a family without a UNet: its builders know its demo sizes)."""

    family: Family
    configs: Path  # configs, tokenizers, scheduler; vae/config.json names AutoencoderKL or AutoencoderTiny
    demo_unet: dict
    folder: str  # the demo model's folder in the cache


SDXL_ARCH = Architecture(SDXL, SDXL.configs, DEMO_UNET, "demo")
SD2_ARCH = Architecture(SD2, SD2.configs, DEMO_SD_UNET, "demo-sd2")
SD15_ARCH = Architecture(SD15, SD15.configs, DEMO_SD15_UNET, "demo-sd15")
SDXS_ARCH = Architecture(SD2, CONFIGS / "sdxs-512", DEMO_SDXS_UNET, "demo-sdxs")
SANA_ARCH = Architecture(SANA, SANA.configs, {}, "demo-sana")
# The 1.6B transformer (its folder holds only that); full size only, for GPU benchmarks.
SANA_16B_ARCH = Architecture(SANA, CONFIGS / "sana-sprint-1.6b", {}, "random-sana-1.6b")
DEFAULT_ARCHITECTURE = {arch.family.name: arch for arch in (SDXL_ARCH, SD2_ARCH, SD15_ARCH, SANA_ARCH)}


class Builtin(NamedTuple):
    family: Family
    demo: bool  # small (CPU) or full size (GPU benchmarks)
    architecture: Architecture


NAMES = {name: Builtin(arch.family, demo, arch) for names, arch in (
    (("demo", "random"), SDXL_ARCH), (("demo-sd", "random-sd"), SD2_ARCH),
    (("demo-sd15", "random-sd15"), SD15_ARCH), (("demo-sdxs", "random-sdxs"), SDXS_ARCH),
    (("demo-sana", "random-sana"), SANA_ARCH))
    for name, demo in zip(names, (True, False))}
NAMES["random-sana-1.6b"] = Builtin(SANA, False, SANA_16B_ARCH)


def is_demo(model: str) -> bool:
    """A small demo model (random weights, made to run on a CPU), not a full-size one."""
    return model in NAMES and NAMES[model].demo


def architecture_of(what: Family | Architecture) -> Architecture:
    return what if isinstance(what, Architecture) else DEFAULT_ARCHITECTURE[what.name]


def unet_config(family: Family, demo: bool) -> dict:
    """The UNet config of a family's demo model (small) or of its bundled full-size architecture:
    what the demo/random ControlNets and T2I-Adapters of that family are shaped after."""
    arch = architecture_of(family)
    return dict(arch.demo_unet) if demo else _json(arch.configs / "unet/config.json")


def family_scheduler(family: Family | Architecture):
    """The default scheduler of a family (or architecture), as its bundled config names it."""
    import diffusers

    config = _json(architecture_of(family).configs / "scheduler/scheduler_config.json")
    return getattr(diffusers, config["_class_name"]).from_config(config)


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def build_components(demo: bool, dtype: torch.dtype = torch.float32, device: str = "cpu",
                     with_vae: bool = True, family: Family | Architecture = SDXL) -> dict:
    """Instantiate the pipeline's modules with random weights (fixed init seed)."""
    arch = architecture_of(family)
    if arch.family is SANA:
        from .sana_build import sana_components

        return sana_components(demo, dtype, device, with_vae, arch.configs)
    if arch.family is not SDXL:
        return _one_encoder_components(arch, demo, dtype, device, with_vae)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    te1 = CLIPTextConfig(**{**_json(REFERENCE / "text_encoder/config.json"), **(DEMO_TEXT if demo else {})})
    te2 = CLIPTextConfig(**{**_json(REFERENCE / "text_encoder_2/config.json"), **(DEMO_TEXT if demo else {})})
    unet_config = DEMO_UNET if demo else _json(REFERENCE / "unet/config.json")
    vae_config = DEMO_VAE if demo else _json(REFERENCE / "vae/config.json")
    with seeded_init(0, device), torch.device(device):
        modules = {
            "unet": UNet2DConditionModel.from_config(unet_config),
            **({"vae": AutoencoderKL.from_config(vae_config)} if with_vae else {}),
            "text_encoder": CLIPTextModel(te1),
            "text_encoder_2": CLIPTextModelWithProjection(te2),
        }
    _settle(modules, dtype)
    return {
        **modules,
        "scheduler": family_scheduler(SDXL),
        "tokenizer": CLIPTokenizer.from_pretrained(REFERENCE / "tokenizer"),
        "tokenizer_2": CLIPTokenizer.from_pretrained(REFERENCE / "tokenizer_2"),
    }


def _settle(modules: dict, dtype: torch.dtype) -> None:
    for module in modules.values():
        module.eval().requires_grad_(False)
        if dtype != torch.float32:
            module.to(dtype=dtype)


def _one_encoder_components(arch: Architecture, demo: bool, dtype: torch.dtype, device: str, with_vae: bool) -> dict:
    """SD 1.x, SD 2.x and SDXS: one CLIP text encoder; the VAE its folder names (full or tiny)."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    text = CLIPTextConfig(**{**_json(arch.configs / "text_encoder/config.json"), **(DEMO_TEXT if demo else {})})
    vae_config = _json(arch.configs / "vae/config.json")
    vae_class = getattr(diffusers, vae_config["_class_name"])
    if demo and vae_class is diffusers.AutoencoderKL:
        vae_config = DEMO_SD_VAE  # a tiny decoder is small as it is
    with seeded_init(0, device), torch.device(device):
        modules = {
            "unet": diffusers.UNet2DConditionModel.from_config(
                arch.demo_unet if demo else _json(arch.configs / "unet/config.json")),
            **({"vae": vae_class.from_config(vae_config)} if with_vae else {}),
            "text_encoder": CLIPTextModel(text),
        }
    _settle(modules, dtype)
    return {**modules, "scheduler": family_scheduler(arch),
            "tokenizer": CLIPTokenizer.from_pretrained(arch.configs / "tokenizer")}


def assemble(family: Family, components: dict):
    """The family's diffusers pipeline from its components."""
    import diffusers

    if family is SANA:
        return diffusers.SanaSprintPipeline(**components)
    if family is SDXL:
        return diffusers.StableDiffusionXLPipeline(**components, force_zeros_for_empty_prompt=True)
    return getattr(diffusers, family.pipeline)(**components, safety_checker=None, feature_extractor=None,
                                               requires_safety_checker=False)


def build_random_pipeline(demo: bool, dtype: torch.dtype, device: str, vae=None, family: Family | Architecture = SDXL):
    """The architecture's pipeline in memory, for benchmarks that need no folder on disk."""
    components = build_components(demo, dtype, device, with_vae=vae is None, family=family)
    if vae is not None:
        components["vae"] = vae
    return assemble(architecture_of(family).family, components)


def build_tiny_vae(dtype: torch.dtype, device: str, family: Family = SDXL):
    """AutoencoderTiny (TAESDXL's or TAESD's architecture, bundled config) with random weights."""
    from diffusers import AutoencoderTiny

    no_tiny_decoder(family)
    with seeded_init(0, device), torch.device(device):
        vae = AutoencoderTiny.from_config(_json(family.tiny_vae_config / "config.json"))
    return vae.to(dtype=dtype).eval().requires_grad_(False)


def no_tiny_decoder(family: Family, option: str = "--vae", instead: str = "--vae full") -> None:
    """Refuse ``--vae tiny`` (or a tiny VAE folder), or another ``option`` that needs the tiny decoder
    (``--batch-vae tiny``), for a family that has none, in one line naming what to use ``instead``."""
    if family.tiny_vae is None:
        from ...core.errors import ConfigError

        raise ConfigError(f"{option}: the {family.name} family ({family.description}) has no tiny decoder; "
                          f"use {instead}")


def ensure_demo(cache_dir: Path, family: Family | Architecture = SDXL) -> Path:
    """Return the demo model folder of a family (or architecture), building it on first use (a few
    seconds on a CPU)."""
    arch = architecture_of(family)
    folder = Path(cache_dir) / f"{arch.folder}-v{DEMO_VERSION}"
    if (folder / "model_index.json").is_file():
        return folder
    log.info("building the demo model (random weights, no download) in %s", folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so a killed build never leaves a half folder.
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=folder.parent))
    try:
        build_random_pipeline(demo=True, dtype=torch.float32, device="cpu", family=arch).save_pretrained(tmp)
        (tmp / "README.md").write_text(
            f"turbo-bridge demo model: a small {arch.configs.name}-architecture pipeline with random weights.\n"
            "It exercises the whole daemon offline; its frames are noise, not pictures.\n")
        try:
            tmp.rename(folder)
        except OSError:  # another process built it first
            if not (folder / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("demo model ready")
    return folder
