"""A LoRA's deltas as a fold takes them: each layer's ``Delta``, and a LoRA's linear layers stacked
by (out, in, rank, alpha) into ``DeltaGroup``s, one batched matmul each (``lora_fold.py`` folds them).

``place`` runs on the loader thread: it reads the file's tensors (safetensors maps them lazily:
untouched, their first read would fall on the render thread), casts them to their layers'
dtype, copies them to their layers' device on a side stream and runs each group's batched
matmul once there (CUDA loads kernels on first use: not on a frame). ``delta_weight`` is one
layer's delta in PEFT's ``get_delta_weight`` arithmetic (the per-layer fold).
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Delta:
    down: torch.Tensor  # lora_A: (rank, in) or (rank, in, kh, kw)
    up: torch.Tensor  # lora_B: (out, rank) or (out, rank, 1, 1)
    alpha: float  # the scale is alpha / rank (no alpha in the file: alpha = rank)

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def scaling(self, weight: float) -> float:
        """PEFT's ``set_scale`` arithmetic, so the fold matches diffusers' bit for bit."""
        return weight * self.alpha / self.rank


@dataclass(frozen=True)
class DeltaGroup:
    """One LoRA's linear layers of one (out, in, rank, alpha), stacked: one batched matmul folds them."""

    paths: tuple[str, ...]  # sorted; row i of the stacks is paths[i]
    up: torch.Tensor  # (layers, out, rank)
    down: torch.Tensor  # (layers, rank, in)
    alpha: float

    def scaling(self, weight: float) -> float:
        return weight * self.alpha / self.down.shape[1]  # Delta.scaling's expression: the same float


_SIDE: dict[torch.device, torch.cuda.Stream] = {}  # one per device, made once (speed/graphs.py: the stream pool)


@contextmanager
def _after_frames(device: torch.device):
    """A side stream for GPU work off the render thread, ordered after the frames queued so far
    (memory they freed may be the memory just allocated for this work), finished on exit. Tensors
    are allocated before, on the default stream's memory: the render thread reuses it safely."""
    side = _SIDE.get(device)
    if side is None:
        side = _SIDE[device] = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        yield
    side.synchronize()


def _moved(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Copies of host tensors on ``device``; on CUDA through a side stream (frames keep running)."""
    if device.type != "cuda":
        return [t.to(device, copy=True) for t in tensors]  # a copy: never a view of the mapped file
    # No lock against the render thread's graph captures: they are thread-local (speed/graphs.py).
    out = [torch.empty(t.shape, dtype=t.dtype, device=device) for t in tensors]
    with _after_frames(device):
        for target, source in zip(out, tensors):
            target.copy_(source)
    return out


def place(deltas: dict[str, Delta],
          weights: dict[str, torch.Tensor]) -> tuple[dict[str, Delta], tuple[DeltaGroup, ...]]:
    """The deltas on their layers' device and dtype; linear ones stacked by (out, in, rank, alpha).

    The per-layer deltas of a group are views of its stacks (no second copy)."""
    keyed: dict[tuple, list[str]] = defaultdict(list)
    singles = []
    for path in sorted(deltas):
        delta, weight = deltas[path], weights[path]
        if delta.down.dim() == 2 and weight.dim() == 2:
            keyed[(tuple(weight.shape), delta.rank, delta.alpha, weight.device, weight.dtype)].append(path)
        else:
            singles.append(path)
    host: list[tuple[torch.device, torch.Tensor, torch.Tensor]] = []  # (device, down, up) in the layers' dtype
    for (_, _, _, device, dtype), paths in keyed.items():
        host.append((device, torch.stack([deltas[p].down for p in paths]).to(dtype),
                     torch.stack([deltas[p].up for p in paths]).to(dtype)))
    for path in singles:
        weight = weights[path]
        host.append((weight.device, deltas[path].down.to(weight.dtype), deltas[path].up.to(weight.dtype)))
    moved: list[tuple[torch.Tensor, torch.Tensor]] = []
    for device in {d for d, _, _ in host}:
        mine = [(i, down, up) for i, (d, down, up) in enumerate(host) if d == device]
        tensors = _moved([t for _, down, up in mine for t in (down, up)], device)
        moved.extend((i, tensors[2 * k], tensors[2 * k + 1]) for k, (i, _, _) in enumerate(mine))
    by_index = {i: (down, up) for i, down, up in moved}
    out: dict[str, Delta] = {}
    groups = []
    for i, ((_, _, alpha, _, _), paths) in enumerate(keyed.items()):
        down, up = by_index[i]
        groups.append(DeltaGroup(tuple(paths), up, down, alpha))
        out.update({p: Delta(down[k], up[k], alpha) for k, p in enumerate(paths)})
    for k, path in enumerate(singles):
        down, up = by_index[len(keyed) + k]
        out[path] = Delta(down, up, deltas[path].alpha)
    _warm(groups)
    return out, tuple(groups)


def _warm(groups: list[DeltaGroup]) -> None:
    """Run each group's batched matmul once, off the render thread: CUDA loads kernels lazily, on
    first use, and cuBLAS picks its kernel per shape; neither should fall on a frame. The fold's
    working memory of these shapes is left in the allocator's cache for the render thread."""
    for group in (g for g in groups if g.up.is_cuda):
        work = torch.empty((group.up.shape[0], group.up.shape[1], group.down.shape[2]),
                           dtype=group.up.dtype, device=group.up.device)
        with _after_frames(group.up.device):
            work.zero_().baddbmm_(group.up, group.down, alpha=1.0)
        del work  # finished (synchronised): free for the default stream


def delta_weight(delta: Delta, scale: float) -> torch.Tensor:
    """``up @ down * scale`` as PEFT's ``get_delta_weight`` computes it (Linear and Conv2d)."""
    down, up = delta.down, delta.up
    dtype = down.dtype
    if down.device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):  # PEFT: fp32 on the CPU
        down, up = down.float(), up.float()
    if down.dim() == 2:
        out = (up @ down) * scale
    elif down.shape[2:] == (1, 1):
        out = (up.squeeze(3).squeeze(2) @ down.squeeze(3).squeeze(2)).unsqueeze(2).unsqueeze(3) * scale
    else:
        out = torch.nn.functional.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3) * scale
    return out.to(dtype)
