"""One door for every change: parsed once at the edge, checked as a whole, applied all or nothing.

Every transport (REST, the WebSocket, OSC messages and bundles, any future input) turns what it
received into a ``ChangeSet`` with ``ChangeDoor.parse`` (each channel's part parsed once by
``core.params.parse_changes``, plus the commands that ride along, such as ``/bridge/record`` in
a bundle) and hands it to ``ChangeDoor.apply``, which

1. finds each part's channel: it must exist, unless the set ``creates`` (REST, WebSocket); then
   a missing one needs a valid name and room within ``--max-channels``;
2. loads the LoRA files the parts turn on, on their device's loader thread (only now: a change
   with any invalid field was refused by ``parse``, before a file was read);
3. checks every part against its channel's state (a channel still to be created: the daemon's
   initial params, on the device it will render on);
4. creates the missing channels and runs the commands; a failure here removes the channels it
   just created, so a refused creation leaves nothing behind;
5. commits every part: each channel's version moves, all in one turn of the event loop.

No state changes before step 4, so a refused set leaves every channel as it was. A refusal is
counted once, on the channel whose part was refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from ..core.errors import BridgeError, ValidationError
from ..core.params import Limits, Params, parse_changes
from .channel import unknown_channel
from .channels import MAIN, ChannelRegistry, check_name
from .loras import LoraGate
from .render_queue import RenderQueue
from .scheduler import Applied, Checked, Scheduler, check_change

LOAD_ROUNDS = 3  # loading awaits: a channel made or moved meanwhile may need its LoRAs on another device


class Command(Protocol):
    """An action that rides with a change (``/bridge/record 1`` in an OSC bundle)."""

    def run(self) -> None:
        """Act now; raise ``ValidationError`` to refuse (then nothing of its change set applies)."""


@dataclass(frozen=True)
class ChannelChange:
    """One channel's part of a change: the values ``parse_changes`` returned (read-only)."""

    channel: str
    values: Mapping[str, Any]

    @property
    def loras(self) -> list[str]:
        """The LoRAs this part turns on (weight not 0): files to load before it is checked."""
        return [name for name, weight in self.values.get("loras", ()) if weight != 0]

    def loras_after(self, current: Params) -> list[str]:
        """The channel's whole set of LoRAs once this part applies to ``current`` (Params keeps no zero weights)."""
        changed = dict(self.values.get("loras", ()))
        return [name for name, _ in current.loras if changed.get(name, 1) != 0 and name not in changed] + self.loras


@dataclass(frozen=True)
class ChangeSet:
    """What one message (a PATCH, a WebSocket message, an OSC datagram) asks for, parsed."""

    parts: tuple[ChannelChange, ...] = ()
    commands: tuple[Command, ...] = ()
    creates: bool = False  # a part for a missing channel creates it (REST, WebSocket); else it is refused (OSC)
    # The prompt warnings (``Renderer.prompt_warnings``: a prompt the text encoders cut) in ``Applied``:
    # REST and the WebSocket reply with them. OSC has no reply for them, and finding them tokenizes the
    # prompt on the event loop before the frame can start (0.36 ms a change on the CPU machine: bench/change_path.py).
    warn: bool = True

    @property
    def empty(self) -> bool:
        return not self.parts and not self.commands


Target = Scheduler | RenderQueue  # a part's channel, or the device of a channel this set creates


class ChangeDoor:
    """Applies change sets to the channels of ``channels`` (or to ``main`` alone, without a registry)."""

    def __init__(self, main: Scheduler, channels: ChannelRegistry | None = None):
        self._main = main
        self._channels = channels

    @property
    def main(self) -> Scheduler:
        return self._main

    @property
    def limits(self) -> Limits:
        return self._main.limits

    def parse(self, raw: Mapping[str, Any], *, commands: Iterable[Command] = (), creates: bool = False,
              warn: bool = True) -> ChangeSet:
        """``raw``: channel name -> one raw change (a JSON object's worth); ``warn``: find the prompt warnings
        (``ChangeSet.warn``). Raises ``ValidationError``."""
        parts = []
        for name, values in raw.items():
            try:
                parts.append(ChannelChange(name, MappingProxyType(parse_changes(values, self.limits))))
            except ValidationError:
                self._refused(name)
                raise
        return ChangeSet(tuple(parts), tuple(commands), creates, warn)

    def needs_waiting(self, changes: ChangeSet) -> bool:
        """Whether ``apply`` must load LoRA files or create channels; if not, ``apply_now`` does it at once."""
        try:
            return self._waits(changes, self._targets(changes))
        except BridgeError:
            return False  # apply_now refuses it at once

    def apply_now(self, changes: ChangeSet) -> Mapping[str, Applied]:
        """Apply a set that needs no waiting (``needs_waiting`` False), in the caller's turn of the loop."""
        targets = self._targets(changes)
        if self._waits(changes, targets):
            raise RuntimeError("this change loads LoRA files or creates channels: await ChangeDoor.apply")
        checked = self._check(changes, targets)
        for command in changes.commands:
            command.run()
        return self._commit(checked)

    async def apply(self, changes: ChangeSet) -> Mapping[str, Applied]:
        """Apply all of ``changes`` or none of it; each channel's ``Applied``, by name.

        Raises ``ValidationError``, ``UnknownChannelError`` or ``ChannelConflictError`` (state unchanged).
        """
        for _ in range(LOAD_ROUNDS):
            targets = self._targets(changes)
            unloaded = self._unloaded(changes, targets)
            if not unloaded:
                break
            for name, gate, names in unloaded:
                try:
                    await gate.prepare(names, name)
                except ValidationError:
                    self._refused(name)
                    raise
        checked = self._check(changes, targets)  # still not loaded after LOAD_ROUNDS: refused here
        created = []
        try:
            for name, target in targets.items():
                if isinstance(target, RenderQueue):
                    created.append(await self._channels.create(name, queue=target))
            for command in changes.commands:
                command.run()
        except BaseException:
            for channel in created:
                await self._channels.delete(channel.name)
            raise
        return self._commit(checked)

    # -- the steps ------------------------------------------------------------------------------
    def _scheduler(self, name: str) -> Scheduler | None:
        if self._channels is None:
            return self._main if name == MAIN else None
        channel = self._channels.get(name)
        return None if channel is None else channel.scheduler

    def _targets(self, changes: ChangeSet) -> dict[str, Target]:
        targets: dict[str, Target] = {}
        missing = []
        for part in changes.parts:
            scheduler = self._scheduler(part.channel)
            if scheduler is None:
                missing.append(part.channel)
            else:
                targets[part.channel] = scheduler
        if missing:
            if not changes.creates or self._channels is None:
                raise unknown_channel(missing[0])
            for name in missing:
                check_name(name)
            self._channels.check_room(len(missing))
            queue = self._channels.placement()
            targets.update((name, queue) for name in missing)
        return targets

    def _waits(self, changes: ChangeSet, targets: Mapping[str, Target]) -> bool:
        return any(isinstance(t, RenderQueue) for t in targets.values()) or bool(self._unloaded(changes, targets))

    def _unloaded(self, changes: ChangeSet, targets: Mapping[str, Target]) -> list[tuple[str, LoraGate, list[str]]]:
        """(channel, its device's LoRA gate, names) for each part whose channel's whole resulting set of
        LoRAs is not all loaded there yet (a seed change too: the render thread never reads a file)."""
        out = []
        for part in changes.parts:
            target = targets[part.channel]
            gate = target.loras
            if gate is None:
                continue
            current = target.params if isinstance(target, Scheduler) else self._channels.initial
            names = part.loras_after(current) if "loras" in part.values else [n for n, _ in current.loras]
            if gate.needs_loading(names):
                out.append((part.channel, gate, names))
        return out

    def _check(self, changes: ChangeSet, targets: Mapping[str, Target]) -> list[tuple[str, Checked]]:
        checked = []
        for part in changes.parts:
            target = targets[part.channel]
            try:
                if isinstance(target, Scheduler):
                    checked.append((part.channel, target.check(part.values, warn=changes.warn)))
                else:  # a channel to create: it starts from the initial params, on that device
                    checked.append((part.channel, check_change(self._channels.initial, part.values, target.loras,
                                                               target.renderer, part.channel, warn=changes.warn)))
            except ValidationError:
                self._refused(part.channel)
                raise
        return checked

    def _commit(self, checked: list[tuple[str, Checked]]) -> Mapping[str, Applied]:
        return MappingProxyType({name: self._scheduler(name).commit(change) for name, change in checked})

    def _refused(self, name: str) -> None:
        scheduler = self._scheduler(name)
        if scheduler is not None:
            scheduler.stats.rejected += 1
