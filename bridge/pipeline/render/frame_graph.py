"""The whole frame as one function of tensors, for one CUDA graph: (text encoders,) the sampling
loop and the decoder, and the placeholder inputs it is captured on.

Whatever varies per frame (noise, guidance, conditioning, control and style inputs) is an input
tensor; what the graph bakes in is the ``FramePlan`` (its key), whether the graph starts from
token ids and how many per row (``text_length``: a new prompt; None: cached embeddings) and whether
it ends with the pixels or, for the overlap, the latents (``decode``).

It takes what it needs of a renderer through ``FrameModel``, which ``DiffusersRenderer``
(``renderer.py``) is: the renderer imports this module, never the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from ..families.parts import Parts
from ..steering import control_images, style_images
from ..steering.controlnet import ControlNets
from ..steering.style_images import StyleTokens
from ..steering.t2i_adapter import AdapterFeatures
from .model_calls import ModelCalls
from .plan import FramePlan


class FrameModel(Protocol):
    """What a frame graph takes from its renderer: the model calls and parts, where and in which dtype
    they run, and the steering it holds (ControlNets and T2I-Adapters, the style image's tokens)."""

    calls: ModelCalls
    parts: Parts
    device: torch.device
    dtype: torch.dtype
    controlnets: ControlNets
    adapter_features: AdapterFeatures
    style: StyleTokens | None

    def latent_shape(self, plan: FramePlan) -> tuple[int, ...]:
        """(1, channels, height / f, width / f) at ``plan``'s size: one frame's latents and noise draws."""


def whole_frame(r: FrameModel, plan: FramePlan, text_length: int | None,
                decode: bool) -> tuple[Callable[..., tuple], Callable[[], dict]]:
    """(the frame function, its placeholder inputs) for ``r``'s model calls."""
    calls = r.calls

    def frame(noise, guidance, ids=None, embeds=None, pooled=None, image=None, control_images=None,
              control_scales=None, negative=None, negative_pooled=None, style_tokens=None, style_uncond=None,
              style_scale=None, adapter_features=None, adapter_scales=None):
        if ids is not None:
            embeds, pooled = calls.encode(ids)
        latents = calls.denoise_steps(plan, noise, guidance, embeds, pooled, image, control_images, control_scales,
                                      negative, negative_pooled, style_tokens, style_uncond, style_scale,
                                      adapter_features, adapter_scales)
        return calls.decode(latents) if decode else latents, embeds, pooled

    def inputs() -> dict:
        made = {"noise": torch.zeros((plan.draws, *r.latent_shape(plan)), device=r.device),
                "guidance": torch.zeros((), device=r.device)}
        embeds, pooled = (torch.zeros_like(t, dtype=r.dtype, device=r.device) for t in r.parts.text.zeros())
        if text_length is not None:
            made["ids"] = torch.zeros((r.parts.text.rows, text_length), dtype=torch.long, device=r.device)
        else:
            made["embeds"], made["pooled"] = embeds, pooled
        if plan.start is not None:
            made["image"] = torch.zeros(r.latent_shape(plan), dtype=r.dtype, device=r.device)
        if plan.cfg:  # the unconditional branch has the conditioning's shapes
            made["negative"], made["negative_pooled"] = torch.zeros_like(embeds), torch.zeros_like(pooled)
        nets, adapters = r.controlnets.split(plan.controls)
        return {**made, **control_images.graph_inputs(nets, plan.width, plan.height, plan.runs, r.dtype, r.device),
                **r.adapter_features.graph_inputs(adapters, plan.width, plan.height, plan.runs, r.dtype, r.device),
                **style_images.graph_inputs(r.style, plan.style, plan.cfg)}

    return frame, inputs
