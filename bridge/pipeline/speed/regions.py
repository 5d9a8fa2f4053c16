"""Regional compilation: a model's repeated blocks compiled one by one instead of its whole call.

A whole-call compile traces the whole U-Net (70 transformer blocks and 20-odd ResNet blocks in SDXL's)
as one graph: Dynamo, AOTAutograd and Inductor walk every block again though most are the same code
at the same shapes. Compiled block by block (``torch.nn.Module.compile``, PyTorch's "regional
compilation" recipe, diffusers' ``compile_repeated_blocks``), each class is traced once per shape and
reused by every block of that class: a cold start compiles a few small graphs for the denoiser.
``bench/regions_probe.py``, SDXL's U-Net at 256 px on a 2-core CPU: Dynamo alone 17.5 s whole / 4.3 s
by blocks (15 graphs); Dynamo with AOTAutograd 31.8 s / 4.5 s.

The text encoders stay whole calls (``REPEATED_BLOCKS`` says why). The glue between blocks (the input
and output convolutions, the time embedding, the down- and up-samplers, the skip concatenations) runs
eager; on CUDA the frame's graph capture (``graphs.py``) takes its Python cost away either way, but its
kernels lose what Inductor would fuse there. Which of the two is faster per frame is a benchmark on the
card (``bench --compile-scope calls`` and ``blocks``, ``bench/gpu_session.sh regions``).
"""

from __future__ import annotations

import torch

from .optimize import compile_options

SCOPES = ("calls", "blocks")  # Tuning.compile_scope: each model call whole, or its modules' repeated blocks

# The repeated block classes of the models the families build, by model class. diffusers names its
# own in ``_repeated_blocks`` (the U-Net: only its transformer blocks); the U-Net's ResNet blocks are
# added here (about half its convolutions, with GroupNorm and SiLU that Inductor fuses). A model of
# no entry compiles whole: any VAE, and the text encoders, whose layers carry transformers' output-
# capturing hooks (SDXL reads the penultimate hidden states through them): compiled as a region, a
# hook reads a ContextVar that Dynamo cannot trace, where a whole call sets it traced.
REPEATED_BLOCKS = {
    "UNet2DConditionModel": ("BasicTransformerBlock", "ResnetBlock2D"),
    "SanaTransformer2DModel": ("SanaTransformerBlock",),
}
# Recompiles per block class: one graph per (block shape, batch rows, frame size); a U-Net's ResNet
# blocks alone take about 12 shapes per frame size and batch (probe above), so more than whole calls need.
BLOCK_RECOMPILE_LIMIT = 256


def repeated_blocks(model: torch.nn.Module) -> tuple[str, ...]:
    """The class names of ``model``'s repeated blocks (empty: compile it whole)."""
    return REPEATED_BLOCKS.get(type(model).__name__, ())


def compile_blocks(model: torch.nn.Module, mode: str = "default", backend: str = "inductor") -> int:
    """Compile every repeated block of ``model`` in place (static shapes, one full graph per block and
    shape); the number compiled. The model's own call stays eager around them. ``mode``: one of
    ``optimize.COMPILE_MODES``; ``backend``: Inductor (the tests trace with "aot_eager", which runs the
    traced graph as it is: exact, no code to build; it takes no mode)."""
    options = compile_options(mode) if backend == "inductor" else {}
    names = set(repeated_blocks(model))
    if not names:
        raise ValueError(f"{type(model).__name__} has no repeated blocks to compile (REPEATED_BLOCKS)")
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, BLOCK_RECOMPILE_LIMIT)
    torch._dynamo.config.accumulated_cache_size_limit = max(torch._dynamo.config.accumulated_cache_size_limit,
                                                            4 * BLOCK_RECOMPILE_LIMIT)
    count = 0
    for block in model.modules():
        if type(block).__name__ in names:
            block.compile(fullgraph=True, dynamic=False, backend=backend, **options)
            count += 1
    return count
