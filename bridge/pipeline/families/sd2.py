"""SD 2.x (SD-Turbo, the SD 2.1-base architecture): one OpenCLIP text encoder (its last hidden
state: the config already drops OpenCLIP's last layer), a UNet without added conditioning.
No IP-Adapter (the published SD 2.x adapters are not supported).
SDXS-512 (``IDKiro/sdxs-512-0.9``: a pruned UNet, a tiny decoder, configs in ``configs/sdxs-512``)
reads the same OpenCLIP states in the same latent space: it is of this family."""

from __future__ import annotations

from .family import CONFIGS
from .sd_unet import ONE_ENCODER, unet_family

SD2 = unet_family(
    ONE_ENCODER,
    name="sd2", pipeline="StableDiffusionPipeline", img2img_pipeline="StableDiffusionImg2ImgPipeline",
    configs=CONFIGS / "sd-turbo", tiny_vae="madebyollin/taesd", tiny_vae_config=CONFIGS / "taesd",
    default_size=512, description="SD 2.x (SD-Turbo, SDXS-512, SD 2.1-base architecture, one OpenCLIP text encoder)",
    steering=frozenset({"controlnet", "t2i_adapter", "lora"}),
    text_signature=(("hidden_act", "gelu"),),
)
