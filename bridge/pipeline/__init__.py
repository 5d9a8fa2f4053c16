"""The only package (with ``bench``) that imports torch and diffusers.

- ``families``: what differs between model families (text conditioning, denoiser, configs) and
  the few-step samplers.
- ``loading``: models from the hub, a folder, a single file, or built from random weights (demo).
- ``steering``: what steers a frame besides the prompt: the input image, ControlNets,
  T2I-Adapters, control images, the IP-Adapter (style images), LoRAs.
- ``speed``: compiling, CUDA graphs, the compiler's portable artefacts.
- ``render``: one frame (and a batch of channels' frames) from params and a scene: the renderer,
  its model calls and sampling, prompts, noise, transitions, tiling.

Inside, imports point one way: ``speed`` and ``families`` < ``loading`` < ``steering`` < ``render``.
From outside it may import ``core`` only (never ``engine``, ``frontends``, ``outputs`` or ``app``). Import its
modules lazily (inside a function) so that the rest of the daemon, and its tests, run without torch.
"""
