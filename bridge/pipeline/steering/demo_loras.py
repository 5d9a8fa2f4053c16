"""The demo LoRAs, ``demo-a`` and ``demo-b``: random weights for a demo model's family, made on first
use in the cache dir (like the demo model), so the LoRA list, the live page's LoRA picker, OSC
``/bridge/lora`` and the plugins' LoRA controls can all be tried offline.

They are ordinary LoRA files in the diffusers/PEFT layout (what ``save_lora_weights`` writes),
read through the same catalog as the files of ``--lora-dir``. ``demo-a`` touches the UNet's
attention and the text encoders (switching it re-encodes the prompt), ``demo-b`` the UNet only.
Their effect on the demo model's noise frames is as meaningless as the frames themselves.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import torch

from ..families.registry import family_of_pipeline
from ..loading.demo import DEMO_VERSION

log = logging.getLogger(__name__)

# name -> (init seed, with the text encoders)
DEMO_LORAS = {"demo-a": (1, True), "demo-b": (2, False)}
RANK = 4
STD = 0.1  # of both random projections: twice the test files' (a LoRA at weight 1 changes the frame)
UNET_LAYERS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
               "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")
TEXT_LAYERS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")


def demo_lora_folder(cache_dir: Path, pipe) -> Path:
    """The folder holding the demo LoRAs for ``pipe``'s family, written on first use."""
    family = family_of_pipeline(pipe)
    folder = Path(cache_dir) / f"demo-loras-{family.name}-v{DEMO_VERSION}"
    if _complete(folder):
        return folder
    log.info("writing the demo LoRAs %s (random weights, no download) in %s", ", ".join(DEMO_LORAS), folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-loras-", dir=folder.parent))  # renamed whole: never half a folder
    try:
        for name, (seed, text) in DEMO_LORAS.items():
            write_peft(_layers(pipe, family.text_encoders if text else (), seed), tmp / f"{name}.safetensors")
        try:
            tmp.rename(folder)
        except OSError:  # another daemon wrote them first
            if not _complete(folder):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _complete(folder: Path) -> bool:
    return all((folder / f"{name}.safetensors").is_file() for name in DEMO_LORAS)


def _layers(pipe, text_encoders: tuple[str, ...], seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return random_layers(pipe, {"unet": UNET_LAYERS, **{name: TEXT_LAYERS for name in text_encoders}}, seed)


def random_layers(pipe, targets: dict[str, tuple[str, ...]], seed: int, rank: int = RANK,
                  std: float = STD) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """"component.module" -> (down, up), both random (fixed seed), for every layer of ``pipe`` whose name
    ends with one of its component's ``targets``: linear layers, and convolutions as kohya's LoCon does."""
    generator = torch.Generator().manual_seed(seed)
    layers = {}
    for component, names in targets.items():
        for name, module in getattr(pipe, component).named_modules():
            weight = getattr(module, "weight", None)
            if not name.endswith(names) or weight is None:
                continue
            if weight.dim() == 2:
                down = torch.randn((rank, weight.shape[1]), generator=generator) * std
                up = torch.randn((weight.shape[0], rank), generator=generator) * std
            else:
                down = torch.randn((rank, *weight.shape[1:]), generator=generator) * std
                up = torch.randn((weight.shape[0], rank, 1, 1), generator=generator) * std
            layers[f"{component}.{name}"] = (down, up)
    return layers


def write_peft(layers: dict, path: Path) -> Path:
    """``layers`` as a LoRA file in the diffusers/PEFT layout (``lora_A``/``lora_B``, no alphas: scale 1)."""
    from safetensors.torch import save_file

    save_file({f"{module}.lora_{ab}.weight": tensor.contiguous() for module, (down, up) in layers.items()
               for ab, tensor in (("A", down), ("B", up))}, str(path))
    return path
