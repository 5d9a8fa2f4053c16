"""Write a random-weight pipeline as one original-layout .safetensors file (for single-file benchmarks).

    PYTHONPATH=.:tests python examples/random_single_file.py random cuda /tmp/random-sdxl.safetensors

The first argument is ``random`` (full-size SDXL-Turbo architecture) or ``demo`` (the small one);
the key layout comes from ``tests/support/ldm_layout.py`` (SGM for SDXL), the one community checkpoints use.
"""

import sys

import torch
from safetensors.torch import save_file

from bridge.pipeline.loading.demo import build_random_pipeline
from ldm_layout import pipeline_to_single_file


def main() -> None:
    kind, device, out = sys.argv[1:4]
    pipe = build_random_pipeline(demo=kind == "demo", dtype=torch.float16, device=device)
    save_file({k: v.contiguous().cpu() for k, v in pipeline_to_single_file(pipe).items()}, out)
    print("wrote", out)


if __name__ == "__main__":
    main()
