"""Rendering frames: the renderer and its per-frame path, the model calls and the sampling loop,
prompt conditioning, noise, transitions, tiling, and batches of several channels' frames.
``renderer`` imports the modules of its per-frame path (``frame_graph``, ``model_calls``, ``runner``,
...), which never import it back: ``frame_graph`` takes it as a protocol (``FrameModel``).

The top of the pipeline: may import ``core`` and every other ``pipeline`` package.
"""
