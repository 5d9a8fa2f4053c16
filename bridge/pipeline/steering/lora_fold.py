"""Folding LoRA deltas into the model's weights in place, between two frames.

The weights become ``base + sum(weight * scale * up @ down)`` (one LoRA after another, diffusers'
``fuse_lora`` order), computed in full from exact copies of the touched layers' base weights
before any weight is written, and written into the existing tensors (the storage a captured
CUDA graph reads); a layer no LoRA touches any more gets its base back bit for bit.

Two ways to compute the same sum:
- per layer (CPU, or ``grouped=False``): PEFT's ``get_delta_weight`` arithmetic, so frames match
  diffusers' ``fuse_lora`` pixel for pixel;
- grouped (CUDA): a LoRA's linear layers of one (out, in, rank, alpha) were stacked at load
  time (``lora_deltas.place``), so a fold is one stack of the base copies per layer shape, one
  ``baddbmm_`` per LoRA and shape, and one multi-tensor copy into the weights: a few dozen
  kernel launches for an SDXL LoRA's 560 layers instead of thousands, and no host-device
  copies. ``baddbmm`` rounds once where PEFT rounds after the matmul, the scale and the add,
  so the results agree within bf16 rounding (tests/pipeline/test_gpu_lora.py), not bit for bit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .lora_deltas import DeltaGroup, delta_weight

PLANS_KEPT = 4  # fold plans cached (per list of active LoRAs, whose deltas they keep alive)


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
