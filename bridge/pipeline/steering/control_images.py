"""Control images for the ControlNets of a frame: scaled to the frame, preprocessed, cached.

An image is scaled to the frame size as diffusers' control image processor does it (stretched,
Lanczos, ``images.scaled_rgb``), moved to the device, preprocessed there (``none``: the image is
the condition, e.g. a depth map or lines; ``canny``: its edges, ``canny.py``) and turned into
[0, 1] floats; the result is cached by (content, size, preprocess), so a held image costs nothing
per frame. ``values`` hands the renderer the frame's ControlNet inputs as two tensors, images and
per-step scales: graph inputs, so new images and scales never recompile.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from ...core.controls import Control
from ...core.params import Params
from ...core.scene import InputImage, Scene
from .canny import DEFAULT_THRESHOLDS, canny
from .input_images import scaled_rgb


def step_scales(control: Control, runs: int) -> list[float]:
    """The scale at each step run, as diffusers' controlnet_keep: off outside [start, end]."""
    return [control.scale * (1.0 - float(i / runs < control.start or (i + 1) / runs > control.end))
            for i in range(runs)]


class ControlImages:
    """Prepared control images by (digest, width, height, preprocess); ``prepared`` counts the misses."""

    def __init__(self, device: torch.device, dtype: torch.dtype, thresholds=DEFAULT_THRESHOLDS,
                 cache_size: int = 16):
        self.device = device
        self.dtype = dtype
        self.thresholds = thresholds
        self.prepared = 0
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size

    def image(self, image: InputImage, width: int, height: int, preprocess: str) -> torch.Tensor:
        """(1, 3, H, W) in [0, 1], the model's dtype, on the device."""
        key = (image.digest, width, height, preprocess)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        rgb = torch.from_numpy(scaled_rgb(image, width, height)).to(self.device)
        if preprocess == "canny":
            edges = canny(rgb, *self.thresholds)
            rgb = (edges.to(torch.uint8) * 255)[..., None].expand(-1, -1, 3)
        prepared = (rgb.permute(2, 0, 1)[None].float() / 255.0).to(self.dtype).contiguous()
        self.prepared += 1
        self._cache[key] = prepared
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return prepared


def frame_controls(scene: Scene) -> tuple[str, ...]:
    """The ControlNets a frame runs (the scheduler puts only those in use into the scene)."""
    return tuple(name for name, _ in scene.controls)


def values(images: ControlImages, params: Params, scene: Scene, runs: int) -> dict[str, torch.Tensor]:
    """The frame's ControlNet inputs: ``control_images`` (n, 1, 3, H, W) and ``control_scales``
    (n, runs), or nothing for a frame without ControlNets."""
    if not scene.controls:
        return {}
    settings = dict(params.controls)
    stacked = torch.stack([images.image(image, params.width, params.height, settings[name].preprocess)
                           for name, image in scene.controls])
    scales = torch.tensor([step_scales(settings[name], runs) for name, _ in scene.controls], dtype=torch.float32)
    return {"control_images": stacked, "control_scales": scales.to(images.device)}


def graph_inputs(names: tuple[str, ...], width: int, height: int, runs: int,
                 dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """Zero buffers shaped like ``values``, for capturing a frame graph."""
    if not names:
        return {}
    return {"control_images": torch.zeros((len(names), 1, 3, height, width), dtype=dtype, device=device),
            "control_scales": torch.zeros((len(names), runs), dtype=torch.float32, device=device)}
