"""The input image's latents for image-to-image: scaled, encoded once per content, cached.

The input is scaled to the frame size (stretched, Lanczos: what diffusers' image processor does)
and encoded by the family's encoder (a VAE: the mean of its latent distribution; diffusers samples
it with the frame's generator, the mean makes the latents depend on the content alone), so they
are cached by the input's digest and size and the encoder runs only for a new input.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
from PIL import Image

from ...core.scene import InputImage


def scaled_rgb(image: InputImage, width: int, height: int) -> np.ndarray:
    """The input's RGB (H x W x 3 uint8) at the frame size; alpha is ignored."""
    rgb = image.pixels[..., :3]
    if (image.width, image.height) == (width, height):
        return np.ascontiguousarray(rgb)
    return np.array(Image.fromarray(rgb, "RGB").resize((width, height), Image.Resampling.LANCZOS))


class ImageLatents:
    """Latents of recent inputs by (digest, width, height); ``encode(rgb=...)`` runs the VAE encoder."""

    def __init__(self, encode: Callable[..., torch.Tensor], pin: bool, cache_size: int = 4,
                 stage: Callable[[str], AbstractContextManager] = lambda name: nullcontext()):
        self.encode = encode
        self.pin = pin
        self.stage = stage
        self.runs = 0  # VAE encoder runs
        self._cache: OrderedDict[tuple[str, int, int], torch.Tensor] = OrderedDict()
        self._cache_size = cache_size

    def clear(self) -> None:
        """Forget every input's latents (they were encoded with other settings, e.g. tiling)."""
        self._cache.clear()

    def latents(self, image: InputImage, width: int, height: int) -> torch.Tensor:
        key = (image.digest, width, height)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        with self.stage("input_scale"):
            rgb = torch.from_numpy(scaled_rgb(image, width, height))
            rgb = rgb.pin_memory() if self.pin else rgb
        with self.stage("vae_encode"), torch.inference_mode():
            latents = self.encode(rgb=rgb).clone()  # a graph's output is overwritten by its next replay
        self.runs += 1
        self._cache[key] = latents
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return latents
