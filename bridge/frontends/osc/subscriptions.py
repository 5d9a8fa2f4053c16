"""Who gets OSC feedback: subscriptions that expire, limited per sender and per host, to the sender's own address.

A slot is one target ``(host, port)`` of one channel: the sender's own host and a port it names
(default: its own port). Naming a port again renews that slot (no duplicates), for whoever names
it. A slot expires ``ttl_s`` after its last renewal, so dead subscribers go away and the plugins
renew well within it. One sender (a ``(host, port)`` source) holds at most ``per_sender`` slots of
a channel. Every channel's subscriptions share one ``SubscriptionPool``: at most ``per_host`` slots
of one host (its source ports together: every local plugin is 127.0.0.1) and ``capacity`` in all.
So one datagram, whatever channels it changes, makes at most ``per_host`` feedback datagrams to any
one host and ``capacity`` in all. At a limit, a newcomer takes the least recently renewed slot
(of that host at the host's limit) of the sender holding the most slots if that sender holds
several, else the least recently renewed slot: a newcomer is never refused, so noisy senders
cannot lock real subscribers out (at worst a real one loses its slot until its next renewal).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ...core.errors import ValidationError

TTL_S = 60.0
PER_SENDER = 4
PER_HOST = 16
CAPACITY = 64

Address = tuple[str, int]


@dataclass
class _Slot:
    sender: Address
    expires: float


class SubscriptionPool:
    """The limits that every channel's ``Subscriptions`` share: slots per host, and in all."""

    def __init__(self, per_host: int = PER_HOST, capacity: int = CAPACITY):
        self.per_host, self.capacity = per_host, capacity
        self.members: list[Subscriptions] = []

    def held(self, host: str | None = None) -> int:
        return sum(1 for m in self.members for target in m._slots if host is None or target[0] == host)

    def make_room(self, host: str | None, newcomer: Address) -> None:
        """Free one slot (of ``host``, when given): the least recently renewed of the sender holding the
        most, if it holds several; else the least recently renewed (a dead subscriber's, most likely;
        a live one renews and takes a slot back)."""
        slots = [(m, t, s) for m in self.members for t, s in m._slots.items() if host is None or t[0] == host]
        counts: dict[Address, int] = {}
        for _, _, slot in slots:
            if slot.sender != newcomer:
                counts[slot.sender] = counts.get(slot.sender, 0) + 1
        most = max(counts.values(), default=0)
        candidates = [c for c in slots if counts.get(c[2].sender) == most] if most > 1 else slots
        member, target, _ = min(candidates, key=lambda c: c[2].expires)
        del member._slots[target]


class Subscriptions:
    """One channel's feedback targets; run on the event loop only (no locking)."""

    def __init__(self, ttl_s: float = TTL_S, per_sender: int = PER_SENDER, capacity: int = CAPACITY,
                 clock: Callable[[], float] = time.monotonic, pool: SubscriptionPool | None = None,
                 per_host: int = PER_HOST):
        self.ttl_s, self.per_sender = ttl_s, per_sender
        self.pool = pool if pool is not None else SubscriptionPool(per_host, capacity)  # alone: its own limits
        self.pool.members.append(self)
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
        if slot is None:
            for member in self.pool.members:
                member._expire()
            if self.pool.held(sender[0]) >= self.pool.per_host:
                self.pool.make_room(sender[0], sender)
            elif self.pool.held() >= self.pool.capacity:
                self.pool.make_room(None, sender)
        self._slots[target] = _Slot(sender, now + self.ttl_s)
        return target

    def close(self) -> None:
        """The channel is gone: its slots leave the pool."""
        self._slots.clear()
        if self in self.pool.members:
            self.pool.members.remove(self)

    def unsubscribe(self, sender: Address, port: int) -> None:
        """Remove the slot ``(sender host, port)``, whoever renewed it last (it is that host's port)."""
        self._slots.pop((sender[0], port), None)

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
