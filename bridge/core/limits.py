"""The parameters' limits: the fixed ones, and ``Limits``, those that depend on how the daemon was started.

Read by the parsers of a change (``field_parsers.py``, ``params.parse_changes``) and by the schema
(``params.schema``), so a refusal and ``GET /v1/schema`` always name the same bounds; and by the
engine's placement, which weighs a frame by the rows the model runs for it (``Limits.rows``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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


GUIDANCE_MODES = ("cfg", "embedded")  # the denoiser's ``guidance`` (pipeline/families/parts.py)


@dataclass(frozen=True)
class Limits:
    """Bounds that depend on how the daemon was started, and what a frame costs the model it loaded."""

    max_size: int = 1024
    size_multiple: int = SIZE_MULTIPLE  # the model family's: width and height are multiples of it
    controls: tuple[str, ...] = ()  # the ControlNet names loaded (--controlnet NAME=SOURCE)
    style: bool = False  # an IP-Adapter is loaded (--ip-adapter): style_scale above 0 is allowed
    # The model family's guidance: the least that means something (an embedded-guidance model's
    # 1) and the value a channel starts with when no client set one.
    min_guidance: float = 0.0
    default_guidance: float = 0.0
    # How the model takes guidance (its health info's "guidance_mode"): "cfg", classifier-free, runs
    # the negative prompt's row beside the frame's own when guidance > 0; "embedded" (SANA-Sprint)
    # makes guidance an input of the model: one row, whatever its value.
    guidance_mode: Literal["cfg", "embedded"] = "cfg"

    def __post_init__(self) -> None:
        if self.guidance_mode not in GUIDANCE_MODES:
            raise ValueError(f"guidance_mode must be one of {', '.join(GUIDANCE_MODES)} (how the model's denoiser "
                             f"takes guidance), got {self.guidance_mode!r}")

    def rows(self, guidance: float) -> int:
        """The denoiser rows one frame at this guidance runs: 2 with classifier-free guidance on, else 1."""
        return 2 if self.guidance_mode == "cfg" and guidance > 0 else 1
