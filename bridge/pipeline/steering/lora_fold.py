"""Folding LoRA deltas into the model's weights in place, between two frames.

The weights become ``base + sum(weight * scale * up @ down)`` (one LoRA after another, diffusers'
``fuse_lora`` order), computed in full from exact copies of the touched layers' base weights
before any weight is written, and written into the existing tensors (the storage a captured
CUDA graph reads); a layer no LoRA touches any more gets its base back bit for bit.

Two ways to compute the same sum:
- per layer (CPU, or ``grouped=False``): PEFT's ``get_delta_weight`` arithmetic, so frames match
  diffusers' ``fuse_lora`` pixel for pixel;
- grouped (CUDA): a LoRA's linear layers of one (out, in, rank, alpha) were stacked at load
  time (``place``), so a fold is one stack of the base copies per layer shape, one
  ``baddbmm_`` per LoRA and shape, and one multi-tensor copy into the weights: a few dozen
  kernel launches for an SDXL LoRA's 560 layers instead of thousands, and no host-device
  copies. ``baddbmm`` rounds once where PEFT rounds after the matmul, the scale and the add,
  so the results agree within bf16 rounding (tests/pipeline/test_gpu_lora.py), not bit for bit.

``place`` runs on the loader thread: it reads the file's tensors (safetensors maps them lazily:
untouched, their first read would fall on the render thread), casts them to their layers'
dtype, copies them to their layers' device on a side stream and runs each group's batched
matmul once there (CUDA loads kernels on first use: not on a frame).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

PLANS_KEPT = 4  # fold plans cached (per list of active LoRAs, whose deltas they keep alive)


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


def target_weight(path: str, module, modules: dict) -> torch.Tensor:
    """The weight the forward pass reads: a slice of the fused to_qkv/to_kv after fuse_qkv_projections."""
    parent_path, _, leaf = path.rpartition(".")
    attn = modules.get(parent_path)
    if attn is None or not getattr(attn, "fused_projections", False) or leaf not in ("to_q", "to_k", "to_v"):
        return module.weight
    order = ("to_k", "to_v") if attn.is_cross_attention else ("to_q", "to_k", "to_v")
    if leaf not in order:
        return module.weight
    fused = (attn.to_kv if attn.is_cross_attention else attn.to_qkv).weight
    start = sum(getattr(attn, name).weight.shape[0] for name in order[:order.index(leaf)])
    return fused[start:start + module.weight.shape[0]]


@dataclass(frozen=True)
class _Stack:
    """Layers of one weight shape folded together: which LoRA group adds into which rows."""

    paths: tuple[str, ...]
    targets: tuple[torch.Tensor, ...]
    adds: tuple[tuple[int, DeltaGroup, slice | torch.Tensor], ...]  # (LoRA's place in the order, group, rows)


@dataclass(frozen=True)
class _Plan:
    loras: tuple  # the LoraFiles it was made for (kept: their ids are the cache key)
    stacks: tuple[_Stack, ...]
    singles: tuple[str, ...]  # folded per layer


class LoraFolder:
    """Folds the active LoRAs into the model's weights; runs on the render thread only.

    ``grouped``: None folds grouped on CUDA and per layer elsewhere (exact against diffusers);
    True or False forces one way (tests compare them)."""

    def __init__(self, modules: dict, grouped: bool | None = None):
        self._modules = modules
        self._grouped = grouped
        self._targets: dict[str, torch.Tensor] = {}
        self._base: dict[str, torch.Tensor] = {}  # exact copies of the base weights the active LoRAs touch
        self._plans: dict[tuple, _Plan] = {}
        self.active: tuple = ()  # ((LoraFile, weight), ...)

    def target(self, path: str) -> torch.Tensor:
        found = self._targets.get(path)
        if found is None:
            # detached: the same storage, and no autograd view bookkeeping between modes
            found = self._targets[path] = target_weight(path, self._modules[path], self._modules).detach()
        return found

    def _groups(self, weight: torch.Tensor) -> bool:
        return weight.dim() == 2 and (weight.is_cuda if self._grouped is None else self._grouped)

    def _plan(self, loras: Sequence) -> _Plan:
        key = tuple(id(lora) for lora in loras)
        plan = self._plans.get(key)
        if plan is not None and all(a is b for a, b in zip(plan.loras, loras)):
            return plan
        stacked = [{p for g in lora.groups for p in g.paths} for lora in loras]
        paths = sorted({p for lora in loras for p in lora.deltas})
        shapes: dict[tuple, list[str]] = defaultdict(list)
        singles = []
        for path in paths:
            weight = self.target(path)
            if self._groups(weight) and all(path in s for s, lora in zip(stacked, loras) if path in lora.deltas):
                shapes[(tuple(weight.shape), weight.dtype, weight.device)].append(path)
            else:
                singles.append(path)
        stacks = []
        for members in shapes.values():
            at = {p: i for i, p in enumerate(members)}
            adds = []
            for place_, lora in enumerate(loras):
                for group in lora.groups:
                    keep = [k for k, p in enumerate(group.paths) if p in at]
                    if not keep:
                        continue
                    if len(keep) < len(group.paths):  # some of its layers fold per layer (another LoRA's)
                        group = DeltaGroup(tuple(group.paths[k] for k in keep), group.up[keep], group.down[keep],
                                           group.alpha)
                    index = [at[p] for p in group.paths]  # increasing: both sorted
                    rows = (slice(index[0], index[-1] + 1) if index[-1] - index[0] + 1 == len(index)
                            else torch.tensor(index, device=group.up.device))
                    adds.append((place_, group, rows))
            stacks.append(_Stack(tuple(members), tuple(self.target(p) for p in members), tuple(adds)))
        plan = _Plan(tuple(loras), tuple(stacks), tuple(singles))
        if len(self._plans) >= PLANS_KEPT:
            self._plans.pop(next(iter(self._plans)))
        self._plans[key] = plan
        return plan

    def _copies(self, paths: list[str]) -> dict[str, torch.Tensor]:
        """Exact copies of these layers' weights, one allocation per linear shape (not one per layer:
        on CUDA a first fold would pay hundreds of cudaMalloc calls), one multi-tensor copy."""
        shapes: dict[tuple, list[str]] = defaultdict(list)
        for path in paths:
            weight = self.target(path)
            shapes[(tuple(weight.shape), weight.dtype, weight.device, weight.dim() == 2)].append(path)
        out: dict[str, torch.Tensor] = {}
        for (shape, dtype, device, linear), members in shapes.items():
            if linear:
                out.update(zip(members, torch.empty((len(members), *shape), dtype=dtype, device=device).unbind(0)))
            else:  # convolutions keep their memory format
                out.update((p, torch.empty_like(self.target(p))) for p in members)
        if out:
            torch._foreach_copy_([out[p] for p in paths], [self.target(p) for p in paths])
        return out

    @torch.no_grad()
    def fold(self, active: tuple) -> None:
        """Make the weights ``base + sum(deltas)``; computed in full before any weight is written."""
        if [(f.name, f.stamp, w) for f, w in active] == [(f.name, f.stamp, w) for f, w in self.active]:
            return
        plan = self._plan([lora for lora, _ in active])
        touched = {p for lora, _ in active for p in lora.deltas}
        base = {**self._base, **self._copies(sorted(touched - self._base.keys()))}
        targets: list[torch.Tensor] = []
        values: list[torch.Tensor] = []
        for stack in plan.stacks:
            work = torch.stack([base[p] for p in stack.paths])
            for place_, group, rows in stack.adds:  # one LoRA after another: diffusers' fuse order
                scale = group.scaling(active[place_][1])
                if isinstance(rows, slice):
                    work[rows].baddbmm_(group.up, group.down, alpha=scale)
                else:
                    work.index_add_(0, rows, torch.bmm(group.up, group.down), alpha=scale)
            targets.extend(stack.targets)
            values.extend(work.unbind(0))
        for path in plan.singles:
            weight = base[path].clone()
            for lora, scale in active:
                delta = lora.deltas.get(path)
                if delta is not None:
                    weight += delta_weight(delta, delta.scaling(scale))
            targets.append(self.target(path))
            values.append(weight)
        gone = [p for p in self._base if p not in touched]
        targets.extend(self.target(p) for p in gone)  # no LoRA touches them any more: the base, bit for bit
        values.extend(self._base[p] for p in gone)
        if targets:
            torch._foreach_copy_(targets, values)
        self._base = {p: base[p] for p in touched}
        self.active = active
