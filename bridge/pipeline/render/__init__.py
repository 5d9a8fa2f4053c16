"""Rendering frames: the renderer and its per-frame path, compiling and warming it up, the model calls
and the sampling loop, prompt conditioning, noise, transitions, tiling, and batches of several
channels' frames. ``renderer`` imports the modules of its per-frame path (``frame_graph``,
``compiling``, ``model_calls``, ``runner``, ...), which never import it back: ``frame_graph`` and
``compiling`` take it as protocols (``FrameModel``, ``WarmModel``).

The top of the pipeline: may import ``core`` and every other ``pipeline`` package.
"""
