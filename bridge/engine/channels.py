"""Channels: several independent live streams in one daemon.

A channel is a scheduler (its own params, version, input, frames) with its own render loop and
outputs (made by the app's output factory: its shared-memory segment ``{shm-name}.NAME``, its PNG
folder...), placed on one of the daemon's render queues (one per device). ``main`` always exists.
Front ends keep their own per-channel state (a frame hub, an input service, ...) in
``Channel.services``, made and torn down by the hooks they register with ``ChannelRegistry.extend``.

A channel is made whole or not at all: outputs that cannot start (a planted segment, a file where
its folder goes) answer ``ChannelConflictError`` (409) and leave nothing behind. A name whose
channel is still being made or torn down waits for that to finish, then is looked at again.

One channel and the errors about channels: ``channel.py``; placement on devices (by load,
rebalanced, devices lost and back): ``placement.py``, the registry's base.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from ..core.errors import ValidationError
from ..core.output import OutputError, OutputFactory
from ..core.params import Limits, Params
from .channel import Channel, ChannelConflictError, ChannelLimitError, unknown_channel
from .channel_outputs import ChannelOutputs
from .placement import Placement
from .render_queue import RenderQueue
from .scheduler import Scheduler

log = logging.getLogger(__name__)

MAIN = "main"
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
DEFAULT_MAX_CHANNELS = 4


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValidationError("channel", f"a channel name is 1-32 characters of a-z, 0-9, '_' and '-', starting "
                                         f"with a letter or digit; got {str(name)[:64]!r}")
    return name


Hook = tuple[Callable[[Channel], None], Callable[[Channel], Awaitable[None] | None]]


class ChannelRegistry(Placement):
    """Owns the channels: their schedulers, render loops, outputs and placement on devices."""

    def __init__(self, queues: list[RenderQueue], *, initial: Params, limits: Limits,
                 outputs: OutputFactory = lambda name: (), max_channels: int = DEFAULT_MAX_CHANNELS):
        if not queues:
            raise ValueError("at least one render queue")
        self.queues = list(queues)  # the devices channels may be placed on
        self.withdrawn: list[RenderQueue] = []  # lost devices (see withdraw)
        self.max_channels = max_channels
        self._initial, self._limits, self._outputs = initial, limits, outputs
        self._channels: dict[str, Channel] = {}
        self._busy: dict[str, asyncio.Future] = {}  # names being made or torn down: done when they are
        self._making = 0
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
        """Raise ``ChannelLimitError`` unless ``more`` channels fit within ``--max-channels``
        (counting those being made)."""
        if len(self._channels) + self._making + more > self.max_channels:
            raise ChannelLimitError(f"at most {self.max_channels} channels ({MAIN} included; --max-channels); "
                                    f"DELETE /v1/channels/NAME one first")

    async def create(self, name: str, outputs: ChannelOutputs | None = None,
                     queue: RenderQueue | None = None) -> Channel:
        """The channel ``name``, made from the daemon's initial parameters if there is none.

        ``outputs``: its outputs, already started (main's start before the model loads); else the
        output factory makes and starts them. ``queue``: the device it renders on (``placement()``
        when the caller prepared it); else the lightest. Raises ``ValidationError`` for a bad name,
        ``ChannelConflictError`` past ``--max-channels`` or when an output cannot start.
        """
        check_name(name)
        while (busy := self._busy.get(name)) is not None:  # being made or torn down: wait, look again
            await asyncio.shield(busy)
        if name in self._channels:
            if outputs is not None:
                await outputs.close()
            return self._channels[name]
        try:
            self.check_room()
        except ChannelLimitError:
            if outputs is not None:
                await outputs.close()
            raise
        self._making += 1
        try:
            async with self._held(name):
                return await self._make(name, outputs, queue)
        finally:
            self._making -= 1

    @contextlib.asynccontextmanager
    async def _held(self, name: str):
        """While a channel of ``name`` is made or torn down, whoever wants that name waits."""
        done = self._busy[name] = asyncio.get_running_loop().create_future()
        try:
            yield
        finally:
            del self._busy[name]
            done.set_result(None)

    async def _make(self, name: str, outputs: ChannelOutputs | None, queue: RenderQueue | None) -> Channel:
        if outputs is None:
            outputs = ChannelOutputs(name, self._outputs(name))
            try:
                await outputs.start()
            except OutputError as exc:
                raise ChannelConflictError(f"channel {name!r} cannot be created: {exc}") from None
        queue = self.placement() if queue is None or queue not in self.queues else queue  # withdrawn meanwhile
        made: list[Hook] = []
        try:
            sched = Scheduler(queue.renderer, queue, initial=self._initial, limits=self._limits,
                              sinks=[outputs], name=name)
            outputs.listen(sched.report_fault)
            channel = Channel(name, sched, outputs)
            for hook in self._hooks:
                create, _ = hook
                create(channel)
                made.append(hook)
        except BaseException:
            # Whatever front ends made for it goes again: no half-made channel stays behind.
            for _, delete in reversed(made):
                await _run_hook(delete, channel)
            await outputs.close()
            raise
        self._channels[name] = channel
        channel.task = asyncio.create_task(sched.run(), name=f"render-loop-{name}")
        self.created += 1
        log.info("channel %r created on %s (%d of %d)", name, queue.name, len(self._channels), self.max_channels)
        return channel

    async def delete(self, name: str) -> None:
        """Remove a channel: waiters answered, render loop stopped, clients told, outputs closed."""
        if name == MAIN:
            raise ValidationError("channel", f"channel {MAIN!r} always exists; it cannot be deleted")
        channel = self[name]
        await self._remove(channel)
        self.deleted += 1
        log.info("channel %r deleted", name)
        await self.rebalance()

    async def close(self) -> None:
        """Every channel, ``main`` last (on shutdown), once the frames queued have begun (a round waiting
        for its channels, ``--batch-window-ms``, starts now)."""
        for queue in self.queues:
            await queue.stop_waiting()
        for channel in sorted(self, key=lambda c: c.name == MAIN):
            await self._remove(channel)

    async def _remove(self, channel: Channel) -> None:
        del self._channels[channel.name]
        async with self._held(channel.name):  # until its outputs let go: a new one waits for its segment
            await self._tear_down(channel)

    async def _tear_down(self, channel: Channel) -> None:
        channel.deleted.set()
        if channel.task is not None:
            channel.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await channel.task
        # Its last frame may still be publishing into its outputs on the render thread.
        await channel.queue.idle()
        for _, delete in reversed(self._hooks):
            await _run_hook(delete, channel)
        await channel.outputs.close()
        channel.queue.forget(channel.name)

    def output_errors(self) -> dict[str, list[str]]:
        """Each channel's failing outputs (channels without a failing output left out)."""
        return {name: errors for name, channel in self._channels.items() if (errors := channel.outputs.errors())}

    def health(self) -> dict:
        return {name: channel_summary(channel) for name, channel in self._channels.items()}

async def _run_hook(delete: Callable[[Channel], Awaitable[None] | None], channel: Channel) -> None:
    try:
        outcome = delete(channel)
        if inspect.isawaitable(outcome):
            await outcome
    except Exception:  # one front end failing to let go must not keep the outputs alive
        log.exception("channel %r: a front end failed to close", channel.name)


def channel_summary(channel: Channel) -> dict:
    sched = channel.scheduler
    latest = sched.latest
    outputs = channel.outputs.health()
    return {"version": sched.version, "frames": sched.stats.frames, "frame_seq": latest.seq if latest else 0,
            "device": channel.queue.name, "shm_name": outputs.get("shm", {}).get("name"),
            "render_errors": sched.stats.render_errors, "outputs": outputs,
            "output_errors": channel.outputs.errors()}
