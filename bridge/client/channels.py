"""Channels on the client side: which addresses, routes and segment a channel uses.

A daemon serves several live streams (channels). Channel ``main`` is the unprefixed API; channel
NAME is ``/bridge/ch/NAME/...`` over OSC, ``/v1/channels/NAME/...`` over HTTP, and shared-memory
segment ``{shm-name}.NAME``. Stdlib only: plugins vendor this folder.
"""

from __future__ import annotations

import re

MAIN = "main"
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
# The per-stream routes: everything else (/v1/health, /v1/schema, /v1/channels) is the daemon's.
PER_CHANNEL = ("/v1/params", "/v1/frame.", "/v1/input", "/v1/ws", "/v1/stream.mjpeg", "/v1/control", "/v1/style",
               "/v1/loras")


def check_channel(name: str | None) -> str:
    """A valid channel name ('' or None: main); raises ValueError with the rule."""
    name = (name or MAIN).strip()
    if not NAME.fullmatch(name):
        raise ValueError(f"a channel name is 1-32 characters of a-z, 0-9, '_' and '-', starting with a letter "
                         f"or digit; got {name[:64]!r}")
    return name


def osc_address(address: str, channel: str = MAIN) -> str:
    """``/bridge/prompt`` for ``main``, ``/bridge/ch/NAME/prompt`` for channel NAME."""
    if channel == MAIN or not address.startswith("/bridge/") or address.startswith("/bridge/ch/"):
        return address
    return f"/bridge/ch/{channel}/{address[len('/bridge/'):]}"


def http_path(path: str, channel: str = MAIN) -> str:
    """``/v1/params`` for ``main``, ``/v1/channels/NAME/params`` for channel NAME (per-stream routes only)."""
    if channel == MAIN or not path.startswith(PER_CHANNEL):
        return path
    return f"/v1/channels/{channel}/{path[len('/v1/'):]}"


def segment_name(shm_name: str, channel: str = MAIN) -> str:
    """The shared-memory segment a channel publishes into: ``{shm-name}`` for main, else ``{shm-name}.NAME``."""
    return shm_name if channel == MAIN else f"{shm_name}.{channel}"
