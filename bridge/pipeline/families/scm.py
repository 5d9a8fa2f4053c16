"""SCM sampling (SANA-Sprint's ``SCMScheduler``) in the trigflow parametrisation, schedule made once.

diffusers' ``SanaSprintPipeline`` runs, per step at angle ``s`` (next angle ``t``):

    x_in   = latents / sigma_data * c_in                   c_in = sqrt(u**2 + (1 - u)**2), u = sin s / (cos s + sin s)
    F      = transformer(x_in, timestep=u, guidance=...)
    pred   = ((1 - 2u) * x_in + (1 - 2u + 2u**2) * F) / c_in * sigma_data
    x0     = cos s * latents - sin s * pred
    latents = cos t * x0 + sin t * sigma_data * noise   (the last step: the frame is x0 / sigma_data)

The angles are the pipeline's defaults: ``max_timesteps`` 1.5708 (pi/2: pure noise), and for two
steps the intermediate angle 1.3; other step counts split [pi/2, 0] evenly. Every coefficient is a
float32 value computed as diffusers computes it (float32 tensors), so frames match its pipeline
bit for bit on the CPU; the per-step model timestep ``u`` is a device tensor made once.

Noise draws: the initial noise, then one per step (the scheduler draws at every step, the last
one's unused), as ``FramePlan.draws`` counts them. Image-to-image starts at step ``start``'s angle:
``cos s * image * sigma_data + sin s * sigma_data * noise`` (``SanaSprintImg2ImgPipeline``), ``start``
as that pipeline rounds it (``img2img_schedule``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.params import img2img_schedule as sd_img2img_schedule

MAX_TIMESTEPS = 1.57080  # SanaSprintPipeline.__call__'s max_timesteps
INTERMEDIATE_TIMESTEPS = 1.3  # its intermediate_timesteps, used for two steps only


def img2img_schedule(steps: int, strength: float) -> tuple[int, int]:
    """(schedule length, first step) for image-to-image, as ``SanaSprintImg2ImgPipeline`` rounds them.

    Its ``get_timesteps`` (SD3's) starts at ``int(steps - steps * strength)``, where SD's img2img runs
    ``int(steps * strength)`` steps: the two differ by a step wherever ``steps * strength`` is not a
    whole number (steps 3 at 0.7: SANA's runs 3 steps, SD's rule 2), and by float rounding
    (``10 * 0.3 = 3.0000000000000004``). Where SANA's rule starts at pi/2 with a strength below 1
    (steps 1 at any strength, or ``steps * (1 - strength) < 1``), the input weighs cos 1.5708 = 4e-6:
    diffusers ignores it and strength means nothing. There the daemon takes SD's rule instead (the
    shortest schedule that runs ``int(length * strength) >= 1`` steps, steps 1 at 0.5 = 1 step from
    angle 1.3), so a live input always shows; that frame is diffusers' call at ``length`` and strength
    ``(length - start) / length``.
    """
    if not 0 < strength <= 1:
        raise ValueError(f"image-to-image needs a strength in (0, 1], got {strength!r}")
    start = int(max(steps - min(steps * strength, steps), 0))  # diffusers' arithmetic, in Python floats
    if start > 0 or strength == 1:
        return steps, start
    return sd_img2img_schedule(steps, strength)


@dataclass(frozen=True)
class ScmStep:
    timestep: torch.Tensor  # the model's timestep u (0-d, on the device)
    sigma_data: float
    c_in: float  # sqrt(u**2 + (1 - u)**2)
    skip: float  # 1 - 2u
    out: float  # 1 - 2u + 2u**2
    cos_s: float
    sin_s: float
    cos_t: float
    sin_t: float
    last: bool

    def model_input(self, latents: torch.Tensor) -> torch.Tensor:
        return latents / self.sigma_data * self.c_in

    def noised(self, image: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Image-to-image: the input's latents (the decoder's scale) at this step's angle."""
        return self.cos_s * (image * self.sigma_data) + self.sin_s * (noise * self.sigma_data)

    def advance(self, latents: torch.Tensor, out: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """One SCM step from the transformer's output (float32); the last returns the denoised
        latents in the decoder's scale (``denoised / sigma_data``)."""
        x_in = self.model_input(latents)
        pred = (self.skip * x_in + self.out * out) / self.c_in * self.sigma_data
        denoised = self.cos_s * latents - self.sin_s * pred
        if self.last:
            return denoised / self.sigma_data
        return self.cos_t * denoised + self.sin_t * (noise * self.sigma_data)


@dataclass(frozen=True)
class ScmSchedule:
    init_sigma: float  # text-to-image latents = noise * sigma_data
    steps: tuple[ScmStep, ...]


def angles(count: int) -> list[float]:
    """The step angles of ``count`` steps, 0 (the end) included: diffusers' ``set_timesteps``."""
    if count == 2:
        return torch.tensor([MAX_TIMESTEPS, INTERMEDIATE_TIMESTEPS, 0]).float().tolist()
    return torch.linspace(MAX_TIMESTEPS, 0, count + 1).float().tolist()


def _f32(value: torch.Tensor) -> float:
    return float(value.to(torch.float32))


class ScmSampler:
    """Schedules of 1-8 SCM steps from an ``SCMScheduler`` (its ``sigma_data``)."""

    name = "scm"

    def __init__(self, scheduler):
        kind = type(scheduler).__name__
        if kind != "SCMScheduler":
            raise ValueError(f"scheduler {kind} is not supported: SANA-Sprint samples with SCMScheduler only "
                             "(leave --scheduler out)")
        if scheduler.config.get("prediction_type", "trigflow") != "trigflow":
            raise ValueError(f"only trigflow SCM models are supported; this scheduler config says "
                             f"{scheduler.config.get('prediction_type')!r}")
        self.sigma_data = float(scheduler.config.sigma_data)
        self._cache: dict[tuple[int, str], ScmSchedule] = {}

    def steps(self, count: int, device: torch.device) -> ScmSchedule:
        key = (count, str(device))
        if key not in self._cache:
            times = torch.tensor(angles(count), dtype=torch.float32)
            steps = []
            for i in range(count):
                s, t = times[i], times[i + 1]
                u = torch.sin(s) / (torch.cos(s) + torch.sin(s))
                steps.append(ScmStep(
                    timestep=u.to(device), sigma_data=self.sigma_data, c_in=_f32(torch.sqrt(u**2 + (1 - u) ** 2)),
                    skip=_f32(1 - 2 * u), out=_f32(1 - 2 * u + 2 * u**2), cos_s=_f32(torch.cos(s)),
                    sin_s=_f32(torch.sin(s)), cos_t=_f32(torch.cos(t)), sin_t=_f32(torch.sin(t)),
                    last=i == count - 1))
            self._cache[key] = ScmSchedule(self.sigma_data, tuple(steps))
        return self._cache[key]
