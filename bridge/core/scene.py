"""What a frame is rendered from besides ``Params``: the input image, the control images of the
ControlNets in use, the style image (IP-Adapter) and a transition's progress.

The scheduler owns both and hands them to the renderer as one frozen ``Scene`` per frame.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class InputImage:
    """An input frame for image-to-image: RGBA8 rows top-first; ``digest`` identifies its content."""

    pixels: np.ndarray = field(repr=False, compare=False)  # H x W x 4 uint8
    digest: str
    source: str = field(default="rest", compare=False)  # rest, websocket or shm (control images too)

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @staticmethod
    def from_pixels(pixels: np.ndarray, source: str = "rest") -> InputImage:
        """Wrap RGBA8 pixels (H x W x 4), hashing their content (size included)."""
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 4:
            raise ValueError(f"expected H x W x 4 uint8 pixels, got {pixels.dtype} {pixels.shape}")
        # Shared by the scheduler and the GPU thread: a read-only array of our own (the caller's
        # writable array is copied, never frozen under it).
        pixels = np.array(pixels, order="C") if pixels.flags.writeable else np.ascontiguousarray(pixels)
        pixels.flags.writeable = False
        digest = hashlib.blake2b(pixels.data, digest_size=16, person=b"tb-input-v1")
        digest.update(f"{pixels.shape[1]}x{pixels.shape[0]}".encode())
        return InputImage(pixels, digest.hexdigest(), source)


@dataclass(frozen=True)
class Glide:
    """One frame of a transition: ``token`` names the transition, ``t`` its progress in (0, 1].

    A new token means a new transition, which starts from what the renderer showed last; at
    ``t == 1`` the frame is exactly the target's.
    """

    token: int
    t: float


@dataclass(frozen=True)
class Scene:
    input: InputImage | None = None  # set only while image-to-image is active
    glide: Glide | None = None
    controls: tuple[tuple[str, InputImage], ...] = ()  # (name, control image) of the ControlNets in use
    style: InputImage | None = None  # the IP-Adapter's style image, set only while style_scale > 0
