"""A minimal OSC encoder/decoder and sender: plugins may not depend on python-osc."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Mapping
from typing import Any

from .channels import MAIN, check_channel, osc_address


def _osc_string(text: str) -> bytes:
    data = text.encode("utf-8") + b"\x00"
    return data + b"\x00" * (-len(data) % 4)


def osc_message(address: str, *args: Any) -> bytes:
    """Encode an OSC message: str -> s, bool/int -> i (h above 32 bits), float -> f."""
    tags, payload = ",", b""
    for arg in args:
        if isinstance(arg, str):
            tags, payload = tags + "s", payload + _osc_string(arg)
        elif isinstance(arg, (bool, int)) and -2**31 <= int(arg) < 2**31:
            tags, payload = tags + "i", payload + struct.pack(">i", int(arg))
        elif isinstance(arg, int):
            tags, payload = tags + "h", payload + struct.pack(">q", arg)
        elif isinstance(arg, float):
            tags, payload = tags + "f", payload + struct.pack(">f", arg)
        else:
            raise TypeError(f"cannot send {type(arg).__name__} over OSC")
    return _osc_string(address) + _osc_string(tags) + payload


def osc_bundle(*messages: bytes) -> bytes:
    """An OSC bundle (timetag 'immediately'): the daemon applies it as one change."""
    body = b"".join(struct.pack(">i", len(m)) + m for m in messages)
    return _osc_string("#bundle") + struct.pack(">Q", 1) + body


def parse_osc_message(data: bytes) -> tuple[str, list[Any]]:
    """Decode a plain OSC message (the daemon's feedback: i, h, f, s arguments); ``ValueError`` if malformed."""
    try:
        return _parse_osc_message(data)
    except struct.error as exc:  # a truncated argument; struct.error is not a ValueError
        raise ValueError(f"truncated OSC message: {exc}") from None


def _parse_osc_message(data: bytes) -> tuple[str, list[Any]]:
    def string(pos: int) -> tuple[str, int]:
        end = data.index(b"\x00", pos)
        return data[pos:end].decode("utf-8"), end + 4 - (end % 4)

    address, pos = string(0)
    tags, pos = string(pos)
    args: list[Any] = []
    for tag in tags[1:]:
        if tag == "i":
            args.append(struct.unpack_from(">i", data, pos)[0])
            pos += 4
        elif tag == "h":
            args.append(struct.unpack_from(">q", data, pos)[0])
            pos += 8
        elif tag == "f":
            args.append(struct.unpack_from(">f", data, pos)[0])
            pos += 4
        elif tag == "s":
            value, pos = string(pos)
            args.append(value)
        else:
            raise ValueError(f"unsupported OSC type tag {tag!r}")
    return address, args


class OscSender:
    """Sends changes to the daemon's OSC port over UDP (fire and forget)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9000, channel: str = MAIN):
        self.address = (host, port)
        self.channel = check_channel(channel)  # /bridge/X goes to /bridge/ch/NAME/X for a channel but main
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)

    def send(self, address: str, *args: Any) -> None:
        self._sock.sendto(osc_message(osc_address(address, self.channel), *args), self.address)

    def send_params(self, changes: Mapping[str, Any]) -> None:
        """Several fields as one atomic change (``/bridge/params`` with a JSON object)."""
        self.send("/bridge/params", json.dumps(dict(changes)))

    def close(self) -> None:
        self._sock.close()
