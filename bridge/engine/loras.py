"""LoRA changes at the edge: names checked, new files loaded on a loader thread before they apply.

The render thread only folds files that are already loaded, so a first use never stalls a
frame on disk IO or key conversion; a bad file is refused here, before the state changes.

The loader's work is bounded whatever arrives (issue 24: 72,000 OSC changes naming unknown
LoRAs each queued a rescan of the folder, and a valid change waited minutes behind them): an
unknown name is refused on the event loop from the last scan, and the folder is rescanned at
most once per ``RESCAN_S`` (one scan at a time, shared by everyone who asks); a file being
loaded is loaded once, however many changes wait for it. So the loader's queue holds at most
one scan and one load per known file.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

from ..core.errors import ValidationError
from ..core.renderer import LoraCatalog

log = logging.getLogger(__name__)

RESCAN_S = 1.0  # the folder is listed again at most this often (a name not found waits for the next scan)


@dataclass
class GateStats:
    scans: int = 0  # folder listings run on the loader thread
    loads: int = 0  # file loads run on the loader thread
    shared: int = 0  # changes that waited for a scan or load already running instead of queueing their own
    unknown: int = 0  # changes refused for a name the folder does not have


class LoraGate:
    """Runs the catalog's blocking work on ``loader``, a bounded amount of it; everything else on the event loop."""

    def __init__(self, catalog: LoraCatalog | None, loader: Executor, without: str | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._catalog = catalog
        # Why a daemon without a catalog refuses every LoRA (default: no LoRA folder).
        self._without = without or ("this daemon has no LoRA folder (start it with --lora-dir DIR, "
                                    "or put *.safetensors files into loras/ in the cache dir)")
        self._loader = loader
        self._clock = clock
        self._loading: dict[str, asyncio.Future] = {}  # name -> its load in flight
        self._scan: asyncio.Future | None = None  # the scan in flight
        self._scanned_at = -float("inf")
        self._listing: list = []  # what the last scan found
        self.stats = GateStats()

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
        catalog = self._catalog
        if not names or catalog is None or catalog.ready(names):
            return
        if any(name not in catalog.names for name in names):
            await self._rescanned()  # a file added since the last scan is found; at most once per RESCAN_S
            unknown = [name for name in names if name not in catalog.names]
            if unknown:
                self.stats.unknown += 1
                found = ", ".join(sorted(catalog.names)[:20]) or "none"
                raise ValidationError("loras", f"unknown LoRA {unknown[0][:64]!r}: LoRAs are *.safetensors files "
                                               f"in {catalog.folder}, named by their stem (found: {found})")
        await asyncio.gather(*(self._load(name) for name in dict.fromkeys(names) if not catalog.ready([name])))

    async def _load(self, name: str) -> None:
        future = self._loading.get(name)
        if future is None:
            self.stats.loads += 1
            future = self._loading[name] = asyncio.get_running_loop().run_in_executor(
                self._loader, self._catalog.load, name)
            future.add_done_callback(lambda _: self._loading.pop(name, None))
        else:
            self.stats.shared += 1
        await asyncio.shield(future)  # a cancelled waiter leaves the load to the others

    async def _rescanned(self) -> list:
        """The folder's files, listed again unless that was done less than ``RESCAN_S`` ago."""
        if self._scan is None and self._clock() - self._scanned_at >= RESCAN_S:
            self.stats.scans += 1
            self._scan = asyncio.get_running_loop().run_in_executor(self._loader, self._catalog.scan)
            try:
                self._listing = await asyncio.shield(self._scan)
            finally:
                self._scan, self._scanned_at = None, self._clock()
            return self._listing
        if self._scan is not None:
            self.stats.shared += 1
            await asyncio.shield(self._scan)
        return self._listing

    async def listing(self) -> list[dict]:
        """``GET /v1/loras``: the folder's files (rescanned at most once per ``RESCAN_S``)."""
        if self._catalog is None:
            return []
        return [info.to_json() for info in await self._rescanned()]

    def health(self) -> dict:
        """What the loader did: scans, loads, waits shared, unknown names refused, and what runs now."""
        return {**asdict(self.stats), "loading": len(self._loading), "scanning": self._scan is not None}

    @property
    def folder(self) -> str | None:
        return None if self._catalog is None else str(self._catalog.folder)
