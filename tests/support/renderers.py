"""Renderers for tests of the plumbing (no model): what they render is cheap and known."""

import numpy as np

from bridge.core.frame import Rendered
from bridge.core.renderer import NullRenderer


class NoiseRenderer(NullRenderer):
    """Frames of seeded noise: incompressible, so slow clients fill their socket buffers fast
    (and small file limits fill in a few frames)."""

    def render(self, params, scene=None):
        pixels = np.random.default_rng(params.seed).integers(0, 256, (params.height, params.width, 4), np.uint8)
        pixels[..., 3] = 255
        return Rendered(pixels)


def noise_factory(config):
    return NoiseRenderer(), {"model": "noise", "device": "cpu", "dtype": "none"}


def rows_pattern(height: int, width: int, seed: int) -> np.ndarray:
    """(row, seed, column, 255) at every pixel (mod 256): a frame that shows its orientation, its
    byte order and what made it."""
    pixels = np.empty((height, width, 4), np.uint8)
    pixels[..., 0] = (np.arange(height) % 256)[:, None]
    pixels[..., 1] = seed & 0xFF
    pixels[..., 2] = (np.arange(width) % 256)[None, :]
    pixels[..., 3] = 255
    return pixels


class RowsRenderer(NullRenderer):
    """Frames of ``rows_pattern``; keeps every scene it rendered (the input, control and style images it got)."""

    def __init__(self):
        super().__init__()
        self.scenes = []

    def render(self, params, scene=None):
        self.scenes.append(scene)
        return Rendered(rows_pattern(params.height, params.width, params.seed))

    def factory(self, config):
        return self, {"model": "rows", "device": "cpu", "dtype": "none"}
