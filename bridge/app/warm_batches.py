"""``serve --warm-channels N``: the batch graphs of up to N channels captured at start, before the ports open.

A compiled daemon captures a batch size's graphs the first time a round of that many channels' frames
renders, on the device's render thread, and every channel of the device waits meanwhile: run S9 on an
H100 (SDXL-Turbo, 512x512, ``--overlap on --batch-vae tiny``) took 124 s for a batch of 2 with cold
compile caches and 20 s with warm ones, a batch of 4 about 96 s cold. A show whose second channel
starts mid-performance would see every stream stop that long. With ``--warm-channels N`` the start-up
renders, after the single frame's warm-up, a round of 2, 3, ... N warm-up channels' frames at the
initial size and settings: once with new prompts (the text encoders run inside the batch's graph) and
once more with the same prompts (the graph that takes cached embeddings). Rounds of up to N channels
at those settings then replay graphs, whatever their seeds and LoRAs and however many of their prompts
are new; a round at another size or setting (steps, guidance on or off, tiling, an input image), and
frames that render alone (transitions, ControlNets, style images), capture as before.
"""

from __future__ import annotations

import logging

from ..core.errors import ConfigError
from ..core.params import Params
from ..core.renderer import Renderer
from ..core.scene import Scene
from ..engine.render_queue import MAX_BATCH

log = logging.getLogger(__name__)

WARM_UP_STREAM = "warm-up"  # the warm-up channels' names: f"warm-up-{n}.{i}", forgotten after their rounds


def check_warm_channels(channels: int, max_channels: int) -> int:
    """``--warm-channels``: 1 (nothing more to warm) up to the most channels a batch can hold."""
    most = min(max_channels, MAX_BATCH)
    if not 1 <= channels <= most:
        why = f"--max-channels {max_channels}" if max_channels <= MAX_BATCH else f"a batch holds {MAX_BATCH} frames"
        raise ConfigError(f"--warm-channels takes 1 (no batch warmed) to {most} ({why}), got {channels}")
    return channels


def warm_batches(renderer: Renderer, initial: Params, channels: int) -> int:
    """Render the warm-up rounds of 2..``channels`` frames on ``renderer`` (on its render thread, like any
    frame) and forget their channels; returns the rounds rendered (0: the initial frame renders alone)."""
    if channels < 2:
        return 0
    if renderer.batch_key(initial, Scene()) is None:
        log.info("--warm-channels %d: the initial frame renders alone (no batch graph to capture)", channels)
        return 0
    rounds = 0
    for rows in range(2, channels + 1):
        streams = [f"{WARM_UP_STREAM}-{rows}.{i}" for i in range(rows)]
        items = [(stream, initial.merged({"prompt": f"warm-up {rows}.{i}", "seed": i}), Scene())
                 for i, stream in enumerate(streams)]
        for _ in ("new prompts", "the same prompts: cached embeddings"):
            renderer.begin_batch(items).result()
            rounds += 1
        for stream in streams:
            renderer.forget(stream)
    return rounds
