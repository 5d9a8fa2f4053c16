"""The control side: custom parameters of the control COMP -> OSC messages through an OSC Out DAT.

One field per message while Live is on (``/bridge/prompt``, ``/bridge/seed``, ...; width and
height always travel together as ``/bridge/size``), several fields as one atomic change
(``/bridge/params`` with a JSON object, or an OSC bundle), and ``/bridge/subscribe`` so the
daemon's ``/bridge/frame`` and ``/bridge/error`` feedback reaches the OSC In DAT.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

# control COMP parameter -> protocol field
FIELD_PARS = {"Prompt": "prompt", "Seed": "seed", "Guidance": "guidance", "Steps": "steps",
              "Width": "width", "Height": "height"}
PAR_FOR_FIELD = {field: par for par, field in FIELD_PARS.items()}
INPUT_PARS = {"Strength": "strength"}  # on the Input page; not part of Send All or the cues
STYLE_PARS = {"Negprompt": "negative_prompt", "Stylescale": "style_scale"}  # on the Style page, like the Input page's
LORA_SLOTS = 4  # the daemon takes at most 4 active LoRAs
LORA_PARS = {f"Lora{i}{part}": i for i in range(1, LORA_SLOTS + 1) for part in ("name", "weight")}
OUTPUT_PARS = {"Tiling": "tiling"}  # on the Output page; likewise
TILINGS = ("none", "x", "y", "xy")
INT63 = 2**63
# The daemon drops a subscription 60 s after its last renewal, and forgets all when it restarts;
# renewing is idempotent (the same port is the same slot).
RESUBSCRIBE_S = 5.0


def coerce(field: str, value: Any) -> Any:
    """A parameter's value as the protocol type (an Int par driven by a CHOP may hold a float;
    Seed is a string parameter, exact to 2**64-1). Raises ValueError naming the field."""
    if field in ("prompt", "negative_prompt", "tiling"):
        return str(value)
    if field in ("guidance", "strength", "style_scale"):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)  # exact, also for seeds beyond a float's 53 bits
        except ValueError:
            pass
        try:
            value = float(text)  # "42.0" from a CHOP export
        except ValueError:
            raise ValueError(f"{field}: {value!r} is not a whole number") from None
        if not math.isfinite(value):
            raise ValueError(f"{field}: {text!r} is not a whole number")
    return int(round(value))


def values_from_pars(comp) -> dict[str, Any]:
    return {field: coerce(field, getattr(comp.par, par).eval()) for par, field in FIELD_PARS.items()}


def channel(comp) -> str:
    """The daemon channel this COMP drives and shows (Connection page; 'main' if unset or invalid)."""
    from ._client import client

    par = getattr(comp.par, "Channel", None)  # a COMP made before channels existed has none
    try:
        return client.check_channel(str(par.eval()) if par is not None else "")
    except ValueError:
        return "main"


def ports(comp) -> tuple[int, int, int]:
    """(HTTP, OSC, feedback) from the control COMP's three-value Ports parameter."""
    return int(comp.par.Ports1.eval()), int(comp.par.Ports2.eval()), int(comp.par.Ports3.eval())


class Controller:
    """Sends changes for one control COMP; remembers what it sent so echoes are not re-sent."""

    def __init__(self, comp):
        self.comp = comp
        self.last_sent: dict[str, Any] = {}
        self._next_subscribe = 0.0
        self._lora_names: dict[int, str] = {}  # slot -> the LoRA name last sent from it

    # -- the DATs this side drives ---------------------------------------------------------
    def _osc_out(self):
        out = self.comp.op("osc_out")
        host, (_, osc_port, _) = str(self.comp.par.Host.eval()).strip(), ports(self.comp)
        if out.par.address.eval() != host:  # follow the control COMP (no expressions needed)
            out.par.address = host
        if int(out.par.port.eval()) != osc_port:
            out.par.port = osc_port
        return out

    def sync_feedback_port(self) -> int:
        port = ports(self.comp)[2]
        osc_in = self.comp.op("osc_in")
        if int(osc_in.par.port.eval()) != port:
            osc_in.par.port = port
        return port

    def _send(self, *addresses_and_values, bundle: bool = False) -> None:
        from ._client import client

        # Every address goes to this COMP's channel: /bridge/X becomes /bridge/ch/NAME/X.
        name = channel(self.comp)
        pairs = [client.osc_address(item, name) if i % 2 == 0 else item for i, item in enumerate(addresses_and_values)]
        self._osc_out().sendOSC(*pairs, asBundle=bundle)

    # -- changes ---------------------------------------------------------------------------
    def send_field(self, field: str, value: Any) -> None:
        """One field as its own message (size: both dimensions)."""
        value = coerce(field, value)
        if field in ("width", "height"):
            size = {**self._size(), field: value}
            self._send("/bridge/size", [size["width"], size["height"]])
            self.last_sent.update(size)
            return
        if (field in ("prompt", "negative_prompt") and not value.isascii()) or (field == "seed" and value >= INT63):
            # OSC strings are ASCII by the spec and TD's integers stop at 64 bits: JSON escapes
            # non-ASCII text and carries any seed.
            self.send_changes({field: value})
            return
        self._send(f"/bridge/{field}", [value])
        self.last_sent[field] = value

    def send_changes(self, changes: Mapping[str, Any], bundle: bool = False) -> None:
        """Several fields, applied by the daemon as one change (one params version)."""
        changes = {field: coerce(field, value) for field, value in changes.items()}
        if bundle:
            pairs: list[Any] = []
            for field, value in changes.items():
                pairs += [f"/bridge/{field}", [value]]
            self._send(*pairs, bundle=True)
        else:
            self._send("/bridge/params", [json.dumps(changes)])  # ensure_ascii: plain OSC string
        self.last_sent.update(changes)

    def send_all(self, bundle: bool = False) -> None:
        self.send_changes(values_from_pars(self.comp), bundle=bundle)

    def _size(self) -> dict[str, int]:
        return {"width": coerce("width", self.comp.par.Width.eval()),
                "height": coerce("height", self.comp.par.Height.eval())}

    def on_field_par(self, par) -> None:
        """A field parameter changed: send it now when Live is on and it differs from what was sent."""
        if not self.comp.par.Live.eval():
            return
        field = FIELD_PARS.get(par.name) or INPUT_PARS.get(par.name) or STYLE_PARS.get(par.name) \
            or OUTPUT_PARS[par.name]
        value = coerce(field, par.eval())
        if self.last_sent.get(field) != value:
            self.send_field(field, value)

    def on_lora_par(self, par) -> None:
        """A LoRA slot's name or weight changed: ``/bridge/lora s f``; a renamed slot first sets
        its old LoRA to 0, in the same bundle (one change: the daemon's limit of 4 holds)."""
        if not self.comp.par.Live.eval():
            return
        slot = LORA_PARS[par.name]
        name = str(getattr(self.comp.par, f"Lora{slot}name").eval()).strip()
        weight = float(getattr(self.comp.par, f"Lora{slot}weight").eval())
        old = self._lora_names.get(slot, "")
        messages: list[Any] = []
        if old and old != name:
            messages += ["/bridge/lora", [old, 0.0]]
        if name:
            messages += ["/bridge/lora", [name, weight]]
        self._lora_names[slot] = name
        if messages:
            self._send(*messages, bundle=len(messages) > 2)

    def record(self, on: bool) -> None:
        """``/bridge/record 1`` starts recording into the daemon's --output-dir, 0 stops; refusals come
        back as ``/bridge/error`` feedback (the status table)."""
        self._send("/bridge/record", [1 if on else 0])

    # -- feedback subscription -------------------------------------------------------------
    def subscribe(self, now: float) -> None:
        self._send("/bridge/subscribe", [self.sync_feedback_port()])
        self._next_subscribe = now + RESUBSCRIBE_S

    def maybe_resubscribe(self, now: float) -> None:
        if now >= self._next_subscribe:
            self.subscribe(now)
