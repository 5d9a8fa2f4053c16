"""Where frames go: shared memory (on the render thread), PNG files and the PNG cache (encoded off
the render path), recordings (MP4) and NDI.

May import ``core`` and ``client`` (the shared-memory layout) only.
"""
