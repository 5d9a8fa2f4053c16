"""The OSC addresses: one table that the parser (``message_changes``) and the documentation
(``/v1/schema``'s OSC part, the docs' tables) both read.

A row is an address, its arguments as OSC type tags, a doc line, the parameters it sets and its
form: how its arguments become a change. Every address but ``/bridge/record`` also exists per
channel, as ``/bridge/ch/NAME/ADDRESS`` (``split_channel``). ``restricted`` rows (and the
``RESTRICTED_PARAMS`` in ``/bridge/params``) read or write files: with ``--token`` set, only
senders named by ``--osc-allow`` may send them (``restricted_part``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy

from ...core.errors import ValidationError
from ...engine.channels import MAIN
from .subscriptions import PER_HOST, PER_SENDER, TTL_S
from .wire import Float32

PREFIX = "/bridge"
CHANNEL_PREFIX = PREFIX + "/ch/"  # /bridge/ch/NAME/ADDRESS is /bridge/ADDRESS for channel NAME
SEED_TYPES = "i (or h, or s for seeds of 2**63 and above)"
NUMBER_TYPES = "f (or i)"

# Forms: how a row's arguments become a change, or what else the row is.
VALUE = "value"  # one argument per parameter it sets
TEXT = "text"  # a string, or (string, weight) pairs: a blend
NAMED = "named"  # a name and a value: {parameter: {name: value}}
JSON = "json"  # one string: a JSON object of parameters
SUBSCRIPTION = "subscription"  # feedback for the sender (the server keeps the subscribers)
COMMAND = "command"  # an action the app wires into the server; it runs only with a valid change
CHANNEL = "channel"  # the per-channel spelling of the addresses
FEEDBACK = "feedback"  # sent by the daemon to its subscribers
CHANGES = (VALUE, TEXT, NAMED, JSON)


@dataclass(frozen=True)
class OscAddress:
    address: str
    types: str  # the arguments as OSC type tags ("i i", "s f", "[i port]"), alternatives in brackets
    doc: str  # one line: what it does
    sets: tuple[str, ...] = ()  # the parameters it changes (none: subscriptions, commands, feedback)
    form: str = VALUE
    usage: str = ""  # the arguments in words, for the error on a wrong count ("" : one argument (types))
    restricted: bool = False  # reads or writes files: with --token, only senders named by --osc-allow


# Parameters whose change makes the daemon read files (LoRAs), whatever address carries them.
RESTRICTED_PARAMS = frozenset({"loras"})
RESTRICTED_NOTE = "with --token set, only for senders named by --osc-allow"


def _sets(name: str, types: str, doc: str = "") -> OscAddress:
    return OscAddress(f"{PREFIX}/{name}", types, doc or f"set {name}", (name,))


BLEND_TYPES = "s (or s f s f ...)"
BLEND_USAGE = "one argument (s), or (string, weight) pairs (s f s f ...)"

ADDRESSES: tuple[OscAddress, ...] = (
    OscAddress(f"{PREFIX}/prompt", BLEND_TYPES, "set the prompt; or (text, weight) pairs: a blend", ("prompt",),
               TEXT, BLEND_USAGE),
    OscAddress(f"{PREFIX}/negative_prompt", BLEND_TYPES, "set the negative prompt (used when guidance > 0); or "
               "(text, weight) pairs: a blend", ("negative_prompt",), TEXT, BLEND_USAGE),
    _sets("seed", SEED_TYPES),
    _sets("guidance", NUMBER_TYPES),
    _sets("steps", "i"),
    _sets("width", "i"),
    _sets("height", "i"),
    _sets("strength", NUMBER_TYPES),
    _sets("input", "i 0/1 or s on/off (or T/F)"),
    _sets("seed2", SEED_TYPES),
    _sets("seed_mix", NUMBER_TYPES),
    _sets("transition_frames", "i"),
    _sets("tiling", "s none|x|y|xy"),
    _sets("style_scale", NUMBER_TYPES, "set style_scale: 0 off, up to 2 (needs --ip-adapter)"),
    OscAddress(f"{PREFIX}/size", "i i", "set width and height", ("width", "height"),
               usage="two integers (width, height)"),
    OscAddress(f"{PREFIX}/lora", "s f", "set a LoRA's weight (-2..2, 0 removes it; at most 4 active; GET /v1/loras); "
               f"reads its file: {RESTRICTED_NOTE}", ("loras",), NAMED, "a name and a weight (s f)", restricted=True),
    OscAddress(f"{PREFIX}/control", "s f", "set ControlNet (or T2I-Adapter) NAME's scale (0 = off), as controls "
               "{NAME: scale}", ("controls",), NAMED, "a ControlNet name and a scale (s f)"),
    OscAddress(f"{PREFIX}/params", "s", "a JSON object of several parameters, applied as one change (loras in it: "
               f"{RESTRICTED_NOTE})", form=JSON, usage="one string: a JSON object of parameters"),
    OscAddress(f"{PREFIX}/subscribe", "[i port]", "send feedback to the sender's host at port (default: the "
               f"sender's port) for {TTL_S:g} s; renew well within that; at most {PER_SENDER} ports per sender, "
               f"{PER_HOST} per host over every channel",
               form=SUBSCRIPTION),
    OscAddress(f"{PREFIX}/unsubscribe", "[i port]", "stop feedback", form=SUBSCRIPTION),
    OscAddress(f"{PREFIX}/record", "i", "1 starts recording, 0 stops (channel main; needs --output-dir); in a "
               f"bundle, only when the bundle's change is valid; writes files: {RESTRICTED_NOTE}", form=COMMAND,
               restricted=True),
    OscAddress(f"{CHANNEL_PREFIX}NAME/ADDRESS", "as ADDRESS", "any address above but record, for channel NAME, e.g. "
               f"{CHANNEL_PREFIX}left/prompt s; feedback then comes as {CHANNEL_PREFIX}NAME/frame and .../error",
               form=CHANNEL),
    OscAddress(f"{PREFIX}/frame", "i i f", "seq, params version, render ms: a new frame", form=FEEDBACK),
    OscAddress(f"{PREFIX}/error", "s", "message: a failed render, or a mistake of this sender's", form=FEEDBACK),
)


def row(address: str) -> OscAddress | None:
    """The table's row of an (unprefixed) address."""
    return next((r for r in ADDRESSES if r.address == address), None)


def form_of(address: str) -> str | None:
    """The form of an (unprefixed) address; None for an address not in the table."""
    found = row(address)
    return None if found is None else found.form


def schema() -> dict:
    """The OSC part of ``/v1/schema``: address -> "types: doc"; what the daemon sends under "feedback"."""
    out: dict[str, Any] = {r.address: f"{r.types}: {r.doc}" for r in ADDRESSES if r.form != FEEDBACK}
    out["feedback"] = {r.address: f"{r.types}: {r.doc}" for r in ADDRESSES if r.form == FEEDBACK}
    return out


def restricted_part(address: str, change: dict[str, Any] | None = None) -> str | None:
    """What of a message (its address as sent, channel prefix and all) reads or writes files: the
    address, or it with the restricted parameters its change sets; None: render parameters only."""
    found = row(split_channel(address)[1])
    if found is not None and found.restricted:
        return address
    touched = sorted(RESTRICTED_PARAMS & set(change or ()))
    return f"{address} with {', '.join(touched)}" if touched else None


def split_channel(address: str) -> tuple[str, str]:
    """(channel, address without the channel part): ``/bridge/ch/left/seed`` is (left, /bridge/seed)."""
    if not address.startswith(CHANNEL_PREFIX):
        return MAIN, address
    name, _, tail = address[len(CHANNEL_PREFIX):].partition("/")
    return name, f"{PREFIX}/{tail}"


def as_sent(value: Any) -> Any:
    """An OSC float32 as the decimal its sender typed: the shortest one that round-trips through
    float32 (1.2, not 1.2000000476837158). Anything else (a double too) as it is."""
    return float(str(numpy.float32(value))) if isinstance(value, Float32) else value


def message_changes(address: str, args: list[Any]) -> dict[str, Any]:
    """One OSC message as a raw change (parsed with the rest of its datagram, by the change door).

    Raises ``KeyError`` for an address that sets no parameter, ``ValidationError`` for wrong arguments.
    """
    found = row(address)
    if found is None or found.form not in CHANGES:
        raise KeyError(address)
    args = [as_sent(arg) for arg in args]
    field = found.sets[0] if found.sets else None
    if found.form == TEXT and len(args) > 1 and not len(args) % 2:
        return {field: [list(pair) for pair in zip(args[::2], args[1::2])]}
    if found.form in (VALUE, TEXT) and len(args) == len(found.sets):
        return dict(zip(found.sets, args))
    if found.form == NAMED and len(args) == 2 and isinstance(args[0], str):
        return {field: {args[0]: args[1]}}
    if found.form == JSON and len(args) == 1 and isinstance(args[0], str):
        return _json_object(address, args[0])
    raise ValidationError(field, f"{address} takes {found.usage or f'one argument ({found.types})'}, got "
                                 f"{len(args)} argument(s)")


def _json_object(address: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise ValidationError(None, f"{address}: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValidationError(None, f"{address}: expected a JSON object, got {type(value).__name__}")
    return value
