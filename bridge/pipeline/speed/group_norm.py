"""GroupNorm from per-chunk, per-channel statistics: a formulation Inductor compiles to wide kernels.

At batch 1 a GroupNorm has 32 groups to reduce, each over C/32 channels of every pixel. Inductor
lowers ``native_group_norm`` by viewing the input as [N, G, C/G*H*W]; for the channels-last tensors the
compiled VAE runs on, that view is a copy of the whole activation ("clone" in the kernel names) before a
reduction with 32 rows. Run S5's kernel profile of the SD VAE decoder at 512 px: 2.3 ms of its 7.6 ms busy
in such normalisation kernels, one of them 0.63 ms for a 134 MB tensor the GPU reads in under 0.05 ms.

Here the statistics come from the tensor as it lies: the pixels cut into ``CHUNKS`` runs, a mean and
variance per run and channel (a column reduction over contiguous rows in channels-last, a row reduction in
NCHW: no copy, thousands of outputs), combined exactly per group (equal counts: the group's variance is the
mean of the runs' variances plus the variance of their means). The result is GroupNorm's up to float32
rounding; it is used only where the decoder is compiled on the GPU (``Tuning.split_group_norm``), never on
the eager path whose pixels match diffusers'.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

CHUNKS = 64


class SplitGroupNorm(nn.Module):
    """``nn.GroupNorm``'s result from per-chunk statistics; shares the wrapped norm's parameters."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.num_groups = norm.num_groups
        self.num_channels = norm.num_channels
        self.eps = norm.eps
        self.weight = norm.weight  # the same Parameter objects: a LoRA or a reload changes both
        self.bias = norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        g = self.num_groups
        flat = x.flatten(2)  # [N, C, L]: a view in either layout
        length = flat.shape[2]
        chunks = math.gcd(length, CHUNKS)
        if flat.stride(1) == 1:  # channels last: each pixel's channels adjacent
            runs = flat.transpose(1, 2).reshape(n, chunks, length // chunks, c)
            var, mean = torch.var_mean(runs.float(), dim=2, correction=0)  # [N, chunks, C]
        else:
            runs = flat.reshape(n, c, chunks, length // chunks)
            var, mean = torch.var_mean(runs.float(), dim=3, correction=0)  # [N, C, chunks]
            var, mean = var.transpose(1, 2), mean.transpose(1, 2)
        mean = mean.reshape(n, chunks, g, c // g)
        var = var.reshape(n, chunks, g, c // g)
        group_mean = mean.mean(dim=(1, 3), keepdim=True)
        group_var = var.mean(dim=(1, 3), keepdim=True) + (mean - group_mean).square().mean(dim=(1, 3), keepdim=True)
        rstd = torch.rsqrt(group_var + self.eps)  # [N, 1, G, 1]
        scale = rstd.expand(n, 1, g, c // g).reshape(n, c)
        shift = (-group_mean * rstd).expand(n, 1, g, c // g).reshape(n, c)
        if self.weight is not None:
            scale = scale * self.weight.float()
            shift = shift * self.weight.float() + self.bias.float()
        view = (n, c) + (1,) * (x.dim() - 2)
        return (x.float() * scale.view(view) + shift.view(view)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}"


def swap_group_norms(module: nn.Module) -> int:
    """Replaces every ``nn.GroupNorm`` under ``module`` (in place) by a ``SplitGroupNorm``; returns how many."""
    swapped = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.GroupNorm:
                setattr(parent, name, SplitGroupNorm(child))
                swapped += 1
    return swapped
