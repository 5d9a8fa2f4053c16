"""The render parameters: one frozen value, validated once at the edge.

Every front end (REST, OSC, WebSocket, CLI) turns its input into a plain mapping of field name
to value and calls :func:`parse_changes`; what comes back is safe to merge into ``Params``.
Rules that tie two fields together (none reject a change: see :func:`img2img_schedule`) live
here too, so every interface behaves the same. The bounds are in ``limits.py``, the parser of
each kind of value in ``field_parsers.py``; this module is where the rest of ``bridge`` imports
them from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .controls import Controls, check_window, merge_controls, parse_controls
from .controls import schema as controls_schema
from .errors import ValidationError
from .field_parsers import (
    Prompt,
    guidance_range,
    parse_integer,
    parse_loras,
    parse_number,
    parse_prompt,
    parse_seed,
    parse_size,
    parse_strength,
    parse_switch,
)
from .limits import (
    LORA_WEIGHT,
    MAX_BLEND_PROMPTS,
    MAX_GUIDANCE,
    MAX_LORAS,
    MAX_PROMPT_CHARS,
    MAX_STEPS,
    MAX_STYLE_SCALE,
    MAX_TRANSITION_FRAMES,
    MIN_SIZE,
    MIN_STRENGTH,
    NO_IP_ADAPTER,
    SEED_LIMIT,
    SIZE_MULTIPLE,
    TILING_MODES,
    Limits,
)

# What the rest of bridge imports from here, the limits and the prompt type among them.
__all__ = ["FIELDS", "GLIDE_FIELDS", "MAX_GUIDANCE", "MAX_PROMPT_CHARS", "NO_IP_ADAPTER", "PROMPT_FIELDS", "SEED_LIMIT",
           "SIZE_MULTIPLE", "Limits", "Params", "Prompt", "img2img_schedule", "merge_loras", "parse_changes",
           "prompt_texts", "schema"]


@dataclass(frozen=True)
class Params:
    """What one frame is rendered from. Same params (and input image) give the same pixels."""

    prompt: Prompt = ""
    seed: int = 0
    steps: int = 1
    guidance: float = 0.0
    width: int = 512
    height: int = 512
    strength: float = 0.5  # image-to-image with the input image, when there is one; 0: text-to-image
    input: bool = True  # use the input image when one is set
    seed2: int = 0  # the second seed of a seed blend
    seed_mix: float = 0.0  # 0: the noise of `seed`, 1: that of `seed2`, between: spherical interpolation
    transition_frames: int = 0  # a prompt or seed change glides over this many frames (0: cuts)
    negative_prompt: Prompt = ""  # what guidance steers away from (guidance > 0 only); "": diffusers' default
    loras: tuple[tuple[str, float], ...] = ()  # active LoRAs (name, weight), sorted by name, no zero weights
    tiling: str = "none"  # seamless: circular padding along x, y or both ("xy")
    controls: Controls = ()  # ControlNet name -> Control (core/controls.py); absent: scale 0, off
    style_scale: float = 0.0  # the style image's weight (IP-Adapter); 0: off, exactly the frame without it

    def merged(self, changes: Mapping[str, Any]) -> Params:
        if "loras" in changes:  # merged per name: 0 removes one, the others stay
            changes = {**changes, "loras": merge_loras(self.loras, changes["loras"])}
        if "controls" in changes:  # merged per name and per field, not replaced
            controls = merge_controls(self.controls, changes["controls"])
            check_window(controls)
            changes = {**changes, "controls": controls}
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["loras"] = dict(self.loras)
        for name in PROMPT_FIELDS:
            if not isinstance(getattr(self, name), str):
                out[name] = [list(pair) for pair in getattr(self, name)]
        out["controls"] = {name: control.to_json() for name, control in self.controls}
        return out


FIELDS = tuple(f.name for f in dataclasses.fields(Params))
PROMPT_FIELDS = ("prompt", "negative_prompt")  # text or blend, encoded and cached alike
GLIDE_FIELDS = frozenset({"prompt", "seed", "seed2", "seed_mix"})  # what a transition interpolates
DEFAULT_LIMITS = Limits()  # a daemon started with the defaults


def prompt_texts(prompt: Prompt) -> tuple[str, ...]:
    """The texts of a prompt or blend, in order (each is encoded and cached on its own)."""
    return (prompt,) if isinstance(prompt, str) else tuple(text for text, _ in prompt)


def merge_loras(current: tuple[tuple[str, float], ...], changes) -> tuple[tuple[str, float], ...]:
    """The active LoRAs after a change (name -> weight; 0 removes); at most ``MAX_LORAS``."""
    active = dict(current)
    for name, weight in changes:
        if weight == 0:
            active.pop(name, None)
        else:
            active[name] = weight
    if len(active) > MAX_LORAS:
        raise ValidationError("loras", f"at most {MAX_LORAS} LoRAs can be active; this change would make "
                                       f"{len(active)} ({', '.join(sorted(active))}); set a weight to 0 to remove one")
    return tuple(sorted(active.items()))


def img2img_schedule(steps: int, strength: float) -> tuple[int, int]:
    """(schedule length, first step) for image-to-image, as diffusers' SDXL img2img computes them.

    Diffusers runs ``int(steps * strength)`` of a ``steps``-long schedule, so SDXL-Turbo needs
    steps x strength >= 1. Rather than refuse a strength that breaks the rule, the daemon lengthens
    the schedule to the shortest one that keeps it: steps 1 at strength 0.5 renders as diffusers'
    ``num_inference_steps=2, strength=0.5`` (one UNet step). The UNet runs ``length - first`` times.
    """
    if not 0 < strength <= 1:
        raise ValueError(f"image-to-image needs a strength in (0, 1], got {strength!r}")
    length = steps
    while int(length * strength) < 1:
        length += 1
    return length, length - min(int(length * strength), length)


def parse_changes(raw: Any, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Validate a partial change; return the clean values or raise ``ValidationError``."""
    if not isinstance(raw, Mapping):
        raise ValidationError(None, f"expected a JSON object of parameters, got {type(raw).__name__}")
    clean: dict[str, Any] = {}
    for field, value in raw.items():
        if field in PROMPT_FIELDS:
            clean[field] = parse_prompt(value, field)
        elif field in ("seed", "seed2"):
            clean[field] = parse_seed(field, value)
        elif field == "steps":
            clean[field] = parse_integer(field, value, 1, MAX_STEPS, f"an integer from 1 to {MAX_STEPS}")
        elif field == "guidance":
            clean[field] = parse_number(field, value, limits.min_guidance, MAX_GUIDANCE, guidance_range(limits))
        elif field in ("width", "height"):
            clean[field] = parse_size(field, value, limits)
        elif field == "strength":
            clean[field] = parse_strength(value)
        elif field == "input":
            clean[field] = parse_switch(field, value)
        elif field == "seed_mix":
            clean[field] = parse_number(field, value, 0.0, 1.0, "seed_mix must be a number from 0 (seed) to 1 (seed2)")
        elif field == "loras":
            clean[field] = parse_loras(value)
        elif field == "transition_frames":
            clean[field] = parse_integer(field, value, 0, MAX_TRANSITION_FRAMES,
                                    f"an integer from 0 (cut) to {MAX_TRANSITION_FRAMES}")
        elif field == "tiling":
            if value not in TILING_MODES:
                raise ValidationError(field, f"tiling must be one of {', '.join(TILING_MODES)} (seamless along x, y "
                                             f"or both), got {str(value)[:64]!r}")
            clean[field] = value
        elif field == "controls":
            clean[field] = parse_controls(value, limits.controls)
        elif field == "style_scale":
            clean[field] = parse_number(field, value, 0.0, MAX_STYLE_SCALE,
                                   f"style_scale must be a number from 0 (off) to {MAX_STYLE_SCALE:g}")
            if clean[field] > 0 and not limits.style:
                raise ValidationError(field, NO_IP_ADAPTER)
        else:
            raise ValidationError(
                str(field)[:64], f"unknown parameter {str(field)[:64]!r}; known: {', '.join(FIELDS)}"
            )
    return clean


def schema(limits: Limits = DEFAULT_LIMITS) -> dict:
    """Every parameter with its type, range and default, for ``GET /v1/schema``."""
    default = Params()
    size = {"type": "integer", "minimum": MIN_SIZE, "maximum": limits.max_size,
            "multipleOf": limits.size_multiple,
            "note": f"pixels, a multiple of {limits.size_multiple}; the maximum is --max-size"}
    seed = {"type": "integer", "minimum": 0, "maximum": SEED_LIMIT - 1}
    return {
        "prompt": {"type": ["string", "array"], "maxLength": MAX_PROMPT_CHARS, "default": default.prompt,
                   "maxItems": MAX_BLEND_PROMPTS,
                   "note": 'a string, or a blend [["a cat", 0.7], ["a lion", 0.3]]: embeddings mixed by relative '
                           "weight (each text cached: moving a weight runs no text encoder). CLIP reads 77 "
                           "tokens; longer prompts are cut and a warning is returned"},
        "seed": {**seed, "default": default.seed,
                 "note": "the starting noise: the same seed and parameters give the same pixels"},
        "steps": {"type": "integer", "minimum": 1, "maximum": MAX_STEPS, "default": default.steps,
                  "note": "sampling steps, one range for every model: Turbo models want 1-4, Lightning, "
                          "Hyper-SD and LCM models 2-8"},
        "guidance": {"type": "number", "minimum": limits.min_guidance, "maximum": MAX_GUIDANCE,
                     "default": limits.default_guidance,
                     "note": "0 disables classifier-free guidance (SDXL-Turbo's intended setting); a model with "
                             "embedded guidance (SANA-Sprint) takes it as an input from 1 up, 4.5 by default"},
        "width": {**size, "default": default.width},
        "height": {**size, "default": default.height},
        "strength": {"type": "number", "minimum": 0.0, "maximum": 1.0, "default": default.strength,
                     "note": f"image-to-image with the input image (PUT /v1/input); 0 or from {MIN_STRENGTH:g}; "
                             "0 = text-to-image. SDXL-Turbo needs steps x strength >= 1: the daemon lengthens "
                             "the schedule to the shortest that keeps it (one UNet step at steps 1)"},
        "input": {"type": "boolean", "default": default.input,
                  "note": "use the input image when one is set (false: text-to-image, the image is kept)"},
        "seed2": {**seed, "default": default.seed2, "note": "the second seed of a seed blend"},
        "seed_mix": {"type": "number", "minimum": 0.0, "maximum": 1.0, "default": default.seed_mix,
                     "note": "0 = seed, 1 = seed2; between: spherical interpolation of their noise"},
        "transition_frames": {"type": "integer", "minimum": 0, "maximum": MAX_TRANSITION_FRAMES,
                              "default": default.transition_frames,
                              "note": "a prompt or seed change glides over this many frames; 0 cuts"},
        "negative_prompt": {"type": ["string", "array"], "maxLength": MAX_PROMPT_CHARS,
                            "default": default.negative_prompt, "maxItems": MAX_BLEND_PROMPTS,
                            "note": "what classifier-free guidance steers away from, a string or a blend like "
                                    "prompt; used only when guidance > 0 (\"\": the model's default "
                                    "unconditional branch). Cached like prompts"},
        "loras": {"type": "object", "default": {}, "maxProperties": MAX_LORAS,
                  "additionalProperties": {"type": "number", "minimum": -LORA_WEIGHT, "maximum": LORA_WEIGHT},
                  "note": f"LoRA name (a file in --lora-dir, GET /v1/loras) -> weight; merged per name, 0 removes "
                          f"one; at most {MAX_LORAS} active. Folded into the weights between two frames: no "
                          "recompile"},
        "tiling": {"type": "string", "enum": list(TILING_MODES), "default": default.tiling,
                   "note": "seamless textures: the frame wraps around along x, y or both (circular padding in the "
                           "UNet and the VAE); each mode is its own compiled graph, warmed once like a size"},
        "controls": controls_schema(limits.controls),
        "style_scale": {"type": "number", "minimum": 0.0, "maximum": MAX_STYLE_SCALE if limits.style else 0.0,
                        "default": default.style_scale,
                        "note": "how strongly the style image (PUT /v1/style, needs --ip-adapter) steers the frame; "
                                "0 = off: exactly the frame without it. A graph input: no recompile"},
    }
