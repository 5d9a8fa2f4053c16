"""Several channels' frames in one batch through one resident pipeline.

``ChannelRenderer`` is what the engine gets (``bridge.core.renderer.Renderer``, the whole contract):
it wraps a ``DiffusersRenderer`` and builds batches on its public methods and its model calls.
``batch_key`` is the frame's graph shape (``FramePlan.key``: size, schedule, guidance on/off,
image-to-image start), and frames of one key render as one batch: each row gets its own channel's
noise (drawn from that channel's seed on the CPU, as alone), conditioning, guidance and input
latents; the denoiser steps and the decoder run once for the batch. A batch of one is the plain
``render`` (the single-frame CUDA graph, text encoders included). A batch runs padded to the next
power of two (its last row repeated, the copies' frames dropped): every batch size is a compile
on CUDA (static shapes), and channels join and leave rounds at any count, so 2, 4 and 8 are the
only shapes a daemon compiles, not every count up to ``--max-channels``. Each (key, padded size)
is captured as its own graph on first use and replayed after, like sizes. A batch's rows decode with
``ModelCalls.decode_batch``: the family's decoder, or with ``--batch-vae tiny`` the tiny one (a batch of
one is a single frame: it keeps ``--vae``'s).

Transitions keep per-channel state (what each channel showed last): each channel has its own
glider, and a frame mid-transition renders alone, as do frames with ControlNets or a style image.

``begin_batch`` renders at once here (``Finished``); ``OverlappedRenderer`` (``overlapped.py``,
``--overlap on``) splits a batch at the latents (``device_frames(..., decode=False)``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from ...core.frame import Rendered
from ...core.params import Params
from ...core.renderer import Finished, InFlight, Item, LoraCatalog
from ...core.scene import Scene
from .glide import Glider, Shown
from .noise import frame_noise
from .plan import FramePlan
from .renderer import DiffusersRenderer


def padded_size(n: int) -> int:
    """The batch size ``n`` frames render as: the next power of two."""
    return 1 << (n - 1).bit_length()


class ChannelRenderer:
    """A ``DiffusersRenderer`` serving several channels: per-channel transition state, batched frames."""

    def __init__(self, inner: DiffusersRenderer):
        self.inner = inner
        self._gliders: dict[str, Glider] = {}

    # -- the renderer contract ------------------------------------------------------------
    @property
    def lora_catalog(self) -> LoraCatalog | None:
        """The device's LoRA folder (what the LoRA gate loads files into), None without one."""
        return self.inner.loras.catalog

    def prompt_warnings(self, prompt: str) -> list[str]:
        return self.inner.prompt_warnings(prompt)

    def render(self, params: Params, scene: Scene = Scene()) -> Rendered:
        return self.render_batch([("main", params, scene)])[0]

    def batch_key(self, params: Params, scene: Scene) -> Hashable | None:
        if scene.glide is not None:  # a transition mixes from its own channel's last frame: alone
            return None
        plan = self.inner.plan(params, scene)
        # ControlNet and style (IP-Adapter) frames render alone: the batched graph carries no control
        # images, style tokens or their scales. LoRAs are folded into the one denoiser, so only frames
        # with the same LoRAs share a batch.
        return None if plan.controls or scene.style is not None else (plan.key, params.loras)

    def forget(self, stream: str) -> None:
        self._gliders.pop(stream, None)

    def render_batch(self, items: Sequence[Item]) -> list[Rendered]:
        if len(items) == 1:
            stream, params, scene = items[0]
            return [self.inner.render(params, scene, self.glider(stream))]
        return self._render_many(items)

    def begin_batch(self, items: Sequence[Item]) -> InFlight:
        """Rendered at once: one graph per frame, nothing left to overlap (``OverlappedRenderer`` splits it)."""
        return Finished(tuple(self.render_batch(items)))

    def glider(self, stream: str) -> Glider:
        """The stream's own transition state (what it showed last)."""
        return self._gliders.setdefault(stream, Glider())

    # -- the batch ---------------------------------------------------------------------
    def _denoise_and_decode(self, plan: FramePlan, noise, guidance, embeds=None, pooled=None, image=None,
                            negative=None, negative_pooled=None, ids=None, decode: bool = True) -> tuple:
        """The batch's frames, or their latents (and, from ``ids``, the rows' new embeddings: text
        encoders batched too)."""
        calls = self.inner.calls
        if ids is not None:
            embeds, pooled = calls.encode(ids)
        latents = calls.denoise_steps(plan, noise, guidance, embeds, pooled, image,
                                      negative=negative, negative_pooled=negative_pooled)
        return (calls.decode_batch(latents) if decode else latents, *(() if ids is None else (embeds, pooled)))

    @torch.inference_mode()
    def _render_many(self, items: Sequence[Item]) -> list[Rendered]:
        r = self.inner
        rgba = self.device_frames(items)
        with r.runner.stage("to_host"):
            pixels = [r.runner.to_host(row) for row in rgba[:len(items)]]
        stages = r.runner.stage_times()
        return [Rendered(frame, stages) for frame in pixels]

    def device_frames(self, items: Sequence[Item], decode: bool = True) -> torch.Tensor:
        """The batch's frames on the device, (rows, H, W, 4) with the padding rows (the first
        ``len(items)`` are the items'), or with ``decode=False`` their latents; queued, not waited for."""
        r = self.inner
        plans = {r.plan(params, Scene(scene.input)) for _, params, scene in items}
        if len(plans) != 1:
            raise ValueError(f"a batch needs one graph shape, got {sorted(p.key for p in plans)}")
        plan = plans.pop()
        loras = {params.loras for _, params, _ in items}
        if len(loras) != 1:
            raise ValueError("a batch needs one set of LoRAs")
        r.begin(plan, loras.pop())
        shape = r.latent_shape(plan)
        with r.runner.stage("noise"):
            noises = [frame_noise(params, plan.draws, shape) for _, params, _ in items]  # each (draws, 1, ...)
        texts = [params.prompt for _, params, _ in items]
        # New prompts are encoded in the batch, all rows at once (a cached row is encoded again:
        # cheaper than a text encoder run per row); blends and all-cached batches bring embeddings.
        with_text = all(isinstance(text, str) for text in texts) and any(r.text.cached(t) is None for t in texts)
        values = {
            "noise": torch.cat(noises, dim=1),  # (draws, batch, C, H/8, W/8)
            # float32 per row: the renderer rounds guidance * (cond - uncond) to the model dtype, as
            # it does for one frame's Python float, so a row's arithmetic is that of its frame alone.
            "guidance": torch.tensor([float(params.guidance) for _, params, _ in items],
                                     dtype=torch.float32).view(-1, 1, 1, 1),
        }
        if with_text:
            with r.runner.stage("tokenize"):
                values["ids"] = r.text.batch_token_ids(texts)  # (rows, B, n)
        else:
            conditioning = [r.text.conditioning(text) for text in texts]
            values["embeds"] = torch.cat([embeds for embeds, _ in conditioning])
            values["pooled"] = torch.cat([pooled for _, pooled in conditioning])
        if plan.cfg:  # each row's own negative prompt (zeros for SDXL-Turbo without one)
            negatives = [r.text.unconditional(params.negative_prompt) for _, params, _ in items]
            values["negative"] = torch.cat([negative for negative, _ in negatives])
            values["negative_pooled"] = torch.cat([pooled for _, pooled in negatives])
        if plan.start is not None:
            values["image"] = torch.cat([r.images.latents(scene.input, plan.width, plan.height)
                                         for _, _, scene in items])
        rows = padded_size(len(items))
        if rows > len(items):  # the last row again: its copies' frames are dropped below
            values = {k: torch.cat([v, *[v[-1:]] * (rows - len(items))]) if k not in ("noise", "ids")
                      else torch.cat([v, *[v[:, -1:]] * (rows - len(items))], dim=1) for k, v in values.items()}
        text_length = values["ids"].shape[-1] if with_text else None
        key = ("batch", rows, text_length, *plan.key) + (() if decode else ("latents",))
        out, *encoded = self._run(key, plan, values, decode)
        if with_text:
            embeds, pooled = encoded
            conditioning = [r.text.store(text, embeds[i:i + 1], pooled[i:i + 1]) for i, text in enumerate(texts)]
        for (stream, _, _), noise, (embeds, pooled) in zip(items, noises, conditioning):
            self.glider(stream).record(Shown(embeds, pooled, noise))
        return out

    def _run(self, key: tuple, plan: FramePlan, values: dict, decode: bool) -> tuple:
        runner = self.inner.runner

        def frame(**kwargs):
            return self._denoise_and_decode(plan, **kwargs, decode=decode)

        if not runner.graphed:
            denoiser = self.inner.family.denoiser
            with runner.stage(f"{denoiser}+vae_decode" if decode else denoiser):
                return runner.run(key, frame, **values)
        values = {k: v.pin_memory() if v.device.type == "cpu" else v for k, v in values.items()}
        return runner.run(key, frame, label=f"capturing a batch of {key[1]} at {plan.width}x{plan.height}", **values)
