"""Rendering one frame from ``Params`` and a ``Scene`` with a loaded pipeline of any family.

The renderer holds the family's parts (``families/parts.py``: text conditioning, denoiser,
decoder, sampler) through ``ModelCalls`` (``model_calls.py``: the calls, eager or compiled, and the
sampling loop); it never touches the model otherwise. This module is the per-frame path around
them: caches, the frame's inputs and its replay as one graph (``frame_graph.py``); compiling's
set-up and its one warm-up per graph key are ``compiling.py``'s; ``runner.py`` runs and times the
stages (eager or CUDA graphs) and copies pixels to the host. ``batch.py`` builds batches of
channels' frames on the renderer's public methods; ``device_frame(..., decode=False)`` stops at the
latents for the overlap (``overlapped.py``), which decodes them on a stream of its own.

One code path for the eager and the compiled renderer: the text encoders, the denoiser and the
decoder are plain functions, wrapped by ``torch.compile`` (CUDA graphs) when compiling. Prompt
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
from pathlib import Path

import torch

from ...core.frame import Rendered
from ...core.params import Params
from ...core.scene import Scene
from ..families.parts import AutoencoderDecode
from ..families.registry import family_of_pipeline
from ..speed.optimize import Tuning
from ..speed.text_stream import TextStream
from ..steering import control_images, style_images
from ..steering.control_images import ControlImages, frame_controls
from ..steering.controlnet import ControlNets
from ..steering.input_images import ImageLatents
from ..steering.ip_adapter import IpAdapter
from ..steering.lora import Loras
from ..steering.style_images import StyleTokens
from ..steering.t2i_adapter import AdapterFeatures
from .compiling import compile_calls, warm_up
from .frame_graph import whole_frame
from .glide import Glider, Shown
from .model_calls import ModelCalls
from .noise import frame_noise
from .plan import FramePlan
from .runner import StageRunner
from .text import PromptEncoder
from .tiling import Tiling

log = logging.getLogger(__name__)


class DiffusersRenderer:
    """Renders frames; every method but ``prompt_warnings`` runs on the GPU thread only."""

    def __init__(self, pipe, device: str, dtype: torch.dtype, *, compile: bool = False,
                 profile: bool = False, cache_size: int = 256, lora_dir: Path | None = None,
                 controlnets: ControlNets | None = None, canny_thresholds: tuple[float, float] = (100.0, 200.0),
                 ip_adapter: IpAdapter | None = None, demo_loras: Path | None = None,
                 tuning: Tuning = Tuning(), batch_vae: torch.nn.Module | None = None):
        """``batch_vae``: an autoencoder of the family's latent space that decodes batches of two or more
        rows (``--batch-vae tiny``: the tiny one); None: the pipeline's VAE decodes them, as single frames."""
        self.pipe = pipe  # for the loaders and reference checks; frames reach the model through ``parts``
        self.family = family_of_pipeline(pipe)
        self.device = torch.device(device)
        self.dtype = dtype
        self.parts = parts = self.family.parts(pipe, self.device, dtype)
        # the shared decode divides by the autoencoder's own scaling factor (the tiny one's is 1: its latents
        # are the pipeline's scaled ones), so either decodes the denoiser's latents as they come
        self.batch_decoder = parts.decoder if batch_vae is None else AutoencoderDecode(batch_vae, dtype)
        extra_decoder = [] if batch_vae is None else [batch_vae]
        self.controlnets = controlnets or ControlNets({})
        self.calls = ModelCalls(parts, self.device, dtype, self.controlnets, self.batch_decoder)
        self.compile = compile
        self._cuda = self.device.type == "cuda"
        self._warm: set[tuple] = set()  # (plan key, decoded or not) compiled and warmed up
        # Stages timed, run eager or as CUDA graphs (compiled, on CUDA), pixels copied to the host.
        self.runner = StageRunner(self.device, compile and self._cuda, self._after_compile)
        self.runner.profile = profile
        self.glider = Glider()  # what stream main showed last (a batch renderer passes each stream's own)
        self.after_compile = None  # called after each warm-up compile (e.g. to save compile artefacts)
        self.control_images = ControlImages(self.device, dtype, canny_thresholds)
        self.adapter_features = AdapterFeatures(self.controlnets.adapters, self._staged_adapter)
        self._tiling = Tiling([parts.denoiser.module, parts.decoder.module, *extra_decoder])
        if compile:
            compile_calls(self.calls, parts, self.device, tuning, self.controlnets.nets.values(), extra_decoder)
        # After any fusing: the style processors wrap the model's own (fused) cross-attention processors.
        self.style = None if ip_adapter is None else StyleTokens(ip_adapter, self.device, dtype)
        if ip_adapter is not None:
            ip_adapter.install(parts.denoiser.module)
        self.text = PromptEncoder(parts.text, lambda ids: self.runner.run(("text", ids.shape[-1]), self.calls.encode,
                                                                          ids=ids),
                                  self._cuda, cache_size, stage=self.runner.stage)
        self.images = ImageLatents(self._staged_encode, self._cuda, stage=self.runner.stage)
        # No LoRA folder for a family without LoRAs: the engine then refuses every LoRA change.
        self.loras = Loras(pipe, lora_dir if "lora" in self.family.steering else None,
                           demo_loras)  # demo_loras: the demo model's LoRAs (steering/demo_loras.py)

    # -- the event loop side ------------------------------------------------------------
    def prompt_warnings(self, prompt: str) -> list[str]:
        return self.text.warnings(prompt)

    @property
    def prompt_check(self):
        """``prompt_warnings`` as the family's text part answers it (its tokenizer, not the model):
        what a cluster worker sends to the daemon."""
        return self.text.part.warnings

    # -- the GPU thread side ------------------------------------------------------------
    @property
    def sampler(self) -> str:
        """The sampler's ``--scheduler`` name (euler_a, euler, lcm, tcd)."""
        return self.parts.sampler.name

    @property
    def text_encoder_runs(self) -> int:
        return self.text.runs

    @property
    def vae_encoder_runs(self) -> int:
        return self.images.runs

    @property
    def profile(self) -> bool:
        """Synchronise per stage: honest stage times, a little slower (and no whole-frame graph)."""
        return self.runner.profile

    @profile.setter
    def profile(self, on: bool) -> None:
        self.runner.profile = on

    @property
    def graph_keys(self) -> frozenset[tuple]:
        """The keys of the graphs captured (or, without graphs, of the stages run) so far: a new
        prompt or seed must never add one."""
        return self.runner.keys

    @property
    def warm_keys(self) -> frozenset[tuple]:
        """The ``FramePlan.key`` of every plan compiled and warmed up (compiling renderer)."""
        return frozenset(key for key, _ in self._warm)

    def _after_compile(self) -> None:
        if self.after_compile is not None:  # e.g. the compile artefacts file gets the new graph too
            self.after_compile()

    def embeddings(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt_embeds, pooled) for a prompt, from the cache when it was seen before."""
        return self.text.embeddings(prompt)

    def plan(self, params: Params, scene: Scene) -> FramePlan:
        style = scene.style is not None and self.style is not None and params.style_scale > 0
        return FramePlan.of(params, scene.input is not None, frame_controls(scene), style,
                            classifier_free=self.calls.classifier_free, schedule=self.family.img2img_schedule)

    def latent_shape(self, plan: FramePlan) -> tuple[int, ...]:
        return self.calls.latent_shape(plan)

    def begin(self, plan: FramePlan, loras: tuple[tuple[str, float], ...]) -> None:
        """Before a frame or a batch: stage times cleared, the LoRAs and the tiling mode set."""
        self.runner.reset()
        if loras != self.loras.applied:
            with self.runner.stage("loras"):  # between two frames, into the same weight storage
                self.text.variant = self.loras.update(loras)
        if self._tiling.set(plan.tiling):
            self.images.clear()  # the input's latents depend on the encoder's padding

    def _staged_encode(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.runner.run(("encode", rgb.shape[1], rgb.shape[0], self._tiling.mode), self.calls.encode_image,
                               rgb=rgb)

    def _staged_adapter(self, name: str, image: torch.Tensor) -> list[torch.Tensor]:
        return self.runner.run(("adapter", name, image.shape[-1], image.shape[-2]),
                               functools.partial(self.calls.adapt, name), image=image)

    @torch.inference_mode()
    def render(self, params: Params, scene: Scene = Scene(), glider: Glider | None = None) -> Rendered:
        """One frame; ``glider``: the stream's transition state (default: the renderer's own)."""
        glider = self.glider if glider is None else glider
        self.warm(params, scene)
        rgba = self.device_frame(params, scene, glider)
        with self.runner.stage("to_host"):
            pixels = self.runner.to_host(rgba)
        return Rendered(pixels, self.runner.stage_times())

    def warm(self, params: Params, scene: Scene, decode: bool = True) -> None:
        """Compile and capture the graphs of this frame's ``device_frame(..., decode)``, once per
        graph key (nothing when eager or warm)."""
        plan = self.plan(params, scene)
        if self.compile and (plan.key, decode) not in self._warm:
            self._warm.add((plan.key, decode))
            warm_up(self, plan, params, scene, decode, len(self._warm))
            self._after_compile()

    def device_frame(self, params: Params, scene: Scene, glider: Glider, record: bool = True,
                     decode: bool = True, text_stream: TextStream | None = None) -> torch.Tensor:
        """The frame's (H, W, 4) pixels on the device, or with ``decode=False`` the latents the
        decoder would take (the overlap decodes them on a stream of its own: ``overlapped.py``).
        ``text_stream``: a new prompt's text encoders run there (the overlap's third stream), not in
        the frame's graph. Queued, not waited for; ``warm`` first when compiling."""
        plan = self.plan(params, scene)
        self.begin(plan, params.loras)
        image = None if scene.input is None else self.images.latents(scene.input, plan.width, plan.height)
        control: dict = {}
        if scene.controls:
            with self.runner.stage("control_images"):
                nets, adapters = self.controlnets.split(plan.controls)
                images = dict(scene.controls)
                control = {**control_images.values(self.control_images, params,
                                                   Scene(controls=tuple((n, images[n]) for n in nets)), plan.runs),
                           **self.adapter_features.values(self.control_images, params,
                                                          tuple((n, images[n]) for n in adapters), plan.runs)}
        if plan.style:
            with self.runner.stage("style_image"):  # the image encoder runs for a new style image only
                control.update(style_images.values(self.style, scene.style, params.style_scale, plan.cfg))
        with self.runner.stage("noise"):
            noise = frame_noise(params, plan.draws, self.latent_shape(plan))
        if self.runner.graphed and not self.profile and isinstance(params.prompt, str) and scene.glide is None:
            # one replay, text included (or on the text stream, then the cached-embeddings graph)
            out, shown = self._render_graph(plan, params, noise, image, control, decode, text_stream)
        else:
            embeds, pooled = self.text.conditioning(params.prompt)
            shown = glider.mix(scene.glide, Shown(embeds, pooled, noise))
            out = self._frame(plan, params, shown, image, control, decode)
        if record:
            glider.record(shown)
        return out

    def _inputs(self, shown: Shown, params: Params, image: torch.Tensor | None, control: dict) -> dict:
        values = {"noise": shown.noise.pin_memory() if self._cuda else shown.noise,
                  "guidance": float(params.guidance), "embeds": shown.embeds, "pooled": shown.pooled,
                  **self._unconditional(params), **control}
        return values if image is None else {**values, "image": image}

    def _unconditional(self, params: Params) -> dict:
        """Guidance's unconditional branch as graph inputs (none without guidance: nothing encoded)."""
        if params.guidance <= 0 or not self.calls.classifier_free:
            return {}
        negative, negative_pooled = self.text.unconditional(params.negative_prompt)
        return {"negative": negative, "negative_pooled": negative_pooled}

    def _frame(self, plan: FramePlan, params: Params, shown: Shown, image: torch.Tensor | None,
               control: dict, decode: bool) -> torch.Tensor:
        """A frame (or its latents) from mixed conditioning: one graph replay, or a stage at a time
        (eager, profiling)."""
        values = self._inputs(shown, params, image, control)
        if self.runner.graphed and not self.profile:
            return self.runner.replay(self.frame_graph(plan, None, decode), **values)[0]
        with self.runner.stage(self.family.denoiser):
            latents = self.runner.run(("unet", *plan.key), functools.partial(self.calls.denoise_steps, plan), **values)
        if not decode:
            return latents
        with self.runner.stage("vae_decode"):
            return self.runner.run(("decode", plan.width, plan.height, plan.tiling), self.calls.decode, latents=latents)

    def frame_graph(self, plan: FramePlan, text_length: int | None, decode: bool):
        """The whole frame as one graph (``frame_graph.py``), captured on first use of its key:
        ``text_length`` token ids per row in (a new prompt), or None (cached embeddings)."""
        fn, inputs = whole_frame(self, plan, text_length, decode)
        return self.runner.graph((*plan.key, text_length) + (() if decode else ("latents",)), fn, inputs)

    def _render_graph(self, plan: FramePlan, params: Params, noise: torch.Tensor, image: torch.Tensor | None,
                      control: dict, decode: bool, text_stream: TextStream | None = None):
        """One graph replay for the whole frame (text encoders included when the prompt is new, unless
        they run on ``text_stream``)."""
        if text_stream is not None:  # a new prompt's text encoders queued there, then the cached-embeddings graph
            cached = self.text.embeddings(params.prompt,
                                          lambda ids, store: text_stream.encode(ids, self.calls.encode, store))
        else:
            cached = self.text.cached(params.prompt)
        if cached is not None:
            shown = Shown(*cached, noise)
            graph = self.frame_graph(plan, None, decode)
            return self.runner.replay(graph, **self._inputs(shown, params, image, control))[0], shown
        ids = self.text.token_ids(params.prompt)
        values = {"noise": noise.pin_memory(), "guidance": float(params.guidance),
                  "ids": ids, **self._unconditional(params), **control}
        if image is not None:
            values["image"] = image
        out, embeds, pooled = self.runner.replay(self.frame_graph(plan, ids.shape[-1], decode), **values)
        return out, Shown(*self.text.store(params.prompt, embeds, pooled), noise)
