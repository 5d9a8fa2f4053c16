"""turbo-bridge inside TouchDesigner: Script TOP frames, OSC control, feedback, cues.

The modules take TouchDesigner objects (OPs, Pars, DATs) as arguments and never use TD's
globals, so the thin callback DATs that ``network.build`` writes can pass them in. Stdlib,
numpy and ``bridge.client`` only (vendored by ``build.py`` for a standalone copy).
"""
