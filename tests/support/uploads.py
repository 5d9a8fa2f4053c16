"""Images as clients upload them: random RGBA pixels, encoded as PNG or JPEG."""

import io

import numpy as np
from PIL import Image

rng = np.random.default_rng(0)


def rgba(width=32, height=24):
    return rng.integers(0, 256, (height, width, 4), np.uint8)


def encoded(pixels, fmt):
    out = io.BytesIO()
    Image.fromarray(pixels, "RGBA").convert("RGB" if fmt == "JPEG" else "RGBA").save(out, fmt)
    return out.getvalue()
