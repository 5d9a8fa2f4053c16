"""What a model family hands the renderer: its parts, as one object the renderer holds.

A family module (``sdxl.py``, ``sd2.py``; a transformer family the same way) builds ``Parts``
from a loaded pipeline. The renderer, the sampling loop and the batch renderer reach the model
only through them:

- ``text``: prompt -> token ids (event loop side: tokenizers) -> conditioning (the text
  encoders, a plain function of tensors: compiled, captured in the frame graph);
- ``denoiser``: one evaluation of the denoising network, its added conditioning (SDXL's time
  ids, an embedded-guidance model's guidance) and the latents' shape;
- ``decoder``: latents -> RGBA8 pixels, and the input image -> latents (image-to-image);
- ``sampler``: the few-step schedule (``schedule.py``): each step's model input, update and noising.

Conditioning is a pair of tensors ``(embeds, extra)`` with a batch axis first: ``embeds`` the
sequence the denoiser attends to, ``extra`` the family's second tensor (SDXL's pooled projection;
an empty (B, 0) tensor when a family has none; an attention mask for a family that needs one).
Caches, blends, transitions, batches and graph inputs treat both alike, so they stay family-blind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

Conditioning = tuple[torch.Tensor, torch.Tensor]  # (embeds (B, L, D), extra (B, P))

# What steers a frame besides the prompt, by name: a family lists those it supports (Family.steering).
STEERING = ("controlnet", "t2i_adapter", "ip_adapter", "lora")


class TextConditioning(Protocol):
    """Prompts to conditioning. ``token_ids`` and ``warnings`` run on any thread; ``encode`` on the render thread."""

    rows: int  # rows of token ids per prompt (e.g. one per text encoder)
    # The token ids per row a text takes, shortest first: one compiled graph each, all captured at
    # start-up (CLIP: 77 alone; SANA's Gemma: a few lengths of the text after its cached instruction).
    lengths: tuple[int, ...]
    zeros_for_empty: bool  # the unconditional branch of an empty negative prompt is zeros (SDXL-Turbo)
    modules: Sequence[torch.nn.Module]  # the text encoders (compile preparation)

    def token_ids(self, text: str, at_least: int = 0) -> torch.Tensor:
        """(rows, n) int64 on the host: n the shortest of ``lengths`` that holds the text and is at
        least ``at_least`` (a batch's texts at one length); a part may give a longer n for a text no
        length holds (SANA: the whole text, where its tokens reach into the cached instruction)."""

    def warnings(self, text: str) -> list[str]:
        """What the text encoder does not read of ``text`` (a cut prompt); event loop."""

    def encode(self, ids: torch.Tensor) -> Conditioning:
        """ids (rows, n), or (rows, B, n) for B prompts, as ``token_ids`` gives them -> conditioning of
        B rows, of one shape whatever n."""

    def zeros(self) -> Conditioning:
        """Zero conditioning of one prompt's shapes (graph placeholders, SDXL-Turbo's unconditional)."""


class Denoiser(Protocol):
    """The denoising network as a plain function of tensors (compiled per graph key)."""

    guidance: Literal["cfg", "embedded"]  # cfg: a batch of two (negative first); embedded: an input of ``added``
    module: torch.nn.Module  # compile preparation, tiling, steering installs

    def latent_shape(self, width: int, height: int) -> tuple[int, ...]:
        """(1, channels, height / f, width / f): one frame's latents and noise draws."""

    def added(self, width: int, height: int, rows: int, guidance) -> torch.Tensor | None:
        """Added conditioning for ``rows`` rows (SDXL's time ids; None without). ``guidance``: a
        float, a 0-d tensor or one value per row (B, 1, 1, 1); only an embedded-guidance model reads it."""

    def denoise(self, latents: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor, extra: torch.Tensor,
                added: torch.Tensor | None, **steering) -> torch.Tensor:
        """The model output the sampler's steps take. ``steering`` (U-Net families): ``down``/``mid``
        ControlNet residuals, ``style`` the IP-Adapter's (tokens, scale), ``intra`` T2I-Adapter features."""


class LatentDecode(Protocol):
    """Latents to pixels alone: a ``Decoder``, or ``AutoencoderDecode`` of another autoencoder of the same
    latent space (``--batch-vae tiny``: the family's tiny one decodes batches; the encode stays the pipeline's)."""

    module: torch.nn.Module

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) latents -> (B, H, W, 4) uint8 RGBA, opaque, on the latents' device."""


class Decoder(LatentDecode, Protocol):
    """The latent space's decoder and encoder (full VAE or tiny)."""

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """(H, W, 3) uint8 -> (1, C, h, w) latents in the renderer's dtype (image-to-image input)."""


class Schedule(Protocol):
    init_sigma: float  # text-to-image: latents = first noise draw * init_sigma
    steps: tuple  # each: .timestep, .model_input(latents), .advance(latents, out, noise), .noised(image, noise)


class Sampler(Protocol):
    name: str  # the --scheduler name, for health

    def steps(self, count: int, device: torch.device) -> Schedule: ...


@dataclass(frozen=True)
class Parts:
    text: TextConditioning
    denoiser: Denoiser
    decoder: Decoder
    sampler: Sampler


class AutoencoderDecode:
    """The decode every diffusers autoencoder shares (``AutoencoderKL``, ``AutoencoderTiny``,
    ``AutoencoderDC``): latents in the pipeline's scale, ``latents / scaling_factor`` decoded. A family's
    decoder adds its ``encode``, where the autoencoders differ."""

    def __init__(self, vae, dtype: torch.dtype):
        self.module = vae
        self.dtype = dtype

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.module
        return to_rgba8(vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0])


def to_rgba8(image: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) in [-1, 1] to (..., H, W, 4) uint8 with opaque alpha, on the image's device
    (one frame or a batch: the same arithmetic)."""
    rgb = ((image.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).movedim(-3, -1)
    alpha = torch.full_like(rgb[..., :1], 255)
    return torch.cat([rgb, alpha], dim=-1).contiguous()
