"""FP8 for the UNet's linear layers (groundwork for ``--precision fp8``; the bench has it first).

Each ``nn.Linear`` whose sizes FP8 GEMMs take (multiples of 16) becomes a ``Float8Linear``: the
weight stored as float8 e4m3 with one float32 scale per tensor (its absolute maximum maps to
e4m3's 448), the input scaled the same way per call (dynamic scaling), and the product computed
by ``torch._scaled_mm`` into the input's dtype, bias added there. Half the weight memory of
bf16 for those layers, and FP8 tensor cores on Ada (sm_89) and Hopper (sm_90); torch also has a
CPU kernel, which the tests use. Convolutions (the VAE, the UNet's resnets) stay as they are.

Quantise after anything that rewrites the linear layers (fused QKV projections): the fused
layer is made from the originals' weights. LoRAs fold into bf16 weights and are not supported on
FP8 layers yet.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ...core.errors import ConfigError

log = logging.getLogger(__name__)

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max  # 448
MIN_SCALE = 1e-12  # an all-zero tensor still gets a usable scale


def _scale(t: torch.Tensor) -> torch.Tensor:
    """Per-tensor scale (float32, 0-d) so that ``t / scale`` spans e4m3's range."""
    return (t.detach().abs().amax().float() / E4M3_MAX).clamp(min=MIN_SCALE)


class Float8Linear(nn.Module):
    """``nn.Linear`` with an e4m3 weight and per-tensor scales; output in the input's dtype."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)  # (out, in), e4m3: weight.t() is the column-major operand
        self.register_buffer("weight_scale", scale)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Float8Linear":
        w = linear.weight.detach()
        scale = _scale(w)
        quantised = (w.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(quantised, scale, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        scale = _scale(x2)
        xq = (x2.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
        out_dtype = x.dtype if x.dtype in (torch.bfloat16, torch.float16, torch.float32) else torch.bfloat16
        out = torch._scaled_mm(xq, self.weight.t(), scale_a=scale, scale_b=self.weight_scale, out_dtype=out_dtype)
        if self.bias is not None:
            out = out + self.bias.to(out_dtype)
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3 per-tensor"


def eligible(linear: nn.Module) -> bool:
    """FP8 GEMMs need both sizes to be multiples of 16."""
    return type(linear) is nn.Linear and linear.in_features % 16 == 0 and linear.out_features % 16 == 0


def quantize_linears(module: nn.Module) -> int:
    """Replace every eligible ``nn.Linear`` under ``module`` by a ``Float8Linear``; how many were."""
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if eligible(child):
                setattr(parent, name, Float8Linear.from_linear(child))
                replaced += 1
    log.info("fp8: %d linear layers of %s quantised to e4m3 (per-tensor scales)", replaced, type(module).__name__)
    return replaced


def check_device(device: torch.device) -> None:
    """Refuse a GPU without FP8 tensor cores; the CPU runs torch's reference kernel (slow: tests)."""
    if device.type != "cuda":
        return
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        raise ConfigError(f"fp8 needs FP8 tensor cores (Ada sm_89, Hopper sm_90 or newer); "
                          f"{torch.cuda.get_device_name(device)} is sm_{major}{minor}: use bf16")
