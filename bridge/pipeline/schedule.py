"""Euler-ancestral sampling with the schedule computed once per step count.

The same arithmetic as diffusers' ``EulerAncestralDiscreteScheduler.step`` (epsilon
prediction), but the sigmas are Python floats and the timesteps device tensors made once, so
a frame does no host-device traffic and no sync, and the compiled UNet never sees a new
constant (a new timestep value would mean a recompile).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Step:
    timestep: torch.Tensor  # 0-d, on the device
    sigma: float
    sigma_up: float
    sigma_down: float

    @property
    def input_scale(self) -> float:
        return (self.sigma**2 + 1) ** 0.5

    def advance(self, latents: torch.Tensor, eps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """One ancestral Euler step in float32: to sigma_down along the ODE, then noise to sigma_next."""
        denoised = latents - self.sigma * eps
        derivative = (latents - denoised) / self.sigma
        latents = latents + derivative * (self.sigma_down - self.sigma)
        return latents + noise * self.sigma_up if self.sigma_up else latents


@dataclass(frozen=True)
class Schedule:
    init_sigma: float
    steps: tuple[Step, ...]

    def __iter__(self):
        return iter(self.steps)


class EulerAncestral:
    """Schedules for 1-4 steps from a diffusers Euler-ancestral scheduler's config."""

    def __init__(self, scheduler):
        if scheduler.config.get("prediction_type", "epsilon") != "epsilon":
            raise ValueError("only epsilon-prediction models are supported (SDXL-Turbo is one)")
        self._scheduler = copy.deepcopy(scheduler)
        self._cache: dict[tuple[int, str], Schedule] = {}

    def steps(self, count: int, device: torch.device) -> Schedule:
        key = (count, str(device))
        if key not in self._cache:
            self._scheduler.set_timesteps(count)
            sigmas = [float(s) for s in self._scheduler.sigmas]
            steps = []
            for i, t in enumerate(self._scheduler.timesteps):
                s_from, s_to = sigmas[i], sigmas[i + 1]
                up = (s_to**2 * (s_from**2 - s_to**2) / s_from**2) ** 0.5
                steps.append(Step(t.to(device), s_from, up, (s_to**2 - up**2) ** 0.5))
            self._cache[key] = Schedule(float(self._scheduler.init_noise_sigma), tuple(steps))
        return self._cache[key]
