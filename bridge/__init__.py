"""turbo-bridge: an SDXL-Turbo daemon that turns every prompt or seed change into a frame."""

__version__ = "0.1.0"
