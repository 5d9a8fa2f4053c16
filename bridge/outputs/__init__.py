"""Where frames go: shared memory (on the render thread), PNG files and the PNG cache (encoded off
the render path), recordings (MP4), NDI, and Spout and Syphon (``texture``).

May import ``core``, ``client`` (the shared-memory layout) and ``texshare`` (Spout and Syphon) only.
"""
