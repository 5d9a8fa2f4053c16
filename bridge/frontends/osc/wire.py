"""OSC 1.0 datagrams -> messages, bounded: what python-osc 1.10.2's parser accepts, minus its failure modes.

python-osc's ``OscPacket`` loops forever on a bundle element whose size is negative (the index
steps back onto the same size field), recurses without a limit into nested bundles (400 levels
raise ``RecursionError``), logs one warning per unknown type-tag character and one with the whole
element for an element that is neither a message nor a bundle, and lets ``UnicodeDecodeError``
escape. This parser reads the same types into the same Python values (an ``f`` as ``Float32``: a
float that says it came as 32 bits), in the same order (python-osc sorts a bundle's messages by
their time), but checks every size, bound and alignment before it reads, nests at most
``MAX_DEPTH`` levels, and raises one ``MalformedOsc`` with a short reason for anything else. It
never logs. Deliberate differences: an unknown type tag, an empty or unknown bundle element, an
element size that is not a positive multiple of 4 or that runs past the datagram, and a negative
blob size are malformed (python-osc skips, truncates or misreads them).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Any

BUNDLE_PREFIX = b"#bundle\x00"
IMMEDIATELY = b"\x00\x00\x00\x00\x00\x00\x00\x01"  # the OSC timetag "now"
NTP_TO_UNIX_S = 2208988800  # 1900-01-01 to 1970-01-01
MAX_DEPTH = 8  # bundles within bundles, and arrays within arrays
_FIXED = {"i": (4, ">i"), "h": (8, ">q"), "d": (8, ">d"), "r": (4, ">I")}


class MalformedOsc(ValueError):
    """The datagram is not well-formed OSC; the message says what and where (short, never the bytes)."""


class Float32(float):
    """An OSC ``f`` argument: python-osc's value (the float32 exactly), marked as having come as 32 bits
    (``addresses.as_sent`` gives back the decimal its sender typed: 1.2, not 1.2000000476837158)."""

    __slots__ = ()


@dataclass(frozen=True)
class Message:
    address: str
    args: tuple[Any, ...]


def parse_datagram(data: bytes, now: float | None = None) -> list[Message]:
    """The messages of one datagram (a message, or a bundle of any nesting up to ``MAX_DEPTH``)."""
    now = time.time() if now is None else now
    if data.startswith(BUNDLE_PREFIX):
        timed: list[tuple[float, Message]] = []
        _bundle(memoryview(data), 0, len(data), 1, now, timed)
        timed.sort(key=lambda pair: pair[0])  # stable, like python-osc's sort by time
        return [message for _, message in timed]
    if data.startswith(b"/"):
        return [_message(bytes(data))]
    raise MalformedOsc("neither an OSC message (starts with '/') nor a bundle (starts with '#bundle')"
                       if data else "empty datagram")


def _bundle(data: memoryview, start: int, end: int, depth: int, now: float,
            out: list[tuple[float, Message]]) -> None:
    if depth > MAX_DEPTH:
        raise MalformedOsc(f"bundles nested deeper than {MAX_DEPTH} levels")
    index = start + len(BUNDLE_PREFIX)
    if end - index < 8:
        raise MalformedOsc(f"bundle at byte {start}: no 8-byte timetag")
    tag = bytes(data[index:index + 8])
    when = now if tag == IMMEDIATELY else struct.unpack(">Q", tag)[0] / 2**32 - NTP_TO_UNIX_S
    when = max(when, now)  # python-osc: a time in the past (or "immediately") means now
    index += 8
    while index < end:
        if end - index < 4:
            raise MalformedOsc(f"bundle element at byte {index}: {end - index} bytes left, a size takes 4")
        size = struct.unpack_from(">i", data, index)[0]
        index += 4
        if size <= 0 or size % 4 or size > end - index:
            raise MalformedOsc(f"bundle element at byte {index - 4}: size {size} (must be a positive multiple of 4, "
                               f"at most the {end - index} bytes left)")
        if bytes(data[index:index + len(BUNDLE_PREFIX)]) == BUNDLE_PREFIX:
            _bundle(data, index, index + size, depth + 1, now, out)
        elif data[index] == ord("/"):
            out.append((when, _message(bytes(data[index:index + size]))))
        else:
            raise MalformedOsc(f"bundle element at byte {index}: neither a message nor a bundle")
        index += size


def _string(data: bytes, index: int, what: str) -> tuple[str, int]:
    end = data.find(b"\x00", index)
    if end < 0:
        raise MalformedOsc(f"{what} at byte {index}: no terminating NUL")
    padded = end + 4 - (end - index) % 4  # the NUL and 0-3 more: a multiple of 4 bytes
    if padded > len(data):
        raise MalformedOsc(f"{what} at byte {index}: padding runs past the end")
    try:
        return data[index:end].decode("utf-8"), padded
    except UnicodeDecodeError:
        raise MalformedOsc(f"{what} at byte {index}: not UTF-8") from None


def _message(data: bytes) -> Message:
    address, index = _string(data, 0, "address")
    if index >= len(data):
        return Message(address, ())  # no type tag string: no arguments (OSC 1.0 allows it)
    tags, index = _string(data, index, "type tags")
    if not tags.startswith(","):
        raise MalformedOsc("type tags must start with ','")
    args: list[Any] = []
    stack = [args]
    for tag in tags[1:]:
        if tag in _FIXED:
            size, fmt = _FIXED[tag]
            if len(data) - index < size:
                raise MalformedOsc(f"argument '{tag}' at byte {index}: datagram too short")
            value = struct.unpack_from(fmt, data, index)[0]
            index += size
        elif tag == "f":
            # python-osc pads a float cut short at the end of the datagram (Reaktor sends those).
            if index > len(data):
                raise MalformedOsc(f"argument 'f' at byte {index}: datagram too short")
            value = Float32(struct.unpack(">f", data[index:index + 4].ljust(4, b"\x00"))[0])
            index += 4
        elif tag == "s":
            value, index = _string(data, index, "string argument")
        elif tag == "b":
            if len(data) - index < 4:
                raise MalformedOsc(f"blob at byte {index}: datagram too short")
            size = struct.unpack_from(">i", data, index)[0]
            if size < 0 or size > len(data) - index - 4:
                raise MalformedOsc(f"blob at byte {index}: size {size} does not fit the datagram")
            value = data[index + 4:index + 4 + size]
            index += 4 + size + (-size % 4)
        elif tag == "m":
            if len(data) - index < 4:
                raise MalformedOsc(f"MIDI argument at byte {index}: datagram too short")
            value = tuple(data[index:index + 4])
            index += 4
        elif tag == "t":
            if len(data) - index < 8:
                raise MalformedOsc(f"timetag argument at byte {index}: datagram too short")
            seconds, fraction = struct.unpack_from(">II", data, index)
            value = (seconds, fraction)  # (python-osc makes a datetime of it; nothing here takes one)
            index += 8
        elif tag in "TFN":
            value = {"T": True, "F": False, "N": None}[tag]
        elif tag == "[":
            if len(stack) > MAX_DEPTH:
                raise MalformedOsc(f"arrays nested deeper than {MAX_DEPTH} levels")
            array: list[Any] = []
            stack[-1].append(array)
            stack.append(array)
            continue
        elif tag == "]":
            if len(stack) < 2:
                raise MalformedOsc("']' without '[' in the type tags")
            stack.pop()
            continue
        else:
            raise MalformedOsc(f"unknown type tag {tag!r}")
        stack[-1].append(value)
    if len(stack) != 1:
        raise MalformedOsc("'[' without ']' in the type tags")
    return Message(address, tuple(args))
