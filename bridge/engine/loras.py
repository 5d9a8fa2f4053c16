"""LoRA changes at the edge: names checked, new files loaded on a loader thread before they apply.

The render thread only folds files that are already loaded, so a first use never stalls a
frame on disk IO or key conversion; a bad file is refused here, before the state changes.

The loader's work is bounded whatever arrives (issue 24: 72,000 OSC changes naming unknown
LoRAs each queued a rescan of the folder, and a valid change waited minutes behind them): an
unknown name is refused on the event loop from the last scan, and the folder is rescanned at
most once per ``RESCAN_S`` (one scan at a time, shared by everyone who asks); a file being
loaded is loaded once, however many changes wait for it. So the loader's queue holds at most
one scan and one load per known file.

The render thread never reads a file (issue 24): every LoRA a channel uses is **pinned** in its
device's catalog while any channel uses it (``hold`` on commit and on a move, ``release`` when a
channel goes or moves away), however long it sits idle, and a change waits here until its
channel's whole resulting set is loaded. Pinned files are bounded by ``capacity``: a change that
would make more distinct LoRAs in use at once on one device is refused, in one line that says
which channels use what.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import asdict, dataclass

from ..core.errors import ValidationError
from ..core.renderer import LoraCatalog

log = logging.getLogger(__name__)

RESCAN_S = 1.0  # the folder is listed again at most this often (a name not found waits for the next scan)
IN_USE_MAX = 16  # distinct LoRAs the channels of one device may use at once (4 channels x 4 LoRAs), all kept loaded


@dataclass
class GateStats:
    scans: int = 0  # folder listings run on the loader thread
    loads: int = 0  # file loads run on the loader thread
    shared: int = 0  # changes that waited for a scan or load already running instead of queueing their own
    unknown: int = 0  # changes refused for a name the folder does not have


class LoraGate:
    """Runs the catalog's blocking work on ``loader``, a bounded amount of it; everything else on the event loop."""

    def __init__(self, catalog: LoraCatalog | None, loader: Executor, without: str | None = None,
                 clock: Callable[[], float] = time.monotonic, capacity: int = IN_USE_MAX):
        self._catalog = catalog
        self.capacity = capacity
        self._held: dict[str, frozenset[str]] = {}  # channel -> the LoRAs it uses now (pinned in the catalog)
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

    def check_room(self, channel: str, names: Iterable[str]) -> None:
        """Synchronous: ``channel`` using ``names`` keeps the device's distinct LoRAs within ``capacity``."""
        others = {name: sorted(held) for name, held in self._held.items() if name != channel and held}
        in_use = set(names).union(*map(set, others.values()))
        if len(in_use) > self.capacity:
            users = "; ".join(f"{name}: {', '.join(held)}" for name, held in sorted(others.items()))[:300]
            raise ValidationError("loras", f"too many distinct LoRAs in use at once on this device: {len(in_use)} "
                                           f"with this change, at most {self.capacity} stay loaded; turn some off "
                                           f"(weight 0) on this or another channel first (in use: {users})")

    def hold(self, channel: str, names: Iterable[str]) -> None:
        """``channel`` uses ``names`` now (its committed set, or the set it moved here with): pinned."""
        held = frozenset(names)
        if self._held.get(channel, frozenset()) == held:
            return
        if held:
            self._held[channel] = held
        else:
            self._held.pop(channel, None)
        self._pin()

    def release(self, channel: str) -> None:
        """``channel`` is gone from this device: its LoRAs stay pinned only if another channel uses them."""
        if self._held.pop(channel, None):
            self._pin()

    def _pin(self) -> None:
        if self._catalog is not None:
            self._catalog.pin(frozenset().union(*self._held.values()))

    async def prepare(self, names: list[str], channel: str | None = None) -> None:
        """Load the names not loaded yet, on the loader thread; raises ``ValidationError``.

        ``channel``: ``names`` is its whole set after the change (or the move): refused first if it
        would take the device past ``capacity``."""
        catalog = self._catalog
        if channel is not None and catalog is not None:
            self.check_room(channel, names)
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
        """What the loader did: scans, loads, waits shared, unknown names refused, what runs now, and
        how many distinct LoRAs the channels use (pinned) of ``capacity``."""
        return {**asdict(self.stats), "loading": len(self._loading), "scanning": self._scan is not None,
                "in_use": len(frozenset().union(*self._held.values())), "capacity": self.capacity}

    @property
    def folder(self) -> str | None:
        return None if self._catalog is None else str(self._catalog.folder)
