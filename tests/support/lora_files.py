"""Random LoRA files for tests, written in diffusers/PEFT layout (what ``save_lora_weights``
writes) and as a kohya-layout twin that must give the same weights."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

UNET_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
                "attn2.to_v", "attn2.to_out.0")
CONV_TARGETS = ("conv1",)  # resnet 3x3 convolutions: kohya LoCon layers
TEXT_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")


def lora_layers(pipe, seed: int, rank: int = 4, text: bool = True, conv: bool = True,
                std: float = 0.05) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """"component.module" -> (down, up), both random (a fresh LoRA's zero up-projection checks nothing)."""
    generator = torch.Generator().manual_seed(seed)
    encoders = [name for name in ("text_encoder", "text_encoder_2") if getattr(pipe, name, None) is not None]
    components = ["unet"] + (encoders if text else [])  # SD 2.x has one text encoder
    layers = {}
    for component in components:
        targets = (UNET_TARGETS + (CONV_TARGETS if conv else ())) if component == "unet" else TEXT_TARGETS
        for name, module in getattr(pipe, component).named_modules():
            if not name.endswith(targets) or not hasattr(module, "weight"):
                continue
            weight = module.weight
            if weight.dim() == 2:
                down = torch.randn((rank, weight.shape[1]), generator=generator) * std
                up = torch.randn((weight.shape[0], rank), generator=generator) * std
            else:
                down = torch.randn((rank, *weight.shape[1:]), generator=generator) * std
                up = torch.randn((weight.shape[0], rank, 1, 1), generator=generator) * std
            layers[f"{component}.{name}"] = (down, up)
    return layers


def write_diffusers(layers: dict, path: Path) -> Path:
    save_file({f"{module}.lora_{ab}.weight": t.contiguous() for module, (down, up) in layers.items()
               for ab, t in (("A", down), ("B", up))}, str(path))
    return path


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
