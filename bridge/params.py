"""The render parameters: one frozen value, validated once at the edge.

Every front end (REST, OSC, CLI) turns its input into a plain mapping of field name to
value and calls :func:`parse_changes`; what comes back is safe to merge into ``Params``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import ValidationError

SEED_LIMIT = 2**64
MAX_PROMPT_CHARS = 4000
MAX_GUIDANCE = 30.0
MIN_SIZE = 64
SIZE_MULTIPLE = 8


@dataclass(frozen=True)
class Params:
    """What one frame is rendered from. Same params give the same pixels."""

    prompt: str = ""
    seed: int = 0
    steps: int = 1
    guidance: float = 0.0
    width: int = 512
    height: int = 512

    def merged(self, changes: Mapping[str, Any]) -> "Params":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Limits:
    """Bounds that depend on how the daemon was started."""

    max_size: int = 1024


FIELDS = tuple(f.name for f in dataclasses.fields(Params))


def _integer(field: str, value: Any, low: int, high: int, what: str) -> int:
    # bool is an int in Python, but `true` is never a meaningful seed or size.
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValidationError(field, f"{field} must be {what}, got {value!r}")
    if not low <= value <= high:
        raise ValidationError(field, f"{field} must be {what}, got {value!r}")
    return value


def _seed(value: Any) -> int:
    what = "an integer in [0, 2**64)"
    # OSC integers are at most 64-bit signed, so a decimal string is accepted for big seeds.
    if isinstance(value, str):
        text = value.strip()
        # At most 20 significant digits: int() of thousands of digits is slow, and refused past 4,300.
        if not text.isdigit() or not text.isascii() or len(text.lstrip("0")) > 20:
            raise ValidationError("seed", f"seed must be {what}, got {value[:64]!r}")
        value = int(text.lstrip("0") or "0")
    return _integer("seed", value, 0, SEED_LIMIT - 1, what)


def _prompt(value: Any) -> str:
    if not isinstance(value, str):
        raise ValidationError("prompt", f"prompt must be a string, got {value!r}")
    if len(value) > MAX_PROMPT_CHARS:
        raise ValidationError(
            "prompt", f"prompt must be at most {MAX_PROMPT_CHARS} characters, got {len(value)}"
        )
    if "\x00" in value:
        raise ValidationError("prompt", "prompt must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, e.g. JSON "\ud800": no tokenizer takes it
            raise ValidationError("prompt", "prompt must be valid Unicode text, got a lone surrogate "
                                            "(such as \\ud800) without its pair") from None
    return value


def _guidance(value: Any) -> float:
    what = f"a finite number in [0, {MAX_GUIDANCE:g}]"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError("guidance", f"guidance must be {what}, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value <= MAX_GUIDANCE:
        raise ValidationError("guidance", f"guidance must be {what}, got {value!r}")
    return value


def _size(field: str, value: Any, limits: Limits) -> int:
    what = (
        f"a multiple of {SIZE_MULTIPLE} from {MIN_SIZE} to {limits.max_size} "
        "(raise the limit with --max-size)"
    )
    value = _integer(field, value, MIN_SIZE, limits.max_size, what)
    if value % SIZE_MULTIPLE:
        raise ValidationError(field, f"{field} must be {what}, got {value!r}")
    return value


def parse_changes(raw: Any, limits: Limits = Limits()) -> dict[str, Any]:
    """Validate a partial change; return the clean values or raise ``ValidationError``."""
    if not isinstance(raw, Mapping):
        raise ValidationError(None, f"expected a JSON object of parameters, got {type(raw).__name__}")
    clean: dict[str, Any] = {}
    for field, value in raw.items():
        if field == "prompt":
            clean[field] = _prompt(value)
        elif field == "seed":
            clean[field] = _seed(value)
        elif field == "steps":
            clean[field] = _integer(field, value, 1, 4, "an integer from 1 to 4")
        elif field == "guidance":
            clean[field] = _guidance(value)
        elif field in ("width", "height"):
            clean[field] = _size(field, value, limits)
        else:
            raise ValidationError(
                str(field)[:64], f"unknown parameter {str(field)[:64]!r}; known: {', '.join(FIELDS)}"
            )
    return clean


def schema(limits: Limits = Limits()) -> dict:
    """Every parameter with its type, range and default, for ``GET /v1/schema``."""
    default = Params()
    size = {"type": "integer", "minimum": MIN_SIZE, "maximum": limits.max_size,
            "multipleOf": SIZE_MULTIPLE}
    return {
        "prompt": {"type": "string", "maxLength": MAX_PROMPT_CHARS, "default": default.prompt,
                   "note": "CLIP reads 77 tokens; longer prompts are cut and a warning is returned"},
        "seed": {"type": "integer", "minimum": 0, "maximum": SEED_LIMIT - 1, "default": default.seed},
        "steps": {"type": "integer", "minimum": 1, "maximum": 4, "default": default.steps},
        "guidance": {"type": "number", "minimum": 0.0, "maximum": MAX_GUIDANCE,
                     "default": default.guidance,
                     "note": "0 disables classifier-free guidance (SDXL-Turbo's intended setting)"},
        "width": {**size, "default": default.width},
        "height": {**size, "default": default.height},
    }
