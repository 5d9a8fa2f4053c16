"""FP8 for the UNet's attention layers, through torchao (``--precision fp8``; the bench has it first).

torchao's ``Float8DynamicActivationFloat8WeightConfig`` turns each chosen ``nn.Linear``'s weight into
a float8 e4m3 tensor subclass (scaled per row for bf16 weights, per tensor otherwise) and quantises
the activation on every call (dynamic scaling), so the product runs on FP8 tensor cores (Ada sm_89,
Hopper sm_90) through ``torch._scaled_mm`` with the operand layouts cuBLASLt accepts; torch.compile
fuses the activation's quantisation into the kernels around it. It replaces a hand-written
``_scaled_mm`` layer that the H100 refused ("Only multiplication of row-major and column-major
matrices is supported by cuBLASLt": a transposed activation reached it as is).

Which layers: the linear layers of the UNet's transformer blocks (``.attentions.``: the projections
in and out, the fused QKV and KV projections, the feed-forward), where its linear FLOPs are, and
whose sizes FP8 GEMMs take (multiples of 16). The time and added-condition embeddings (one token)
and the convolutions stay bf16. Quantise after the QKV fusion: the fused layers are the FP8 ones.
LoRAs fold into bf16 weights and are not supported on FP8 layers (not in ``serve``).

torchao is optional (``pip install turbo-bridge[fp8]``) and its FP8 inference needs a CUDA GPU of
sm_89 or newer; ``check`` refuses anything else in one line, before a model is loaded.
"""

from __future__ import annotations

import importlib.util
import logging

import torch
from torch import nn

from ...core.errors import ConfigError

log = logging.getLogger(__name__)

INSTALL = "pip install 'turbo-bridge[fp8]'"


def check(device: torch.device) -> None:
    """Refuse FP8 where it cannot run: without torchao, off CUDA, or on a GPU without FP8 tensor cores."""
    if importlib.util.find_spec("torchao") is None:
        raise ConfigError(f"--precision fp8 needs torchao (FP8 kernels for torch): {INSTALL}")
    if device.type != "cuda":
        raise ConfigError(f"--precision fp8 needs a CUDA GPU with FP8 tensor cores (Ada sm_89, Hopper sm_90 or "
                          f"newer); this run is on {device.type}: use bf16")
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        raise ConfigError(f"--precision fp8 needs FP8 tensor cores (Ada sm_89, Hopper sm_90 or newer); "
                          f"{torch.cuda.get_device_name(device)} is sm_{major}{minor}: use bf16")


def eligible(module: nn.Module, name: str) -> bool:
    """A linear layer of a transformer block whose sizes FP8 GEMMs take (both multiples of 16)."""
    return (type(module) is nn.Linear and ".attentions." in f".{name}"
            and module.in_features % 16 == 0 and module.out_features % 16 == 0)


def quantize_unet(unet: nn.Module) -> int:
    """Quantise ``unet``'s eligible linear layers in place with torchao; how many were."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor, quantize_

    chosen = {name for name, module in unet.named_modules() if eligible(module, name)}
    # Per-row scales keep more of each output channel's range; torchao takes them for bf16 weights only.
    granularity = PerRow() if unet.dtype == torch.bfloat16 else PerTensor()
    # set_inductor_config=False: the renderer's compile settings stay as configure_compile_cache set them.
    config = Float8DynamicActivationFloat8WeightConfig(granularity=granularity, set_inductor_config=False)
    quantize_(unet, config, filter_fn=lambda module, name: name in chosen)
    log.info("fp8: %d linear layers of the UNet's transformer blocks in float8 e4m3 (torchao, %s scales)",
             len(chosen), type(granularity).__name__)
    return len(chosen)
