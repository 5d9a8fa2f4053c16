"""Loading a pipeline once at start: a hub id, a local folder, a single-file checkpoint, or a
pipeline of random weights built locally (the demo and benchmark models).

May import ``core``, ``pipeline.families`` and ``pipeline.speed``.
"""
