"""Random-weight builds seeded so that every build of the same seed gets the same weights.

torch's default generators are process-wide: two builds seeded at once on two threads (the demo model
of two devices, a ControlNet beside a model) would draw from one another's sequence, and a plain
``torch.manual_seed`` would also reset the random state of whatever runs beside the build.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

# One seeded build at a time in the process; re-entrant, since a build may build its parts.
_BUILDING = threading.RLock()


@contextmanager
def seeded_init(seed: int, device: str | torch.device = "cpu") -> Iterator[None]:
    """Inside: the CPU's default generator, and ``device``'s when it is a CUDA device, seeded with
    ``seed``, and no other seeded build draws meanwhile; after: their earlier states are back."""
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with _BUILDING, torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield
