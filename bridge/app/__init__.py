"""The only package that wires: pipeline, engine, outputs and front ends into one daemon.

- ``renderers``: one warm renderer per device (``load_renderer``, ``resolve_devices``); ``warm_batches``: the
  batch graphs of several channels captured at start too (``--warm-channels``).
- ``devices``: where channels render: this host's devices (``--device``), each a render thread,
  renderer and render queue; ``cluster``: a Ray cluster's renderer workers instead (``--cluster ray``).
- ``engine``: render threads and queues, the channel registry with channel main first.
- ``outputs``: which outputs each channel gets (shared memory, PNG files, recording, NDI, Spout, Syphon).
- ``frontends``: the HTTP app's guards and routes, the OSC server, each channel's front-end services.
- ``daemon``: the app with its parts in start order and its health (``create_app``), the bound
  sockets (``Daemon``) and the run until a stop signal (``serve``).

Each part starts and stops in one aiohttp cleanup context. Nothing outside this package wires.
May import every other package of ``bridge``; only the command line (``cli``, ``cli_serve``) imports it.
"""

from .daemon import CONFIG, SHUTDOWN_TIMEOUT_S, STOP_SIGNALS, Daemon, create_app, serve
from .engine import DEVICES, FIRST_FRAME_WAIT_S, MAIN_OUTPUTS, MODEL_INFO
from .frontends import GUARD, OSC, OSC_SOCKET
from .renderers import load_controlnets, load_ip_adapter, load_renderer, resolve_devices

__all__ = ["CONFIG", "DEVICES", "FIRST_FRAME_WAIT_S", "GUARD", "MAIN_OUTPUTS", "MODEL_INFO", "OSC", "OSC_SOCKET",
           "SHUTDOWN_TIMEOUT_S", "STOP_SIGNALS", "Daemon", "create_app",
           "load_controlnets", "load_ip_adapter", "load_renderer", "resolve_devices", "serve"]
