"""One matrix product for the queries, keys and values of each CLIP attention layer (the text encoders').

A prompt change runs the text encoders at 77 tokens, where each projection is a ~4 us GEMM, bound by
launches and latency (Run S5, H100: SDXL's two encoders 565 kernels in 2.73 ms, six GEMMs a layer).
diffusers' UNet fuses its Q/K/V (``fuse_qkv_projections``); transformers' ``CLIPAttention`` has no such
switch. Here each layer's q_proj, k_proj and v_proj become one [3D, D] projection, ``qkv``, and
transformers' own forward reads its output:

- the layer runs as ``FusedQKVAttention``, a subclass whose forward hands ``qkv(hidden_states)`` to
  transformers' forward in place of the hidden states. That forward reads its input only through
  q_proj, k_proj and v_proj and for its leading shape (batch, tokens), which the fused output shares;
  the attention kind (SDPA), the causal and padding masks and out_proj stay transformers' own.
- q_proj, k_proj and v_proj become ``ProjectionRows``: called on the fused output, each returns its
  columns; its ``weight`` and ``bias`` are views of its rows of the fused ones. The LoRA folder writes
  base weights in place through ``module.weight`` (steering/lora_fold.py), so it writes the tensor the
  fused product reads: a captured CUDA graph sees the LoRA, nothing recompiles.

Used only by a compiled renderer on the GPU (``Tuning.fused_text_qkv``; its text encoders compiled, or eager
in its frame graphs with ``Tuning.compile_text`` off), never on the eager path, whose embeddings are diffusers'
bit for bit.
"""

from __future__ import annotations

import inspect
import logging

import torch
import torch.nn as nn
from transformers.models.clip.modeling_clip import CLIPAttention

log = logging.getLogger(__name__)

# The forward this module was written against (transformers 5.17 on the device, 5.25 here): an older one
# (4.x: ``causal_attention_mask``, ``output_attentions``, the embedding width read from the input) would
# not take the fused projection for its hidden states.
FORWARD_PARAMETERS = ("self", "hidden_states", "attention_mask", "kwargs")
PROJECTIONS = ("q_proj", "k_proj", "v_proj")  # in the fused weight's row order


class ProjectionRows(nn.Module):
    """What was one Linear of q_proj/k_proj/v_proj: rows ``start:stop`` of the fused projection."""

    def __init__(self, fused: nn.Linear, start: int, stop: int) -> None:
        super().__init__()
        # Not a child module: the attention owns ``qkv``, and the module tree keeps the paths LoRA files name.
        object.__setattr__(self, "_fused", fused)
        self.start, self.stop = start, stop
        self.in_features, self.out_features = fused.in_features, stop - start

    @property
    def weight(self) -> torch.Tensor:
        """A view of the fused weight's rows (read at each access: it follows the fused weight's storage)."""
        return self._fused.weight[self.start:self.stop]

    @property
    def bias(self) -> torch.Tensor | None:
        return None if self._fused.bias is None else self._fused.bias[self.start:self.stop]

    def forward(self, fused_output: torch.Tensor) -> torch.Tensor:
        return fused_output[..., self.start:self.stop]

    def extra_repr(self) -> str:
        return f"rows {self.start}:{self.stop} of qkv, in_features={self.in_features}"


class FusedQKVAttention(CLIPAttention):
    """transformers' CLIP attention fed by one Q/K/V projection (made by ``fuse_clip_qkv``, never built)."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        return super().forward(self.qkv(hidden_states), *args, **kwargs)


def _fused(projections: list[nn.Linear]) -> nn.Linear:
    """One Linear whose rows are the projections' weights (and biases), one after another."""
    first = projections[0]
    biased = first.bias is not None
    if any((p.bias is not None) != biased for p in projections):
        raise ValueError("q_proj, k_proj and v_proj must all have a bias or none: cannot fuse them")
    out = sum(p.out_features for p in projections)
    fused = nn.Linear(first.in_features, out, bias=biased, device="meta")  # no memory, no random init
    fused.weight = nn.Parameter(torch.cat([p.weight.detach() for p in projections]),
                                requires_grad=first.weight.requires_grad)
    if biased:
        fused.bias = nn.Parameter(torch.cat([p.bias.detach() for p in projections]),
                                  requires_grad=first.bias.requires_grad)
    return fused


def fuse_clip_qkv(module: nn.Module) -> int:
    """Fuses the Q/K/V projections of every CLIP attention layer under ``module`` (in place); returns how
    many. Layers fused already are left as they are; a transformers whose attention forward is not the one
    this was written for fuses nothing and says so."""
    layers = [m for m in module.modules() if type(m) is CLIPAttention
              and all(type(getattr(m, name)) is nn.Linear for name in PROJECTIONS)]  # not PEFT-wrapped
    if not layers:
        return 0
    found = tuple(inspect.signature(CLIPAttention.forward).parameters)
    if found != FORWARD_PARAMETERS:
        log.warning("transformers' CLIPAttention.forward takes %s, not %s: the text encoders keep three Q/K/V "
                    "projections per layer (Tuning.fused_text_qkv has no effect with this transformers)",
                    found, FORWARD_PARAMETERS)
        return 0
    probe, want = _probe(layers[0])
    originals = {}
    for attn in layers:
        originals[attn] = projections = [getattr(attn, name) for name in PROJECTIONS]
        attn.qkv = fused = _fused(projections)
        start = 0
        for name, projection in zip(PROJECTIONS, projections):
            setattr(attn, name, ProjectionRows(fused, start, start + projection.out_features))
            start += projection.out_features
        attn.__class__ = FusedQKVAttention  # the same object: hooks and module paths stay
    # Proven at load, on the layer's own device and dtype: the signature check cannot see a forward whose
    # body reads its input another way (a transformers other than the ones above).
    try:
        with torch.inference_mode():
            got = layers[0](probe)[0]
        proven = got.shape == want.shape and torch.allclose(got.float(), want.float(), rtol=0.05, atol=0.05)
    except (RuntimeError, TypeError, ValueError) as error:
        proven, got = False, error
    if not proven:
        for attn, projections in originals.items():
            attn.__class__ = CLIPAttention
            del attn.qkv
            for name, projection in zip(PROJECTIONS, projections):
                setattr(attn, name, projection)
        log.warning("fused Q/K/V projections did not reproduce transformers' CLIP attention (%s): the text "
                    "encoders keep three projections per layer", got if isinstance(got, Exception) else "other values")
        return 0
    return len(layers)


def _probe(attn: CLIPAttention) -> tuple[torch.Tensor, torch.Tensor]:
    """A few tokens of random hidden states and the unfused layer's output on them."""
    weight = attn.q_proj.weight
    generator = torch.Generator(weight.device).manual_seed(0)
    probe = torch.randn((1, 5, weight.shape[1]), generator=generator, device=weight.device).to(weight.dtype)
    with torch.inference_mode():
        return probe, attn(probe)[0]
