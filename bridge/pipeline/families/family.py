"""Model families: what differs between SDXL and SD 2.x pipelines, in one small description each.

The renderer, loader and builders read a ``Family`` instead of branching on the architecture:
which text encoders run and which of their outputs condition the UNet, whether the UNet takes
SDXL's pooled text embedding and size/crop time ids, the bundled config folders (the model's and
its tiny VAE's), and the defaults (size, scheduler). A new family (or a variant of one) is a new
value here, not new branches across the code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIGS = Path(__file__).parent.parent / "configs"


@dataclass(frozen=True)
class Family:
    name: str  # "sdxl" or "sd2": reported by GET /v1/health
    pipeline: str  # the diffusers pipeline class
    img2img_pipeline: str  # its image-to-image counterpart (reference checks)
    text_encoders: tuple[str, ...]  # pipeline attributes, in the order of the token-id rows
    tokenizers: tuple[str, ...]  # one per text encoder, same order
    # The hidden state each encoder contributes (concatenated on the feature axis): -2 is the
    # penultimate layer (SDXL); None is last_hidden_state after the final layer norm (SD 2.x:
    # its config already drops OpenCLIP's last layer, which is how diffusers reads "penultimate").
    hidden_layer: int | None
    pooled: bool  # SDXL: the last encoder's projected pooled output goes to the UNet as text_embeds
    time_ids: bool  # SDXL micro-conditioning: (original size, crop top-left, target size)
    configs: Path  # the bundled weightless model folder (configs, tokenizers, scheduler)
    tiny_vae: str  # hub id of the matching tiny autoencoder
    tiny_vae_config: Path  # its bundled config (the demo/random builders use it)
    default_size: int  # the size the model was trained at
    description: str  # for messages: what this family covers

    def time_ids_for(self, width: int, height: int) -> list[int]:
        """SDXL's add_time_ids: original size, crop top-left (0, 0), target size (all height first)."""
        return [height, width, 0, 0, height, width]


SDXL = Family(
    name="sdxl", pipeline="StableDiffusionXLPipeline", img2img_pipeline="StableDiffusionXLImg2ImgPipeline",
    text_encoders=("text_encoder", "text_encoder_2"), tokenizers=("tokenizer", "tokenizer_2"),
    hidden_layer=-2, pooled=True, time_ids=True,
    configs=CONFIGS / "sdxl-turbo", tiny_vae="madebyollin/taesdxl", tiny_vae_config=CONFIGS / "taesdxl",
    default_size=512, description="SDXL (SDXL-Turbo, SDXL Lightning/Hyper/LCM fine-tunes)",
)

SD2 = Family(
    name="sd2", pipeline="StableDiffusionPipeline", img2img_pipeline="StableDiffusionImg2ImgPipeline",
    text_encoders=("text_encoder",), tokenizers=("tokenizer",),
    hidden_layer=None, pooled=False, time_ids=False,
    configs=CONFIGS / "sd-turbo", tiny_vae="madebyollin/taesd", tiny_vae_config=CONFIGS / "taesd",
    default_size=512, description="SD 2.x (SD-Turbo, SD 2.1-base architecture, one OpenCLIP text encoder)",
)

FAMILIES = {family.name: family for family in (SDXL, SD2)}
SUPPORTED = "SDXL (SDXL-Turbo, Lightning, Hyper and other SDXL fine-tunes) or SD 2.x (SD-Turbo)"


def family_of_pipeline(pipe) -> Family:
    """The family of a loaded diffusers pipeline, by its class (an SDXL pipeline has text_encoder_2)."""
    for family in FAMILIES.values():
        if type(pipe).__name__ in (family.pipeline, family.img2img_pipeline):
            return family
    return SDXL if hasattr(pipe, "text_encoder_2") else SD2


def family_of_index(model_index: dict) -> Family | None:
    """The family a diffusers folder's model_index.json names, or None for another architecture."""
    name = str(model_index.get("_class_name", ""))
    for family in FAMILIES.values():
        if name in (family.pipeline, family.img2img_pipeline):
            return family
    if name.startswith("StableDiffusionXL"):
        return SDXL
    return None
