"""The fast path's levers: memory layout and fused projections (the UNet's, the CLIP text encoders'
Q/K/V: ``clip_qkv``), the VAE's GroupNorm from per-chunk statistics (``group_norm``), torch.compile
of whole calls or of the models' repeated blocks (``regions``),
whole-frame CUDA graphs, the second stream that decodes while the next frame runs and the third that
encodes a new prompt beside it (overlap, ``text_stream``), the render lanes that run consecutive frames'
denoisers at once (``lanes``), and the compiler's portable artefacts.

May import ``core`` only.
"""
