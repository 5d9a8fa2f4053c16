"""LoRA changes at the edge: names checked, new files loaded on a loader thread before they apply.

The render thread only folds files that are already loaded, so a first use never stalls a
frame on disk IO or key conversion; a bad file is refused here, before the state changes.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from typing import Iterable

from ..core.errors import ValidationError
from ..core.renderer import LoraCatalog

log = logging.getLogger(__name__)


class LoraGate:
    """Runs the catalog's blocking work on ``loader``; everything else on the event loop."""

    def __init__(self, catalog: LoraCatalog | None, loader: Executor, without: str | None = None):
        self._catalog = catalog
        # Why a daemon without a catalog refuses every LoRA (default: no LoRA folder).
        self._without = without or ("this daemon has no LoRA folder (start it with --lora-dir DIR, "
                                    "or put *.safetensors files into loras/ in the cache dir)")
        self._loader = loader

    def needs_loading(self, names: Iterable[str]) -> bool:
        """Whether any of ``names`` (LoRAs a change turns on) is not loaded yet: ``prepare`` loads them."""
        names = list(names)
        return bool(names) and self._catalog is not None and not self._catalog.ready(names)

    def check(self, names: Iterable[str]) -> None:
        """Synchronous: every name known and loaded (what ``Scheduler.check`` requires)."""
        names = list(names)
        if names and self._catalog is None:
            raise ValidationError("loras", self._without)
        if names and not self._catalog.ready(names):
            missing = [n for n in names if not self._catalog.ready([n])]
            raise ValidationError("loras", f"LoRA(s) {', '.join(map(repr, missing))} not loaded yet: send the "
                                           "change over REST, WebSocket or OSC, which load them first")

    async def prepare(self, names: list[str]) -> None:
        """Load the names not loaded yet, on the loader thread; raises ``ValidationError``."""
        if not names or self._catalog is None or self._catalog.ready(names):
            return
        catalog = self._catalog
        await asyncio.get_running_loop().run_in_executor(self._loader, lambda: [catalog.load(n) for n in names])

    async def listing(self) -> list[dict]:
        """``GET /v1/loras``: the folder rescanned (on the loader thread)."""
        if self._catalog is None:
            return []
        infos = await asyncio.get_running_loop().run_in_executor(self._loader, self._catalog.scan)
        return [info.to_json() for info in infos]

    @property
    def folder(self) -> str | None:
        return None if self._catalog is None else str(self._catalog.folder)
