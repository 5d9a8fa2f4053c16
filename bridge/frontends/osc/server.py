"""The OSC front end (UDP, an asyncio datagram endpoint; our bounded parser, python-osc's message builder).

A datagram is one change: a bundle's messages are merged and applied atomically, or not at
all. Datagrams are parsed by ``osc_wire`` (bounded; python-osc's parser can hang on one). Malformed,
unknown and rejected messages are counted and logged once per sender per interval, never fatal.
Senders subscribe with ``/bridge/subscribe [i port]`` (renewed within ``osc_subscriptions.TTL_S``)
and get ``/bridge/frame i i f``, and ``/bridge/error s`` for render errors and their own mistakes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, asdict
from typing import Any, Callable

from pythonosc.osc_message_builder import OscMessageBuilder

from ...core.errors import ValidationError
from ...core.params import PROMPT_FIELDS
from ...core.frame import Frame
from ...core.params import parse_changes
from ...engine.channels import MAIN, Channel, ChannelRegistry
from ...engine.scheduler import Scheduler
from . import wire as osc_wire
from .subscriptions import PER_SENDER, TTL_S, Subscriptions
from ..security import OncePerSender

log = logging.getLogger(__name__)

PREFIX = "/bridge"
CHANNEL_PREFIX = PREFIX + "/ch/"  # /bridge/ch/NAME/ADDRESS is /bridge/ADDRESS for channel NAME
MAX_SHOWN_CHARS = 100  # of an unknown address, in the log and in /bridge/error
MAX_ERROR_CHARS = 500  # of a /bridge/error message
SEED_TYPES = "i (or h, or s for seeds of 2**63 and above)"
SINGLE = {"prompt": "s", "seed": SEED_TYPES, "guidance": "f (or i)", "steps": "i", "width": "i", "height": "i",
          "strength": "f (or i)", "input": "i 0/1 or s on/off (or T/F)", "seed2": SEED_TYPES,
          "seed_mix": "f (or i)", "transition_frames": "i", "negative_prompt": "s",
          "tiling": "s none|x|y|xy", "style_scale": "f (or i): 0 off, up to 2 (needs --ip-adapter)"}
ADDRESSES = {
    **{f"{PREFIX}/{name}": f"{types}: set {name}" for name, types in SINGLE.items()},
    f"{PREFIX}/prompt": "s: set the prompt; or s f s f ...: a blend of (text, weight) pairs",
    f"{PREFIX}/negative_prompt": "s: set the negative prompt (used when guidance > 0); or s f s f ...: a blend",
    f"{PREFIX}/lora": "s f: set a LoRA's weight (-2..2, 0 removes it; at most 4 active; GET /v1/loras)",
    f"{PREFIX}/size": "i i: set width and height",
    f"{PREFIX}/params": "s: a JSON object of several parameters, applied as one change",
    f"{PREFIX}/control": "s f: set ControlNet (or T2I-Adapter) NAME's scale (0 = off), as controls {NAME: scale}",
    f"{PREFIX}/subscribe": f"[i port]: send feedback to the sender's host at port (default: the sender's port) "
                           f"for {TTL_S:g} s; renew well within that; at most {PER_SENDER} ports per sender",
    f"{PREFIX}/unsubscribe": "[i port]: stop feedback",
    f"{CHANNEL_PREFIX}NAME/ADDRESS": "any address above (and subscribe/unsubscribe) for channel NAME, e.g. "
                                     f"{CHANNEL_PREFIX}left/prompt s; feedback then comes as {CHANNEL_PREFIX}NAME/frame "
                                     "and .../error",
    "feedback": {f"{PREFIX}/frame": "i seq, i params version, f render ms",
                 f"{PREFIX}/error": "s message"},
}


@dataclass
class OscStats:
    datagrams: int = 0
    applied: int = 0
    rejected: int = 0
    malformed: int = 0
    unknown: int = 0
    refused: int = 0  # from senders outside --osc-allow


def message_changes(address: str, args: list[Any]) -> dict[str, Any]:
    """Turn one OSC message into raw parameter changes (validated later, all at once)."""
    name = address[len(PREFIX) + 1:] if address.startswith(PREFIX + "/") else None
    if name in PROMPT_FIELDS and len(args) > 1:
        if len(args) % 2:
            raise ValidationError(name, f"{address} takes a string, or (string, weight) pairs; got {len(args)} "
                                        "arguments")
        return {name: [list(pair) for pair in zip(args[::2], args[1::2])]}
    if name in SINGLE:
        if len(args) != 1:
            raise ValidationError(name, f"{address} takes one argument ({SINGLE[name]}), got {len(args)}")
        return {name: args[0]}
    if name == "lora":
        if len(args) != 2 or not isinstance(args[0], str):
            raise ValidationError("loras", f"{address} takes a name and a weight (s f), got {len(args)} arguments")
        return {"loras": {args[0]: args[1]}}
    if name == "size":
        if len(args) != 2:
            raise ValidationError("width", f"{address} takes two integers (width, height), got {len(args)} arguments")
        return {"width": args[0], "height": args[1]}
    if name == "control":
        if len(args) != 2 or not isinstance(args[0], str):
            raise ValidationError("controls", f"{address} takes a ControlNet name and a scale (s f), got "
                                              f"{len(args)} argument(s)")
        return {"controls": {args[0]: args[1]}}
    if name == "params":
        if len(args) != 1 or not isinstance(args[0], str):
            raise ValidationError(None, f"{address} takes one string: a JSON object of parameters")
        try:
            value = json.loads(args[0])
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
            raise ValidationError(None, f"{address}: not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValidationError(None, f"{address}: expected a JSON object, got {type(value).__name__}")
        return value
    raise KeyError(address)


def split_channel(address: str) -> tuple[str, str]:
    """(channel, address without the channel part): ``/bridge/ch/left/seed`` is (left, /bridge/seed)."""
    if not address.startswith(CHANNEL_PREFIX):
        return MAIN, address
    name, _, tail = address[len(CHANNEL_PREFIX):].partition("/")
    return name, f"{PREFIX}/{tail}"


def build_message(address: str, *args: Any) -> bytes:
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram


class OscServer(asyncio.DatagramProtocol):
    """Receives changes, keeps subscribers, sends them feedback. Runs on the event loop."""

    def __init__(self, scheduler: Scheduler, sender_filter: Callable[[str], bool] | None = None,
                 channels: ChannelRegistry | None = None,
                 commands: dict[str, Callable[[list[Any]], None]] | None = None):
        self._scheduler = scheduler
        self._channels = channels
        self._sender_filter = sender_filter  # host -> allowed? (None: every sender that reaches the socket)
        self._commands = commands or {}  # address -> action that is not a parameter (e.g. /bridge/record)
        self._transport: asyncio.DatagramTransport | None = None
        self.subscribers = Subscriptions()  # channel main's
        self._channel_subscribers: dict[str, Subscriptions] = {}  # the other channels'
        self.stats = OscStats()
        self._pending: set[asyncio.Task] = set()  # changes waiting for a LoRA file to load
        self._log_once = OncePerSender()  # one line per kind and sender host per interval: floods stay small
        scheduler.on_frame(self._send_frame)
        scheduler.on_error(self._send_error)

    def attach(self, channel: Channel) -> None:
        """Feedback for a channel other than main (main's is wired in the constructor)."""
        if channel.name == MAIN:
            return
        subs = self._channel_subscribers[channel.name] = Subscriptions()
        prefix = f"{CHANNEL_PREFIX}{channel.name}"
        channel.scheduler.on_frame(lambda frame: self._send_frame(frame, subs, prefix))
        channel.scheduler.on_error(lambda message: self._send_error(message, None, subs, prefix))

    def detach(self, channel: Channel) -> None:
        self._channel_subscribers.pop(channel.name, None)

    def _subscribers_of(self, name: str) -> Subscriptions:
        return self.subscribers if name == MAIN else self._channel_subscribers[name]

    def _scheduler_of(self, name: str) -> Scheduler:
        if name == MAIN:
            return self._scheduler
        channel = self._channels.get(name) if self._channels is not None else None
        if channel is None or name not in self._channel_subscribers:
            raise ValidationError("channel", f"no channel {name[:64]!r}; PATCH /v1/channels/{name[:64]}/params "
                                             "creates it, GET /v1/channels lists them")
        return channel.scheduler

    def connection_made(self, transport) -> None:
        self._transport = transport

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is useful when configured as 0."""
        return tuple(self._transport.get_extra_info("sockname")[:2])

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.stats.datagrams += 1
        if self._sender_filter is not None and not self._sender_filter(addr[0]):
            self.stats.refused += 1  # no reply: feedback would go to a sender we do not trust
            return
        try:
            messages = osc_wire.parse_datagram(data)
        except osc_wire.MalformedOsc as exc:
            self.stats.malformed += 1
            self._log_once("malformed", addr[0], "malformed OSC datagram from %s:%d (%d bytes): %s", addr[0], addr[1],
                          len(data), exc)
            return
        changes: dict[str, dict[str, Any]] = {}  # per channel: a bundle may address several
        try:
            for message in messages:
                name, address = split_channel(message.address)
                self._scheduler_of(name)  # an unknown channel rejects the datagram
                if address in (f"{PREFIX}/subscribe", f"{PREFIX}/unsubscribe"):
                    self._subscription(address, list(message.args), addr, self._subscribers_of(name))
                    continue
                if message.address in self._commands:  # unprefixed only: such actions are channel main's
                    self._commands[message.address](list(message.args))
                    continue
                change = changes.setdefault(name, {})
                new = message_changes(address, list(message.args))
                if isinstance(new.get("loras"), dict) and isinstance(change.get("loras"), dict):
                    new = {**new, "loras": {**change["loras"], **new["loras"]}}  # a bundle of /bridge/lora
                change.update(new)
            if len(changes) > 1:  # a bundle for several channels: all or nothing, so check each first
                for name, change in changes.items():
                    parse_changes(change, self._scheduler_of(name).limits)
        except KeyError as exc:
            self.stats.unknown += 1
            shown = _shorten(exc.args[0], MAX_SHOWN_CHARS)
            self._log_once("unknown", addr[0], "unknown OSC address %s from %s:%d", shown, addr[0], addr[1])
            self._send_error(f"unknown address {shown}; see GET /v1/schema", addr[0])
            return
        except ValidationError as exc:
            self._reject(exc, addr)
            return
        if not changes:
            return
        # A LoRA's first use: load it off the loop first.
        if any(self._scheduler_of(name).needs_loading(change) for name, change in changes.items()):
            task = asyncio.get_running_loop().create_task(self._apply_later(changes, addr))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            return
        try:
            for name, change in changes.items():
                self._scheduler_of(name).apply(change)
        except ValidationError as exc:
            self._reject(exc, addr)
            return
        self.stats.applied += 1

    async def _apply_later(self, changes: dict[str, Any], addr: tuple) -> None:
        try:
            for name, change in changes.items():
                await self._scheduler_of(name).apply_async(change)
        except ValidationError as exc:
            self._reject(exc, addr)
            return
        self.stats.applied += 1

    def _reject(self, exc: ValidationError, addr: tuple) -> None:
        self.stats.rejected += 1
        self._log_once("rejected", addr[0], "OSC change from %s:%d rejected: %s", addr[0], addr[1], exc.message)
        self._send_error(exc.message, addr[0])

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
        return {**asdict(self.stats), "subscribers": len(self.subscribers),
                "channel_subscribers": sum(len(s) for s in self._channel_subscribers.values())}


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
