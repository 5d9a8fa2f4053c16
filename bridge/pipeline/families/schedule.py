"""Few-step sampling with the schedule computed once per step count.

The same arithmetic as the diffusers schedulers' ``step`` (epsilon prediction), for the samplers
few-step models ship with: Euler ancestral (SDXL-Turbo), Euler (SD-Turbo; with trailing spacing,
SDXL-Lightning), LCM (LCM-LoRA, LCM fine-tunes) and TCD (Hyper-SD). The timesteps and sigmas come
from the diffusers scheduler itself (``set_timesteps``: spacing, Karras sigmas... as configured);
the per-step coefficients are Python floats and the timesteps device tensors made once, so a
frame does no host-device traffic and no sync, and the compiled UNet never sees a new constant
(a new timestep value is a new tensor value, not a recompile).

Noise draws are in diffusers' order: the initial noise, then one per step (Euler ancestral draws
at every step, LCM and TCD at every step but the last, Euler never); ``FramePlan.draws`` covers
the most any sampler draws and an unused draw never shifts the others.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

# --scheduler names -> diffusers classes; the model folder's own scheduler is the default.
SAMPLERS = {"euler_a": "EulerAncestralDiscreteScheduler", "euler": "EulerDiscreteScheduler",
            "lcm": "LCMScheduler", "tcd": "TCDScheduler"}
TCD_ETA = 0.3  # TCDScheduler.step's default gamma (the TCD paper's); diffusers' pipelines pass eta=0 unless told


@dataclass(frozen=True)
class Step:
    """An Euler step (ancestral when ``sigma_up`` > 0), in the sigma parametrisation.

    Its numbers are float32 values computed in float32 as diffusers' schedulers compute them (0-d
    float32 tensors): the same frame to the last bit needs the same roundings, not float64 ones.
    """

    timestep: torch.Tensor  # 0-d, on the device
    sigma: float
    sigma_up: float
    dt: float  # sigma_down - sigma: the ODE part of the step
    input_scale: float  # (sigma**2 + 1) ** 0.5: the model's input is latents / input_scale

    def model_input(self, latents: torch.Tensor) -> torch.Tensor:
        """What the model sees at this step (diffusers' ``scale_model_input``), in float32."""
        return latents / self.input_scale

    def noised(self, image: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Image-to-image: the input's latents noised to this step (diffusers' ``add_noise``)."""
        return image + noise * self.sigma

    def advance(self, latents: torch.Tensor, eps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """One (ancestral) Euler step in float32: to sigma_down along the ODE, then noise to sigma_next."""
        denoised = latents - self.sigma * eps
        derivative = (latents - denoised) / self.sigma
        latents = latents + derivative * self.dt
        return latents + noise * self.sigma_up if self.sigma_up else latents


@dataclass(frozen=True)
class ConsistencyStep:
    """An LCM or TCD step in the alpha parametrisation (unscaled latents: ``input_scale`` 1).

    Both are linear in (latents, eps, noise): next = keep * latents + eps_scale * eps + noise_scale * noise.
    """

    timestep: torch.Tensor
    sqrt_alpha: float  # sqrt(alphas_cumprod[t]): for add_noise
    keep: float
    eps_scale: float
    noise_scale: float
    input_scale: float = 1.0

    def model_input(self, latents: torch.Tensor) -> torch.Tensor:
        return latents / self.input_scale

    def noised(self, image: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return image * self.sqrt_alpha + noise * (1 - self.sqrt_alpha**2) ** 0.5

    def advance(self, latents: torch.Tensor, eps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out = latents * self.keep + eps * self.eps_scale
        return out + noise * self.noise_scale if self.noise_scale else out


@dataclass(frozen=True)
class Schedule:
    init_sigma: float
    steps: tuple[Step | ConsistencyStep, ...]

    def __iter__(self):
        return iter(self.steps)


def _alpha(scheduler, t: int) -> float:
    return float(scheduler.alphas_cumprod[t]) if t >= 0 else float(scheduler.final_alpha_cumprod)


def _lcm_steps(scheduler, device) -> list[ConsistencyStep]:
    timesteps = [int(t) for t in scheduler.timesteps]
    steps = []
    for i, t in enumerate(timesteps):
        last = i == len(timesteps) - 1
        prev = timesteps[i + 1] if not last else t
        a_t, a_prev = _alpha(scheduler, t), _alpha(scheduler, prev)
        c_skip, c_out = (float(c) for c in scheduler.get_scalings_for_boundary_condition_discrete(t))
        # denoised = c_out * (x - sqrt(1 - a_t) eps) / sqrt(a_t) + c_skip * x
        keep, eps_scale = c_out / a_t**0.5 + c_skip, -c_out * (1 - a_t) ** 0.5 / a_t**0.5
        scale, noise = (1.0, 0.0) if last else (a_prev**0.5, (1 - a_prev) ** 0.5)
        steps.append(ConsistencyStep(torch.tensor(t, device=device), a_t**0.5, keep * scale, eps_scale * scale, noise))
    return steps


def _tcd_steps(scheduler, device, eta: float = TCD_ETA) -> list[ConsistencyStep]:
    timesteps = [int(t) for t in scheduler.timesteps]
    steps = []
    for i, t in enumerate(timesteps):
        last = i == len(timesteps) - 1
        prev = timesteps[i + 1] if not last else 0
        s = int((1 - eta) * prev)  # floor of a non-negative number
        a_t, a_prev, a_s = _alpha(scheduler, t), _alpha(scheduler, prev), _alpha(scheduler, s)
        # noised_s = sqrt(a_s) * x0 + sqrt(1 - a_s) * eps, x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t)
        keep = a_s**0.5 / a_t**0.5
        eps_scale = (1 - a_s) ** 0.5 - a_s**0.5 * (1 - a_t) ** 0.5 / a_t**0.5
        scale, noise = (1.0, 0.0) if last or eta == 0 else ((a_prev / a_s) ** 0.5, (1 - a_prev / a_s) ** 0.5)
        steps.append(ConsistencyStep(torch.tensor(t, device=device), a_t**0.5, keep * scale, eps_scale * scale, noise))
    return steps


def _euler_steps(scheduler, device, ancestral: bool) -> list[Step]:
    sigmas = scheduler.sigmas.to(torch.float32)  # 0-d float32 tensors: diffusers' own arithmetic below
    steps = []
    for i, t in enumerate(scheduler.timesteps):
        s_from, s_to = sigmas[i], sigmas[i + 1]
        up = (s_to**2 * (s_from**2 - s_to**2) / s_from**2) ** 0.5 if ancestral else torch.zeros(())
        down = (s_to**2 - up**2) ** 0.5 if ancestral else s_to
        steps.append(Step(t.to(device), float(s_from), float(up), float(down - s_from),
                          float((s_from**2 + 1) ** 0.5)))
    return steps


class Sampler:
    """Schedules for 1-8 steps from a diffusers scheduler of one of the ``SAMPLERS`` classes."""

    def __init__(self, scheduler):
        kind = type(scheduler).__name__
        if kind not in SAMPLERS.values():
            raise ValueError(f"scheduler {kind} is not supported; supported: "
                             + ", ".join(f"{name} ({cls})" for name, cls in SAMPLERS.items()))
        if scheduler.config.get("prediction_type", "epsilon") != "epsilon":
            raise ValueError(f"only epsilon-prediction models are supported; this scheduler config says "
                             f"{scheduler.config.get('prediction_type')!r} (a 768 px SD 2.x model?)")
        if kind == "EulerDiscreteScheduler" and scheduler.config.get("timestep_type", "discrete") != "discrete":
            raise ValueError("EulerDiscreteScheduler with continuous timesteps (EDM/v-models) is not supported")
        self.kind = kind
        self._scheduler = copy.deepcopy(scheduler)
        self._cache: dict[tuple[int, str], Schedule] = {}

    @property
    def name(self) -> str:
        return next(name for name, cls in SAMPLERS.items() if cls == self.kind)

    def steps(self, count: int, device: torch.device) -> Schedule:
        key = (count, str(device))
        if key not in self._cache:
            scheduler = self._scheduler
            scheduler.set_timesteps(count)
            if self.kind == "LCMScheduler":
                steps = _lcm_steps(scheduler, device)
            elif self.kind == "TCDScheduler":
                steps = _tcd_steps(scheduler, device)
            else:
                steps = _euler_steps(scheduler, device, ancestral=self.kind == "EulerAncestralDiscreteScheduler")
            self._cache[key] = Schedule(float(scheduler.init_noise_sigma), tuple(steps))
        return self._cache[key]


def scheduler_named(name: str, config):
    """A diffusers scheduler of the ``--scheduler`` NAME built from a model's scheduler config."""
    import diffusers

    if name not in SAMPLERS:
        raise ValueError(f"unknown scheduler {name!r}; known: {', '.join(SAMPLERS)}")
    return getattr(diffusers, SAMPLERS[name]).from_config(config)
