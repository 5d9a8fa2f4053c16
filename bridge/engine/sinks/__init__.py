"""Where frames go: shared memory (on the GPU thread) and PNG (encoded off the render path)."""
