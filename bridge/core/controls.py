"""The ``controls`` parameter: per ControlNet name, how strongly and when its control image steers.

A change is merged per NAME and per field (``{"depth": {"scale": 0.8}}`` keeps depth's start,
end and preprocess; a bare number is the scale). Scale 0 (the default) turns a ControlNet off:
no ControlNet compute at all, exactly the frame without it. Only names the daemon loaded
(``--controlnet NAME=SOURCE``) are accepted.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, ValidationError

MAX_SCALE = 2.0
PREPROCESS = ("none", "canny")
CONTROL_FIELDS = ("scale", "start", "end", "preprocess")
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class Control:
    """One ControlNet's settings: its residuals are multiplied by ``scale`` on the steps whose
    fraction of the schedule lies in [start, end] (diffusers' control_guidance_start/end)."""

    scale: float = 0.0
    start: float = 0.0
    end: float = 1.0
    preprocess: str = "none"  # none: the image is the condition (depth, lines); canny: edges of it

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# Params.controls: (name, Control) pairs sorted by name (frozen, hashable, comparable).
Controls = tuple[tuple[str, Control], ...]
# A validated change: (name, ((field, value), ...)) pairs, applied field by field.
ControlChanges = tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]


def _fraction(name: str, field: str, value: Any, low: float, high: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)) \
            or not low <= float(value) <= high:
        raise ValidationError("controls", f"controls.{name}.{field} must be {what}, got {str(value)[:64]!r}")
    return float(value)


def _fields(name: str, value: Any) -> tuple[tuple[str, Any], ...]:
    if not isinstance(value, Mapping):
        value = {"scale": value}  # a bare number is the scale
    out = []
    for field, item in value.items():
        if field == "scale":
            out.append((field, _fraction(name, field, item, 0.0, MAX_SCALE, f"a number from 0 (off) to {MAX_SCALE:g}")))
        elif field in ("start", "end"):
            out.append((field, _fraction(name, field, item, 0.0, 1.0, "a fraction of the schedule from 0 to 1")))
        elif field == "preprocess":
            if item not in PREPROCESS:
                raise ValidationError("controls", f"controls.{name}.preprocess must be one of "
                                                  f"{', '.join(PREPROCESS)}, got {str(item)[:64]!r}")
            out.append((field, item))
        else:
            raise ValidationError("controls", f"unknown field controls.{name}.{str(field)[:64]}; known: "
                                              f"{', '.join(CONTROL_FIELDS)} (a bare number is the scale)")
    return tuple(out)


def parse_controls(raw: Any, known: tuple[str, ...]) -> ControlChanges:
    """Validate a ``controls`` change against the loaded ControlNet names."""
    if not isinstance(raw, Mapping):
        raise ValidationError("controls", 'controls must be an object NAME -> {"scale", "start", "end", '
                                          f'"preprocess"}} or NAME -> scale, got {str(raw)[:100]!r}')
    changes = []
    for name, value in raw.items():
        if name not in known:
            loaded = ", ".join(known) if known else "none (start the daemon with --controlnet NAME=SOURCE)"
            raise ValidationError("controls", f"no ControlNet named {str(name)[:64]!r}; loaded: {loaded}")
        changes.append((name, _fields(name, value)))
    return tuple(changes)


def merge_controls(current: Controls, changes: ControlChanges) -> Controls:
    """``current`` with ``changes`` applied per name and per field; a name at all defaults is dropped,
    so the same settings always compare equal (and scale 0 is the same state as never set)."""
    merged = dict(current)
    for name, fields in changes:
        merged[name] = dataclasses.replace(merged.get(name, Control()), **dict(fields))
    return tuple(sorted((name, c) for name, c in merged.items() if c != Control()))


def check_window(controls: Controls) -> None:
    """start must not pass end (checked on the merged value: either may come first)."""
    for name, control in controls:
        if control.start > control.end:
            raise ValidationError("controls", f"controls.{name}: start ({control.start:g}) must not be after "
                                              f"end ({control.end:g})")


def active(controls: Controls) -> tuple[str, ...]:
    """The names with a scale above 0, sorted."""
    return tuple(name for name, control in controls if control.scale > 0)


def schema(known: tuple[str, ...]) -> dict:
    default = Control()
    return {"type": "object", "default": {},
            "properties": {name: {"type": ["object", "number"]} for name in known},
            "additionalProperties": False,
            "fields": {"scale": {"type": "number", "minimum": 0.0, "maximum": MAX_SCALE, "default": default.scale},
                       "start": {"type": "number", "minimum": 0.0, "maximum": 1.0, "default": default.start},
                       "end": {"type": "number", "minimum": 0.0, "maximum": 1.0, "default": default.end},
                       "preprocess": {"enum": list(PREPROCESS), "default": default.preprocess}},
            "note": "NAME -> {scale, start, end, preprocess}, merged per NAME and per field; a bare number is the "
                    "scale. Scale 0 (default) = off: no ControlNet compute, exactly the frame without it. NAME is one "
                    "of the daemon's --controlnet NAME=SOURCE (the properties here): a ControlNet or a T2I-Adapter "
                    "(its features times scale; end = diffusers' adapter_conditioning_factor). The control image is "
                    "PUT /v1/control/NAME"}


@dataclass(frozen=True)
class ControlNetSpec:
    """One ``--controlnet NAME=SOURCE``."""

    name: str
    source: str

    @staticmethod
    def parse(text: str) -> ControlNetSpec:
        name, sep, source = text.partition("=")
        if not sep or not source:
            raise ConfigError(f"--controlnet takes NAME=SOURCE (e.g. depth=diffusers/controlnet-depth-sdxl-1.0, "
                              f"edges=demo), got {text!r}")
        if not NAME.fullmatch(name):
            raise ConfigError(f"--controlnet name {name!r} must be 1-32 of a-z, 0-9, '_' or '-' (starting with a "
                              "letter or digit): it appears in URLs (/v1/control/NAME) and OSC messages")
        return ControlNetSpec(name, source)


def check_specs(specs: tuple[ControlNetSpec, ...]) -> None:
    names = [spec.name for spec in specs]
    doubled = sorted({name for name in names if names.count(name) > 1})
    if doubled:
        raise ConfigError(f"--controlnet names must be unique, got {', '.join(doubled)} more than once")
