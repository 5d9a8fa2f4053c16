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
