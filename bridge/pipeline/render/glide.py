"""Transitions on the renderer's side: from what was shown last to the target, over frames.

The scheduler numbers each transition (``Glide.token``) and says how far along a frame is
(``Glide.t``). A new token starts from the conditioning of the last frame shown, wherever an
earlier transition had got to; embeddings mix linearly, noise by slerp. Both ends are exact:
at t=1 the frame is the target's. Noise of another shape (a size or step change) cuts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.scene import Glide
from .noise import slerp
from .text import weighted_sum


@dataclass(frozen=True)
class Shown:
    """The conditioning a frame was rendered with."""

    embeds: torch.Tensor
    pooled: torch.Tensor
    noise: torch.Tensor  # host, (draws, 1, C, H/8, W/8)


class Glider:
    def __init__(self) -> None:
        self.last: Shown | None = None
        self._token: int | None = None
        self._origin: Shown | None = None

    def mix(self, glide: Glide | None, target: Shown) -> Shown:
        """The conditioning for this frame: the target, or a point between origin and target."""
        if glide is None:
            return target
        if glide.token != self._token:
            self._token, self._origin = glide.token, self.last
        origin = self._origin
        if origin is None:
            return target
        t = glide.t
        embeds = weighted_sum([origin.embeds, target.embeds], [1.0 - t, t])
        pooled = weighted_sum([origin.pooled, target.pooled], [1.0 - t, t])
        noise = slerp(origin.noise, target.noise, t) if origin.noise.shape == target.noise.shape else target.noise
        return Shown(embeds, pooled, noise)

    def record(self, shown: Shown) -> None:
        self.last = shown
