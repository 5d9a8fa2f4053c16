"""The IP-Adapter (style image) for SDXL and SD 1.5: an image encoder, an image projection and added K/V
projections in the UNet's cross-attention layers, loaded once at start (``--ip-adapter SOURCE``).

SOURCE is ``demo`` (random weights matching the demo UNet, a small CLIP vision encoder),
``random`` (the published IP-Adapter architecture for the model's UNet with a ViT-H image
encoder, random weights: benchmarks), a weight file, a folder holding one, or a hub id (``owner/name``, optionally
``/path/in/repo.safetensors``). Files are the original IP-Adapter layout (``image_proj.*``,
``ip_adapter.N.to_k_ip/to_v_ip``) that diffusers' ``load_ip_adapter`` reads; the image encoder is
the ``image_encoder/`` folder beside the weights (or ``models/image_encoder`` of the h94 layout)
whose size fits them.

The style image is encoded once per content (``StyleTokens``, cached by digest); a frame gets its
projected tokens and ``style_scale`` as graph inputs handed through the UNet to ``StyleAttnProcessor``
in ``encoder_hidden_states`` = (text, tokens, scale), so a new image or scale never recompiles.
Without a style (scale 0) the UNet gets the plain text states and every processor runs the
model's own attention: exactly the frame without the adapter.

The attention processor is ``style_attention.py``; encoding style images into tokens and a
frame's style inputs, ``style_images.py``. This module finds, reads, checks and assembles the
weights (diffusers' own conversion for the image projection).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ...core.errors import ConfigError, ModelNotFoundError
from ..families.family import Family
from ..families.registry import check_steering
from ..families.sdxl import SDXL
from ..loading.seeded import seeded_init
from ..speed.optimize import progress
from .style_attention import StyleAttnProcessor

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin")
# h94/IP-Adapter's ViT-H adapters, by family: what a bare hub id (owner/name) loads.
DEFAULT_HUB_WEIGHTS = {"sdxl": "sdxl_models/ip-adapter_sdxl_vit-h.safetensors",
                       "sd15": "models/ip-adapter_sd15.safetensors"}
# The image encoders of the published adapters: ViT-H/14 (and bigG for ip-adapter_sdxl); the demo's is tiny.
VIT_H = {"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 16, "num_hidden_layers": 32,
         "projection_dim": 1024, "image_size": 224, "patch_size": 14, "hidden_act": "gelu"}
DEMO_VISION = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
               "projection_dim": 32, "image_size": 224, "patch_size": 14, "hidden_act": "gelu"}
TOKENS = 4  # image tokens of a plain IP-Adapter's projection


class IpAdapter:
    """The loaded adapter: image encoder and its preprocessing, image projection, K/V weights per layer."""

    def __init__(self, source: str, encoder, feature_extractor, projection, kv: dict[str, tuple]):
        from diffusers.models.embeddings import ImageProjection

        self.source = source
        self.encoder = encoder
        self.feature_extractor = feature_extractor
        self.projection = projection
        self.kv = kv  # cross-attention processor name -> (to_k_ip, to_v_ip)
        self.penultimate = not isinstance(projection, ImageProjection)  # "plus" adapters read hidden states

    def install(self, unet) -> None:
        """Wrap each cross-attention processor of ``unet`` (after any fusing) with its K/V projections."""
        processors = dict(unet.attn_processors)
        unet.set_attn_processor({name: StyleAttnProcessor(proc, *self.kv[name]) if name in self.kv else proc
                                 for name, proc in processors.items()})

    @property
    def modules(self) -> list[torch.nn.Module]:
        return [self.encoder, self.projection]


def cross_attention_names(unet) -> list[str]:
    return [name for name in unet.attn_processors if not name.endswith("attn1.processor")]


def random_state_dict(unet_config: dict, embed_dim: int, seed: int = 0) -> dict:
    """A plain IP-Adapter in the original file layout, random weights, fitting an SDXL UNet config."""
    from diffusers import UNet2DConditionModel

    generator = torch.Generator().manual_seed(seed)
    cross = unet_config["cross_attention_dim"]

    def rand(*shape, std=0.02):
        return torch.randn(shape, generator=generator) * std

    sd = {"image_proj": {"proj.weight": rand(cross * TOKENS, embed_dim), "proj.bias": rand(cross * TOKENS),
                         "norm.weight": 1 + rand(cross, std=0.1), "norm.bias": rand(cross, std=0.1)},
          "ip_adapter": {}}
    with torch.device("meta"):
        names = cross_attention_names(UNet2DConditionModel.from_config(unet_config))
    for i, name in enumerate(names):
        hidden = _hidden_size(name, unet_config["block_out_channels"])
        for kind in ("to_k_ip", "to_v_ip"):  # weights as large as the text's K/V: the style visibly steers
            sd["ip_adapter"][f"{2 * i + 1}.{kind}.weight"] = rand(hidden, cross, std=cross ** -0.5)
    return sd


def _hidden_size(name: str, channels: list[int]) -> int:
    if name.startswith("mid_block"):
        return channels[-1]
    block = int(name.split(".")[1])
    return list(reversed(channels))[block] if name.startswith("up_blocks") else channels[block]


def build_random_encoder(demo: bool, dtype: torch.dtype, device: str, seed: int = 0):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with seeded_init(seed, device), torch.device(device):
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**(DEMO_VISION if demo else VIT_H)))
    return encoder.to(dtype=dtype).eval().requires_grad_(False)


def save_random(folder: Path, unet_config: dict, demo: bool = True, seed: int = 0,
                weight_name: str = "ip-adapter_demo.safetensors") -> Path:
    """Write a random IP-Adapter as a model folder (weights + ``image_encoder/``); returns the weight file."""
    from safetensors.torch import save_file

    folder = Path(folder)
    encoder = build_random_encoder(demo, torch.float32, "cpu", seed)
    encoder.save_pretrained(folder / "image_encoder")
    sd = random_state_dict(unet_config, encoder.config.projection_dim, seed)
    flat = {f"{part}.{key}": value.contiguous() for part, tensors in sd.items() for key, value in tensors.items()}
    save_file(flat, folder / weight_name)
    return folder / weight_name


def load_ip_adapter(source: str, unet, device: str, dtype: torch.dtype, family: Family = SDXL) -> IpAdapter:
    """The adapter from SOURCE for a model of ``family`` onto ``device``; raises
    ``ConfigError``/``ModelNotFoundError`` with a way out."""
    check_steering(family, {"ip_adapter"})
    with progress(f"loading IP-Adapter from {source}"):
        if source in ("demo", "random"):
            encoder = build_random_encoder(source == "demo", dtype, device)
            sd = random_state_dict(dict(unet.config), encoder.config.projection_dim)
        else:
            sd, encoder = _load_files(source, dtype, DEFAULT_HUB_WEIGHTS.get(family.name, DEFAULT_HUB_WEIGHTS["sdxl"]))
            encoder = encoder.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return _assemble(source, sd, encoder, unet, device, dtype)


def _assemble(source: str, sd: dict, encoder, unet, device: str, dtype: torch.dtype) -> IpAdapter:
    from transformers import CLIPImageProcessor

    if not isinstance(sd, dict) or "image_proj" not in sd or "ip_adapter" not in sd:
        raise ConfigError(f"--ip-adapter {source}: not an IP-Adapter (no image_proj/ip_adapter weights)")
    try:  # diffusers' own conversion: plain, plus, full and face adapters
        projection = unet._convert_ip_adapter_image_proj_to_diffusers(sd["image_proj"], low_cpu_mem_usage=False)
    except (KeyError, RuntimeError) as exc:
        raise ConfigError(f"--ip-adapter {source}: its image projection is not one diffusers knows ({exc})") from None
    projection = projection.to(device=device, dtype=dtype).eval().requires_grad_(False)
    kv = {}
    for i, name in enumerate(cross_attention_names(unet)):
        layers = []
        for kind in ("to_k_ip", "to_v_ip"):
            weight = sd["ip_adapter"].get(f"{2 * i + 1}.{kind}.weight")
            hidden = _hidden_size(name, list(unet.config.block_out_channels))
            expected = (hidden, unet.config.cross_attention_dim)
            if weight is None or tuple(weight.shape) != expected:
                raise ConfigError(
                    f"--ip-adapter {source} does not fit the model's UNet: {name} wants {kind} of shape {expected}, "
                    f"the file has {None if weight is None else tuple(weight.shape)} (demo adapters go with --model "
                    "demo, SDXL adapters with SDXL models)")
            with torch.device(device):
                layer = torch.nn.Linear(expected[1], expected[0], bias=False)
            layer.weight.data.copy_(weight)
            layers.append(layer.to(dtype=dtype).requires_grad_(False))
        kv[name] = tuple(layers)
    wanted = projection_input(sd["image_proj"])
    got = encoder.config.hidden_size if not _is_plain(sd) else encoder.config.projection_dim
    if wanted is not None and wanted != got:
        raise ConfigError(f"--ip-adapter {source}: its image encoder gives {got} features, the adapter takes {wanted}")
    size = encoder.config.image_size
    return IpAdapter(source, encoder, CLIPImageProcessor(size=size, crop_size=size), projection, kv)


def _is_plain(sd: dict) -> bool:
    return "proj.weight" in sd["image_proj"] or "proj.3.weight" in sd["image_proj"] or "norm.weight" in sd["image_proj"]


def projection_input(image_proj: dict) -> int | None:
    """The image feature size an adapter's projection takes (None: a layout not checked here)."""
    if "proj.weight" in image_proj:
        return int(image_proj["proj.weight"].shape[-1])
    if "proj_in.weight" in image_proj:
        return int(image_proj["proj_in.weight"].shape[-1])
    return None


def _load_files(source: str, dtype: torch.dtype, default_weights: str):
    """(state dict, image encoder) from a file, a folder or the hub, as ``load_ip_adapter`` reads them."""
    from transformers import CLIPVisionModelWithProjection

    local = Path(source).expanduser()
    if local.exists():
        weights = _weight_file(local, source)
        sd = read_state_dict(weights)
        folder = _encoder_folder(weights.parent, sd, source)
        return sd, CLIPVisionModelWithProjection.from_pretrained(folder, dtype=dtype)
    repo, _, path = source.partition("/")[2].partition("/")
    repo, path = f"{source.split('/')[0]}/{repo}", path or default_weights
    try:
        from huggingface_hub import hf_hub_download

        sd = read_state_dict(Path(hf_hub_download(repo, path)))
        sub = str(Path(path).parent)
        candidates = [f"{sub}/image_encoder" if sub != "." else "image_encoder", "models/image_encoder"]
        for folder in candidates:
            try:
                config = json.loads(Path(hf_hub_download(repo, f"{folder}/config.json")).read_text())
            except OSError:
                continue
            if _fits(config, sd):
                return sd, CLIPVisionModelWithProjection.from_pretrained(repo, subfolder=folder, dtype=dtype)
    except OSError as exc:
        raise ModelNotFoundError(
            f"IP-Adapter {source!r} is not available: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. "
            f"Download it once with network access (`hf download {repo}`), pass a local file or folder, or use "
            "demo/random (random weights)") from exc
    raise ConfigError(f"--ip-adapter {source}: no image encoder that fits its weights in {', '.join(candidates)}")


def _weight_file(local: Path, source: str) -> Path:
    if local.is_file():
        if local.suffix not in WEIGHT_SUFFIXES:
            raise ConfigError(f"--ip-adapter {source}: an IP-Adapter file ends in {' or '.join(WEIGHT_SUFFIXES)}")
        return local
    found = sorted(p for p in local.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if len(found) != 1:
        listed = ", ".join(p.name for p in found) or "none"
        raise ConfigError(f"--ip-adapter {source}: a folder must hold exactly one IP-Adapter weight file "
                          f"({', '.join(WEIGHT_SUFFIXES)}), found {listed}; pass the file itself")
    return found[0]


def read_state_dict(path: Path) -> dict:
    """{"image_proj": {...}, "ip_adapter": {...}} from a .safetensors (flat, prefixed keys) or a .bin."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            sd: dict = {"image_proj": {}, "ip_adapter": {}}
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for key in f.keys():
                    part, _, rest = key.partition(".")
                    if part in sd:
                        sd[part][rest] = f.get_tensor(key)
            return sd
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: say which and why, in one line
        raise ConfigError(f"--ip-adapter {path}: cannot read it ({type(exc).__name__}: {str(exc)[:200]})") from None


def _fits(config: dict, sd: dict) -> bool:
    wanted = projection_input(sd["image_proj"])
    return wanted is None or wanted in (config.get("projection_dim"), config.get("hidden_size"))


def _encoder_folder(folder: Path, sd: dict, source: str) -> Path:
    candidates = [folder / "image_encoder", folder.parent / "models" / "image_encoder"]
    for candidate in candidates:
        config = candidate / "config.json"
        if config.is_file() and _fits(json.loads(config.read_text()), sd):
            return candidate
    raise ConfigError(f"--ip-adapter {source}: no image encoder that fits its weights (a CLIP vision model folder "
                      f"in {' or '.join(str(c) for c in candidates)})")
