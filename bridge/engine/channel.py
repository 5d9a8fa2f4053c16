"""One channel: what it is made of (``Channel``: its scheduler, outputs, front ends' state) and the
errors that answer a request about channels.

Both the registry (``channels.py``) and its placement on devices (``placement.py``) speak of these,
so they live below both: the registry imports its placement, never the other way round.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import BridgeError
from .channel_outputs import ChannelOutputs
from .render_queue import RenderQueue
from .scheduler import Scheduler


class ChannelConflictError(BridgeError):
    """A channel that cannot be made now (answered 409); the message says what is in the way."""


class ChannelLimitError(ChannelConflictError):
    """More channels than ``--max-channels`` (answered 409)."""


class NoDeviceError(ChannelConflictError):
    """Every device is lost (answered 409 to a request that would create a channel)."""


class UnknownChannelError(BridgeError):
    """No channel of that name (answered 404)."""


def unknown_channel(name: str) -> UnknownChannelError:
    return UnknownChannelError(f"no channel {name[:64]!r}; GET /v1/channels lists them, "
                               f"PATCH /v1/channels/{name[:64]}/params creates it")


@dataclass(eq=False)
class Channel:
    name: str
    scheduler: Scheduler
    outputs: ChannelOutputs
    services: dict[str, Any] = field(default_factory=dict)  # front ends' per-channel state, by key
    deleted: asyncio.Event = field(default_factory=asyncio.Event)  # set when removed: waiters answer
    task: asyncio.Task | None = None

    @property
    def queue(self) -> RenderQueue:
        return self.scheduler.queue
