"""The model calls of one frame, and the sampling loop over them.

The family's parts (``families/parts.py``) are plain functions of tensors: the text encoders,
the denoiser, the decoder and encoder, and (U-Net families) the ControlNets' residuals and the
T2I-Adapters' features. ``ModelCalls`` holds them as the callables a frame runs: eager, or
swapped for their ``torch.compile`` versions by ``compile()``, so eager and compiled frames run
one code path. The sampling loop (``denoise_steps``) reaches the model only through them.
"""

from __future__ import annotations

import torch

from ..families.parts import LatentDecode, Parts
from ..speed.optimize import Tuning, compiled
from ..speed.regions import SCOPES, compile_blocks, repeated_blocks
from ..steering.controlnet import ControlNets
from ..steering.t2i_adapter import intrablock
from .plan import FramePlan


class ModelCalls:
    """A family's parts as the functions a frame calls, and the sampling loop over them."""

    def __init__(self, parts: Parts, device: torch.device, dtype: torch.dtype, controlnets: ControlNets,
                 batch_decoder: LatentDecode | None = None):
        """``batch_decoder``: what decodes a batch of channels' rows (``--batch-vae tiny``: the tiny
        autoencoder); None: the family's decoder, as one frame."""
        self.parts = parts
        self.device = device
        self.dtype = dtype
        self.controlnets = controlnets
        self.encode = parts.text.encode  # ids -> (embeds, extra)
        self.denoise = parts.denoiser.denoise
        self.decode = self._decode_frame  # one frame's latents -> (H, W, 4) uint8
        # (B, ...) latents -> (B, H, W, 4) uint8
        self.decode_batch = (parts.decoder if batch_decoder is None else batch_decoder).decode
        self.encode_image = parts.decoder.encode
        self.control = self._residuals
        self.adapt = self._adapter_run

    def compile(self, tuning: Tuning = Tuning()) -> None:
        """Swap every call for its compiled version (static shapes: one graph per shape), as ``tuning``
        says: the decoder's and the denoiser's torch.compile modes, and the scope: "blocks" compiles
        the denoiser's repeated blocks instead of its call where it has some (``speed.regions``; the
        text encoders have none: their calls compile whole, or not at all without ``tuning.compile_text``)."""
        if tuning.compile_scope not in SCOPES:
            raise ValueError(f"compile scope {tuning.compile_scope!r}: one of {', '.join(SCOPES)}")
        regional = tuning.compile_scope == "blocks" and bool(repeated_blocks(self.parts.denoiser.module))
        for name in ("encode", "denoise", "decode", "decode_batch", "encode_image", "control", "adapt"):
            if name == "denoise" and regional:
                continue  # eager glue around the compiled blocks below
            if name == "encode" and not tuning.compile_text:
                continue  # eager, captured in the frame graphs all the same (runner.py)
            mode = {"decode": tuning.decoder_mode, "decode_batch": tuning.decoder_mode,
                    "denoise": tuning.denoiser_mode}.get(name, "default")
            setattr(self, name, compiled(getattr(self, name), self.device, mode))
        if regional:
            compile_blocks(self.parts.denoiser.module, tuning.denoiser_mode)

    @property
    def classifier_free(self) -> bool:
        """Guidance > 0 runs an unconditional row beside each frame (else the model embeds it)."""
        return self.parts.denoiser.guidance == "cfg"

    def latent_shape(self, plan: FramePlan) -> tuple[int, ...]:
        return self.parts.denoiser.latent_shape(plan.width, plan.height)

    def _decode_frame(self, latents: torch.Tensor) -> torch.Tensor:
        return self.parts.decoder.decode(latents)[0]

    def _adapter_run(self, name: str, image: torch.Tensor) -> list[torch.Tensor]:
        """T2I-Adapter ``name``'s feature maps of a prepared control image (compiled per adapter)."""
        return self.controlnets.nets[name](image)

    def _residuals(self, names: tuple[str, ...], latents, timestep, embeds, pooled, added, images, scales):
        """The summed residuals of the ControlNets ``names`` for one denoiser evaluation (compiled per set)."""
        return self.parts.denoiser.control(self.controlnets, names, latents, timestep, embeds, pooled, added,
                                           images, scales)

    def denoise_steps(self, plan: FramePlan, noise: torch.Tensor, guidance, embeds, pooled,
                      image: torch.Tensor | None = None, control_images: torch.Tensor | None = None,
                      control_scales: torch.Tensor | None = None, negative=None, negative_pooled=None,
                      style_tokens=None, style_uncond=None, style_scale=None,
                      adapter_features: tuple[torch.Tensor, ...] | None = None,
                      adapter_scales: torch.Tensor | None = None) -> torch.Tensor:
        """The sampling loop; ``guidance`` is a float, or a 0-d tensor inside a frame graph (one
        value per row (B, 1, 1, 1) in a batch of channels).

        Text-to-image starts from noise alone; image-to-image from the input's latents noised to
        the first step (diffusers' ``add_noise``), and runs the schedule from ``plan.start``.
        ControlNets (``plan.controls``) see the denoiser's inputs, their images batched like them
        (diffusers' ``torch.cat([image] * 2)`` with guidance) and step i's scales; T2I-Adapters add
        their cached features times step i's scales.
        """
        nets, adapters = self.controlnets.split(plan.controls)
        if nets and plan.cfg:
            control_images = torch.cat([control_images, control_images], dim=1)
        if plan.cfg:  # the negative prompt's embeddings (zeros for SDXL-Turbo without one) come first
            embeds, pooled = torch.cat([negative, embeds]), torch.cat([negative_pooled, pooled])
        style = None
        if plan.style:  # diffusers' order too: the unconditional image's tokens first
            style = (torch.cat([style_uncond, style_tokens]) if plan.cfg else style_tokens, style_scale)
        schedule = self.parts.sampler.steps(plan.schedule_steps, self.device)
        steps = schedule.steps[plan.start or 0:]
        # 1, 2 (guidance), or a batch of channels' rows
        added = self.parts.denoiser.added(plan.width, plan.height, embeds.shape[0], guidance)
        if image is None:
            latents = noise[0] * schedule.init_sigma
        else:
            latents = steps[0].noised(image.float(), noise[0])
        for i, step in enumerate(steps):
            model_in = step.model_input(latents).to(self.dtype)
            if plan.cfg:
                model_in = torch.cat([model_in, model_in])
            steering: dict = {}
            if nets:
                steering["down"], steering["mid"] = self.control(nets, model_in, step.timestep, embeds, pooled, added,
                                                                 control_images, control_scales[:, i])
            if style is not None:
                steering["style"] = style
            if adapters:
                steering["intra"] = intrablock(adapter_features, adapter_scales[:, i], self.dtype, plan.cfg)
            out = self.denoise(model_in, step.timestep, embeds, pooled, added, **steering)
            if plan.cfg:
                uncond, cond = out.chunk(2)
                out = uncond + (guidance * (cond - uncond)).to(uncond.dtype)  # a batch's per-row guidance too
            latents = step.advance(latents, out.float(), noise[i + 1])
        return latents.to(self.dtype)
