"""ControlNets (SDXL, SD 1.5, SD 2.x): loaded once at start (``--controlnet NAME=SOURCE``), resident, summed.
A SOURCE whose config names a ``T2IAdapter`` (or ``demo-t2i``/``random-t2i``) loads a T2I-Adapter
instead (``t2i_adapter.py``); both kinds share the names, control images and ``controls``.

SOURCE is a hub id, a diffusers folder, a single ``.safetensors``/``.ckpt`` file, ``demo``
(random weights matching the model family's demo UNet) or ``random`` (the family's full-size
ControlNet architecture, random weights: benchmarks). A ControlNet made for another family is
refused at start in one line naming both families. diffusers initialises a new ControlNet's zero
convolutions (the conditioning embedding's last conv and every residual projection) to zero,
so a fresh one would steer nothing: the builders give them random weights too.

Several ControlNets run as diffusers' ``MultiControlNetModel`` does: each with its own image and
scale, residuals summed in order. Per frame, only the ControlNets with a scale above 0 and a
control image run (``ControlPlan``); their images and per-step scales are tensors, so a new
image or a scale/start/end change never recompiles a graph.
"""

from __future__ import annotations

import json
import logging
import zlib
from pathlib import Path

import torch

from ...core.controls import ControlNetSpec
from ...core.errors import ConfigError
from ..families.family import Family
from ..families.registry import FAMILIES
from ..families.sdxl import SDXL
from ..loading.loader import not_available
from ..loading.seeded import seeded_init
from ..speed.optimize import progress

log = logging.getLogger(__name__)

SINGLE_FILE = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
CONDITIONING_CHANNELS = (16, 32, 96, 256)  # every published SDXL and SD 1.5 ControlNet's conditioning embedding
UNSUPPORTED = {
    "ControlNetUnionModel": "a union ControlNet (one model, several control types) is not supported yet",
    "ControlNetXSAdapter": "ControlNet-XS is not supported",
}


def build_random_controlnet(unet_config: dict, seed: int, dtype: torch.dtype, device: str):
    """A ControlNetModel shaped like ``unet_config`` (a UNet's), every weight random."""
    from diffusers import ControlNetModel

    with seeded_init(seed, device), torch.device(device):
        net = ControlNetModel.from_config({**dict(unet_config), "conditioning_embedding_out_channels":
                                           CONDITIONING_CHANNELS})
        # The zero convolutions: a ControlNet whose residuals are all zero tests nothing.
        for module in (net.controlnet_cond_embedding.conv_out, *net.controlnet_down_blocks, net.controlnet_mid_block):
            module.reset_parameters()
    return net.to(dtype=dtype).eval().requires_grad_(False)


def _kind(config: dict) -> str:
    return str(config.get("_class_name", "ControlNetModel"))


def _check_kind(source: str, kind: str) -> None:
    if kind == "T2IAdapter":
        return
    if kind in UNSUPPORTED:
        raise ConfigError(f"--controlnet {source}: {UNSUPPORTED[kind]} ({kind}); use a ControlNetModel")
    if kind != "ControlNetModel":
        raise ConfigError(f"--controlnet {source}: a {kind} is not a ControlNet (ControlNetModel)")


def _adapter_source(source: str) -> bool:
    """demo-t2i/random-t2i, or a folder/hub id whose config names a T2IAdapter (read without weights)."""
    from .t2i_adapter import SOURCES

    if source in SOURCES:
        return True
    local = Path(source).expanduser()
    if local.is_file() or source in ("demo", "random"):
        return False
    if (local / "config.json").is_file():
        return _kind(json.loads((local / "config.json").read_text())) == "T2IAdapter"
    if local.exists():
        return False
    from diffusers import ControlNetModel

    try:
        return _kind(ControlNetModel.load_config(source)) == "T2IAdapter"
    except OSError:
        return False  # not available: the ControlNet path says so, with the way out


def load_controlnet(spec: ControlNetSpec, unet_config: dict, device: str, dtype: torch.dtype, family: Family = SDXL):
    """One ControlNet (or T2I-Adapter) for a model of ``family`` onto ``device``; raises
    ``ModelNotFoundError``/``ConfigError`` with a way out."""
    from diffusers import ControlNetModel

    source = spec.source
    if _adapter_source(source):
        from .t2i_adapter import load_adapter

        with progress(f"loading T2I-Adapter {spec.name!r} from {source}"):
            return load_adapter(spec, dict(unet_config), device, dtype, family)
    with progress(f"loading ControlNet {spec.name!r} from {source}"):
        if source in ("demo", "random"):
            from ..loading.demo import unet_config as family_unet

            config = family_unet(family, demo=source == "demo")
            net = build_random_controlnet(config, zlib.crc32(spec.name.encode()), dtype, device)
        else:
            local = Path(source).expanduser()
            try:
                if local.is_file() and local.suffix in SINGLE_FILE:
                    net = ControlNetModel.from_single_file(str(local), torch_dtype=dtype)
                else:
                    if (local / "config.json").is_file():
                        _check_kind(source, _kind(json.loads((local / "config.json").read_text())))
                    elif local.exists():
                        raise ConfigError(f"--controlnet {source}: not a diffusers ControlNet folder (no config.json) "
                                          f"nor a single file ({', '.join(SINGLE_FILE)})")
                    else:
                        _check_kind(source, _kind(ControlNetModel.load_config(source)))
                    net = ControlNetModel.from_pretrained(str(local) if local.exists() else source, torch_dtype=dtype)
            except OSError as exc:
                raise not_available("ControlNet", source, exc, "a local folder or file", "demo/random") from exc
            net = net.to(device).eval().requires_grad_(False)
    _check_fits(spec, net, unet_config, family)
    return net


def family_of_width(cross_attention_dim: int) -> str:
    """Whose ControlNet this is, by its cross-attention width: a family's full-size UNet, or a demo."""
    for family in FAMILIES.values():
        if json.loads((family.configs / "unet/config.json").read_text())["cross_attention_dim"] == cross_attention_dim:
            return f"the {family.name} family"
    return "a small demo model"


def _check_fits(spec: ControlNetSpec, net, unet_config: dict, family: Family) -> None:
    ours = tuple(net.config.block_out_channels), net.config.cross_attention_dim
    theirs = tuple(unet_config["block_out_channels"]), unet_config["cross_attention_dim"]
    if ours != theirs:
        raise ConfigError(f"ControlNet {spec.name!r} ({spec.source}) does not fit this {family.name}-family model's "
                          f"UNet: it is made for {family_of_width(ours[1])} (channels {ours[0]} / cross-attention "
                          f"{ours[1]} vs {theirs[0]} / {theirs[1]}); demo ControlNets go with demo models, random "
                          "ones with random or real models of their family")


class ControlNets:
    """The resident ControlNets by name, and their summed residuals for one UNet evaluation."""

    def __init__(self, nets: dict[str, torch.nn.Module]):
        from .t2i_adapter import is_adapter

        self.nets = nets
        self._adapters = {name: net for name, net in nets.items() if is_adapter(net)}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.nets)

    @property
    def adapters(self) -> dict[str, torch.nn.Module]:
        """The T2I-Adapters among them (the rest are ControlNetModels)."""
        return self._adapters

    def split(self, names: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(ControlNet names, T2I-Adapter names) of ``names``, each in the given order."""
        return (tuple(n for n in names if n not in self._adapters),
                tuple(n for n in names if n in self._adapters))

    def residuals(self, names: tuple[str, ...], sample, timestep, embeds, added_cond_kwargs,
                  images: torch.Tensor, scales: torch.Tensor):
        """(down residuals, mid residual) of ``names`` summed in order; ``images`` (n, B, 3, H, W),
        ``scales`` (n,) this step's scale of each."""
        down = mid = None
        for k, name in enumerate(names):
            d, m = self.nets[name](sample, timestep, encoder_hidden_states=embeds, controlnet_cond=images[k],
                                   conditioning_scale=scales[k], added_cond_kwargs=added_cond_kwargs,
                                   return_dict=False)
            if down is None:
                down, mid = d, m
            else:  # MultiControlNetModel's order of additions
                down = [prev + cur for prev, cur in zip(down, d)]
                mid = mid + m
        return down, mid
