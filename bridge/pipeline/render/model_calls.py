"""The model calls of one frame: the functions the renderer compiles, and the sampling loop.

The text encoders, the UNet (its conditioning built in one place, ``unet_conditioning``, the hook
for anything that adds to it), the ControlNets' residuals, the T2I-Adapters' features and the VAE
are plain functions of tensors, so ``torch.compile`` can wrap each. The sampling loop
(``_denoise_steps``) calls them through ``_encode``, ``_unet``, ``_control``, ``_adapt``,
``_encode_image`` and ``_decode``: eager here, swapped for their compiled versions by the
compiling renderer (``renderer.py``), so eager and compiled frames run one code path.
"""

from __future__ import annotations

import torch

from ..steering.controlnet import ControlNets
from ..families.family import family_of_pipeline
from ..steering.input_images import vae_encode
from .plan import FramePlan
from ..families.schedule import Sampler
from ..steering.t2i_adapter import intrablock
from .text import CLIP_TOKENS


class ModelCalls:
    """A pipeline's models as plain functions of tensors, and the sampling loop over them."""

    def __init__(self, pipe, device: str, dtype: torch.dtype, controlnets: ControlNets | None = None):
        self.pipe = pipe
        self.family = family_of_pipeline(pipe)
        self.encoders = [getattr(pipe, name) for name in self.family.text_encoders]
        self.vae = pipe.vae  # full or tiny: the loader puts the chosen decoder into the pipeline
        self.device = torch.device(device)
        self.dtype = dtype
        self.controlnets = controlnets or ControlNets({})
        self._schedule = Sampler(pipe.scheduler)
        self._time_ids: dict[tuple[int, int, int], torch.Tensor] = {}
        # What the sampling loop calls: eager here; a compiling renderer swaps in compiled versions.
        self._encode, self._unet, self._decode = self._text, self._denoise, self._vae_decode
        self._adapt = self._adapter_run
        self._encode_image, self._control = self._vae_encode, self._residuals

    @property
    def sampler(self) -> str:
        """The sampler's ``--scheduler`` name (euler_a, euler, lcm, tcd)."""
        return self._schedule.name

    def _zero_ids(self) -> torch.Tensor:
        return torch.zeros((len(self.encoders), CLIP_TOKENS), dtype=torch.long, device=self.device)

    def _pooled_dim(self) -> int:
        return self.encoders[-1].config.projection_dim if self.family.pooled else 0

    def _text(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The family's text encoders in one graph: ids (encoders, 77), one row per encoder (or
        (encoders, B, 77) for B prompts).

        Only what the UNet uses leaves the graph (the family's hidden state of each encoder,
        concatenated, and SDXL's pooled projection), not every layer's hidden state. A family
        without a pooled embedding gets a (1, 0) tensor, so caches, blends and graphs stay uniform.
        """
        layer, hidden, out = self.family.hidden_layer, [], None
        for row, encoder in enumerate(self.encoders):
            # (encoders, B, 77): several prompts at once (a batch of channels), each row a prompt
            out = encoder(ids[row] if ids.dim() == 3 else ids[row:row + 1], output_hidden_states=layer is not None)
            hidden.append(out.last_hidden_state if layer is None else out.hidden_states[layer])
        embeds = torch.cat(hidden, dim=-1) if len(hidden) > 1 else hidden[0]
        pooled = out.text_embeds if self.family.pooled else embeds.new_zeros((embeds.shape[0], 0))
        return embeds.to(self.dtype), pooled.to(self.dtype)

    def unet_conditioning(self, embeds: torch.Tensor, pooled: torch.Tensor, time_ids: torch.Tensor | None,
                          style: tuple | None = None) -> dict:
        """The UNet's keyword arguments besides (latents, timestep): the one place they are built.

        ``style``: (image tokens, scale) of the IP-Adapter, read by its cross-attention processors."""
        kwargs: dict = {"encoder_hidden_states": embeds if style is None else (embeds, *style)}
        if self.family.pooled or self.family.time_ids:
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids}
        return kwargs

    def _denoise(self, latents, timestep, embeds, pooled, time_ids, down=None, mid=None, style=None,
                 intra=None) -> torch.Tensor:
        """One UNet evaluation; ``down``/``mid``: ControlNet residuals added to its skip connections,
        ``style``: the IP-Adapter's (tokens, scale), ``intra``: T2I-Adapter residuals added inside
        its down blocks (a fresh list: the UNet pops it)."""
        return self.pipe.unet(latents, timestep, **self.unet_conditioning(embeds, pooled, time_ids, style),
                              down_block_additional_residuals=down, mid_block_additional_residual=mid,
                              down_intrablock_additional_residuals=None if intra is None else list(intra)).sample

    def _adapter_run(self, name: str, image: torch.Tensor) -> list[torch.Tensor]:
        """T2I-Adapter ``name``'s feature maps of a prepared control image (compiled per adapter)."""
        return self.controlnets.nets[name](image)

    def _residuals(self, names: tuple[str, ...], latents, timestep, embeds, pooled, time_ids, images, scales):
        """The summed residuals of the ControlNets ``names`` for one UNet evaluation (compiled per set)."""
        added = self.unet_conditioning(embeds, pooled, time_ids).get("added_cond_kwargs")
        return self.controlnets.residuals(names, latents, timestep, embeds, added, images, scales)

    def _vae_encode(self, rgb: torch.Tensor) -> torch.Tensor:
        return vae_encode(self.vae, self.dtype, rgb)

    def _vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        image = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        return to_rgba8(image[0])


    def _latent_shape(self, plan: FramePlan) -> tuple[int, ...]:
        return 1, self.pipe.unet.config.in_channels, plan.height // 8, plan.width // 8

    def _time_ids_for(self, plan: FramePlan, batch: int) -> torch.Tensor | None:
        if not self.family.time_ids:
            return None
        key = (plan.width, plan.height, batch)
        if key not in self._time_ids:
            ids = torch.tensor([self.family.time_ids_for(plan.width, plan.height)] * batch, dtype=self.dtype)
            self._time_ids[key] = ids.to(self.device)
        return self._time_ids[key]

    def _denoise_steps(self, plan: FramePlan, noise: torch.Tensor, guidance, embeds, pooled,
                       image: torch.Tensor | None = None, control_images: torch.Tensor | None = None,
                       control_scales: torch.Tensor | None = None, negative=None, negative_pooled=None,
                       style_tokens=None, style_uncond=None, style_scale=None,
                       adapter_features: tuple[torch.Tensor, ...] | None = None,
                       adapter_scales: torch.Tensor | None = None) -> torch.Tensor:
        """The sampling loop; ``guidance`` is a float, or a 0-d tensor inside a frame graph.

        Text-to-image starts from noise alone; image-to-image from the input's latents noised to
        the first step's sigma (diffusers' ``add_noise``), and runs the schedule from ``plan.start``.
        ControlNets (``plan.controls``) see the UNet's inputs, their images batched like them
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
        schedule = self._schedule.steps(plan.schedule_steps, self.device)
        steps = schedule.steps[plan.start or 0:]
        time_ids = self._time_ids_for(plan, embeds.shape[0])  # 1, 2 (guidance), or a batch of channels' rows
        if image is None:
            latents = noise[0] * schedule.init_sigma
        else:
            latents = steps[0].noised(image.float(), noise[0])
        for i, step in enumerate(steps):
            model_in = (latents / step.input_scale).to(self.dtype)
            if plan.cfg:
                model_in = torch.cat([model_in, model_in])
            if plan.controls:
                down = mid = intra = None
                if nets:
                    down, mid = self._control(nets, model_in, step.timestep, embeds, pooled, time_ids,
                                              control_images, control_scales[:, i])
                if adapters:
                    intra = intrablock(adapter_features, adapter_scales[:, i], self.dtype, plan.cfg)
                eps = self._unet(model_in, step.timestep, embeds, pooled, time_ids, down, mid, style, intra)
            else:
                eps = self._unet(model_in, step.timestep, embeds, pooled, time_ids, None, None, style)
            if plan.cfg:
                uncond, cond = eps.chunk(2)
                eps = uncond + (guidance * (cond - uncond)).to(uncond.dtype)  # a batch's per-row guidance too
            latents = step.advance(latents, eps.float(), noise[i + 1])
        return latents.to(self.dtype)


def to_rgba8(image: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) in [-1, 1] to (..., H, W, 4) uint8 with opaque alpha, on the image's device
    (one frame or a batch: the same arithmetic)."""
    rgb = ((image.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).movedim(-3, -1)
    alpha = torch.full_like(rgb[..., :1], 255)
    return torch.cat([rgb, alpha], dim=-1).contiguous()
