"""The renderer worker: a Ray actor holding one warm renderer, made by the daemon's own renderer factory.

Every torch call runs on one thread of the worker (``_torch``: loading, warm-up, frames), as on the
daemon's render thread (a compiled graph is captured and replayed on the same thread). The actor's
methods run in three concurrency groups, so a long frame (or a first compile) never delays the
heartbeat (``ping``) or a LoRA file being read (``lora_load``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..core.errors import ValidationError
from ..core.frame import Rendered
from ..core.renderer import Item, Renderer

# What the factory returns: the renderer, its health info, and a prompt check that pickles (the
# tokenizer only), so the daemon answers prompt warnings on its event loop without a round trip.
Made = tuple[Renderer, dict, Callable[[str], list[str]]]
CONCURRENCY_GROUPS = {"render": 1, "loras": 1, "health": 1}


@dataclass(frozen=True)
class WorkerInfo:
    """Who a worker is, once its renderer is warm (``RenderWorker.info``)."""

    pid: int
    node: str  # the node's IP address
    node_id: str
    device: str
    model: dict  # the renderer factory's info: model, family, dtype, start-up phases...
    prompt_check: Callable[[str], list[str]]
    lora_folder: str | None  # None: the model takes no LoRAs
    lora_names: frozenset[str]


class RenderWorker:
    """The actor's class (``ray.remote`` applies at start, in ``pool``): one renderer, its LoRA folder."""

    def __init__(self, make: Callable[[Any], Made], config: Any):
        self._torch = ThreadPoolExecutor(1, thread_name_prefix="worker-render")
        self._renderer, self._model, self._check = self._torch.submit(make, config).result()
        self._node_id = _node_id()

    def info(self) -> WorkerInfo:
        catalog = self._renderer.lora_catalog
        return WorkerInfo(os.getpid(), _node_ip(), self._node_id, str(self._model.get("device", "?")), self._model,
                          self._check, None if catalog is None else str(catalog.folder),
                          frozenset() if catalog is None else frozenset(catalog.names))

    def ping(self) -> int:
        """The heartbeat (its own thread): the worker's pid."""
        return os.getpid()

    def render_batch(self, items: Sequence[Item]) -> list[Rendered]:
        """The frames of ``items``, grouped by the renderer's own batch keys (each group one batch), in order."""
        return self._torch.submit(self._render, items).result()

    def forget(self, stream: str) -> None:
        self._torch.submit(self._renderer.forget, stream).result()

    def lora_load(self, name: str) -> tuple[str, str] | None:
        """Load a LoRA file on this worker: None, or the refusal (field, message) to raise in the daemon."""
        try:
            self._renderer.lora_catalog.load(name)
        except ValidationError as exc:
            return exc.field or "loras", exc.message
        return None

    def lora_pin(self, names: list[str]) -> None:
        """Keep ``names`` loaded: the channels the daemon placed here use them."""
        if self._renderer.lora_catalog is not None:
            self._renderer.lora_catalog.pin(frozenset(names))

    def lora_scan(self) -> list[dict]:
        catalog = self._renderer.lora_catalog
        return [] if catalog is None else [info.to_json() for info in catalog.scan()]

    def _render(self, items: Sequence[Item]) -> list[Rendered]:
        groups: dict[Hashable, list[int]] = {}
        for index, (_, params, scene) in enumerate(items):
            key = self._renderer.batch_key(params, scene)
            groups.setdefault(("alone", index) if key is None else key, []).append(index)
        out: list[Rendered | None] = [None] * len(items)
        for indexes in groups.values():
            for index, frame in zip(indexes, self._renderer.render_batch([items[i] for i in indexes])):
                out[index] = frame
        return out


def _node_ip() -> str:
    import ray

    if not ray.is_initialized():  # the class used outside a Ray worker (its tests)
        return "127.0.0.1"
    return ray.util.get_node_ip_address()


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
