"""Seamless tiling: circular padding, per axis, in every Conv2d of the UNet and the VAE.

A frame rendered with circular padding wraps around: its left edge continues its right edge
(``x``), its top its bottom (``y``), or both (``xy``). Every ``nn.Conv2d`` of the given modules
becomes a ``TilingConv2d`` (the same module, its class swapped: weights, hooks and LoRA wrappers
untouched) whose padding follows two flags; ``Tiling.set`` flips the flags, nothing is rebuilt.
With both flags off the convolution is ``nn.Conv2d``'s own. Everything else in these networks
(GroupNorm, attention without positional terms, nearest upsampling) commutes with a roll, so with
``xy`` the network is translation-equivariant on the torus (tests/pipeline/test_tiling.py).

Not circular: diffusers' ``Downsample2D`` with ``padding=0`` pads one zero row and column itself
before its convolution (the full VAE's encoder, used for image-to-image input only).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

MODES = {"none": (False, False), "x": (True, False), "y": (False, True), "xy": (True, True)}


class TilingConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose padding is circular along the axes whose flag is set."""

    tile_x: bool = False
    tile_y: bool = False

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if not (self.tile_x or self.tile_y) or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super()._conv_forward(input, weight, bias)
        pad_y, pad_x = self.padding
        # Each axis on its own: circular where tiled, zeros where not (F.pad's circular mode needs
        # the pad no wider than the input, true for every conv here: 1 px on latents of 8 px and more).
        if pad_x:
            input = F.pad(input, (pad_x, pad_x, 0, 0), mode="circular" if self.tile_x else "constant")
        if pad_y:
            input = F.pad(input, (0, 0, pad_y, pad_y), mode="circular" if self.tile_y else "constant")
        return F.conv2d(input, weight, bias, self.stride, 0, self.dilation, self.groups)


class Tiling:
    """The tiling mode of a set of modules (the UNet, the VAE): ``set("xy")`` before a frame."""

    def __init__(self, modules: list[nn.Module]):
        self._convs: list[TilingConv2d] = []
        for module in modules:
            for conv in module.modules():
                if type(conv) is nn.Conv2d:
                    conv.__class__ = TilingConv2d
                if isinstance(conv, TilingConv2d):
                    self._convs.append(conv)
        self.mode = "none"
        log.debug("tiling: %d convolutions", len(self._convs))

    @property
    def convolutions(self) -> int:
        return len(self._convs)

    def set(self, mode: str) -> bool:
        """Switch to ``mode`` (none, x, y, xy); True when it changed."""
        if mode == self.mode:
            return False
        tile_x, tile_y = MODES[mode]
        for conv in self._convs:
            conv.tile_x, conv.tile_y = tile_x, tile_y
        self.mode = mode
        return True
