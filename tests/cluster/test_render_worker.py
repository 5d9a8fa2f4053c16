"""The renderer worker's class outside Ray (what its actor runs): a call's frames batched by the
renderer's own keys, LoRA refusals carried back whole, and the prompt check that travels to the
daemon without the model."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

pytest.importorskip("ray", reason="the cluster extra: pip install -e '.[cluster]'")

from bridge.cluster.worker import RenderWorker
from bridge.core.params import Params
from bridge.core.renderer import NullRenderer
from bridge.core.scene import Scene
from lora_folders import NotedFolder


class Batches(NullRenderer):
    """Notes each batch it renders (streams) and the thread it ran on."""

    def __init__(self):
        super().__init__()
        self.lora_catalog = NotedFolder(("ink",))
        self.batches: list[list[str]] = []
        self.threads: set[str] = set()

    def render_batch(self, items):
        self.batches.append([stream for stream, _, _ in items])
        self.threads.add(threading.current_thread().name)
        return super().render_batch(items)


def make(config):
    renderer = Batches()
    renderer.threads.add(threading.current_thread().name)  # where it was made (and warmed)
    return renderer, {"model": "null", "device": "cpu"}, NullRenderer().prompt_warnings


def test_a_call_renders_as_batches_of_the_renderers_keys_in_order():
    worker = RenderWorker(make, None)
    items = [("a", Params(width=64, height=64, seed=1), Scene()), ("b", Params(width=72, height=64, seed=2), Scene()),
             ("c", Params(width=64, height=64, seed=3), Scene())]
    frames = worker.render_batch(items)
    renderer = worker._renderer
    assert renderer.batches == [["a", "c"], ["b"]]  # one batch per key, as a local render queue batches
    alone = NullRenderer()
    assert all(np.array_equal(f.pixels, alone.render(p).pixels) for f, (_, p, _) in zip(frames, items))
    assert len(renderer.threads) == 1  # made and rendering on the worker's one torch thread
    info = worker.info()
    assert (info.device, info.lora_names, info.pid > 0) == ("cpu", frozenset({"ink"}), True)


def test_a_lora_refusal_comes_back_as_its_field_and_message():
    worker = RenderWorker(make, None)
    assert worker.lora_load("ink") is None and worker._renderer.lora_catalog.loaded == ["ink"]
    assert worker.lora_load("oil") == ("loras", "unknown LoRA 'oil' (found: ink)")


def test_the_prompt_check_travels_without_the_model(config):
    from bridge.app.renderers import load_worker_renderer

    renderer, info, check = load_worker_renderer(config)
    data = pickle.dumps(check)
    assert len(data) < 4 << 20  # a tokenizer, not the model
    travelled = pickle.loads(data)
    long = "a lighthouse on a cliff at dusk, " * 20
    assert travelled(long) == renderer.prompt_warnings(long) and "CLIP reads 77" in travelled(long)[0]
    assert travelled("a lighthouse") == [] and info["family"] == "sdxl"
