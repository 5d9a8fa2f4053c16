"""Rendering one frame from ``Params`` with a loaded SDXL pipeline.

One code path for the eager and the compiled renderer: the text encoders, the UNet and the
VAE decoder are plain functions, wrapped by ``torch.compile`` (CUDA graphs) when compiling.
Prompt embeddings are cached by prompt (LRU): seed-, guidance-, steps- or size-only changes
never run the text encoders. All noise comes from a CPU generator seeded with the frame's
seed, so the same params give the same pixels. On CUDA the only sync is the final copy into
pinned host memory.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np
import torch

from ..frame import Rendered
from ..params import Params
from .optimize import compiled, prepare_modules, progress
from .schedule import EulerAncestral

log = logging.getLogger(__name__)

CLIP_TOKENS = 77


class DiffusersRenderer:
    """Renders frames; every method but ``prompt_warnings`` runs on the GPU thread only."""

    def __init__(self, pipe, device: str, dtype: torch.dtype, *, vae=None, compile: bool = False,
                 profile: bool = False, cache_size: int = 256):
        self.pipe = pipe
        self.vae = vae if vae is not None else pipe.vae
        self.device = torch.device(device)
        self.dtype = dtype
        self.compile = compile
        self.profile = profile  # synchronise per stage: honest stage times, a little slower
        self.text_encoder_runs = 0
        self._cuda = self.device.type == "cuda"
        self._embeddings: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._cache_size = cache_size
        self._schedule = EulerAncestral(pipe.scheduler)
        self._warm: set[tuple] = set()
        self._pinned: dict[tuple[int, int], torch.Tensor] = {}
        self._time_ids: dict[tuple[int, int, int], torch.Tensor] = {}
        self._stages: dict[str, float] = {}
        self._done = torch.cuda.Event() if self._cuda else None
        self._graphs = None
        # A separate tokenizer for counting on the event loop: a fast tokenizer is not safe to
        # reconfigure (truncation/padding) from two threads at once.
        self._counter = pipe.tokenizer.__class__.from_pretrained(pipe.tokenizer.name_or_path) \
            if pipe.tokenizer.name_or_path else pipe.tokenizer
        self._encode, self._unet, self._decode = self._text, self._denoise, self._vae_decode
        if compile:
            # transformers installs its output-capturing hooks lazily, under a lock Dynamo cannot
            # trace: one eager call installs them before compiling.
            with torch.inference_mode():
                self._text(torch.zeros((2, CLIP_TOKENS), dtype=torch.long, device=self.device))
            prepare_modules([pipe.unet, self.vae, pipe.text_encoder, pipe.text_encoder_2], self.device)
            self._encode = compiled(self._text, self.device)
            self._unet, self._decode = compiled(self._denoise, self.device), compiled(self._vae_decode, self.device)
            if self._cuda:
                from .graphs import FrameGraphs

                self._graphs = FrameGraphs()

    # -- the event loop side ------------------------------------------------------------
    def prompt_warnings(self, prompt: str) -> list[str]:
        ids = self._counter(prompt, truncation=False, add_special_tokens=True).input_ids
        if len(ids) <= CLIP_TOKENS:
            return []
        kept = self._counter.decode(ids[1:CLIP_TOKENS - 1])
        return [f"prompt is {len(ids)} tokens; CLIP reads {CLIP_TOKENS} (start and end included), "
                f"so only this part is used: {kept!r}"]

    # -- the functions that get compiled ------------------------------------------------
    def _text(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both CLIP encoders in one graph: ids (2, 77), row 0 for CLIP-L, row 1 for CLIP-G.

        Only the two tensors SDXL uses leave the graph (penultimate hidden states, concatenated,
        and CLIP-G's pooled projection), not every layer's hidden state.
        """
        hidden1 = self.pipe.text_encoder(ids[:1], output_hidden_states=True).hidden_states[-2]
        out2 = self.pipe.text_encoder_2(ids[1:], output_hidden_states=True)
        embeds = torch.cat([hidden1, out2.hidden_states[-2]], dim=-1)
        return embeds.to(self.dtype), out2.text_embeds.to(self.dtype)

    def _denoise(self, latents, timestep, embeds, pooled, time_ids) -> torch.Tensor:
        return self.pipe.unet(latents, timestep, encoder_hidden_states=embeds,
                              added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample

    def _vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        image = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        return to_rgba8(image[0])

    # -- the GPU thread side ------------------------------------------------------------
    @contextmanager
    def _stage(self, name: str):
        if self.profile and self._cuda:
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        yield
        if self.profile and self._cuda:
            torch.cuda.synchronize(self.device)
        self._stages[name] = self._stages.get(name, 0.0) + (time.perf_counter() - start) * 1e3

    def _token_ids(self, prompt: str) -> torch.Tensor:
        """(2, 77) token ids for CLIP-L and CLIP-G (their tokenizers differ on '!' and padding).

        Padded by hand: the tokenizers' own padding to tensors costs ten times the encoding.
        """
        rows = np.empty((2, CLIP_TOKENS), np.int64)
        for row, tokenizer in zip(rows, (self.pipe.tokenizer, self.pipe.tokenizer_2)):
            ids = tokenizer(prompt, truncation=True, max_length=CLIP_TOKENS).input_ids
            row[:len(ids)] = ids
            row[len(ids):] = tokenizer.pad_token_id
        ids = torch.from_numpy(rows)
        return ids.pin_memory() if self._cuda else ids

    def embeddings(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt_embeds, pooled) for a prompt, from the cache when it was seen before."""
        cached = self._embeddings.get(prompt)
        if cached is not None:
            self._embeddings.move_to_end(prompt)
            return cached
        with self._stage("tokenize"):
            ids = self._token_ids(prompt)
        with self._stage("text_encoders"), torch.inference_mode():
            embeds, pooled = self._staged(("text",), self._encode, ids=ids)
            # clone: a CUDA graph's outputs are overwritten by its next replay, and these are kept.
            embeds, pooled = embeds.clone(), pooled.clone()
        self.text_encoder_runs += 1
        self._embeddings[prompt] = (embeds, pooled)
        if len(self._embeddings) > self._cache_size:
            self._embeddings.popitem(last=False)
        return embeds, pooled

    def _negative(self, embeds: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The unconditional branch for guidance > 0: zeros for SDXL-Turbo, as diffusers does."""
        if self.pipe.config.force_zeros_for_empty_prompt:
            return torch.zeros_like(embeds), torch.zeros_like(pooled)
        return self.embeddings("")

    def _host_noise(self, params: Params) -> torch.Tensor:
        """Initial noise plus one draw per ancestral step, from the seed, in drawing order."""
        generator = torch.Generator("cpu").manual_seed(params.seed)
        shape = (1, self.pipe.unet.config.in_channels, params.height // 8, params.width // 8)
        return torch.stack([torch.randn(shape, generator=generator) for _ in range(params.steps + 1)])

    def _time_ids_for(self, params: Params, batch: int) -> torch.Tensor:
        key = (params.width, params.height, batch)
        if key not in self._time_ids:
            h, w = params.height, params.width
            ids = torch.tensor([[h, w, 0, 0, h, w]] * batch, dtype=self.dtype)
            self._time_ids[key] = ids.to(self.device)
        return self._time_ids[key]

    @torch.inference_mode()
    def render(self, params: Params) -> Rendered:
        key = self._key(params)
        if self.compile and key not in self._warm:
            self._warm.add(key)
            with progress(f"compiling for {params.width}x{params.height}, {params.steps} step(s), "
                          f"guidance {'on' if key[3] else 'off'} (once per size; cached on disk)"):
                self._render(params)
                self._render(params.merged({"prompt": params.prompt + " "}))  # the with-text graph too
                return self._render(params)
        return self._render(params)

    def _render(self, params: Params) -> Rendered:
        self._stages = {}
        noise = self._host_noise(params)
        if self._graphs is not None and not self.profile:
            rgba = self._render_graph(params, noise)
        else:
            embeds, pooled = self.embeddings(params.prompt)
            with self._stage("unet"):
                noise = noise.pin_memory() if self._cuda else noise
                latents = self._staged(("unet", *self._key(params)), functools.partial(self._denoise_steps, params),
                                       noise=noise, guidance=float(params.guidance), embeds=embeds, pooled=pooled)
            with self._stage("vae_decode"):
                rgba = self._staged(("decode", params.width, params.height), self._decode, latents=latents)
        with self._stage("to_host"):
            pixels = self._to_host(rgba)
        return Rendered(pixels, dict(self._stages))

    @staticmethod
    def _key(params: Params) -> tuple:
        return params.width, params.height, params.steps, params.guidance > 0

    def _staged(self, key: tuple, fn, **values):
        """One stage: plain (eager, CPU) or as its own CUDA graph (per-stage profiling on CUDA)."""
        if self._graphs is None:
            values = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in values.items()}
            return fn(**values)

        def inputs() -> dict:
            return {k: torch.zeros_like(v, device=self.device) if isinstance(v, torch.Tensor)
                    else torch.zeros((), device=self.device) for k, v in values.items()}

        return self._graphs.get(key, fn, inputs).run(**values)

    def _denoise_steps(self, params: Params, noise: torch.Tensor, guidance, embeds, pooled) -> torch.Tensor:
        """The sampling loop; ``guidance`` is a float, or a 0-d tensor inside a frame graph."""
        cfg = params.guidance > 0
        if cfg:
            negative, negative_pooled = self._negative(embeds, pooled)
            embeds, pooled = torch.cat([negative, embeds]), torch.cat([negative_pooled, pooled])
        steps = self._schedule.steps(params.steps, self.device)
        time_ids = self._time_ids_for(params, 2 if cfg else 1)
        latents = noise[0] * steps.init_sigma
        for i, step in enumerate(steps):
            model_in = (latents / step.input_scale).to(self.dtype)
            if cfg:
                model_in = torch.cat([model_in, model_in])
            eps = self._unet(model_in, step.timestep, embeds, pooled, time_ids)
            if cfg:
                uncond, cond = eps.chunk(2)
                eps = uncond + guidance * (cond - uncond)
            latents = step.advance(latents, eps.float(), noise[i + 1])
        return latents.to(self.dtype)

    def _render_graph(self, params: Params, noise: torch.Tensor) -> torch.Tensor:
        """One graph replay for the whole frame (text encoders included when the prompt is new)."""
        cached = self._embeddings.get(params.prompt)
        with_text = cached is None
        key = (*self._key(params), with_text)
        embed_shape = (1, CLIP_TOKENS, self.pipe.unet.config.cross_attention_dim)
        pooled_dim = self.pipe.text_encoder_2.config.projection_dim

        def frame(noise, guidance, ids=None, embeds=None, pooled=None):
            if ids is not None:
                embeds, pooled = self._encode(ids)
            return self._decode(self._denoise_steps(params, noise, guidance, embeds, pooled)), embeds, pooled

        def inputs() -> dict:
            made = {"noise": torch.zeros(noise.shape, device=self.device),
                    "guidance": torch.zeros((), device=self.device)}
            if with_text:
                made["ids"] = torch.zeros((2, CLIP_TOKENS), dtype=torch.long, device=self.device)
            else:
                made["embeds"] = torch.zeros(embed_shape, dtype=self.dtype, device=self.device)
                made["pooled"] = torch.zeros((1, pooled_dim), dtype=self.dtype, device=self.device)
            return made

        graph = self._graphs.get(key, frame, inputs)
        values = {"noise": noise.pin_memory(), "guidance": float(params.guidance)}
        if with_text:
            values["ids"] = self._token_ids(params.prompt)
        else:
            self._embeddings.move_to_end(params.prompt)
            values["embeds"], values["pooled"] = cached
        rgba, embeds, pooled = graph.run(**values)
        if with_text:  # keep copies: the graph's outputs are overwritten by its next replay
            self.text_encoder_runs += 1
            self._embeddings[params.prompt] = (embeds.clone(), pooled.clone())
            if len(self._embeddings) > self._cache_size:
                self._embeddings.popitem(last=False)
        return rgba

    def _to_host(self, rgba: torch.Tensor) -> np.ndarray:
        if not self._cuda:
            return rgba.numpy().copy()
        shape = tuple(rgba.shape[:2])
        if shape not in self._pinned:
            self._pinned[shape] = torch.empty(rgba.shape, dtype=torch.uint8, pin_memory=True)
        host = self._pinned[shape]
        host.copy_(rgba, non_blocking=True)
        self._done.record()
        self._done.synchronize()  # the one sync of a frame
        return host.numpy().copy()  # the pinned buffer is reused by the next frame


def to_rgba8(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [-1, 1] to (H, W, 4) uint8 with opaque alpha, on the image's device."""
    rgb = ((image.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
    alpha = torch.full_like(rgb[..., :1], 255)
    return torch.cat([rgb, alpha], dim=-1).contiguous()
