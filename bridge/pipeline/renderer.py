"""Rendering one frame from ``Params`` with a loaded SDXL pipeline (eager path).

Prompt embeddings are cached by prompt (LRU), so a seed-, guidance-, steps- or size-only
change never runs the text encoders. The initial noise comes from a CPU generator seeded
with the frame's seed, so the same params give the same pixels on any device.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np
import torch

from ..frame import Rendered
from ..params import Params

log = logging.getLogger(__name__)

CLIP_TOKENS = 77


class DiffusersRenderer:
    """Renders frames; every method but ``prompt_warnings`` runs on the GPU thread only."""

    def __init__(self, pipe, device: str, dtype: torch.dtype, cache_size: int = 256, profile: bool = False):
        self.pipe = pipe
        self.device = torch.device(device)
        self.dtype = dtype
        self.profile = profile  # synchronise per stage: honest stage times, a little slower
        self.text_encoder_runs = 0
        self._embeddings: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._cache_size = cache_size
        self._negative: tuple[torch.Tensor, torch.Tensor] | None = None
        self._stages: dict[str, float] = {}
        # A separate tokenizer for counting on the event loop: a fast tokenizer is not safe to
        # reconfigure (truncation/padding) from two threads at once.
        self._counter = pipe.tokenizer.__class__.from_pretrained(pipe.tokenizer.name_or_path) \
            if pipe.tokenizer.name_or_path else pipe.tokenizer

    # -- the event loop side ------------------------------------------------------------
    def prompt_warnings(self, prompt: str) -> list[str]:
        ids = self._counter(prompt, truncation=False, add_special_tokens=True).input_ids
        if len(ids) <= CLIP_TOKENS:
            return []
        kept = self._counter.decode(ids[1:CLIP_TOKENS - 1])
        return [f"prompt is {len(ids)} tokens; CLIP reads {CLIP_TOKENS} (start and end included), "
                f"so only this part is used: {kept!r}"]

    # -- the GPU thread side ------------------------------------------------------------
    @contextmanager
    def _stage(self, name: str):
        if self.profile and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        yield
        if self.profile and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._stages[name] = self._stages.get(name, 0.0) + (time.perf_counter() - start) * 1e3

    def embeddings(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt_embeds, pooled) for a prompt, from the cache when it was seen before."""
        cached = self._embeddings.get(prompt)
        if cached is not None:
            self._embeddings.move_to_end(prompt)
            return cached
        with self._stage("text_encoders"), torch.inference_mode():
            embeds, _, pooled, _ = self.pipe.encode_prompt(
                prompt, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False)
        self.text_encoder_runs += 1
        self._embeddings[prompt] = (embeds, pooled)
        if len(self._embeddings) > self._cache_size:
            self._embeddings.popitem(last=False)
        return embeds, pooled

    def negative_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The unconditional branch for guidance > 0: zeros for SDXL-Turbo, as diffusers does."""
        if self._negative is None:
            if self.pipe.config.force_zeros_for_empty_prompt:
                embeds, pooled = self.embeddings("")
                self._negative = (torch.zeros_like(embeds), torch.zeros_like(pooled))
            else:
                self._negative = self.embeddings("")
        return self._negative

    def initial_noise(self, params: Params) -> torch.Tensor:
        generator = torch.Generator("cpu").manual_seed(params.seed)
        shape = (1, self.pipe.unet.config.in_channels, params.height // 8, params.width // 8)
        return torch.randn(shape, generator=generator, dtype=torch.float32)

    @torch.inference_mode()
    def render(self, params: Params) -> Rendered:
        self._stages = {}
        embeds, pooled = self.embeddings(params.prompt)
        cfg = params.guidance > 0
        if cfg:
            negative, negative_pooled = self.negative_embeddings()
            embeds = torch.cat([negative, embeds])
            pooled = torch.cat([negative_pooled, pooled])
        scheduler = self.pipe.scheduler
        with self._stage("unet"):
            scheduler.set_timesteps(params.steps, device=self.device)
            generator = torch.Generator("cpu").manual_seed(params.seed)
            latents = self.initial_noise(params).to(self.device, self.dtype) * scheduler.init_noise_sigma
            h, w = params.height, params.width
            time_ids = torch.tensor([[h, w, 0, 0, h, w]], device=self.device, dtype=self.dtype)
            time_ids = time_ids.repeat(embeds.shape[0], 1)
            for t in scheduler.timesteps:
                model_in = scheduler.scale_model_input(torch.cat([latents] * 2) if cfg else latents, t)
                noise = self.pipe.unet(model_in, t, encoder_hidden_states=embeds,
                                       added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
                if cfg:
                    uncond, cond = noise.chunk(2)
                    noise = uncond + params.guidance * (cond - uncond)
                latents = scheduler.step(noise, t, latents, generator=generator).prev_sample
        with self._stage("vae_decode"):
            vae = self.pipe.vae
            image = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        with self._stage("to_host"):
            pixels = to_rgba8(image[0]).cpu().numpy()
        return Rendered(pixels, dict(self._stages))


def to_rgba8(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [-1, 1] to (H, W, 4) uint8 with opaque alpha, on the image's device."""
    rgb = ((image.float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)
    alpha = torch.full_like(rgb[..., :1], 255)
    return torch.cat([rgb, alpha], dim=-1).contiguous()
