"""The parsers of one parameter value each: integers, seeds, texts and blends, numbers, switches, sizes, LoRAs.

Each takes what a front end sent (JSON, OSC, the command line) and returns the clean value, or
raises ``ValidationError`` naming the field, what it must be and what came. ``params.parse_changes``
picks the parser of each field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import ValidationError
from .limits import (
    LORA_WEIGHT,
    MAX_BLEND_PROMPTS,
    MAX_GUIDANCE,
    MAX_LORA_NAME,
    MAX_PROMPT_CHARS,
    MIN_SIZE,
    MIN_STRENGTH,
    SEED_LIMIT,
    SIZE_MULTIPLE,
    Limits,
)

# A prompt is a string or a blend: (text, weight) pairs, weights relative (normalised by their sum).
Prompt = str | tuple[tuple[str, float], ...]


def parse_integer(field: str, value: Any, low: int, high: int, what: str) -> int:
    # bool is an int in Python, but `true` is never a meaningful seed or size.
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValidationError(field, f"{field} must be {what}, got {value!r}")
    if not low <= value <= high:
        raise ValidationError(field, f"{field} must be {what}, got {value!r}")
    return value


def parse_seed(field: str, value: Any) -> int:
    what = "an integer in [0, 2**64)"
    # OSC integers are at most 64-bit signed, so a decimal string is accepted for big seeds.
    if isinstance(value, str):
        text = value.strip()
        # At most 20 significant digits: int() of thousands of digits is slow, and refused past 4,300.
        if not text.isdigit() or not text.isascii() or len(text.lstrip("0")) > 20:
            raise ValidationError(field, f"{field} must be {what}, got {value[:64]!r}")
        value = int(text.lstrip("0") or "0")
    return parse_integer(field, value, 0, SEED_LIMIT - 1, what)


def parse_text(value: Any, where: str = "prompt", field: str = "prompt") -> str:
    if not isinstance(value, str):
        raise ValidationError(field, f"{where} must be a string, got {value!r}")
    if len(value) > MAX_PROMPT_CHARS:
        raise ValidationError(field, f"{where} must be at most {MAX_PROMPT_CHARS} characters, got {len(value)}")
    if "\x00" in value:
        raise ValidationError(field, f"{where} must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, e.g. JSON "\ud800": no tokenizer takes it
            raise ValidationError(field, f"{where} must be valid Unicode text, got a lone surrogate "
                                         "(such as \\ud800) without its pair") from None
    return value


def parse_prompt(value: Any, field: str = "prompt") -> Prompt:
    if isinstance(value, str):
        return parse_text(value, field, field)
    example = 'a string, or a blend such as [["a cat", 0.7], ["a lion", 0.3]]'
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_BLEND_PROMPTS:
        raise ValidationError(field, f"{field} must be {example} (1 to {MAX_BLEND_PROMPTS} pairs), "
                                     f"got {str(value)[:100]!r}")
    pairs = []
    for i, pair in enumerate(value):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValidationError(field, f"{field}[{i}] must be a [text, weight] pair, got {str(pair)[:100]!r}")
        text, weight = parse_text(pair[0], f"{field}[{i}][0]", field), parse_number(
            field, pair[1], 0.0, math.inf, f"{field}[{i}][1] must be a finite weight >= 0")
        pairs.append((text, weight))
    total = sum(weight for _, weight in pairs)
    if total <= 0:
        raise ValidationError(field, f"a {field} blend needs a weight above 0 (weights are relative)")
    if not math.isfinite(total):  # each weight finite, their sum not (1e308 + 1e308): the mix would be NaN
        raise ValidationError(field, f"the weights of a {field} blend add up past the largest number; "
                                     "they are relative: scale them down, e.g. to [0.5, 0.5]")
    return tuple(pairs)


def parse_number(field: str, value: Any, low: float, high: float, message: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(field, f"{message}, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise ValidationError(field, f"{message}, got {value!r}")
    return value


def parse_strength(value: Any) -> float:
    message = (f"strength must be 0 (text-to-image) or a number from {MIN_STRENGTH:g} to 1 "
               "(how far the input image may change)")
    value = parse_number("strength", value, 0.0, 1.0, message)
    if 0 < value < MIN_STRENGTH:
        raise ValidationError("strength", f"{message}, got {value!r}")
    return value


def parse_switch(field: str, value: Any) -> bool:
    # JSON true/false; OSC has no portable boolean, so 0/1 and "on"/"off" too.
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("on", "off", "true", "false"):
        return value.strip().lower() in ("on", "true")
    raise ValidationError(field, f"{field} must be true/false (or on/off, 1/0), got {value!r}")


def parse_size(field: str, value: Any, limits: Limits) -> int:
    family = " for this model" if limits.size_multiple != SIZE_MULTIPLE else ""
    what = (
        f"a multiple of {limits.size_multiple}{family} from {MIN_SIZE} to {limits.max_size} "
        "(raise the limit with --max-size)"
    )
    value = parse_integer(field, value, MIN_SIZE, limits.max_size, what)
    if value % limits.size_multiple:
        raise ValidationError(field, f"{field} must be {what}, got {value!r}")
    return value


def guidance_range(limits: Limits) -> str:
    """What guidance must be for this model, the start of every refusal of a guidance value."""
    if limits.min_guidance == 0:
        return f"guidance must be a finite number in [0, {MAX_GUIDANCE:g}]"
    return (f"guidance must be a finite number in [{limits.min_guidance:g}, {MAX_GUIDANCE:g}] for this model (an "
            f"input it was distilled with, {limits.min_guidance:g} = the prompt alone, {limits.default_guidance:g} "
            f"its default; not classifier-free guidance, which 0 turns off)")


def parse_loras(value: Any) -> tuple[tuple[str, float], ...]:
    """An object of LoRA name -> weight as (name, weight) pairs; ``params.merge_loras`` merges them."""
    if not isinstance(value, Mapping):
        raise ValidationError("loras", f'loras must be an object of name -> weight such as {{"ink": 0.8}}, '
                                       f"got {str(value)[:100]!r}")
    pairs = []
    for name, weight in value.items():
        if (not isinstance(name, str) or not 1 <= len(name) <= MAX_LORA_NAME or name.startswith(".")
                or any(c in name for c in "/\\\x00:") or not name.isprintable()):
            raise ValidationError("loras", f"LoRA names are file names without .safetensors (no folders, no "
                                           f"leading dot, at most {MAX_LORA_NAME} characters), got {str(name)[:64]!r}")
        pairs.append((name, parse_number("loras", weight, -LORA_WEIGHT, LORA_WEIGHT,
                                         f"the weight of LoRA {name!r} must be a number from {-LORA_WEIGHT:g} to "
                                         f"{LORA_WEIGHT:g} (0 removes it)")))
    if len(value) > MAX_BLEND_PROMPTS * 2:
        raise ValidationError("loras", f"too many LoRAs in one change ({len(value)})")
    return tuple(pairs)
