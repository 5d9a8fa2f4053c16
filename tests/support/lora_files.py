"""Random LoRA files for tests, written in diffusers/PEFT layout (what ``save_lora_weights``
writes) and as a kohya-layout twin that must give the same weights."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from bridge.pipeline.steering.demo_loras import TEXT_LAYERS as TEXT_TARGETS
from bridge.pipeline.steering.demo_loras import UNET_LAYERS as UNET_TARGETS
from bridge.pipeline.steering.demo_loras import random_layers, write_peft

CONV_TARGETS = ("conv1",)  # resnet 3x3 convolutions: kohya LoCon layers


def lora_layers(pipe, seed: int, rank: int = 4, text: bool = True, conv: bool = True,
                std: float = 0.05) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """"component.module" -> (down, up), both random (a fresh LoRA's zero up-projection checks nothing)."""
    encoders = [name for name in ("text_encoder", "text_encoder_2") if getattr(pipe, name, None) is not None]
    targets = {"unet": UNET_TARGETS + (CONV_TARGETS if conv else ()),
               **({name: TEXT_TARGETS for name in encoders} if text else {})}  # SD 2.x has one text encoder
    return random_layers(pipe, targets, seed, rank, std)


write_diffusers = write_peft  # what save_lora_weights writes


KOHYA = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}


def write_kohya(layers: dict, path: Path) -> Path:
    """The same LoRA in kohya's layout: alpha = rank / 2 with a doubled up-projection (exact in floats)."""
    tensors = {}
    for module, (down, up) in layers.items():
        component, name = module.split(".", 1)
        stem = KOHYA[component] + name.replace(".", "_")
        tensors[f"{stem}.lora_down.weight"] = down.contiguous()
        tensors[f"{stem}.lora_up.weight"] = (up * 2).contiguous()
        tensors[f"{stem}.alpha"] = torch.tensor(float(down.shape[0]) / 2)
    save_file(tensors, str(path))
    return path
