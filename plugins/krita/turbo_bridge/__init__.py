"""turbo-bridge for Krita: a docker that pulls live SDXL-Turbo frames into a reference layer.

Krita imports this package at start-up and expects it to register its docker then; imported
anywhere else (tests, the build step) it registers nothing.
"""

try:
    import krita
except ImportError:  # not inside Krita
    krita = None

if krita is not None:
    from .docker import register

    register(krita)
