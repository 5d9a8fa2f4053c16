"""The parts the SD U-Net families share (SDXL, SD 2.x): CLIP text encoders, the UNet with its
steering inputs, the VAE (full or tiny) and the epsilon-prediction samplers.

A family module says how they are set (which encoders, which hidden layer, pooled output and
time ids or not) and builds them with ``unet_parts``. The arithmetic is diffusers' own, in its
order, so frames match the diffusers pipelines pixel for pixel.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .family import Family
from .fast_tokens import PaddedRows
from .parts import AutoencoderDecode, Conditioning, Parts
from .schedule import Sampler

CLIP_TOKENS = 77


@dataclass(frozen=True)
class UNetSettings:
    """What differs between the SD U-Net families."""

    text_encoders: tuple[str, ...]  # pipeline attributes, in the order of the token-id rows
    tokenizers: tuple[str, ...]  # one per text encoder, same order
    # The hidden state each encoder contributes (concatenated on the feature axis): -2 is the
    # penultimate layer (SDXL); None is last_hidden_state after the final layer norm (SD 2.x:
    # its config already drops OpenCLIP's last layer, which is how diffusers reads "penultimate").
    hidden_layer: int | None
    pooled: bool  # SDXL: the last encoder's projected pooled output goes to the UNet as text_embeds
    time_ids: bool  # SDXL micro-conditioning: (original size, crop top-left, target size)


# SD 1.x and SD 2.x: one text encoder's last hidden state (after the final layer norm), no pooled
# output, no time ids; they differ in the encoder (CLIP ViT-L vs OpenCLIP ViT-H), not in how it is read.
ONE_ENCODER = UNetSettings(text_encoders=("text_encoder",), tokenizers=("tokenizer",), hidden_layer=None,
                           pooled=False, time_ids=False)


class ClipPromptLength:
    """``warnings(text)`` of CLIP text: what the encoders do not read of a prompt. It holds the
    tokenizer alone, so it pickles small: a cluster's daemon checks prompts with it, the model elsewhere."""

    def __init__(self, tokenizer):
        self._counter = tokenizer

    def __getstate__(self) -> dict:
        # The tokenizer's own files: a pickled tokenizer object loses its decoder (words come back as
        # "a</w>lighthouse</w>"), one loaded again from its files is the same tokenizer.
        with tempfile.TemporaryDirectory() as folder:
            self._counter.save_pretrained(folder)
            return {"class": type(self._counter), "files": {p.name: p.read_bytes() for p in Path(folder).iterdir()}}

    def __setstate__(self, state: dict) -> None:
        with tempfile.TemporaryDirectory() as folder:
            for name, data in state["files"].items():
                (Path(folder) / name).write_bytes(data)
            self._counter = state["class"].from_pretrained(folder)

    def __call__(self, text: str) -> list[str]:
        # CLIP's tokenizer is byte-level BPE: each token stands for at least one byte of the cleaned text,
        # and cleaning (whitespace, lower case, ftfy) never lengthens ASCII. So an ASCII prompt of at most
        # 75 characters is at most 77 tokens with start and end: no tokenizing on the event loop for it.
        if text.isascii() and len(text) + 2 <= CLIP_TOKENS:
            return []
        ids = self._counter(text, truncation=False, add_special_tokens=True).input_ids
        if len(ids) <= CLIP_TOKENS:
            return []
        kept = self._counter.decode(ids[1:CLIP_TOKENS - 1])
        return [f"prompt is {len(ids)} tokens; CLIP reads {CLIP_TOKENS} (start and end included), "
                f"so only this part is used: {kept!r}"]


class ClipText:
    """CLIP text encoders: token ids of every encoder as rows, their hidden states side by side."""

    lengths = (CLIP_TOKENS,)

    def __init__(self, pipe, settings: UNetSettings, dtype: torch.dtype):
        self.settings = settings
        self.encoders = [getattr(pipe, name) for name in settings.text_encoders]
        self.tokenizers = [getattr(pipe, name) for name in settings.tokenizers]
        self.rows = len(self.encoders)
        self.modules = tuple(self.encoders)
        self.dtype = dtype
        self.zeros_for_empty = bool(pipe.config.get("force_zeros_for_empty_prompt", False))
        self._zeros: Conditioning | None = None
        # Backend copies of the tokenizers, truncating to 77 (set once; any thread may encode with them).
        self._rows = PaddedRows(self.tokenizers, CLIP_TOKENS)
        # A separate tokenizer for counting on the event loop: a fast tokenizer is not safe to
        # reconfigure (truncation/padding) from two threads at once.
        first = self.tokenizers[0]
        self.warnings = ClipPromptLength(first.__class__.from_pretrained(first.name_or_path)
                                         if first.name_or_path else first)

    def token_ids(self, text: str, at_least: int = 0) -> torch.Tensor:
        """(encoders, 77) token ids, whatever ``at_least`` (one length): SDXL's CLIP-L and CLIP-G rows
        differ on '!' and padding. Each row is its tokenizer's call ``tokenizer(text, truncation=True,
        max_length=77)`` padded on the right, made by ``fast_tokens.PaddedRows``."""
        return torch.from_numpy(self._rows(text))

    def encode(self, ids: torch.Tensor) -> Conditioning:
        """The text encoders in one graph: ids (encoders, 77), one row per encoder (or
        (encoders, B, 77) for B prompts).

        Only what the UNet uses leaves the graph (the chosen hidden state of each encoder,
        concatenated, and SDXL's pooled projection), not every layer's hidden state. Without a
        pooled embedding the extra tensor is (B, 0), so caches, blends and graphs stay uniform.
        """
        layer, hidden, out = self.settings.hidden_layer, [], None
        for row, encoder in enumerate(self.encoders):
            out = encoder(ids[row] if ids.dim() == 3 else ids[row:row + 1], output_hidden_states=layer is not None)
            hidden.append(out.last_hidden_state if layer is None else out.hidden_states[layer])
        embeds = torch.cat(hidden, dim=-1) if len(hidden) > 1 else hidden[0]
        pooled = out.text_embeds if self.settings.pooled else embeds.new_zeros((embeds.shape[0], 0))
        return embeds.to(self.dtype), pooled.to(self.dtype)

    def zeros(self) -> Conditioning:
        """The encoders' hidden states side by side, and the last encoder's pooled projection or
        (1, 0) without one, as zeros."""
        if self._zeros is None:
            last = self.encoders[-1]
            width = sum(encoder.config.hidden_size for encoder in self.encoders)
            pooled = last.config.projection_dim if self.settings.pooled else 0
            self._zeros = (torch.zeros((1, CLIP_TOKENS, width), dtype=last.dtype, device=last.device),
                           torch.zeros((1, pooled), dtype=last.dtype, device=last.device))
        return self._zeros


class UNetDenoiser:
    """A ``UNet2DConditionModel``: epsilon prediction, classifier-free guidance, and the steering
    inputs (ControlNet residuals, T2I-Adapter features, IP-Adapter tokens)."""

    guidance = "cfg"

    def __init__(self, unet, settings: UNetSettings, device: torch.device, dtype: torch.dtype):
        self.module = unet
        self.settings = settings
        self.device = device
        self.dtype = dtype
        self._time_ids: dict[tuple[int, int, int], torch.Tensor] = {}

    def latent_shape(self, width: int, height: int) -> tuple[int, ...]:
        return 1, self.module.config.in_channels, height // 8, width // 8

    def added(self, width: int, height: int, rows: int, guidance=None) -> torch.Tensor | None:
        """SDXL's add_time_ids per row: original size, crop top-left (0, 0), target size (height first)."""
        if not self.settings.time_ids:
            return None
        key = (width, height, rows)
        if key not in self._time_ids:
            ids = torch.tensor([[height, width, 0, 0, height, width]] * rows, dtype=self.dtype)
            self._time_ids[key] = ids.to(self.device)
        return self._time_ids[key]

    def conditioning(self, embeds: torch.Tensor, pooled: torch.Tensor, added: torch.Tensor | None,
                     style: tuple | None = None) -> dict:
        """The UNet's keyword arguments besides (latents, timestep): the one place they are built.

        ``style``: (image tokens, scale) of the IP-Adapter, read by its cross-attention processors."""
        kwargs: dict = {"encoder_hidden_states": embeds if style is None else (embeds, *style)}
        if self.settings.pooled or self.settings.time_ids:
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": added}
        return kwargs

    def denoise(self, latents, timestep, embeds, pooled, added, down=None, mid=None, style=None,
                intra=None) -> torch.Tensor:
        """One UNet evaluation; ``down``/``mid``: ControlNet residuals added to its skip connections,
        ``style``: the IP-Adapter's (tokens, scale), ``intra``: T2I-Adapter residuals added inside
        its down blocks (a fresh list: the UNet pops it)."""
        return self.module(latents, timestep, **self.conditioning(embeds, pooled, added, style),
                           down_block_additional_residuals=down, mid_block_additional_residual=mid,
                           down_intrablock_additional_residuals=None if intra is None else list(intra)).sample

    def control(self, controlnets, names: tuple[str, ...], latents, timestep, embeds, pooled, added, images, scales):
        """The summed residuals of the ControlNets ``names`` (``steering.controlnet.ControlNets``)
        for one UNet evaluation: they see the UNet's own inputs and added conditioning."""
        extra = self.conditioning(embeds, pooled, added).get("added_cond_kwargs")
        return controlnets.residuals(names, latents, timestep, embeds, extra, images, scales)


class VaeDecoder(AutoencoderDecode):
    """``AutoencoderKL`` or ``AutoencoderTiny`` (the loader puts the chosen one into the pipeline)."""

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """(H, W, 3) uint8 to scaled latents (1, 4, H/8, W/8), with diffusers' arithmetic: x / 255,
        then 2x - 1; the mean of the latent distribution (the tiny VAE has none: its latents as they are)."""
        vae = self.module
        x = (rgb.permute(2, 0, 1)[None].float() / 255.0 * 2.0 - 1.0).to(vae.dtype)
        out = vae.encode(x)
        latents = out.latent_dist.mean if hasattr(out, "latent_dist") else out.latents
        return vae.config.scaling_factor * latents.to(self.dtype)


def unet_parts(settings: UNetSettings, pipe, device: str | torch.device, dtype: torch.dtype) -> Parts:
    """The parts of a loaded SD U-Net pipeline (``StableDiffusionPipeline``, ``StableDiffusionXLPipeline``)."""
    device = torch.device(device)
    return Parts(text=ClipText(pipe, settings, dtype), denoiser=UNetDenoiser(pipe.unet, settings, device, dtype),
                 decoder=VaeDecoder(pipe.vae, dtype), sampler=Sampler(pipe.scheduler))


def unet_family(settings: UNetSettings, **description) -> Family:
    """A U-Net family's ``Family``: its description, its encoders and parts from ``settings``."""
    return Family(text_encoders=settings.text_encoders, tokenizers=settings.tokenizers,
                  parts=functools.partial(unet_parts, settings), sampler=Sampler, **description)
