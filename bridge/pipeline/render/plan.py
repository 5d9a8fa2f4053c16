"""What decides a frame's compute: size, schedule, guidance on/off, image-to-image or not, the
ControlNets that run, the IP-Adapter on or off.

``FramePlan.key`` is the key of the frame's CUDA graphs: everything a graph bakes in (shapes,
the schedule's sigmas as Python floats, whether there is an input latent to add noise to).
"""

from __future__ import annotations

from dataclasses import dataclass

from ...core.params import Params, img2img_schedule


@dataclass(frozen=True)
class FramePlan:
    width: int
    height: int
    schedule_steps: int  # the schedule's length (diffusers' num_inference_steps)
    start: int | None  # image-to-image: the first step run; None: text-to-image (from pure noise)
    cfg: bool  # classifier-free guidance (guidance > 0, a family that guides so): a batch of two
    tiling: str = "none"  # circular padding (bridge.pipeline.render.tiling): other convolutions, another graph
    controls: tuple[str, ...] = ()  # the ControlNets run (scale > 0 and an image); their images/scales are inputs
    style: bool = False  # the IP-Adapter runs (a style image, style_scale > 0); its tokens and scale are inputs

    @staticmethod
    def of(params: Params, img2img: bool, controls: tuple[str, ...] = (), style: bool = False,
           classifier_free: bool = True, schedule=img2img_schedule) -> FramePlan:
        """``classifier_free``: the family guides with an unconditional row (else guidance is an input);
        ``schedule``: the family's image-to-image rounding (``Family.img2img_schedule``)."""
        cfg = classifier_free and params.guidance > 0
        if img2img:
            length, start = schedule(params.steps, params.strength)
            return FramePlan(params.width, params.height, length, start, cfg, params.tiling, controls, style)
        return FramePlan(params.width, params.height, params.steps, None, cfg, params.tiling, controls, style)

    @property
    def runs(self) -> int:
        """Denoiser evaluations (per batch row) in this frame."""
        return self.schedule_steps - (self.start or 0)

    @property
    def draws(self) -> int:
        """Noise tensors drawn, in diffusers' order: the initial noise, then one per step."""
        return self.runs + 1

    @property
    def key(self) -> tuple:
        return (self.width, self.height, self.schedule_steps, self.cfg, self.start, self.tiling, self.controls,
                self.style)
