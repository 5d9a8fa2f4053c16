"""Who gets OSC feedback: subscriptions that expire, limited per sender, to the sender's own address.

A slot is one target ``(host, port)``: the sender's own host and a port it names (default: its
own port). Naming a port again renews that slot (no duplicates), for whoever names it. A slot
expires ``ttl_s`` after its last renewal, so dead subscribers go away and the plugins renew
well within it. One sender (a ``(host, port)`` source) holds at most ``per_sender`` slots; when all
``capacity`` slots are taken, a newcomer takes the least recently renewed slot of the sender
holding the most slots if that sender holds several, else the least recently renewed slot of
all: a newcomer is never refused, so noisy senders cannot lock real subscribers out (at worst a
real one loses its slot until its next renewal takes one back).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

from ...core.errors import ValidationError

TTL_S = 60.0
PER_SENDER = 4
CAPACITY = 64

Address = tuple[str, int]


@dataclass
class _Slot:
    sender: Address
    expires: float


class Subscriptions:
    """The feedback targets; run on the event loop only (no locking)."""

    def __init__(self, ttl_s: float = TTL_S, per_sender: int = PER_SENDER, capacity: int = CAPACITY,
                 clock: Callable[[], float] = time.monotonic):
        self.ttl_s, self.per_sender, self.capacity = ttl_s, per_sender, capacity
        self._clock = clock
        self._slots: dict[Address, _Slot] = {}

    def subscribe(self, sender: Address, port: int) -> Address:
        """Add or renew the slot ``(sender host, port)``; raises ``ValidationError`` past the limits."""
        now = self._expire()
        target = (sender[0], port)
        slot = self._slots.get(target)
        if slot is not None and slot.sender == sender:
            slot.expires = now + self.ttl_s
            return target
        held = [t for t, s in self._slots.items() if s.sender == sender]
        if len(held) >= self.per_sender:
            raise ValidationError(None, f"at most {self.per_sender} OSC feedback ports per sender "
                                        f"({sender[0]}:{sender[1]} has {', '.join(str(t[1]) for t in held)}); "
                                        "send /bridge/unsubscribe for one, or let it expire")
        if slot is None and len(self._slots) >= self.capacity:
            self._make_room(sender)
        self._slots[target] = _Slot(sender, now + self.ttl_s)
        return target

    def unsubscribe(self, sender: Address, port: int) -> None:
        """Remove the slot ``(sender host, port)``, whoever renewed it last (it is that host's port)."""
        self._slots.pop((sender[0], port), None)

    def _make_room(self, newcomer: Address) -> None:
        """Free one slot: the least recently renewed of the sender holding the most, if it holds several;
        else the least recently renewed of all (a dead subscriber's, most likely; a live one renews and
        takes a slot back)."""
        counts: dict[Address, int] = {}
        for slot in self._slots.values():
            if slot.sender != newcomer:
                counts[slot.sender] = counts.get(slot.sender, 0) + 1
        most = max(counts.values(), default=0)
        candidates = [t for t, s in self._slots.items() if counts.get(s.sender) == most] if most > 1 else self._slots
        del self._slots[min(candidates, key=lambda t: self._slots[t].expires)]

    def _expire(self) -> float:
        now = self._clock()
        for target in [t for t, s in self._slots.items() if s.expires <= now]:
            del self._slots[target]
        return now

    def targets(self, host: str | None = None) -> list[Address]:
        """The live targets (of one host, when given), expired ones dropped."""
        self._expire()
        return [t for t in self._slots if host is None or t[0] == host]

    def clear(self) -> None:
        self._slots.clear()

    def __len__(self) -> int:
        return len(self.targets())

    def __iter__(self) -> Iterator[Address]:
        return iter(self.targets())

    def __contains__(self, target: object) -> bool:
        return target in self.targets()
