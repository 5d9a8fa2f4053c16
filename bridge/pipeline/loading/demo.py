"""Random-weight pipelines of each family, built locally: the offline demo models (``demo``:
SDXL, ``demo-sd``: SD 2.x, ``demo-sana``: SANA-Sprint) and the full-size architectures for GPU
benchmarks (``random``, ``random-sd``, ``random-sana``; SANA-Sprint's builders: ``sana_build.py``).

Both are written as an ordinary diffusers model folder (configs, safetensors, the real CLIP
tokenizer files bundled with the project) and loaded back through the same code path as a
downloaded model. Their frames are noise: the weights are random.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import torch

from ..families.family import Family
from ..families.sana import SANA
from ..families.sd2 import SD2
from ..families.sdxl import SDXL

log = logging.getLogger(__name__)

CONFIGS = Path(__file__).parent.parent / "configs"
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
                if key not in ("addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim")}
DEMO_SD_UNET["cross_attention_dim"] = DEMO_TEXT["hidden_size"]
DEMO_SD_VAE = {**DEMO_VAE, "scaling_factor": 0.18215}
NAMES = {"demo": (SDXL, True), "random": (SDXL, False), "demo-sd": (SD2, True), "random-sd": (SD2, False),
         "demo-sana": (SANA, True), "random-sana": (SANA, False)}


def is_demo(model: str) -> bool:
    """A small demo model (random weights, made to run on a CPU), not a full-size one."""
    return model in NAMES and NAMES[model][1]


def family_scheduler(family: Family):
    """The family's default scheduler, as its bundled config names it."""
    import diffusers

    config = _json(family.configs / "scheduler/scheduler_config.json")
    return getattr(diffusers, config["_class_name"]).from_config(config)


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def build_components(demo: bool, dtype: torch.dtype = torch.float32, device: str = "cpu",
                     with_vae: bool = True, family: Family = SDXL) -> dict:
    """Instantiate the pipeline's modules with random weights (fixed init seed)."""
    if family is SD2:
        return _sd2_components(demo, dtype, device, with_vae)
    if family is SANA:
        from .sana_build import sana_components

        return sana_components(demo, dtype, device, with_vae)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    te1 = CLIPTextConfig(**{**_json(REFERENCE / "text_encoder/config.json"), **(DEMO_TEXT if demo else {})})
    te2 = CLIPTextConfig(**{**_json(REFERENCE / "text_encoder_2/config.json"), **(DEMO_TEXT if demo else {})})
    unet_config = DEMO_UNET if demo else _json(REFERENCE / "unet/config.json")
    vae_config = DEMO_VAE if demo else _json(REFERENCE / "vae/config.json")
    with torch.device(device):
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


def _sd2_components(demo: bool, dtype: torch.dtype, device: str, with_vae: bool) -> dict:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    text = CLIPTextConfig(**{**_json(SD2.configs / "text_encoder/config.json"), **(DEMO_TEXT if demo else {})})
    with torch.device(device):
        modules = {
            "unet": UNet2DConditionModel.from_config(DEMO_SD_UNET if demo else _json(SD2.configs / "unet/config.json")),
            **({"vae": AutoencoderKL.from_config(DEMO_SD_VAE if demo else _json(SD2.configs / "vae/config.json"))}
               if with_vae else {}),
            "text_encoder": CLIPTextModel(text),
        }
    _settle(modules, dtype)
    return {**modules, "scheduler": family_scheduler(SD2), "tokenizer": CLIPTokenizer.from_pretrained(SD2.configs / "tokenizer")}


def assemble(family: Family, components: dict):
    """The family's diffusers pipeline from its components."""
    import diffusers

    if family is SANA:
        return diffusers.SanaSprintPipeline(**components)
    if family is SD2:
        return diffusers.StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                                                 requires_safety_checker=False)
    return diffusers.StableDiffusionXLPipeline(**components, force_zeros_for_empty_prompt=True)


def build_random_pipeline(demo: bool, dtype: torch.dtype, device: str, vae=None, family: Family = SDXL):
    """The family's pipeline in memory, for benchmarks that need no folder on disk."""
    components = build_components(demo, dtype, device, with_vae=vae is None, family=family)
    if vae is not None:
        components["vae"] = vae
    return assemble(family, components)


def build_tiny_vae(dtype: torch.dtype, device: str, family: Family = SDXL):
    """AutoencoderTiny (TAESDXL's or TAESD's architecture, bundled config) with random weights."""
    from diffusers import AutoencoderTiny

    no_tiny_decoder(family)
    torch.manual_seed(0)
    with torch.device(device):
        vae = AutoencoderTiny.from_config(_json(family.tiny_vae_config / "config.json"))
    return vae.to(dtype=dtype).eval().requires_grad_(False)


def no_tiny_decoder(family: Family) -> None:
    """Refuse ``--vae tiny`` (or a tiny VAE folder) for a family that has no tiny decoder, in one line."""
    if family.tiny_vae is None:
        from ...core.errors import ConfigError

        raise ConfigError(f"--vae: the {family.name} family ({family.description}) has no tiny decoder; "
                          "use --vae full")


def ensure_demo(cache_dir: Path, family: Family = SDXL) -> Path:
    """Return the family's demo model folder, building it on first use (a few seconds on a CPU)."""
    prefix = "demo" if family is SDXL else f"demo-{family.name}"
    folder = Path(cache_dir) / f"{prefix}-v{DEMO_VERSION}"
    if (folder / "model_index.json").is_file():
        return folder
    log.info("building the demo model (random weights, no download) in %s", folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so a killed build never leaves a half folder.
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=folder.parent))
    try:
        build_random_pipeline(demo=True, dtype=torch.float32, device="cpu", family=family).save_pretrained(tmp)
        (tmp / "README.md").write_text(
            f"turbo-bridge demo model: a small {family.name}-architecture pipeline with random weights.\n"
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
