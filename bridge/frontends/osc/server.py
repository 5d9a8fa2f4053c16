"""The OSC front end (UDP, an asyncio datagram endpoint; our bounded parser, python-osc's message builder).

A datagram is one change: its messages (a bundle's, for any channels) become one ``ChangeSet``
that the engine's ``ChangeDoor`` applies all or nothing; a command in it (``/bridge/record``)
runs only when the rest is valid. The addresses are ``addresses.ADDRESSES``. Datagrams are parsed
by ``wire`` (bounded; python-osc's parser can hang on one). Malformed, unknown and rejected
messages are counted and logged once per sender per interval, never fatal.
Senders subscribe with ``/bridge/subscribe [i port]`` (renewed within ``subscriptions.TTL_S``)
and get ``/bridge/frame i i f``, and ``/bridge/error s`` for render errors and their own mistakes.
A subscription in a refused bundle still counts: it is where the refusal is reported.
OSC carries no token: with ``--token`` set, a sender that only loopback admits (not named by
``--osc-allow``) may change render parameters, not what reads or writes files (LoRAs, recording;
``addresses.restricted_part``); such a datagram is refused whole and counted as ``not_allowed``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pythonosc.osc_message_builder import OscMessageBuilder

from ...core.errors import BridgeError, ValidationError
from ...core.frame import Frame
from ...engine.changes import ChangeDoor, ChangeSet, Command
from ...engine.channel import Channel, unknown_channel
from ...engine.channels import MAIN
from ..security import OncePerSender, OscTrust, osc_sender
from . import wire as osc_wire
from .addresses import (
    CHANNEL_PREFIX,
    COMMAND,
    PREFIX,
    SUBSCRIPTION,
    form_of,
    message_changes,
    restricted_part,
    split_channel,
)
from .subscriptions import SubscriptionPool, Subscriptions

log = logging.getLogger(__name__)

MAX_SHOWN_CHARS = 100  # of an unknown address, in the log and in /bridge/error
MAX_ERROR_CHARS = 500  # of a /bridge/error message


@dataclass
class OscStats:
    datagrams: int = 0
    applied: int = 0
    rejected: int = 0
    malformed: int = 0
    unknown: int = 0
    refused: int = 0  # from senders outside --osc-allow
    not_allowed: int = 0  # with --token: LoRA or recording messages from senders not named by --osc-allow
    superseded: int = 0  # changes waiting for a LoRA file, replaced by a newer one for the same channels


class NotAllowedError(ValidationError):
    """A message this sender is not trusted with (``OscTrust.PARAMS``): it reads or writes files."""

    def __init__(self, what: str, host: str):
        sender = osc_sender(host)
        super().__init__(None, f"{what} refused from {sender}: this daemon has a --token, so OSC from senders not "
                               "named by --osc-allow may change render parameters only, not LoRAs or recording "
                               f"(they read or write files); start it with --osc-allow {sender} to allow them")


def build_message(address: str, *args: Any) -> bytes:
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram


class OscServer(asyncio.DatagramProtocol):
    """Receives changes, keeps subscribers, sends them feedback. Runs on the event loop."""

    def __init__(self, door: ChangeDoor, sender_filter: Callable[[str], OscTrust] | None = None,
                 commands: dict[str, Callable[[list[Any]], Command]] | None = None):
        """``commands``: address -> reads a command's arguments (raising ``ValidationError``) into the
        ``Command`` that runs with the datagram's change; each a command of the address table."""
        self._door = door
        # host -> what it may do (None: anything, every sender that reaches the socket)
        self._sender_filter = sender_filter
        self._commands = dict(commands or {})
        for address in self._commands:
            if form_of(address) != COMMAND:
                raise ValueError(f"{address} is not a command of the OSC address table (osc/addresses.py)")
        self._transport: asyncio.DatagramTransport | None = None
        self._pool = SubscriptionPool()  # every channel's slots together: per host and in all
        self.subscribers = Subscriptions(pool=self._pool)  # channel main's
        self._channel_subscribers: dict[str, Subscriptions] = {}  # the other channels'
        self.stats = OscStats()
        # Changes waiting for a LoRA file to load: the newest per set of channels, one worker each
        # (a flood of them keeps one change waiting, not one task per datagram).
        self._waiting: dict[tuple[str, ...], tuple[ChangeSet, tuple]] = {}
        self._workers: dict[tuple[str, ...], asyncio.Task] = {}
        self._log_once = OncePerSender()  # one line per kind and sender host per interval: floods stay small
        door.main.on_frame(self._send_frame)
        door.main.on_error(self._send_error)

    def attach(self, channel: Channel) -> None:
        """Feedback for a channel other than main (main's is wired in the constructor)."""
        if channel.name == MAIN:
            return
        subs = self._channel_subscribers[channel.name] = Subscriptions(pool=self._pool)
        prefix = f"{CHANNEL_PREFIX}{channel.name}"
        channel.scheduler.on_frame(lambda frame: self._send_frame(frame, subs, prefix))
        channel.scheduler.on_error(lambda message: self._send_error(message, None, subs, prefix))

    def detach(self, channel: Channel) -> None:
        subs = self._channel_subscribers.pop(channel.name, None)
        if subs is not None:
            subs.close()

    def _subscribers_of(self, name: str) -> Subscriptions:
        if name == MAIN:
            return self.subscribers
        if name not in self._channel_subscribers:
            raise unknown_channel(name)
        return self._channel_subscribers[name]

    def connection_made(self, transport) -> None:
        self._transport = transport

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is useful when configured as 0."""
        return tuple(self._transport.get_extra_info("sockname")[:2])

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.stats.datagrams += 1
        trust = OscTrust.ALL if self._sender_filter is None else self._sender_filter(addr[0])
        if trust is OscTrust.NONE:
            self.stats.refused += 1  # no reply: feedback would go to a sender we do not trust
            return
        try:
            messages = osc_wire.parse_datagram(data)
        except osc_wire.MalformedOsc as exc:
            self.stats.malformed += 1
            self._log_once("malformed", addr[0], "malformed OSC datagram from %s:%d (%d bytes): %s", addr[0], addr[1],
                          len(data), exc)
            return
        try:
            changes = self._change_set(messages, addr, trust)
        except KeyError as exc:
            self.stats.unknown += 1
            shown = _shorten(exc.args[0], MAX_SHOWN_CHARS)
            self._log_once("unknown", addr[0], "unknown OSC address %s from %s:%d", shown, addr[0], addr[1])
            self._send_error(f"unknown address {shown}; see GET /v1/schema", addr[0])
            return
        except NotAllowedError as exc:
            self.stats.not_allowed += 1
            self._log_once("not_allowed", addr[0], "OSC from %s:%d not allowed: %s", addr[0], addr[1], exc)
            self._send_error(str(exc), addr[0])
            return
        except BridgeError as exc:
            self._reject(exc, addr)
            return
        if changes.empty:
            return
        if self._door.needs_waiting(changes):  # a LoRA's first use: load it off the loop first
            self._apply_later(changes, addr)
            return
        try:
            self._door.apply_now(changes)
        except BridgeError as exc:
            self._reject(exc, addr)
            return
        self.stats.applied += 1

    def _change_set(self, messages: list[osc_wire.Message], addr: tuple, trust: OscTrust = OscTrust.ALL) -> ChangeSet:
        """The datagram's change: each channel's messages merged into one part, commands alongside.

        Subscriptions are kept at once (feedback, not a change: a refusal is reported to them).
        Raises ``KeyError`` for an unknown address, ``NotAllowedError`` for a message that reads or
        writes files from a sender trusted with render parameters only (the whole datagram is
        refused: bundles are atomic), ``BridgeError`` for a refused message.
        """
        raw: dict[str, dict[str, Any]] = {}  # per channel: a bundle may address several
        commands = []
        for message in messages:
            name, address = split_channel(message.address)
            if form_of(address) == SUBSCRIPTION:
                self._subscription(address, list(message.args), addr, self._subscribers_of(name))
            elif message.address in self._commands:  # unprefixed only: such actions are channel main's
                self._check_trust(trust, message.address, None, addr)
                commands.append(self._commands[message.address](list(message.args)))
            else:
                new = message_changes(address, list(message.args))
                self._check_trust(trust, message.address, new, addr)
                change = raw.setdefault(name, {})
                if isinstance(new.get("loras"), dict) and isinstance(change.get("loras"), dict):
                    new = {**new, "loras": {**change["loras"], **new["loras"]}}  # a bundle of /bridge/lora
                change.update(new)
        return self._door.parse(raw, commands=commands, warn=False)  # no reply carries them

    @staticmethod
    def _check_trust(trust: OscTrust, address: str, change: dict[str, Any] | None, addr: tuple) -> None:
        if trust is not OscTrust.ALL and (what := restricted_part(address, change)) is not None:
            raise NotAllowedError(what, addr[0])

    def _apply_later(self, changes: ChangeSet, addr: tuple) -> None:
        """Queue ``changes`` as its channels' newest waiting change (latest wins: an older one not
        begun yet is dropped, counted as ``superseded``); one worker per set of channels applies them."""
        key = tuple(sorted({part.channel for part in changes.parts}))
        if key in self._waiting:
            self.stats.superseded += 1
        self._waiting[key] = (changes, addr)
        worker = self._workers.get(key)
        if worker is None or worker.done():  # done: its callback, which forgets it, may not have run yet
            task = self._workers[key] = asyncio.get_running_loop().create_task(self._drain(key))
            task.add_done_callback(lambda done: self._workers.pop(key) if self._workers.get(key) is done else None)

    async def _drain(self, key: tuple[str, ...]) -> None:
        while (waiting := self._waiting.pop(key, None)) is not None:
            changes, addr = waiting
            try:
                await self._door.apply(changes)
            except BridgeError as exc:
                self._reject(exc, addr)
                continue
            self.stats.applied += 1

    async def close(self) -> None:
        """Drop the waiting changes and stop their workers (the daemon is stopping)."""
        self._waiting.clear()
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    def _reject(self, exc: BridgeError, addr: tuple) -> None:
        self.stats.rejected += 1
        self._log_once("rejected", addr[0], "OSC change from %s:%d rejected: %s", addr[0], addr[1], exc)
        self._send_error(str(exc), addr[0])

    def _subscription(self, address: str, args: list[Any], addr: tuple, subscribers: Subscriptions) -> None:
        port = args[0] if args else addr[1]
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValidationError(None, f"{address} takes an optional port in 1..65535, got {port!r}")
        sender = (addr[0], addr[1])
        if address.endswith("/unsubscribe"):
            subscribers.unsubscribe(sender, port)
            return
        target = subscribers.subscribe(sender, port)
        self._log_once("subscribed", addr[0], "OSC feedback to %s:%d (renewed within %g s, or it expires)", *target,
                      subscribers.ttl_s, level=logging.INFO)

    def _send(self, dgram: bytes, host: str | None = None, subscribers: Subscriptions | None = None) -> None:
        """To every subscriber, or to those on ``host`` (a sender's own mistakes go back to it only)."""
        if self._transport is None or self._transport.is_closing():
            return
        for target in (self.subscribers if subscribers is None else subscribers).targets(host):
            self._transport.sendto(dgram, target)

    def _send_frame(self, frame: Frame, subscribers: Subscriptions | None = None, prefix: str = PREFIX) -> None:
        if self.subscribers if subscribers is None else subscribers:
            self._send(build_message(f"{prefix}/frame", frame.seq % 2**31, frame.version % 2**31,
                                     float(frame.render_ms)), None, subscribers)

    def _send_error(self, message: str, host: str | None = None, subscribers: Subscriptions | None = None,
                    prefix: str = PREFIX) -> None:
        if self.subscribers if subscribers is None else subscribers:
            self._send(build_message(f"{prefix}/error", _shorten(message, MAX_ERROR_CHARS)), host, subscribers)

    def health(self) -> dict:
        return {**asdict(self.stats), "waiting": len(self._waiting), "subscribers": len(self.subscribers),
                "channel_subscribers": sum(len(s) for s in self._channel_subscribers.values())}


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
