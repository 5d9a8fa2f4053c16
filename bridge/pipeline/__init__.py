"""The only package that imports torch and diffusers.

Import its modules lazily (``from bridge.pipeline import loader`` inside a function) so that
the rest of the daemon, and its tests, run without torch.
"""
