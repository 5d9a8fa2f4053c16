"""Canny edges on the pipeline's device (torch): what a canny ControlNet expects as its image.

The classic steps, as OpenCV's ``Canny`` runs them on a grey image: a 5x5 Gaussian blur
(sigma 1.4), Sobel gradients, the L2 magnitude, non-maximum suppression across the gradient
direction (quantised to 0/45/90/135 degrees), then hysteresis: pixels above ``high`` are edges,
and pixels above ``low`` become edges where they touch one. Thresholds are in grey levels
(0..255 images), like OpenCV's. Runs once per control image content (the result is cached).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DEFAULT_THRESHOLDS = (100.0, 200.0)


def _gaussian(device: torch.device, sigma: float = 1.4, size: int = 5) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - size // 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def canny(rgb: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """(H, W, 3) uint8 on any device to (H, W) bool edges."""
    if not 0 <= low <= high:
        raise ValueError(f"canny thresholds must satisfy 0 <= low <= high, got {low}, {high}")
    weights = torch.tensor([0.299, 0.587, 0.114], device=rgb.device)
    gray = (rgb.float() * weights).sum(-1)[None, None]
    gray = F.conv2d(F.pad(gray, (2, 2, 2, 2), mode="reflect"), _gaussian(rgb.device))
    sobel_x = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=rgb.device)
    kernels = torch.stack([sobel_x, sobel_x.T])[:, None]
    grad = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)[0]
    gx, gy = grad[0], grad[1]
    magnitude = torch.hypot(gx, gy)
    # Direction quantised to 4 bins; the neighbours across the edge are compared.
    angle = torch.remainder(torch.atan2(gy, gx) * 180 / math.pi, 180.0)
    bins = (torch.round(angle / 45.0).long() % 4)
    padded = F.pad(magnitude[None, None], (1, 1, 1, 1))[0, 0]
    h, w = magnitude.shape

    def shifted(dy: int, dx: int) -> torch.Tensor:
        return padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    offsets = [((0, 1), (0, -1)), ((1, 1), (-1, -1)), ((1, 0), (-1, 0)), ((1, -1), (-1, 1))]
    keep = torch.zeros_like(magnitude, dtype=torch.bool)
    for b, (a, c) in enumerate(offsets):
        local = (magnitude >= shifted(*a)) & (magnitude > shifted(*c))
        keep |= (bins == b) & local
    thin = torch.where(keep, magnitude, torch.zeros_like(magnitude))
    weak = thin >= low
    edges = thin >= high
    while True:  # hysteresis: grow the strong edges through connected weak pixels
        grown = (F.max_pool2d(edges[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0) & weak
        if torch.equal(grown, edges):
            return edges
        edges = grown
