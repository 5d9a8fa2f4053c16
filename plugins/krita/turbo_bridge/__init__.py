"""turbo-bridge for Krita: a docker that pulls live SDXL-Turbo frames into a reference layer.

Krita imports this package at start-up and expects it to register its docker then; imported
anywhere else (tests, the build step) it registers nothing.
"""

try:
    import krita
except ImportError:  # not inside Krita
    krita = None

if krita is not None:
    try:
        from .docker import register
    except ImportError as exc:  # numpy missing from Krita's Python: say so in the docker
        from .notice import register_notice

        register_notice(krita, exc)
    else:
        register(krita)
