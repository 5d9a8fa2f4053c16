"""Measuring: ``turbo-bridge bench`` (the pipeline's stages and frame rates against the plain
diffusers call, per mode: text, seed, input, control, style, LoRA) and ``turbo-bridge latency``
(OSC change in to frame out, through a real daemon, one or several channels).

The only package besides ``pipeline`` that may import torch and diffusers (lazily). May import
``core``, ``client``, ``outputs`` and ``pipeline``.
"""
