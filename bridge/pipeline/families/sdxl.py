"""SDXL (SDXL-Turbo, Lightning, Hyper and other SDXL fine-tunes): two CLIP text encoders (the
penultimate hidden states side by side, CLIP-G's pooled projection), a UNet with text-time
conditioning, every kind of steering."""

from __future__ import annotations

from .family import CONFIGS
from .sd_unet import UNetSettings, unet_family

SDXL = unet_family(
    UNetSettings(text_encoders=("text_encoder", "text_encoder_2"), tokenizers=("tokenizer", "tokenizer_2"),
                 hidden_layer=-2, pooled=True, time_ids=True),
    name="sdxl", pipeline="StableDiffusionXLPipeline", img2img_pipeline="StableDiffusionXLImg2ImgPipeline",
    configs=CONFIGS / "sdxl-turbo", tiny_vae="madebyollin/taesdxl", tiny_vae_config=CONFIGS / "taesdxl",
    default_size=512, description="SDXL (SDXL-Turbo, SDXL Lightning/Hyper/LCM fine-tunes)",
    steering=frozenset({"controlnet", "t2i_adapter", "ip_adapter", "lora"}),
)
