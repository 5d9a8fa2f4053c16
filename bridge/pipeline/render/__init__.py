"""Rendering frames: the renderer and its per-frame path, the model calls and the sampling loop,
prompt conditioning, noise, transitions, tiling, and batches of several channels' frames.

The top of the pipeline: may import ``core`` and every other ``pipeline`` package.
"""
