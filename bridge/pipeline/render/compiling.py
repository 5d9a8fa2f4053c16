"""Compiling the renderer: the compiled calls' set-up, and the warm-up that compiles and captures a
frame's graphs once per graph key.

``compile_calls`` prepares the modules (``speed/optimize.py``) and has ``ModelCalls`` call their
compiled versions; ``warm_up`` renders a plan's warm-up frames and every text length's graph, so
that no frame of a show compiles. It takes what it needs of a renderer through ``WarmModel``, which
``DiffusersRenderer`` (``renderer.py``) is: the renderer imports this module, never the other way round.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch

from ...core.params import Params, prompt_texts
from ...core.scene import Scene
from ..families.parts import Parts, TextConditioning
from ..speed.optimize import Tuning, prepare_modules, progress
from ..speed.text_stream import TextStream
from .glide import Glider
from .model_calls import ModelCalls
from .plan import FramePlan
from .runner import StageRunner
from .text import PromptEncoder


def _zero_ids(text: TextConditioning, device: torch.device, length: int | None = None) -> torch.Tensor:
    """Placeholder token ids of ``length`` per row (default: the shortest the text part takes)."""
    return torch.zeros((text.rows, length or text.lengths[0]), dtype=torch.long, device=device)


def compile_calls(calls: ModelCalls, parts: Parts, device: torch.device, tuning: Tuning,
                  controlnets: Iterable[torch.nn.Module], extra_decoder: list[torch.nn.Module]) -> None:
    """The parts' modules (and ``controlnets``, and ``extra_decoder``: a batch VAE beside the
    pipeline's) prepared for compiling, and ``calls`` switched to their compiled versions."""
    # transformers installs its output-capturing hooks lazily, under a lock Dynamo cannot
    # trace: one eager call installs them before compiling.
    with torch.inference_mode():
        parts.text.encode(_zero_ids(parts.text, device))
    prepare_modules([parts.denoiser.module, parts.decoder.module, *parts.text.modules, *controlnets], device, tuning,
                    decoder=parts.decoder.module)
    for vae in extra_decoder:  # laid out as the main decoder is (tuning.vae_channels_last)
        prepare_modules([vae], device, tuning, decoder=vae)
    # the sampling loop calls the compiled versions (or the compiled blocks) from here on
    calls.compile(tuning)


class WarmModel(Protocol):
    """What a warm-up takes from its renderer: its text part and prompt encoder, where they run, the
    stage runner (graphed or not), its own transition state, its frames and its whole-frame graphs."""

    parts: Parts
    device: torch.device
    runner: StageRunner
    text: PromptEncoder
    glider: Glider

    def device_frame(self, params: Params, scene: Scene, glider: Glider, record: bool = True,
                     decode: bool = True, text_stream: TextStream | None = None) -> torch.Tensor:
        """The frame's pixels (or with ``decode=False`` its latents) on the device, queued."""

    def frame_graph(self, plan: FramePlan, text_length: int | None, decode: bool):
        """The whole frame as one graph, captured on first use of its key."""


def warm_up(r: WarmModel, plan: FramePlan, params: Params, scene: Scene, decode: bool, warmed: int) -> None:
    """Compile and capture the graphs of ``plan``'s ``device_frame(..., decode)`` (``params`` and
    ``scene`` its frame's). ``warmed``: the warm-ups so far, this one included (so its prompt is one no
    earlier warm-up cached)."""
    text = prompt_texts(params.prompt)[0]
    with progress(f"compiling for {params.width}x{params.height}, {plan.runs} of {plan.schedule_steps} "
                  f"step(s), guidance {'on' if plan.cfg else 'off'}, "
                  f"{'image' if plan.start is not None else 'text'}-to-image (once per size; cached on disk)",
                  compiling=True):
        warm = Scene(scene.input, controls=scene.controls, style=scene.style)
        # A text no earlier warm-up cached (the spaces are tokenized away; the cache keys the string):
        # its first frame captures the with-text graph, its second the cached-embeddings graph.
        fresh = text + " " * warmed
        for prompt in (fresh, fresh):
            r.device_frame(params.merged({"prompt": prompt}), warm, r.glider, record=False, decode=decode)
        warm_text_lengths(r, plan, decode)


def warm_text_lengths(r: WarmModel, plan: FramePlan, decode: bool) -> None:
    """The with-text graph of every token length a prompt may take (``TextConditioning.lengths``),
    so that a longer prompt mid-show replays a graph instead of compiling one."""
    for length in r.parts.text.lengths:
        if r.runner.graphed:
            r.frame_graph(plan, length, decode)  # captured here unless the warm-up frames did
        else:
            r.text.encode(_zero_ids(r.parts.text, r.device, length))  # compiled per shape
