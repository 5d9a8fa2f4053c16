"""``bench --memory-budget-gb``: run the benchmark as if the card had only that much memory.

The cap is ``torch.cuda.set_per_process_memory_fraction``: PyTorch's caching allocator (weights,
activations, CUDA graph pools, cuBLAS/cuDNN workspaces) raises ``torch.OutOfMemoryError`` past it,
as a card of that size would. What the allocator does not see (the CUDA context, about 0.5 GB)
takes its share of a real card too, so it is measured at start and the allocator gets the rest
of the budget. A run fits when it finishes under the cap and the device's memory in use (which the
context's growth as kernels load adds to) stays within the budget; the report gives the peaks (allocated,
reserved, and the device's memory in use, context included). Without CUDA there is nothing to
cap: the option is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..core.errors import BridgeError, ConfigError, is_out_of_memory

log = logging.getLogger(__name__)


def out_of_memory(exc: BaseException | None) -> bool:
    """An out-of-memory error, also when wrapped (Inductor reports one in its compile as its own error)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if is_out_of_memory(exc):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


class OverBudget(BridgeError):
    """A benchmark run ran out of memory within the ``--memory-budget-gb`` cap."""


@dataclass(frozen=True)
class MemoryBudget:
    gb: float
    device: torch.device
    card_gb: float
    context_gb: float  # device memory in use outside the allocator at start (the CUDA context)
    fraction: float

    @classmethod
    def apply(cls, gb: float, device: torch.device) -> MemoryBudget:
        """Cap this process's allocator on ``device`` at ``gb`` (decimal GB); refuses without CUDA."""
        if not gb > 0:
            raise ConfigError(f"--memory-budget-gb takes a positive size in GB (e.g. 8), got {gb:g}")
        if device.type != "cuda":
            raise ConfigError(f"--memory-budget-gb caps GPU memory, and device {device} has none to cap; "
                              "run it on a CUDA device, or leave it out")
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.empty(1, device=torch.device("cuda", index))  # creates the context: measured below
        free, total = torch.cuda.mem_get_info(index)
        context = max(0, total - free - torch.cuda.memory_reserved(index))  # other processes' use counts too
        if gb * 1e9 > total:
            raise ConfigError(f"--memory-budget-gb {gb:g} is more than this card's {total / 1e9:.1f} GB")
        if gb * 1e9 <= context:
            raise ConfigError(f"--memory-budget-gb {gb:g} leaves nothing once the CUDA context and other processes "
                              f"({context / 1e9:.2f} GB in use) are counted")
        fraction = (gb * 1e9 - context) / total
        torch.cuda.set_per_process_memory_fraction(fraction, index)
        log.info("memory budget %.2f GB: %.2f GB already in use on the device (CUDA context), the allocator is "
                 "capped at the other %.2f GB of this card's %.1f GB", gb, context / 1e9, fraction * total / 1e9,
                 total / 1e9)
        return cls(gb, torch.device("cuda", index), round(total / 1e9, 3), round(context / 1e9, 3), fraction)

    def over(self, what: str, exc: BaseException) -> OverBudget:
        """The error that ends the run, naming what ran out and the peak reached."""
        peak = torch.cuda.max_memory_allocated(self.device) / 1e9
        return OverBudget(f"out of memory within the {self.gb:g} GB budget ({what}): this mode does not fit a "
                          f"{self.gb:g} GB card; allocator peak {peak:.2f} GB before the failure. "
                          f"({str(exc).splitlines()[0][:300]})")

    def verdict(self, runs: list[dict]) -> dict:
        """The report's summary: the peaks over every run, and whether they fit the budget."""
        used = [v for r in runs for k, v in r.get("vram_gb", {}).items()
                if k in ("loaded", "first_frame", "after_frames") and v is not None]
        peak_in_use = max(used, default=None)
        return {"budget_gb": self.gb, "card_gb": self.card_gb, "context_gb": self.context_gb,
                "allocator_cap_gb": round(self.fraction * self.card_gb, 3),
                "peak_allocated_gb": max((r["vram_gb"].get("peak_allocated") or 0 for r in runs), default=None),
                "peak_reserved_gb": max((r["vram_gb"].get("peak_reserved") or 0 for r in runs), default=None),
                "peak_in_use_gb": peak_in_use,  # the device's, CUDA context included (all processes)
                # every run so far finished under the cap; and the context, which grows as kernels load, with it
                "fits": peak_in_use is None or peak_in_use <= self.gb}
