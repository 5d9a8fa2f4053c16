"""Rendering one frame from ``Params`` and a ``Scene`` with a loaded SDXL or SD 2.x pipeline.

What differs between model families (text encoders, pooled embeddings, time ids) comes from the
pipeline's ``Family`` (``family.py``); the model calls and the sampling loop are ``ModelCalls``
(``model_calls.py``). This module is the per-frame path around them: compiling (one warm-up per
graph key), caches, the frame's inputs, graph replay and the copy to the host.

One code path for the eager and the compiled renderer: the text encoders, the UNet and the
VAE are plain functions, wrapped by ``torch.compile`` (CUDA graphs) when compiling. Prompt
embeddings are cached per text (``text.py``), an input image's latents per content
(``steering/input_images.py``). All noise comes from a CPU generator seeded with the frame's seed
(``noise.py``), so the same params and input give the same pixels. Whatever varies per frame
(blend and transition mixes, the noise) is mixed outside the graphs and fed to them as input
tensors; what a graph bakes in is its ``FramePlan.key``. On CUDA the only sync is the final copy
into pinned host memory.
"""

from __future__ import annotations

import functools
import logging
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ...core.frame import Rendered
from ...core.params import Params, prompt_texts
from ...core.scene import Scene
from ..steering import control_images, style_images
from ..steering.control_images import ControlImages, frame_controls
from ..steering.controlnet import ControlNets
from .glide import Glider, Shown
from ..steering.input_images import ImageLatents
from ..steering.ip_adapter import IpAdapter
from ..steering.lora import Loras
from .model_calls import ModelCalls
from .noise import frame_noise
from ..steering.style_images import StyleTokens
from ..steering.t2i_adapter import AdapterFeatures
from ..speed.optimize import Tuning, compiled, prepare_modules, progress
from .plan import FramePlan
from .text import CLIP_TOKENS, PromptEncoder
from .tiling import Tiling

log = logging.getLogger(__name__)


class DiffusersRenderer(ModelCalls):
    """Renders frames; every method but ``prompt_warnings`` runs on the GPU thread only."""

    def __init__(self, pipe, device: str, dtype: torch.dtype, *, compile: bool = False,
                 profile: bool = False, cache_size: int = 256, lora_dir: Path | None = None,
                 controlnets: ControlNets | None = None, canny_thresholds: tuple[float, float] = (100.0, 200.0),
                 ip_adapter: IpAdapter | None = None, precision: str = "default", tuning: Tuning = Tuning()):
        super().__init__(pipe, device, dtype, controlnets)
        self.compile = compile
        self.tuning = tuning
        self.profile = profile  # synchronise per stage: honest stage times, a little slower
        self._cuda = self.device.type == "cuda"
        self._warm: set[tuple] = set()
        self._pinned: dict[tuple[int, int], torch.Tensor] = {}
        self._stages: dict[str, float] = {}
        self._done = torch.cuda.Event() if self._cuda else None
        self._graphs = None
        self._glider = Glider()
        self.after_compile = None  # called after each warm-up compile (e.g. to save compile artefacts)
        self.control_images = ControlImages(self.device, dtype, canny_thresholds)
        self.adapter_features = AdapterFeatures(self.controlnets.adapters, self._staged_adapter)
        self._tiling = Tiling([pipe.unet, self.vae])
        if compile:
            # transformers installs its output-capturing hooks lazily, under a lock Dynamo cannot
            # trace: one eager call installs them before compiling.
            with torch.inference_mode():
                self._text(self._zero_ids())
            prepare_modules([pipe.unet, self.vae, *self.encoders, *self.controlnets.nets.values()], self.device,
                            tuning, vae=self.vae)
            # The compiled model calls replace the eager ones ModelCalls set: the sampling loop calls these.
            self._encode = compiled(self._text, self.device)
            self._unet = compiled(self._denoise, self.device)
            self._decode = compiled(self._vae_decode, self.device, tuning.decoder_mode)
            self._encode_image = compiled(self._vae_encode, self.device)
            self._control = compiled(self._residuals, self.device)
            self._adapt = compiled(self._adapter_run, self.device)
            if self._cuda:
                from ..speed.graphs import FrameGraphs

                self._graphs = FrameGraphs()
        # fp8: after the QKV fusion above (the fused layers are quantised), before the style processors (bf16)
        if precision == "fp8":
            from ..speed.fp8 import check, quantize_unet

            check(self.device)
            quantize_unet(pipe.unet)
        # After any fusing: the style processors wrap the model's own (fused) cross-attention processors.
        self.style = None if ip_adapter is None else StyleTokens(ip_adapter, self.device, dtype)
        if ip_adapter is not None:
            ip_adapter.install(pipe.unet)
        tokenizers = [getattr(pipe, name) for name in self.family.tokenizers]
        self.text = PromptEncoder(pipe, tokenizers, lambda ids: self._staged(("text",), self._encode, ids=ids),
                                  self._cuda, cache_size, stage=self._stage, family=self.family)
        self.images = ImageLatents(self._staged_encode, self._cuda, stage=self._stage)
        self.loras = Loras(pipe, lora_dir)

    # -- the event loop side ------------------------------------------------------------
    def prompt_warnings(self, prompt: str) -> list[str]:
        return self.text.warnings(prompt)

    # -- the GPU thread side ------------------------------------------------------------
    @property
    def text_encoder_runs(self) -> int:
        return self.text.runs

    @property
    def vae_encoder_runs(self) -> int:
        return self.images.runs

    @contextmanager
    def _stage(self, name: str):
        if self.profile and self._cuda:
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        yield
        if self.profile and self._cuda:
            torch.cuda.synchronize(self.device)
        self._stages[name] = self._stages.get(name, 0.0) + (time.perf_counter() - start) * 1e3

    def embeddings(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt_embeds, pooled) for a prompt, from the cache when it was seen before."""
        return self.text.embeddings(prompt)

    def _staged_encode(self, rgb: torch.Tensor) -> torch.Tensor:
        return self._staged(("encode", rgb.shape[1], rgb.shape[0], self._tiling.mode), self._encode_image, rgb=rgb)

    def _staged_adapter(self, name: str, image: torch.Tensor) -> list[torch.Tensor]:
        return self._staged(("adapter", name, image.shape[-1], image.shape[-2]),
                            functools.partial(self._adapt, name), image=image)

    @torch.inference_mode()
    def render(self, params: Params, scene: Scene = Scene()) -> Rendered:
        self.warm(params, scene)
        return self._render(params, scene)

    def warm(self, params: Params, scene: Scene) -> None:
        """Compile and capture this frame's graphs, once per graph key (a no-op when eager or warm)."""
        plan = self._plan(params, scene)
        if self.compile and plan.key not in self._warm:
            self._warm.add(plan.key)
            text = prompt_texts(params.prompt)[0]
            with progress(f"compiling for {params.width}x{params.height}, {plan.runs} of {plan.schedule_steps} "
                          f"step(s), guidance {'on' if plan.cfg else 'off'}, "
                          f"{'image' if plan.start is not None else 'text'}-to-image (once per size; cached on disk)",
                          compiling=True):
                warm = Scene(scene.input, controls=scene.controls, style=scene.style)
                self._render(params.merged({"prompt": text + " "}), warm, record=False)  # the with-text graph
                self._render(params.merged({"prompt": text}), warm, record=False)  # the cached-embeddings graph
            if self.after_compile is not None:
                self.after_compile()

    def _render(self, params: Params, scene: Scene, record: bool = True) -> Rendered:
        rgba = self.device_frame(params, scene, record)
        with self._stage("to_host"):
            pixels = self._to_host(rgba)
        return Rendered(pixels, dict(self._stages))

    def device_frame(self, params: Params, scene: Scene, record: bool = True, decode: bool = True) -> torch.Tensor:
        """The frame on the device, RGBA; with ``decode=False`` the latents the VAE would decode
        (the overlap decodes them on its own stream: ``render/overlapped.py``). Call ``warm`` first."""
        self._stages = {}
        if params.loras != self.loras.applied:
            with self._stage("loras"):  # between two frames, into the same weight storage
                self.text.variant = self.loras.update(params.loras)
        plan = self._plan(params, scene)
        if self._tiling.set(plan.tiling):
            self.images.clear()  # the input's latents depend on the encoder's padding
        image = None if scene.input is None else self.images.latents(scene.input, plan.width, plan.height)
        control: dict = {}
        if scene.controls:
            with self._stage("control_images"):
                nets, adapters = self.controlnets.split(plan.controls)
                images = dict(scene.controls)
                control = {**control_images.values(self.control_images, params,
                                                   Scene(controls=tuple((n, images[n]) for n in nets)), plan.runs),
                           **self.adapter_features.values(self.control_images, params,
                                                          tuple((n, images[n]) for n in adapters), plan.runs)}
        if plan.style:
            with self._stage("style_image"):  # the image encoder runs for a new style image only
                control.update(style_images.values(self.style, scene.style, params.style_scale, plan.cfg))
        with self._stage("noise"):
            noise = frame_noise(params, plan.draws, self._latent_shape(plan))
        if self._graphs is not None and not self.profile and isinstance(params.prompt, str) and scene.glide is None:
            out, shown = self._render_graph(plan, params, noise, image, control, decode)  # one replay, text included
        else:
            embeds, pooled = self.text.conditioning(params.prompt)
            shown = self._glider.mix(scene.glide, Shown(embeds, pooled, noise))
            out = self._frame(plan, params, shown, image, control, decode)
        if record:
            self._glider.record(shown)
        return out

    def _plan(self, params: Params, scene: Scene) -> FramePlan:
        style = scene.style is not None and self.style is not None and params.style_scale > 0
        return FramePlan.of(params, scene.input is not None, frame_controls(scene), style)

    def _inputs(self, shown: Shown, params: Params, image: torch.Tensor | None, control: dict) -> dict:
        values = {"noise": shown.noise.pin_memory() if self._cuda else shown.noise,
                  "guidance": float(params.guidance), "embeds": shown.embeds, "pooled": shown.pooled,
                  **self._unconditional(params), **control}
        return values if image is None else {**values, "image": image}

    def _unconditional(self, params: Params) -> dict:
        """Guidance's unconditional branch as graph inputs (none without guidance: nothing encoded)."""
        if params.guidance <= 0:
            return {}
        negative, negative_pooled = self.text.unconditional(params.negative_prompt)
        return {"negative": negative, "negative_pooled": negative_pooled}

    def _frame(self, plan: FramePlan, params: Params, shown: Shown, image: torch.Tensor | None,
               control: dict, decode: bool = True) -> torch.Tensor:
        """A frame (or its latents) from mixed conditioning: one graph replay, or a stage at a time
        (eager, profiling)."""
        values = self._inputs(shown, params, image, control)
        if self._graphs is not None and not self.profile:
            return self._frame_graph(plan, with_text=False, decode=decode).run(**values)[0]
        with self._stage("unet"):
            latents = self._staged(("unet", *plan.key), functools.partial(self._denoise_steps, plan), **values)
        if not decode:
            return latents
        with self._stage("vae_decode"):
            return self._staged(("decode", plan.width, plan.height, plan.tiling), self._decode, latents=latents)

    def _staged(self, key: tuple, fn, **values):
        """One stage: plain (eager, CPU) or as its own CUDA graph (per-stage profiling on CUDA)."""
        if self._graphs is None:
            values = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in values.items()}
            return fn(**values)

        def zeros(v):
            if isinstance(v, (tuple, list)):  # T2I-Adapter features: one tensor per level
                return tuple(torch.zeros_like(t, device=self.device) for t in v)
            return torch.zeros_like(v, device=self.device) if isinstance(v, torch.Tensor) \
                else torch.zeros((), device=self.device)

        def inputs() -> dict:
            return {k: zeros(v) for k, v in values.items()}

        return self._graphs.get(key, fn, inputs).run(**values)


    def _frame_graph(self, plan: FramePlan, with_text: bool, decode: bool = True):
        """The whole frame as one graph: (text encoders,) denoising and decoding (``decode=False``:
        up to the latents, the overlap's first stage)."""
        def frame(noise, guidance, ids=None, embeds=None, pooled=None, image=None, control_images=None,
                  control_scales=None, negative=None, negative_pooled=None, style_tokens=None, style_uncond=None,
                  style_scale=None, adapter_features=None, adapter_scales=None):
            if ids is not None:
                embeds, pooled = self._encode(ids)
            latents = self._denoise_steps(plan, noise, guidance, embeds, pooled, image, control_images, control_scales,
                                          negative, negative_pooled, style_tokens, style_uncond, style_scale,
                                          adapter_features, adapter_scales)
            return self._decode(latents) if decode else latents, embeds, pooled

        def inputs() -> dict:
            made = {"noise": torch.zeros((plan.draws, *self._latent_shape(plan)), device=self.device),
                    "guidance": torch.zeros((), device=self.device)}
            embeds = torch.zeros((1, CLIP_TOKENS, self.pipe.unet.config.cross_attention_dim),
                                 dtype=self.dtype, device=self.device)
            pooled = torch.zeros((1, self._pooled_dim()), dtype=self.dtype, device=self.device)
            if with_text:
                made["ids"] = self._zero_ids()
            else:
                made["embeds"], made["pooled"] = embeds, pooled
            if plan.start is not None:
                made["image"] = torch.zeros(self._latent_shape(plan), dtype=self.dtype, device=self.device)
            if plan.cfg:  # the unconditional branch has the conditioning's shapes
                made["negative"], made["negative_pooled"] = torch.zeros_like(embeds), torch.zeros_like(pooled)
            nets, adapters = self.controlnets.split(plan.controls)
            return {**made, **control_images.graph_inputs(nets, plan.width, plan.height, plan.runs,
                                                          self.dtype, self.device),
                    **self.adapter_features.graph_inputs(adapters, plan.width, plan.height, plan.runs,
                                                         self.dtype, self.device),
                    **style_images.graph_inputs(self.style, plan.style, plan.cfg)}

        return self._graphs.get((*plan.key, with_text) if decode else (*plan.key, with_text, "latents"), frame, inputs)

    def _render_graph(self, plan: FramePlan, params: Params, noise: torch.Tensor, image: torch.Tensor | None,
                      control: dict, decode: bool = True):
        """One graph replay for the whole frame (text encoders included when the prompt is new)."""
        cached = self.text.cached(params.prompt)
        if cached is not None:
            shown = Shown(*cached, noise)
            graph = self._frame_graph(plan, with_text=False, decode=decode)
            return graph.run(**self._inputs(shown, params, image, control))[0], shown
        values = {"noise": noise.pin_memory(), "guidance": float(params.guidance),
                  "ids": self.text.token_ids(params.prompt), **self._unconditional(params), **control}
        if image is not None:
            values["image"] = image
        out, embeds, pooled = self._frame_graph(plan, with_text=True, decode=decode).run(**values)
        return out, Shown(*self.text.store(params.prompt, embeds, pooled), noise)

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

