"""The frame's noise: drawn on the CPU from the seed (determinism), blended by slerp.

A frame uses ``draws`` Gaussian tensors in the order diffusers draws them: the initial noise,
then one per ancestral step. A seed blend mixes two seeds' draws pairwise by spherical
interpolation, which keeps each draw's norm where Gaussian noise has it (a straight mix
would shrink it and wash the frame out).
"""

from __future__ import annotations

import functools
import math

import torch

from ...core.params import Params

PARALLEL = 1e-6  # below this angle slerp is a straight mix (and sin(angle) would divide by ~0)


SEEDS_KEPT = 16  # the last seeds' noise per process: a few MB at most (SANA at 1024: 128 KB a draw)


@functools.lru_cache(maxsize=SEEDS_KEPT)
def seed_noise(seed: int, draws: int, shape: tuple[int, ...]) -> torch.Tensor:
    """(draws, *shape) float32 noise from a CPU generator seeded with ``seed``; read-only, shared.

    Kept for the last few seeds: "type and watch" changes the prompt and keeps the seed, so the same
    draws come every frame (0.28 ms of a 7.1 ms SD 1.5 frame on an H100, 0.47 ms of SANA's at 1024;
    run S3). Every user makes new tensors from it (copies into a frame graph's inputs, slerp, scaling)."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.stack([torch.randn(shape, generator=generator) for _ in range(draws)])


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of each draw (dim 0) of ``a`` towards ``b``: t=0 gives a, t=1 gives b.

    Written so that both ends are exact: sin(angle)/sin(angle) is 1.0 and sin(0) is 0.0.
    """
    out = torch.empty_like(b)
    for i, (x, y) in enumerate(zip(a, b)):
        x64, y64 = x.double().flatten(), y.double().flatten()
        cos = float(torch.dot(x64, y64) / (x64.norm() * y64.norm()))
        angle = math.acos(max(-1.0, min(1.0, cos)))
        if angle < PARALLEL:
            wa, wb = 1.0 - t, t
        else:
            wa, wb = math.sin((1.0 - t) * angle) / math.sin(angle), math.sin(t * angle) / math.sin(angle)
        out[i] = x * wa + y * wb
    return out


def frame_noise(params: Params, draws: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The noise of ``params``: its seed's, or a slerp towards ``seed2`` by ``seed_mix``."""
    noise = seed_noise(params.seed, draws, shape)
    if params.seed_mix == 0:  # by definition the seed's own noise: no second draw to pay for
        return noise
    return slerp(noise, seed_noise(params.seed2, draws, shape), params.seed_mix)
