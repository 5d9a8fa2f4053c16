"""Channels: several independent live streams in one daemon.

A channel is a scheduler (its own params, version, input, frames) with its own render loop and
shared-memory segment (``{shm-name}.NAME``; ``main`` keeps ``{shm-name}``), placed on one of the
daemon's render queues (one per device). ``main`` always exists. Front ends keep their own
per-channel state (a frame hub, an input service, ...) in ``Channel.services``, made and torn
down by the hooks they register with ``ChannelRegistry.extend``.

Placement: a new channel goes to the device with the least load (each channel weighs its
frame's pixels x UNet runs); channels stay where they are unless moving one makes the most
loaded device strictly lighter without overloading another (checked when channels come and go).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from ..client.channels import segment_name
from ..core.errors import BridgeError, ValidationError
from ..core.params import Limits, Params
from .render_queue import RenderQueue
from .scheduler import Scheduler
from ..outputs.shm import ShmWriter

log = logging.getLogger(__name__)

MAIN = "main"
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
DEFAULT_MAX_CHANNELS = 4


class ChannelLimitError(BridgeError):
    """More channels than ``--max-channels`` (answered 409)."""


class UnknownChannelError(BridgeError):
    """No channel of that name (answered 404)."""


def unknown_channel(name: str) -> UnknownChannelError:
    return UnknownChannelError(f"no channel {name[:64]!r}; GET /v1/channels lists them, "
                               f"PATCH /v1/channels/{name[:64]}/params creates it")


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValidationError("channel", f"a channel name is 1-32 characters of a-z, 0-9, '_' and '-', starting "
                                         f"with a letter or digit; got {str(name)[:64]!r}")
    return name


def load_of(params: Params) -> int:
    """What one frame of these params costs a device, roughly: pixels x UNet evaluations."""
    return params.width * params.height * params.steps * (2 if params.guidance > 0 else 1)


@dataclass(eq=False)
class Channel:
    name: str
    scheduler: Scheduler
    shm: ShmWriter | None
    services: dict[str, Any] = field(default_factory=dict)  # front ends' per-channel state, by key
    deleted: asyncio.Event = field(default_factory=asyncio.Event)  # set when removed: waiters answer
    task: asyncio.Task | None = None

    @property
    def queue(self) -> RenderQueue:
        return self.scheduler.queue


Hook = tuple[Callable[[Channel], None], Callable[[Channel], Awaitable[None] | None]]


class ChannelRegistry:
    """Owns the channels: their schedulers, render loops, segments and placement on devices."""

    def __init__(self, queues: list[RenderQueue], *, initial: Params, limits: Limits, shm_name: str | None,
                 max_channels: int = DEFAULT_MAX_CHANNELS, slot_size: int | None = None):
        if not queues:
            raise ValueError("at least one render queue")
        self.queues = list(queues)
        self.max_channels = max_channels
        self._initial, self._limits, self._shm_name = initial, limits, shm_name
        self._slot_size = slot_size or limits.max_size
        self._channels: dict[str, Channel] = {}
        self._hooks: list[Hook] = []
        self.created = 0
        self.deleted = 0
        self.moves = 0

    # -- lookup -------------------------------------------------------------------------
    def get(self, name: str) -> Channel | None:
        return self._channels.get(name)

    def __getitem__(self, name: str) -> Channel:
        channel = self._channels.get(name)
        if channel is None:
            raise unknown_channel(name)
        return channel

    def __iter__(self):
        return iter(list(self._channels.values()))

    def __len__(self) -> int:
        return len(self._channels)

    @property
    def main(self) -> Channel:
        return self._channels[MAIN]

    @property
    def initial(self) -> Params:
        """What a new channel starts from (the daemon's initial parameters)."""
        return self._initial

    @property
    def limits(self) -> Limits:
        return self._limits

    # -- front ends' per-channel state --------------------------------------------------
    def extend(self, create: Callable[[Channel], None],
               delete: Callable[[Channel], Awaitable[None] | None] = lambda channel: None) -> None:
        """Run ``create`` for every channel, now and when one is made; ``delete`` when one goes."""
        self._hooks.append((create, delete))
        for channel in self:
            create(channel)

    # -- life cycle ---------------------------------------------------------------------
    def check_room(self, more: int = 1) -> None:
        """Raise ``ChannelLimitError`` unless ``more`` channels fit within ``--max-channels``."""
        if len(self._channels) + more > self.max_channels:
            raise ChannelLimitError(f"at most {self.max_channels} channels ({MAIN} included; --max-channels); "
                                    f"DELETE /v1/channels/NAME one first")

    def create(self, name: str, shm: ShmWriter | None = None, sinks: tuple = (),
               queue: RenderQueue | None = None) -> Channel:
        """A new channel from the daemon's initial parameters; raises when the name or the count is wrong.

        ``shm``: its segment, already open (main's is opened before the model loads); else one is made.
        ``sinks``: more outputs of its frames (main's recorder and NDI sender).
        ``queue``: the device it renders on (``placement()`` when the caller prepared it); else the lightest.
        """
        check_name(name)
        if name in self._channels:
            return self._channels[name]
        self.check_room()
        queue = self.placement() if queue is None else queue
        if shm is None and self._shm_name:
            shm = ShmWriter(segment_name(self._shm_name, name), self._slot_size, self._slot_size)
            shm.open()
        try:
            sched = Scheduler(queue.renderer, queue, initial=self._initial, limits=self._limits,
                              sinks=[*([shm] if shm else []), *sinks], name=name)
            channel = self._channels[name] = Channel(name, sched, shm)
            for create, _ in self._hooks:
                create(channel)
        except BaseException:
            self._channels.pop(name, None)
            if shm is not None:
                shm.close()
            raise
        channel.task = asyncio.create_task(sched.run(), name=f"render-loop-{name}")
        self.created += 1
        log.info("channel %r created on %s (%d of %d)", name, queue.name, len(self._channels), self.max_channels)
        return channel

    async def delete(self, name: str) -> None:
        """Remove a channel: waiters answered, render loop stopped, clients told, segment unlinked."""
        if name == MAIN:
            raise ValidationError("channel", f"channel {MAIN!r} always exists; it cannot be deleted")
        channel = self[name]
        del self._channels[name]
        await self._tear_down(channel)
        self.deleted += 1
        log.info("channel %r deleted", name)
        await self.rebalance()

    async def close(self) -> None:
        """Every channel, ``main`` last (on shutdown)."""
        for channel in sorted(self, key=lambda c: c.name == MAIN):
            del self._channels[channel.name]
            await self._tear_down(channel)

    async def _tear_down(self, channel: Channel) -> None:
        channel.deleted.set()
        if channel.task is not None:
            channel.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await channel.task
        # Its last frame may still be publishing into the segment on the render thread.
        await channel.queue.idle()
        for _, delete in reversed(self._hooks):
            try:
                outcome = delete(channel)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:  # one front end failing to let go must not keep the segment alive
                log.exception("channel %r: a front end failed to close", channel.name)
        if channel.shm is not None:
            channel.shm.close()
        channel.queue.forget(channel.name)

    # -- placement ----------------------------------------------------------------------
    def loads(self) -> dict[RenderQueue, int]:
        out = {queue: 0 for queue in self.queues}
        for channel in self:
            out[channel.queue] += load_of(channel.scheduler.params)
        return out

    def placement(self) -> RenderQueue:
        """The device a new channel goes to: the least loaded (then the fewest channels, then the first)."""
        loads = self.loads()
        counts = {queue: 0 for queue in self.queues}
        for channel in self:
            counts[channel.queue] += 1
        return min(self.queues, key=lambda q: (loads[q], counts[q], self.queues.index(q)))

    async def rebalance(self) -> int:
        """Move channels off the most loaded device while that makes it strictly lighter; returns the moves.

        A channel's LoRAs are loaded on the target device's loader thread before it moves, so its first
        frame there folds them at once instead of reading files on that device's render thread.
        """
        moved = 0
        for _ in range(len(self._channels)):
            loads = self.loads()
            heavy = max(self.queues, key=loads.__getitem__)
            light = min(self.queues, key=loads.__getitem__)
            movable = sorted((c for c in self if c.queue is heavy), key=lambda c: load_of(c.scheduler.params))
            # The lightest channel whose move leaves the light device below where the heavy one was.
            candidate = next((c for c in movable if loads[light] + load_of(c.scheduler.params) < loads[heavy]), None)
            if heavy is light or candidate is None:
                break
            if not await self._prepare_loras(candidate, light):
                break
            if self._channels.get(candidate.name) is not candidate or candidate.queue is not heavy:
                continue  # deleted or moved while its LoRAs loaded: look again
            candidate.scheduler.move_to(light)
            log.info("channel %r moved from %s to %s (load %d vs %d)", candidate.name, heavy.name, light.name,
                     loads[heavy], loads[light])
            moved += 1
        self.moves += moved
        return moved

    @staticmethod
    async def _prepare_loras(channel: Channel, target: RenderQueue) -> bool:
        """Load ``channel``'s LoRAs on ``target``'s device; False (and logged) where they cannot be."""
        names = [name for name, _ in channel.scheduler.params.loras]  # Params keeps no zero weights
        if not names or target.loras is None:
            return True
        try:
            await target.loras.prepare(names)
        except ValidationError as exc:  # a file gone or changed since: the channel stays where it renders
            log.warning("channel %r stays on its device: its LoRAs do not load on %s: %s", channel.name,
                        target.name, exc)
            return False
        return True

    def health(self) -> dict:
        return {name: channel_summary(channel) for name, channel in self._channels.items()}

    def devices(self) -> list[dict]:
        loads = self.loads()
        return [{"name": queue.name, "channels": [c.name for c in self if c.queue is queue], "load": loads[queue],
                 **queue.health()} for queue in self.queues]


def channel_summary(channel: Channel) -> dict:
    sched = channel.scheduler
    latest = sched.latest
    return {"version": sched.version, "frames": sched.stats.frames, "frame_seq": latest.seq if latest else 0,
            "device": channel.queue.name, "shm_name": channel.shm.name if channel.shm else None,
            "render_errors": sched.stats.render_errors}
