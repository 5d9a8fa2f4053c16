"""SD 2.x (SD-Turbo, the SD 2.1-base architecture): one OpenCLIP text encoder (its last hidden
state: the config already drops OpenCLIP's last layer), a UNet without added conditioning.
No IP-Adapter (the published SD 2.x adapters are not supported)."""

from __future__ import annotations

from .family import CONFIGS
from .sd_unet import UNetSettings, unet_family

SD2 = unet_family(
    UNetSettings(text_encoders=("text_encoder",), tokenizers=("tokenizer",), hidden_layer=None, pooled=False,
                 time_ids=False),
    name="sd2", pipeline="StableDiffusionPipeline", img2img_pipeline="StableDiffusionImg2ImgPipeline",
    configs=CONFIGS / "sd-turbo", tiny_vae="madebyollin/taesd", tiny_vae_config=CONFIGS / "taesd",
    default_size=512, description="SD 2.x (SD-Turbo, SD 2.1-base architecture, one OpenCLIP text encoder)",
    steering=frozenset({"controlnet", "t2i_adapter", "lora"}),
)
