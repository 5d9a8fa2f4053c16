"""OSC Out DAT and OSC In DAT over real UDP sockets.

Checked against derivative.ca: OSC Out DAT, OSC In DAT, the shared DAT send methods
(``sendOSC(address, *values, asBundle=False, useNonStandardTypes=True, use64BitPrecision=False)``:
address / value-list pairs; ints as 32-bit, or 64-bit when larger and non-standard types are
allowed; floats as 32-bit unless 64-bit precision; True/False as T/F) and the OSC In DAT
callback ``onReceiveOSC(dat, rowIndex, message, byteData, timeStamp, address, args, peer)``.
"""

from __future__ import annotations

import socket
import time

from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from .ops import DAT, textDAT
from .pars import TdError, check_main

INT32 = 2**31
INT64 = 2**63


def _typed(value, nonstandard: bool, wide: bool) -> tuple:
    if isinstance(value, bool):
        return (None, "T" if value else "F") if nonstandard else (int(value), "i")
    if isinstance(value, int):
        if wide and nonstandard:
            return value, "h"
        if -INT32 <= value < INT32:
            return value, "i"
        if nonstandard and -INT64 <= value < INT64:
            return value, "h"
        raise TdError(f"sendOSC: integer {value} does not fit the OSC integer types")
    if isinstance(value, float):
        return value, ("d" if wide and nonstandard else "f")
    if isinstance(value, str):
        return value, "s"
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), "b"
    if value is None and nonstandard:
        return None, "N"
    raise TdError(f"sendOSC: cannot send a {type(value).__name__}")


def _message(address: str, values, nonstandard: bool, wide: bool):
    builder = OscMessageBuilder(address)
    for value in values:
        value, tag = _typed(value, nonstandard, wide)
        builder.add_arg(value, tag)
    return builder.build()


class oscoutDAT(DAT):
    builtin = {"active": ("Toggle", True), "protocol": ("Menu", "msging"), "address": ("Str", "localhost"),
               "port": ("Int", 10000), "localaddress": ("Str", ""), "shared": ("Toggle", True)}

    def __init__(self, env, parent, name):
        super().__init__(env, parent, name)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sent: list[bytes] = []  # stand-in only: every datagram sent, for tests

    def sendOSC(self, *addressesFollowedByValueLists, asBundle=False, useNonStandardTypes=True,
                use64BitPrecision=False) -> int:
        check_main(f"{self.path}.sendOSC")
        pairs = addressesFollowedByValueLists
        if not pairs or len(pairs) % 2:
            raise TdError("sendOSC: expected address, [values] pairs")
        messages = []
        for address, values in zip(pairs[::2], pairs[1::2]):
            if not isinstance(address, str) or not address.startswith("/"):
                raise TdError(f"sendOSC: {address!r} is not an OSC address")
            if not isinstance(values, (list, tuple)):
                raise TdError(f"sendOSC: the values of {address} must be a list")
            messages.append(_message(address, values, useNonStandardTypes, use64BitPrecision))
        if asBundle:
            bundle = OscBundleBuilder(IMMEDIATELY)
            for message in messages:
                bundle.add_content(message)
            datagrams = [bundle.build().dgram]
        else:
            datagrams = [message.dgram for message in messages]
        if not self.par.active.eval():
            return 0
        target = (socket.gethostbyname(self.par.address.eval()), self.par.port.eval())
        for dgram in datagrams:
            self._sock.sendto(dgram, target)
            self.sent.append(dgram)
        return sum(len(d) for d in datagrams)

    def close(self) -> None:
        self._sock.close()


class Peer:
    def __init__(self, owner, address: str, port: int):
        self.owner, self.address, self.port = owner, address, port


class oscinDAT(DAT):
    builtin = {"active": ("Toggle", True), "protocol": ("Menu", "msging"), "port": ("Int", 10000),
               "localaddress": ("Str", ""), "callbacks": ("DAT", ""), "maxlines": ("Int", 10)}

    def __init__(self, env, parent, name):
        super().__init__(env, parent, name)
        self._sock: socket.socket | None = None
        self._bound: tuple | None = None

    def _initialize(self) -> None:
        """Like the OSC In DAT's OP Create Dialog: a docked callbacks DAT from the template."""
        dat = self._parent.create(textDAT, f"{self.name}_callbacks")
        dat.text = "def onReceiveOSC(dat, rowIndex, message, byteData, timeStamp, address, args, peer):\n\treturn\n"
        self.par.callbacks = dat.name

    def _socket(self):
        want = (self.par.localaddress.eval() or "0.0.0.0", self.par.port.eval())
        if self._bound != want:
            self.close()
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._sock.bind(want)
            self._sock.setblocking(False)
            self._bound = want
        return self._sock

    def _pump(self) -> int:
        """Stand-in for TouchDesigner's frame loop: receive what arrived, one callback per message."""
        if not self.par.active.eval():
            return 0
        sock, count = self._socket(), 0
        while True:
            try:
                data, (host, port) = sock.recvfrom(65536)
            except BlockingIOError:
                return count
            for timed in OscPacket(data).messages:
                message = timed.message
                args = list(message.params)
                text = " ".join([message.address, *map(str, args)])
                row = self.appendRow([text])
                while self.numRows > max(1, self.par.maxlines.eval()):
                    self.deleteRow(0)
                    row -= 1
                callbacks = self.par.callbacks.eval()
                function = getattr(callbacks.module, "onReceiveOSC", None) if callbacks is not None else None
                if function is not None:
                    function(self, row, text, data, time.time(), message.address, args, Peer(self, host, port))
                count += 1

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock, self._bound = None, None
