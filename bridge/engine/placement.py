"""Where channels render: placement on the least loaded device, rebalancing, and devices lost and back.

A new channel goes to the device with the least load (each channel weighs its frame's pixels x
denoiser evaluations, ``load_of``: a guidance row counts only for a model that runs one); channels
stay where they are unless moving one makes the most loaded device strictly lighter without
overloading another (checked when channels come and go). A device can be lost (a cluster's
worker): ``withdraw`` moves its channels, whole, to the others and renders their current state
again there; ``restore`` takes it back and rebalances.

``Placement`` is the part of ``ChannelRegistry`` (``channels.py``) that does this; it knows a channel
and the errors it raises from ``channel.py``, below both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from ..core.errors import ValidationError
from ..core.params import Limits, Params
from .channel import Channel, NoDeviceError
from .render_queue import RenderQueue

log = logging.getLogger(__name__)


def load_of(params: Params, limits: Limits) -> int:
    """What one frame of these params costs a device, roughly: pixels x denoiser evaluations (steps x
    the rows the model runs per step: ``Limits.rows``, from its family's guidance mode)."""
    return params.width * params.height * params.steps * limits.rows(params.guidance)


class Placement:
    """The channels' devices: ``queues`` (placed on) and ``withdrawn`` (lost); ``moves`` counts the moves."""

    queues: list[RenderQueue]
    withdrawn: list[RenderQueue]
    moves: int
    _channels: dict[str, Channel]
    _limits: Limits  # the loaded model's: what a frame costs it (Limits.rows)

    def __iter__(self) -> Iterator[Channel]:
        return iter(list(self._channels.values()))

    def loads(self) -> dict[RenderQueue, int]:
        out = {queue: 0 for queue in self.queues}
        for channel in self:
            if channel.queue in out:  # not a channel still on a lost device
                out[channel.queue] += self._load(channel)
        return out

    def _load(self, channel: Channel) -> int:
        return load_of(channel.scheduler.params, self._limits)

    def placement(self) -> RenderQueue:
        """The device a new channel goes to: the least loaded (then the fewest channels, then the first)."""
        if not self.queues:
            raise NoDeviceError(f"no device to render on: {', '.join(q.name for q in self.withdrawn)} lost; "
                                f"try again when one is back (GET /v1/health lists them)")
        loads = self.loads()
        counts = {queue: 0 for queue in self.queues}
        for channel in self:
            if channel.queue in counts:
                counts[channel.queue] += 1
        return min(self.queues, key=lambda q: (loads[q], counts[q], self.queues.index(q)))

    async def withdraw(self, queue: RenderQueue, error: BaseException) -> list[str]:
        """``queue``'s device is lost: place nothing there, fail its frames queued or in flight with
        ``error``, and move its channels to the least loaded devices left, each rendering its current
        state again there (their LoRAs loaded there first). With no device left they stay, and render
        again when one is restored. Returns the channels moved."""
        if queue in self.queues:
            self.queues.remove(queue)
            self.withdrawn.append(queue)
        queue.abandon(error)
        moved = []
        for channel in sorted((c for c in self if c.queue is queue), key=lambda c: -self._load(c)):
            if not self.queues:
                break  # nowhere to go: it waits here, and moves when a device is restored
            target = self.placement()
            await self._prepare_loras(channel, target)  # a LoRA that will not load there fails its frames, said so
            if self._channels.get(channel.name) is not channel or channel.queue is not queue:
                continue  # deleted meanwhile
            if target not in self.queues:  # lost too while the LoRAs loaded
                if not self.queues:
                    break
                target = self.placement()
            channel.scheduler.move_to(target, redo=True)
            log.warning("channel %r moved from %s (lost) to %s", channel.name, queue.name, target.name)
            moved.append(channel.name)
        self.moves += len(moved)
        return moved

    async def restore(self, queue: RenderQueue) -> int:
        """``queue``'s device is back: channels may be placed there again, those that waited on it render
        their state again, those stranded on a device still lost move (whole) to the devices back, and the
        load is rebalanced. Returns the channels moved."""
        if queue in self.withdrawn:
            self.withdrawn.remove(queue)
        if queue not in self.queues:
            self.queues.append(queue)
        for channel in self:
            if channel.queue is queue:
                channel.scheduler.redo()
        moved = 0
        for channel in [c for c in self if c.queue in self.withdrawn]:
            target = self.placement()
            await self._prepare_loras(channel, target)
            if self._channels.get(channel.name) is channel and channel.queue in self.withdrawn:
                log.warning("channel %r moved from %s (lost) to %s", channel.name, channel.queue.name, target.name)
                channel.scheduler.move_to(target, redo=True)
                moved += 1
        self.moves += moved
        return moved + await self.rebalance()

    async def rebalance(self) -> int:
        """Move channels off the most loaded device while that makes it strictly lighter; returns the moves.

        A channel's LoRAs are loaded on the target device's loader thread before it moves, so its first
        frame there folds them at once instead of reading files on that device's render thread.
        """
        moved = 0
        for _ in range(len(self._channels) if len(self.queues) > 1 else 0):
            loads = self.loads()
            heavy = max(self.queues, key=loads.__getitem__)
            light = min(self.queues, key=loads.__getitem__)
            movable = sorted((c for c in self if c.queue is heavy), key=self._load)
            # The lightest channel whose move leaves the light device below where the heavy one was.
            candidate = next((c for c in movable if loads[light] + self._load(c) < loads[heavy]), None)
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
            await target.loras.prepare(names, channel.name)
        except ValidationError as exc:  # a file gone or changed since: the channel stays where it renders
            log.warning("channel %r stays on its device: its LoRAs do not load on %s: %s", channel.name,
                        target.name, exc)
            return False
        return True

    def devices(self) -> list[dict]:
        """The devices channels may be placed on (lost ones left out)."""
        loads = self.loads()
        return [{"name": queue.name, "channels": [c.name for c in self if c.queue is queue], "load": loads[queue],
                 **queue.health()} for queue in self.queues]
