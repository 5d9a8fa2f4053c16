"""The fast path's levers: memory layout and fused projections, torch.compile, whole-frame CUDA
graphs, and the compiler's portable artefacts.

May import ``core`` only.
"""
