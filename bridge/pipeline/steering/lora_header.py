"""LoRA files as ``GET /v1/loras`` lists them: their safetensors headers read (no tensor is) and checked.

A header is checked as the format says before anything reads it, so one malformed file (nested
200,000 deep, a tensor entry that is not an object, a nested shape, garbage) is listed with its
reason and never breaks the listing or another file (issue 24 item 4).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
KOHYA_PREFIXES = {"lora_unet_": "unet", "lora_te_": "text_encoder", "lora_te1_": "text_encoder",
                  "lora_te2_": "text_encoder_2"}
MAX_HEADER_BYTES = 100 * 2**20


@dataclass(frozen=True)
class LoraInfo:
    """What ``GET /v1/loras`` lists for one file (from its header: no tensor is read)."""

    name: str
    targets: tuple[str, ...]  # unet, text_encoder, text_encoder_2
    rank: int  # the largest rank of its layers
    size: int  # bytes
    error: str | None = None  # why its header cannot be read (the file is listed, not usable)
    demo: bool = False  # one of the demo model's random LoRAs (demo_loras.py), not a file of --lora-dir

    def to_json(self) -> dict:
        out = {"name": self.name, "targets": list(self.targets), "rank": self.rank, "size": self.size}
        if self.demo:
            out["demo"] = True
        return out if self.error is None else {**out, "error": self.error}


def read_header(path: Path) -> dict:
    """A safetensors file's JSON header (8 bytes of length, then JSON): keys, dtypes, shapes.

    Checked as the format says before anything reads it: each entry an object with a string
    ``dtype``, a flat ``shape`` of sizes and two ``data_offsets``; ``ValueError`` otherwise (a header
    nested 200,000 deep is a ``RecursionError`` inside ``json``, turned into one too)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if not 2 <= length <= MAX_HEADER_BYTES:
            raise ValueError(f"header length {length} is not plausible")
        try:
            header = json.loads(f.read(length))
        except RecursionError:
            raise ValueError("header nested too deeply to be a safetensors header") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    header.pop("__metadata__", None)
    for key, spec in header.items():
        if not (isinstance(spec, dict) and isinstance(spec.get("dtype"), str) and _sizes(spec.get("shape"))
                and _sizes(spec.get("data_offsets")) and len(spec["data_offsets"]) == 2):
            raise ValueError(f"tensor {key[:64]!r} is not described as safetensors describes a tensor "
                             "(dtype, a flat shape, two data offsets)")
    return header


def _sizes(value) -> bool:
    """A list of whole numbers >= 0 (a shape or a pair of offsets; not nested, not booleans)."""
    return isinstance(value, list) and all(type(v) is int and v >= 0 for v in value)


def describe(name: str, header: dict, size: int) -> LoraInfo:
    targets, rank = set(), 0
    for key, spec in header.items():
        component = next((c for p, c in KOHYA_PREFIXES.items() if key.startswith(p)), key.split(".", 1)[0])
        if component in COMPONENTS:
            targets.add(component)
        if key.endswith(("lora_A.weight", "lora_down.weight", ".down.weight")) and spec.get("shape"):
            rank = max(rank, int(spec["shape"][0]))
    return LoraInfo(name, tuple(c for c in COMPONENTS if c in targets), rank, size)


def lora_files(folder: Path | None) -> list[Path]:
    """The LoRA files directly in ``folder`` (none if it is None or missing), by name."""
    if folder is None or not folder.is_dir():
        return []
    return [path for path in sorted(folder.glob("*.safetensors")) if path.is_file() and not path.name.startswith(".")]
