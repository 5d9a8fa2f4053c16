"""Single-file checkpoints (``--model PATH.safetensors``): what a file is, from its header alone.

Community fine-tunes ship as one ``.safetensors`` file in the original (LDM/SGM) key layout. The
family is read from the tensor names in the file's JSON header (no tensor is read), so a file that
is not a supported checkpoint (SD3, FLUX, the SDXL refiner, a LoRA, a VAE, a truncated file) is refused in
one line before anything loads. Supported files load offline with the family's bundled configs.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from ...core.errors import UnsupportedModelError
from ..families.family import Family
from ..families.registry import SUPPORTED
from ..families.sd2 import SD2
from ..families.sd15 import SD15
from ..families.sdxl import SDXL

UNET = "model.diffusion_model."
REFINER_CONTEXT = 1280  # the SDXL refiner's cross-attention width (OpenCLIP-G alone); SD 2.x has 1024
SDXL_CLIP_G = "conditioner.embedders.1.model."
SGM_OPEN_CLIP = "conditioner.embedders.0.model."  # SD-Turbo's own file (SGM), or the SDXL refiner
LDM_OPEN_CLIP = "cond_stage_model.model."  # SD 2.x in the LDM layout
LDM_CLIP_L = "cond_stage_model.transformer."  # SD 1.x (OpenAI CLIP ViT-L as transformers names it)
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit


def is_single_file(model: str) -> bool:
    return Path(model).suffix.lower() in (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")


def read_header(path: Path) -> dict:
    """The safetensors header (tensor name -> dtype, shape, offsets), checked against the file size."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UnsupportedModelError(f"{path.name}: truncated or corrupt safetensors file ({size} bytes, no header)")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER or 8 + length > size:
            raise UnsupportedModelError(
                f"{path.name}: truncated or corrupt safetensors file (header of {length} bytes in a {size}-byte file)")
        raw = f.read(length)
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("not an object")
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise UnsupportedModelError(f"{path.name}: corrupt safetensors header ({exc})") from None
    if 8 + length + end > size:
        raise UnsupportedModelError(
            f"{path.name}: truncated safetensors file: its tensors need {8 + length + end} bytes, "
            f"the file has {size} (an interrupted download?)")
    header.pop("__metadata__", None)
    return header


def _refuse(path: Path, found: str, hint: str = "") -> UnsupportedModelError:
    return UnsupportedModelError(
        f"{path.name} is {found}; --model takes {SUPPORTED} checkpoints{'. ' + hint if hint else ''}")


def detect_family(path: Path) -> Family:
    """The family of a single-file checkpoint, or ``UnsupportedModelError`` naming what was found."""
    if path.suffix.lower() != ".safetensors":
        raise UnsupportedModelError(
            f"{path.name}: only .safetensors single files are loaded ({path.suffix} pickle checkpoints can run "
            "code when loaded); convert it to .safetensors, or pass a diffusers folder")
    header = read_header(path)
    keys = list(header)

    def has(prefix: str) -> bool:
        return any(key.startswith(prefix) for key in keys)

    if any("lora_" in key or ".lora." in key or "lora_A" in key or "lora_down" in key for key in keys):
        raise _refuse(path, "a LoRA, not a model", "Put LoRA files into the folder given by --lora-dir and pass "
                                                     "their base model with --model")
    if has("double_blocks.") or has("single_blocks.") or has("model.diffusion_model.double_blocks."):
        raise _refuse(path, "a FLUX checkpoint (double_blocks/single_blocks)")
    if any("joint_blocks." in key for key in keys):
        raise _refuse(path, "a Stable Diffusion 3 checkpoint (joint_blocks)")
    unet = has(UNET)
    if not unet:
        if has("encoder.") or has("decoder.") or has("first_stage_model."):
            raise _refuse(path, "a VAE (autoencoder weights only)", "Load a whole checkpoint; a separate tiny VAE "
                                                                     "goes to --vae")
        if has("down_blocks.") or has("conv_in."):
            raise _refuse(path, "a diffusers UNet file", "Pass the whole diffusers model folder instead")
        raise _refuse(path, f"not a diffusion checkpoint (none of its {len(keys)} tensors is under {UNET!r})")
    if UNET + "input_blocks.0.0.weight" in header and header[UNET + "input_blocks.0.0.weight"]["shape"][1] != 4:
        raise _refuse(path, "an inpainting or other non-4-channel checkpoint")
    # The UNet's cross-attention width: what the text conditioning it was trained with produces.
    context = next((header[k]["shape"][-1] for k in keys if k.startswith(UNET) and k.endswith("attn2.to_k.weight")), 0)
    if has(SDXL_CLIP_G):
        return SDXL
    if has(LDM_CLIP_L):
        return SD15
    if has(LDM_OPEN_CLIP) or (has(SGM_OPEN_CLIP) and context not in (0, REFINER_CONTEXT)):
        return SD2
    if has(SGM_OPEN_CLIP):
        raise _refuse(path, "an SDXL refiner checkpoint (one OpenCLIP-G encoder, no CLIP-L)")
    raise _refuse(path, "a UNet without text encoders (model.diffusion_model only)",
                  "Pass a full checkpoint or a diffusers folder")


# OpenCLIP text tower names -> transformers CLIP names (the layout SD 2.x and SDXL's CLIP-G ship in).
OPEN_CLIP_NAMES = {"token_embedding.weight": "embeddings.token_embedding.weight",
                   "positional_embedding": "embeddings.position_embedding.weight",
                   "ln_final.weight": "final_layer_norm.weight", "ln_final.bias": "final_layer_norm.bias"}
OPEN_CLIP_BLOCK = {"ln_1.": "layer_norm1.", "ln_2.": "layer_norm2.", "mlp.c_fc.": "mlp.fc1.",
                   "mlp.c_proj.": "mlp.fc2.", "attn.out_proj.": "self_attn.out_proj."}


def open_clip_to_transformers(weights: dict, prefix: str, layers: int) -> dict:
    """An OpenCLIP text tower (under ``prefix``) as transformers CLIP keys, without ``text_model.``.

    The fused in_proj is split into q/k/v; blocks past ``layers`` are dropped (SD 2.x's config
    stops one layer early: OpenCLIP's penultimate layer); ``text_projection`` is transposed.
    """
    out = {}
    for key, value in weights.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name in OPEN_CLIP_NAMES:
            out[OPEN_CLIP_NAMES[name]] = value
        elif name == "text_projection":
            out["text_projection.weight"] = value.T.contiguous()
        elif name.startswith("transformer.resblocks."):
            index, rest = name[len("transformer.resblocks."):].split(".", 1)
            if int(index) >= layers:
                continue
            base = f"encoder.layers.{index}."
            if rest.startswith("attn.in_proj_"):
                kind = rest.rsplit("_", 1)[1]  # weight or bias
                for part, chunk in zip(("q", "k", "v"), value.chunk(3, dim=0)):
                    out[f"{base}self_attn.{part}_proj.{kind}"] = chunk.contiguous()
            else:
                for old, new in OPEN_CLIP_BLOCK.items():
                    if rest.startswith(old):
                        out[base + new + rest[len(old):]] = value
                        break
    return out


def _text_encoder(cls, folder: Path, weights: dict, dtype):
    """A transformers text encoder from already-converted keys (with or without ``text_model.``)."""
    import torch
    from transformers import CLIPTextConfig

    config = CLIPTextConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = cls(config)
    wrapped = any(k.startswith("text_model.") for k in model.state_dict())
    clean = {k.removeprefix("text_model."): v for k, v in weights.items() if not k.endswith("position_ids")}
    if wrapped:
        clean = {(k if k.startswith("text_projection") else "text_model." + k): v for k, v in clean.items()}
    model.load_state_dict(clean, strict=True, assign=True)
    for module in model.modules():  # non-persistent buffers are not in a checkpoint: rebuild them
        if getattr(module, "position_ids", None) is not None and module.position_ids.is_meta:
            module.register_buffer("position_ids", torch.arange(config.max_position_embeddings)[None], persistent=False)
    return model.to(dtype).eval().requires_grad_(False)


def load_single_file(path: Path, family: Family, dtype, vae=None, configs: Path | None = None):
    """The family's pipeline from a single file, configured by the bundled folder (or ``configs``,
    a diffusers folder of the same architecture); never a hub call.

    The checkpoint is read once; the UNet and VAE go through diffusers' own LDM converters, the
    text encoders through ``open_clip_to_transformers`` (and a prefix strip for CLIP-L: SDXL's first
    encoder, SD 1.x's only one).
    """
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import load_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from .demo import assemble

    folder = Path(configs or family.configs)
    weights = load_file(str(path))
    common = {"config": str(folder), "local_files_only": True, "torch_dtype": dtype}
    components = {"unet": UNet2DConditionModel.from_single_file(weights, subfolder="unet", **common)}
    components["vae"] = vae if vae is not None else AutoencoderKL.from_single_file(weights, subfolder="vae", **common)
    if family is SDXL:
        layers = _layers(folder / "text_encoder_2")
        components["text_encoder"] = _text_encoder(
            CLIPTextModel, folder / "text_encoder", _stripped(weights, "conditioner.embedders.0.transformer."), dtype)
        components["text_encoder_2"] = _text_encoder(
            CLIPTextModelWithProjection, folder / "text_encoder_2",
            open_clip_to_transformers(weights, SDXL_CLIP_G, layers), dtype)
        components["tokenizer_2"] = CLIPTokenizer.from_pretrained(folder / "tokenizer_2")
    elif family is SD15:
        components["text_encoder"] = _text_encoder(CLIPTextModel, folder / "text_encoder",
                                                   _stripped(weights, LDM_CLIP_L), dtype)
    else:
        prefix = LDM_OPEN_CLIP if any(k.startswith(LDM_OPEN_CLIP) for k in weights) else SGM_OPEN_CLIP
        layers = _layers(folder / "text_encoder")
        components["text_encoder"] = _text_encoder(
            CLIPTextModel, folder / "text_encoder", open_clip_to_transformers(weights, prefix, layers), dtype)
    components["tokenizer"] = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    scheduler_config = json.loads((folder / "scheduler/scheduler_config.json").read_text())
    components["scheduler"] = getattr(diffusers, scheduler_config["_class_name"]).from_config(scheduler_config)
    del weights
    for name in ("unet", "vae", *family.text_encoders):
        for param in components[name].parameters():
            # Converted views (1x1 convolutions as linears) are strided and tensors read from the file
            # may sit at unaligned offsets: CPU kernels then round differently from a folder's weights.
            if not param.data.is_contiguous() or param.data.data_ptr() % 64:
                param.data = param.data.contiguous().clone()
    return assemble(family, components)


def _stripped(weights: dict, prefix: str) -> dict:
    """The tensors under ``prefix``, named without it (a transformers CLIP text model's keys)."""
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


def _layers(folder: Path) -> int:
    """A text encoder config's layer count (the blocks of the file past it are not used)."""
    return int(json.loads((folder / "config.json").read_text())["num_hidden_layers"])
