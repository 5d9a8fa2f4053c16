"""The families this build knows, and which one a pipeline, a folder or a feature belongs to.

A new family is its module (its ``Family`` value and parts) plus its line in ``FAMILIES``.
"""

from __future__ import annotations

from ...core.errors import ConfigError
from .family import Family
from .sana import SANA
from .sd2 import SD2
from .sd15 import SD15
from .sdxl import SDXL

FAMILIES = {family.name: family for family in (SDXL, SD2, SD15, SANA)}
SUPPORTED = ("SDXL (SDXL-Turbo, Lightning, Hyper and other SDXL fine-tunes), SD 2.x (SD-Turbo, SDXS-512), "
             "SD 1.x (SD 1.5 and its fine-tunes) or SANA-Sprint (0.6B, 1.6B)")
# What each steering name is called on the command line, for the refusal.
STEERING_OPTIONS = {"controlnet": "--controlnet (ControlNets)", "t2i_adapter": "--controlnet (T2I-Adapters)",
                    "ip_adapter": "--ip-adapter (style images)", "lora": "LoRAs"}


def family_of_pipeline(pipe) -> Family:
    """The family of a loaded diffusers pipeline, by its class and its first text encoder."""
    name = type(pipe).__name__
    encoder = getattr(pipe, "text_encoder", None)
    text_config = encoder.config.to_dict() if encoder is not None else None
    for family in FAMILIES.values():
        if family.owns(name, text_config):
            return family
    raise ValueError(f"a {name} is not a pipeline of a known family ({SUPPORTED})")


def family_of_index(model_index: dict, text_config: dict | None = None) -> Family | None:
    """The family a diffusers folder's model_index.json (and its text_encoder/config.json, when
    read) names, or None for another architecture."""
    name = str(model_index.get("_class_name", ""))
    for family in FAMILIES.values():
        if family.owns(name, text_config):
            return family
    if name.startswith("StableDiffusionXL"):
        return SDXL
    return None


def check_steering(family: Family, wanted: set[str]) -> None:
    """Refuse, in one line naming the family, steering it does not support (``parts.STEERING`` names)."""
    refused = sorted(wanted - family.steering)
    if refused:
        supported = ", ".join(STEERING_OPTIONS[name] for name in sorted(family.steering)) or "none"
        raise ConfigError(f"{' and '.join(STEERING_OPTIONS[name] for name in refused)}: the {family.name} family "
                          f"({family.description}) does not support it; it supports: {supported}")
