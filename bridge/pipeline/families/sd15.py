"""SD 1.x (SD 1.5 and its fine-tunes: Turbo/LCM/Hyper merges, LCM-LoRA and Hyper-SD LoRAs on top):
one CLIP ViT-L/14 text encoder (its last hidden state after the final layer norm, 768 wide), a UNet
without added conditioning, every kind of steering (the SD 1.5 ControlNets, T2I-Adapters and
IP-Adapters are the most mature)."""

from __future__ import annotations

from .family import CONFIGS
from .sd_unet import ONE_ENCODER, unet_family

SD15 = unet_family(
    ONE_ENCODER,
    name="sd15", pipeline="StableDiffusionPipeline", img2img_pipeline="StableDiffusionImg2ImgPipeline",
    configs=CONFIGS / "sd15", tiny_vae="madebyollin/taesd", tiny_vae_config=CONFIGS / "taesd",
    default_size=512, description="SD 1.x (SD 1.5 and its fine-tunes, one CLIP ViT-L/14 text encoder)",
    steering=frozenset({"controlnet", "t2i_adapter", "ip_adapter", "lora"}),
    text_signature=(("hidden_act", "quick_gelu"),),
)
