"""The fast path's levers: memory layout and fused projections, torch.compile, whole-frame CUDA
graphs, the second stream that decodes while the next frame runs (overlap), and the compiler's
portable artefacts.

May import ``core`` only.
"""
