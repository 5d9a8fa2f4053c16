"""``RemoteRenderer``: the renderer contract over a renderer worker (a Ray actor).

A render queue of the daemon renders with it as with a local renderer: ``render_batch`` runs on
that queue's render thread and waits there for the worker's frames (Ray's object store carries
them back); ``batch_key``, ``prompt_warnings`` and the LoRA catalog's ``names``/``ready`` answer
on the event loop from what the daemon knows, without a round trip.

Batching: ``batch_key`` is one key for every frame, so a round's frames for this worker go in one
call (one round trip, not one per shape) and the worker groups them by its renderer's own keys,
each group one batch, as a local render queue does (``worker.RenderWorker``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

from ..core.errors import BridgeError, ValidationError
from ..core.frame import Rendered
from ..core.params import Params
from ..core.renderer import Item
from ..core.scene import Scene
from .worker import WorkerInfo

log = logging.getLogger(__name__)

ONE_CALL = "worker"  # the batch key of every frame: the worker splits a call by its own keys


class WorkerLostError(BridgeError):
    """A worker died or stopped answering while it had this frame (its channels move elsewhere)."""


def worker_error(worker_id: str, exc: BaseException) -> WorkerLostError:
    return WorkerLostError(f"worker {worker_id} lost: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")


class RemoteLoras:
    """A worker's LoRA folder, seen from the daemon (``core.renderer.LoraCatalog``).

    ``names`` and ``ready`` answer from what the worker reported and what this daemon loaded
    there; ``load`` and ``scan`` are calls to the worker (the engine runs them on its loader
    thread). A restarted worker has loaded nothing: ``reset`` forgets what was loaded.
    """

    def __init__(self, actor: Any, worker_id: str, info: WorkerInfo):
        self._actor, self._worker_id = actor, worker_id
        self.folder = f"{info.lora_folder} on {worker_id} ({info.node})"
        self._names = frozenset(info.lora_names)
        self._loaded: set[str] = set()
        self._lock = threading.Lock()

    def reset(self, info: WorkerInfo) -> None:
        with self._lock:
            self._names, self._loaded = frozenset(info.lora_names), set()

    @property
    def names(self) -> frozenset[str]:
        return self._names

    def ready(self, names: Iterable[str]) -> bool:
        with self._lock:
            return all(name in self._loaded for name in names)

    def load(self, name: str) -> None:
        import ray

        try:
            refusal = ray.get(self._actor.lora_load.options(concurrency_group="loras").remote(name))
        except ray.exceptions.RayError as exc:
            raise ValidationError("loras", f"LoRA {name!r} not loaded: {worker_error(self._worker_id, exc)}") from None
        if refusal is not None:
            raise ValidationError(*refusal)
        with self._lock:
            self._loaded.add(name)

    def pin(self, names: frozenset[str]) -> None:
        """The worker keeps ``names`` loaded (what the channels placed on it use). Sent, not awaited:
        the event loop calls this; the worker's LoRA calls run in order on their own thread."""
        try:
            self._actor.lora_pin.options(concurrency_group="loras").remote(sorted(names))
        except Exception as exc:  # a dead worker: its channels move, and the new one is told again
            log.warning("LoRAs not pinned on %s: %s", self._worker_id, worker_error(self._worker_id, exc))

    def scan(self) -> list:
        import ray

        found = ray.get(self._actor.lora_scan.options(concurrency_group="loras").remote())
        with self._lock:
            self._names = frozenset(item["name"] for item in found if "name" in item)
        return [_Scanned(item) for item in found]


class _Scanned:
    """One LoRA file a worker found, as ``LoraGate.listing`` reads it."""

    def __init__(self, data: dict):
        self._data = data

    def to_json(self) -> dict:
        return self._data


class RemoteRenderer:
    """The renderer contract (``bridge.core.renderer.Renderer``) over one renderer worker."""

    def __init__(self, actor: Any, worker_id: str, info: WorkerInfo):
        self._actor = actor
        self.worker_id = worker_id
        self.info = info
        self._loras = None if info.lora_folder is None else RemoteLoras(actor, worker_id, info)

    def reset(self, info: WorkerInfo) -> None:
        """The worker restarted (a new process): what it had loaded is gone."""
        self.info = info
        if self._loras is not None:
            self._loras.reset(info)

    @property
    def lora_catalog(self) -> RemoteLoras | None:
        return self._loras

    def render(self, params: Params, scene: Scene = Scene()) -> Rendered:
        return self.render_batch([("main", params, scene)])[0]

    def batch_key(self, params: Params, scene: Scene) -> Hashable | None:
        return ONE_CALL

    def render_batch(self, items: Sequence[Item]) -> list[Rendered]:
        import ray

        try:
            return ray.get(self._actor.render_batch.options(concurrency_group="render").remote(list(items)))
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
            raise worker_error(self.worker_id, exc) from None

    def forget(self, stream: str) -> None:
        # Not waited for: the worker forgets before its next frame (calls of one group run in order).
        self._actor.forget.options(concurrency_group="render").remote(stream)

    def prompt_warnings(self, prompt: str) -> list[str]:
        return self.info.prompt_check(prompt)
