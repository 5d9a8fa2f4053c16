"""T2I-Adapters (SDXL's FullAdapterXL, SD 1.x/2.x's FullAdapter) beside the ControlNets:
``--controlnet NAME=SOURCE`` whose model is a ``T2IAdapter`` (the kind read from its config), or
``demo-t2i`` (small, random weights, fitting the demo UNet) / ``random-t2i`` (the family's published
adapter architecture, random weights: benchmarks).

An adapter sees only its control image, never the latents nor the timestep: its features are
computed once per (image content, size, preprocess) and cached (``AdapterFeatures``); a frame
only adds ``features x scale`` into the UNet's down blocks (diffusers'
``down_intrablock_additional_residuals``). The features and the per-step scales are inputs of the
frame graph, so a new image or a scale/start/end change never recompiles. Several adapters sum
their scaled features in order, as diffusers' ``MultiAdapter`` does; ``end`` is diffusers'
``adapter_conditioning_factor`` (the same steps as ``step_scales``), ``start`` our extension.
"""

from __future__ import annotations

import logging
import zlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch

from ...core.controls import ControlNetSpec
from ...core.errors import ConfigError
from ...core.params import Params
from ...core.scene import InputImage
from ..families.family import Family
from ..families.sdxl import SDXL
from ..loading.loader import not_available
from ..loading.seeded import seeded_init
from .control_images import step_scales

log = logging.getLogger(__name__)

SOURCES = ("demo-t2i", "random-t2i")
# TencentARC's t2i-adapter-*-sdxl-1.0 (diffusers' FullAdapterXL): features at 1/16, 1/16, 1/32, 1/32
# of the image, the channels of SDXL's three down blocks and its mid block.
SDXL_ADAPTER = {"in_channels": 3, "channels": [320, 640, 1280, 1280], "num_res_blocks": 2,
                "downscale_factor": 16, "adapter_type": "full_adapter_xl"}
# TencentARC's t2iadapter_*_sd15v2 (diffusers' FullAdapter): one feature map per SD 1.x/2.x down block,
# at 1/8, 1/16, 1/32, 1/64 of the image.
SD_ADAPTER = {**SDXL_ADAPTER, "downscale_factor": 8, "adapter_type": "full_adapter"}


def adapter_kind(unet_config: dict) -> dict:
    """The adapter layout a UNet takes: SDXL's (no attention in its first down block) or SD 1.x/2.x's."""
    return SDXL_ADAPTER if unet_config["down_block_types"][0] == "DownBlock2D" else SD_ADAPTER


def is_adapter(net) -> bool:
    from diffusers import T2IAdapter

    return isinstance(net, T2IAdapter)


def build_random_adapter(unet_config: dict, demo: bool, seed: int, dtype: torch.dtype, device: str):
    """A T2IAdapter fitting ``unet_config``: demo = one feature map per demo down block, else the
    published layout for that UNet (SDXL's or SD 1.x's)."""
    from diffusers import T2IAdapter

    kind = adapter_kind(unet_config)
    config = {**kind, "channels": list(unet_config["block_out_channels"]), "num_res_blocks": 1} if demo else kind
    with seeded_init(seed, device), torch.device(device):
        net = T2IAdapter(**config)  # no zero convolutions: random weights already steer
    return net.to(dtype=dtype).eval().requires_grad_(False)


def load_adapter(spec: ControlNetSpec, unet_config: dict, device: str, dtype: torch.dtype, family: Family = SDXL):
    """One T2I-Adapter for a model of ``family`` onto ``device``; ``spec.source`` is demo-t2i,
    random-t2i (the family's published adapter layout), a hub id or a folder."""
    from diffusers import T2IAdapter

    source = spec.source
    if source in SOURCES:
        from ..loading.demo import unet_config as family_unet

        config = unet_config if source == "demo-t2i" else family_unet(family, demo=False)
        net = build_random_adapter(config, source == "demo-t2i", zlib.crc32(spec.name.encode()), dtype, device)
    else:
        local = Path(source).expanduser()
        try:
            net = T2IAdapter.from_pretrained(str(local) if local.exists() else source, torch_dtype=dtype)
        except OSError as exc:
            raise not_available("T2I-Adapter", source, exc, "a local folder", "demo-t2i/random-t2i") from exc
        net = net.to(device).eval().requires_grad_(False)
    check_fits(spec, net.config, unet_config, family)
    return net


def check_fits(spec: ControlNetSpec, config, unet_config: dict, family: Family = SDXL) -> None:
    """An SDXL adapter (FullAdapterXL) on a UNet whose first down block has no attention (SDXL's
    layout), an SD adapter (FullAdapter) on one whose first down block has (SD 1.x/2.x); one feature
    map per down block with its channels (and one more for SDXL's mid block)."""
    blocks = list(unet_config["block_out_channels"])
    channels = list(config["channels"])
    kind = config["adapter_type"]
    fits = (kind == adapter_kind(unet_config)["adapter_type"]
            and channels[:len(blocks)] == blocks and len(channels) in (len(blocks), len(blocks) + 1))
    if not fits:
        made_for = {"full_adapter_xl": "the sdxl family", "full_adapter": "SD 1.x/2.x"}.get(kind, "another UNet")
        wanted = adapter_kind(unet_config)["adapter_type"]
        raise ConfigError(f"T2I-Adapter {spec.name!r} ({spec.source}) does not fit the model's UNet ({family.name} "
                          f"family, takes a {wanted}): a {kind} made for {made_for}, channels {channels} vs the "
                          f"UNet's down blocks {blocks}; demo-t2i goes with demo models")


def check_same_layout(adapters: dict[str, torch.nn.Module]) -> None:
    """Adapters sum their features level by level: they must all have the same feature maps."""
    layouts = {name: (tuple(net.config["channels"]), net.downscale_factor) for name, net in adapters.items()}
    if len(set(layouts.values())) > 1:
        raise ConfigError("T2I-Adapters with different feature maps cannot steer together: "
                          + ", ".join(f"{name}: channels {c}, /{f}" for name, (c, f) in layouts.items()))


def adapter_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """The control image's size for an adapter: the frame's, rounded up to the adapter's pixel
    unshuffle (16 for SDXL). Its feature maps then have the UNet's shapes (ceil at each halving)."""
    return -(-width // factor) * factor, -(-height // factor) * factor


class AdapterFeatures:
    """The T2I-Adapters' features by (name, digest, width, height, preprocess); ``computed`` counts misses.

    ``run(name, image)`` runs adapter ``name`` on a prepared (1, C, H, W) image (the renderer's
    eager or compiled call) and returns its feature maps.
    """

    def __init__(self, adapters: dict[str, torch.nn.Module], run: Callable[[str, torch.Tensor], list],
                 cache_size: int = 16):
        check_same_layout(adapters)
        self.adapters = adapters
        self.run = run
        self.computed = 0
        self._cache: OrderedDict[tuple, tuple[torch.Tensor, ...]] = OrderedDict()
        self._cache_size = cache_size
        self._shapes: dict[tuple, tuple[torch.Size, ...]] = {}

    def _input(self, name: str, rgb: torch.Tensor) -> torch.Tensor:
        if self.adapters[name].config["in_channels"] == 1:  # sketch/lineart adapters: one grey channel (ITU-R 601)
            weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32, device=rgb.device)
            rgb = (rgb.float() * weights[:, None, None]).sum(1, keepdim=True).to(rgb.dtype)
        return rgb.contiguous()

    def features(self, images, name: str, image: InputImage, width: int, height: int,
                 preprocess: str) -> tuple[torch.Tensor, ...]:
        """Adapter ``name``'s feature maps of ``image`` for a ``width`` x ``height`` frame (cached)."""
        key = (name, image.digest, width, height, preprocess)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        size = adapter_size(width, height, self.adapters[name].downscale_factor)
        rgb = images.image(image, *size, preprocess)
        made = tuple(f.clone() for f in self.run(name, self._input(name, rgb)))  # a graph's outputs get reused
        self.computed += 1
        self._cache[key] = made
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return made

    def values(self, images, params: Params, controls: tuple[tuple[str, InputImage], ...], runs: int) -> dict:
        """The frame's adapter inputs: ``adapter_features`` (per level, (n, 1, C, h, w)) and
        ``adapter_scales`` (n, runs); nothing without adapters."""
        if not controls:
            return {}
        settings = dict(params.controls)
        each = [self.features(images, name, image, params.width, params.height, settings[name].preprocess)
                for name, image in controls]
        scales = torch.tensor([step_scales(settings[name], runs) for name, _ in controls], dtype=torch.float32)
        return {"adapter_features": tuple(torch.stack(level) for level in zip(*each)),
                "adapter_scales": scales.to(images.device)}

    def graph_inputs(self, names: tuple[str, ...], width: int, height: int, runs: int,
                     dtype: torch.dtype, device: torch.device) -> dict:
        """Zero buffers shaped like ``values``, for capturing a frame graph."""
        if not names:
            return {}
        net = self.adapters[names[0]]
        key = (width, height)
        if key not in self._shapes:  # one run on zeros: the shapes of this size's feature maps
            size = adapter_size(width, height, net.downscale_factor)
            zeros = torch.zeros((1, net.config["in_channels"], size[1], size[0]), dtype=dtype, device=device)
            self._shapes[key] = tuple(f.shape for f in net(zeros))
        return {"adapter_features": tuple(torch.zeros((len(names), *shape), dtype=dtype, device=device)
                                          for shape in self._shapes[key]),
                "adapter_scales": torch.zeros((len(names), runs), dtype=torch.float32, device=device)}


def intrablock(features: tuple[torch.Tensor, ...], scales: torch.Tensor, dtype: torch.dtype,
               cfg: bool) -> list[torch.Tensor]:
    """One step's UNet residuals: per level, the adapters' features times this step's scales,
    summed in order (``MultiAdapter``), in the features' precision as diffusers' ``v * scale``,
    doubled for guidance like diffusers' ``torch.cat([v] * 2)``."""
    out = []
    for level in features:
        summed = (level * scales.view(-1, 1, 1, 1, 1)).sum(0).to(dtype)
        out.append(torch.cat([summed, summed]) if cfg else summed)
    return out
