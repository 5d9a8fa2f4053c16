"""The render parameters: one frozen value, validated once at the edge.

Every front end (REST, OSC, WebSocket, CLI) turns its input into a plain mapping of field name
to value and calls :func:`parse_changes`; what comes back is safe to merge into ``Params``.
Rules that tie two fields together (none reject a change: see :func:`img2img_schedule`) live
here too, so every interface behaves the same.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Union

from .controls import Controls, check_window, merge_controls, parse_controls
from .controls import schema as controls_schema
from .errors import ValidationError

SEED_LIMIT = 2**64
MAX_PROMPT_CHARS = 4000
MAX_BLEND_PROMPTS = 8
MAX_GUIDANCE = 30.0
MIN_SIZE = 64
SIZE_MULTIPLE = 8
MIN_STRENGTH = 0.05  # below it the schedule SDXL-Turbo needs would pass 20 steps (see img2img_schedule)
MAX_TRANSITION_FRAMES = 600
MAX_LORAS = 4  # active at once
LORA_WEIGHT = 2.0  # weights in [-2, 2]; 0 removes the LoRA
MAX_LORA_NAME = 128
TILING_MODES = ("none", "x", "y", "xy")
MAX_STYLE_SCALE = 2.0
NO_IP_ADAPTER = ("this daemon has no IP-Adapter, so style images cannot steer it: start it with --ip-adapter SOURCE "
                 "(demo, random, a folder or a hub id such as h94/IP-Adapter) to use PUT /v1/style and style_scale")
MAX_STEPS = 8  # one limit for every model: 1-4 for Turbo models, up to 8 for Lightning, Hyper, LCM

# A prompt is a string or a blend: (text, weight) pairs, weights relative (normalised by their sum).
Prompt = Union[str, tuple[tuple[str, float], ...]]


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

    def merged(self, changes: Mapping[str, Any]) -> "Params":
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


@dataclass(frozen=True)
class Limits:
    """Bounds that depend on how the daemon was started."""

    max_size: int = 1024
    size_multiple: int = SIZE_MULTIPLE  # the model family's: width and height are multiples of it
    controls: tuple[str, ...] = ()  # the ControlNet names loaded (--controlnet NAME=SOURCE)
    style: bool = False  # an IP-Adapter is loaded (--ip-adapter): style_scale above 0 is allowed
    # The model family's guidance: the least that means something (an embedded-guidance model's
    # 1) and the value a channel starts with when no client set one.
    min_guidance: float = 0.0
    default_guidance: float = 0.0


FIELDS = tuple(f.name for f in dataclasses.fields(Params))
PROMPT_FIELDS = ("prompt", "negative_prompt")  # text or blend, encoded and cached alike
GLIDE_FIELDS = frozenset({"prompt", "seed", "seed2", "seed_mix"})  # what a transition interpolates


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


def _loras(value: Any) -> tuple[tuple[str, float], ...]:
    if not isinstance(value, Mapping):
        raise ValidationError("loras", f'loras must be an object of name -> weight such as {{"ink": 0.8}}, '
                                       f"got {str(value)[:100]!r}")
    pairs = []
    for name, weight in value.items():
        if (not isinstance(name, str) or not 1 <= len(name) <= MAX_LORA_NAME or name.startswith(".")
                or any(c in name for c in "/\\\x00:") or not name.isprintable()):
            raise ValidationError("loras", f"LoRA names are file names without .safetensors (no folders, no "
                                           f"leading dot, at most {MAX_LORA_NAME} characters), got {str(name)[:64]!r}")
        pairs.append((name, _number("loras", weight, -LORA_WEIGHT, LORA_WEIGHT,
                                    f"the weight of LoRA {name!r} must be a number from {-LORA_WEIGHT:g} to "
                                    f"{LORA_WEIGHT:g} (0 removes it)")))
    if len(value) > MAX_BLEND_PROMPTS * 2:
        raise ValidationError("loras", f"too many LoRAs in one change ({len(value)})")
    return tuple(pairs)


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


def _seed(field: str, value: Any) -> int:
    what = "an integer in [0, 2**64)"
    # OSC integers are at most 64-bit signed, so a decimal string is accepted for big seeds.
    if isinstance(value, str):
        text = value.strip()
        # At most 20 significant digits: int() of thousands of digits is slow, and refused past 4,300.
        if not text.isdigit() or not text.isascii() or len(text.lstrip("0")) > 20:
            raise ValidationError(field, f"{field} must be {what}, got {value[:64]!r}")
        value = int(text.lstrip("0") or "0")
    return _integer(field, value, 0, SEED_LIMIT - 1, what)


def _text(value: Any, where: str = "prompt", field: str = "prompt") -> str:
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


def _prompt(value: Any, field: str = "prompt") -> Prompt:
    if isinstance(value, str):
        return _text(value, field, field)
    example = 'a string, or a blend such as [["a cat", 0.7], ["a lion", 0.3]]'
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_BLEND_PROMPTS:
        raise ValidationError(field, f"{field} must be {example} (1 to {MAX_BLEND_PROMPTS} pairs), "
                                     f"got {str(value)[:100]!r}")
    pairs = []
    for i, pair in enumerate(value):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValidationError(field, f"{field}[{i}] must be a [text, weight] pair, got {str(pair)[:100]!r}")
        text, weight = _text(pair[0], f"{field}[{i}][0]", field), _number(
            field, pair[1], 0.0, math.inf, f"{field}[{i}][1] must be a finite weight >= 0")
        pairs.append((text, weight))
    total = sum(weight for _, weight in pairs)
    if total <= 0:
        raise ValidationError(field, f"a {field} blend needs a weight above 0 (weights are relative)")
    if not math.isfinite(total):  # each weight finite, their sum not (1e308 + 1e308): the mix would be NaN
        raise ValidationError(field, f"the weights of a {field} blend add up past the largest number; "
                                     "they are relative: scale them down, e.g. to [0.5, 0.5]")
    return tuple(pairs)


def _number(field: str, value: Any, low: float, high: float, message: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(field, f"{message}, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise ValidationError(field, f"{message}, got {value!r}")
    return value


def _strength(value: Any) -> float:
    message = (f"strength must be 0 (text-to-image) or a number from {MIN_STRENGTH:g} to 1 "
               "(how far the input image may change)")
    value = _number("strength", value, 0.0, 1.0, message)
    if 0 < value < MIN_STRENGTH:
        raise ValidationError("strength", f"{message}, got {value!r}")
    return value


def _switch(field: str, value: Any) -> bool:
    # JSON true/false; OSC has no portable boolean, so 0/1 and "on"/"off" too.
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("on", "off", "true", "false"):
        return value.strip().lower() in ("on", "true")
    raise ValidationError(field, f"{field} must be true/false (or on/off, 1/0), got {value!r}")


def _size(field: str, value: Any, limits: Limits) -> int:
    family = " for this model" if limits.size_multiple != SIZE_MULTIPLE else ""
    what = (
        f"a multiple of {limits.size_multiple}{family} from {MIN_SIZE} to {limits.max_size} "
        "(raise the limit with --max-size)"
    )
    value = _integer(field, value, MIN_SIZE, limits.max_size, what)
    if value % limits.size_multiple:
        raise ValidationError(field, f"{field} must be {what}, got {value!r}")
    return value


def _guidance_range(limits: Limits) -> str:
    if limits.min_guidance == 0:
        return f"guidance must be a finite number in [0, {MAX_GUIDANCE:g}]"
    return (f"guidance must be a finite number in [{limits.min_guidance:g}, {MAX_GUIDANCE:g}] for this model (an "
            f"input it was distilled with, {limits.min_guidance:g} = the prompt alone, {limits.default_guidance:g} "
            f"its default; not classifier-free guidance, which 0 turns off)")


def parse_changes(raw: Any, limits: Limits = Limits()) -> dict[str, Any]:
    """Validate a partial change; return the clean values or raise ``ValidationError``."""
    if not isinstance(raw, Mapping):
        raise ValidationError(None, f"expected a JSON object of parameters, got {type(raw).__name__}")
    clean: dict[str, Any] = {}
    for field, value in raw.items():
        if field in PROMPT_FIELDS:
            clean[field] = _prompt(value, field)
        elif field in ("seed", "seed2"):
            clean[field] = _seed(field, value)
        elif field == "steps":
            clean[field] = _integer(field, value, 1, MAX_STEPS, f"an integer from 1 to {MAX_STEPS}")
        elif field == "guidance":
            clean[field] = _number(field, value, limits.min_guidance, MAX_GUIDANCE, _guidance_range(limits))
        elif field in ("width", "height"):
            clean[field] = _size(field, value, limits)
        elif field == "strength":
            clean[field] = _strength(value)
        elif field == "input":
            clean[field] = _switch(field, value)
        elif field == "seed_mix":
            clean[field] = _number(field, value, 0.0, 1.0, "seed_mix must be a number from 0 (seed) to 1 (seed2)")
        elif field == "loras":
            clean[field] = _loras(value)
        elif field == "transition_frames":
            clean[field] = _integer(field, value, 0, MAX_TRANSITION_FRAMES,
                                    f"an integer from 0 (cut) to {MAX_TRANSITION_FRAMES}")
        elif field == "tiling":
            if value not in TILING_MODES:
                raise ValidationError(field, f"tiling must be one of {', '.join(TILING_MODES)} (seamless along x, y "
                                             f"or both), got {str(value)[:64]!r}")
            clean[field] = value
        elif field == "controls":
            clean[field] = parse_controls(value, limits.controls)
        elif field == "style_scale":
            clean[field] = _number(field, value, 0.0, MAX_STYLE_SCALE,
                                   f"style_scale must be a number from 0 (off) to {MAX_STYLE_SCALE:g}")
            if clean[field] > 0 and not limits.style:
                raise ValidationError(field, NO_IP_ADAPTER)
        else:
            raise ValidationError(
                str(field)[:64], f"unknown parameter {str(field)[:64]!r}; known: {', '.join(FIELDS)}"
            )
    return clean


def schema(limits: Limits = Limits()) -> dict:
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
