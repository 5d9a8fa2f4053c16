"""LoRAs: the files in ``--lora-dir``, loaded off the render thread, folded into the weights in place.

A LoRA is named by its file's stem; only ``*.safetensors`` directly inside the folder can be
named (names, never paths). Loading (``LoraCatalog.load``, on a loader thread) reads the file,
converts kohya keys with diffusers' own conversion (``lora_state_dict``), checks every delta
against the model's layer shapes, so a LoRA for another family fails before anything changes,
and puts the deltas on their layers' device and dtype (``lora_fold.place``). Folding
(``lora_fold.LoraFolder``, on the render thread between two frames) writes
``base + sum(weight * scale * up @ down)`` into the existing weight tensors (the storage a
captured CUDA graph reads) from an exact copy of each touched layer's base weight: weight 0
restores the base bit for bit.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

from ...core.errors import ValidationError
from .lora_fold import Delta, DeltaGroup, LoraFolder, place

log = logging.getLogger(__name__)

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
TEXT_ENCODERS = frozenset({"text_encoder", "text_encoder_2"})
KOHYA_PREFIXES = {"lora_unet_": "unet", "lora_te_": "text_encoder", "lora_te1_": "text_encoder",
                  "lora_te2_": "text_encoder_2"}
MAX_HEADER_BYTES = 100 * 2**20
LOADED_KEPT = 8  # loaded files kept (their deltas live on the GPU); the least recently used go first


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


@dataclass(frozen=True)
class LoraFile:
    name: str
    stamp: tuple[int, int]  # (mtime_ns, size) when read
    deltas: dict[str, Delta]  # "unet.down_blocks...to_q" -> its delta, on its layer's device and dtype
    groups: tuple[DeltaGroup, ...] = ()  # its linear layers stacked by shape (the grouped fold)

    @property
    def text_encoder(self) -> bool:
        return any(path.split(".", 1)[0] in TEXT_ENCODERS for path in self.deltas)


def _error(message: str) -> ValidationError:
    return ValidationError("loras", message)


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


class LoraCatalog:
    """The LoRA folder: listing, loading (cached by mtime and size), checks against the model.

    ``demo_folder``: the demo model's LoRAs (``demo_loras.py``), listed after the folder's own files;
    a file of the same name in ``folder`` comes first."""

    def __init__(self, folder: Path, pipe, demo_folder: Path | None = None):
        self.folder = Path(folder)
        self._demo_folder = demo_folder
        self._pipe = pipe
        self._lock = threading.Lock()  # the loader thread and a rescan may overlap
        self._loaded: OrderedDict[str, LoraFile] = OrderedDict()
        self._names: frozenset[str] = frozenset()
        self._paths: dict[str, Path] = {}  # name -> its file, as the last scan found it
        self._unusable: dict[str, str] = {}  # name -> why the last scan could not read its header

    @property
    def names(self) -> frozenset[str]:
        """The names found by the last scan (event-loop safe: a snapshot)."""
        return self._names

    def _path(self, name: str) -> Path:
        if name not in self._names:
            self.scan()
        if name not in self._names:
            found = ", ".join(sorted(self._names)) or "none"
            raise _error(f"unknown LoRA {name[:64]!r}: LoRAs are *.safetensors files in {self.folder}, "
                         f"named by their stem (found: {found})")
        if name in self._unusable:
            raise _error(f"LoRA {name!r} is not a readable LoRA file ({self._unusable[name]}); GET /v1/loras lists the others")
        return self._paths[name]

    def scan(self) -> list[LoraInfo]:
        """List the folder (blocking IO: a loader thread). Changed files are read again when used."""
        infos, paths, unusable = [], {}, {}
        for folder, demo in ((self.folder, False), (self._demo_folder, True)):
            for path in _files(folder):
                if path.stem in paths:  # the operator's own file of that name shadows a demo LoRA
                    continue
                paths[path.stem] = path
                try:
                    infos.append(replace(describe(path.stem, read_header(path), path.stat().st_size), demo=demo))
                except Exception as exc:  # one file's boundary: whatever is wrong with it, the others list
                    reason = f"not a safetensors file: {type(exc).__name__ + ': ' if not isinstance(exc, ValueError) else ''}" \
                             f"{str(exc).splitlines()[0][:200] if str(exc) else 'no detail'}"
                    if self._unusable.get(path.stem) != reason:  # once per file and reason, not per scan
                        log.warning("LoRA file %s is unusable: %s", path, reason)
                    unusable[path.stem] = reason
                    infos.append(LoraInfo(path.stem, (), 0, 0, reason))
        self._paths, self._names, self._unusable = paths, frozenset(paths), unusable
        return infos

    def ready(self, names) -> bool:
        """Whether every name is loaded already (no IO: the fast path of a change)."""
        return all(name in self._loaded for name in names)

    def load(self, name: str) -> LoraFile:
        """The file's deltas, checked against the model; cached until the file changes."""
        path = self._path(name)
        try:
            stat = path.stat()
        except OSError as exc:
            raise _error(f"LoRA {name!r} cannot be read: {exc}") from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._loaded.get(name)
            if cached is not None and cached.stamp == stamp:
                self._keep(name)
                return cached
        try:
            lora = LoraFile(name, stamp, *self._deltas(name, path))
        except ValidationError:
            raise
        except Exception as exc:  # one file's boundary: a corrupt or foreign file fails in many ways
            detail = str(exc).splitlines()[0][:200] if str(exc) else "no detail"
            raise _error(f"LoRA {name!r} is not a readable LoRA file ({type(exc).__name__}: {detail})") from None
        with self._lock:
            self._loaded[name] = lora
            self._keep(name)
        log.info("LoRA %s loaded: %d layers", name, len(lora.deltas))
        return lora

    def _keep(self, name: str) -> None:
        """``name`` the most recently used; the least recently used beyond ``LOADED_KEPT`` dropped
        (a folded LoRA stays alive in the folder meanwhile). Under ``_lock``."""
        self._loaded.move_to_end(name)
        while len(self._loaded) > LOADED_KEPT:
            self._loaded.popitem(last=False)

    def cached(self, name: str) -> LoraFile:
        """A loaded file, for the render thread (loads it there only if a change skipped the loader)."""
        found = self._loaded.get(name)
        return found if found is not None else self.load(name)

    def _deltas(self, name: str, path: Path) -> tuple[dict[str, Delta], tuple[DeltaGroup, ...]]:
        from diffusers import StableDiffusionXLPipeline

        state, alphas = StableDiffusionXLPipeline.lora_state_dict(
            str(path), unet_config=self._pipe.unet.config, local_files_only=True)
        deltas: dict[str, Delta] = {}
        for component in COMPONENTS:
            part = {k[len(component) + 1:]: v for k, v in state.items() if k.startswith(component + ".")}
            part_alphas = {k[len(component) + 1:]: v for k, v in (alphas or {}).items()
                           if k.startswith(component + ".")}
            for module, delta in _component_deltas(component, part, part_alphas, self._pipe).items():
                deltas[f"{component}.{module}"] = delta
        if not deltas:
            raise _error(f"LoRA {name!r} has no layers for the UNet or the text encoders")
        targets = dict(_modules(self._pipe))
        for path_, delta in deltas.items():
            weight = getattr(targets.get(path_), "weight", None)
            if weight is None:
                raise _error(f"LoRA {name!r} targets {path_}, which this model does not have "
                             "(a LoRA for another model family?)")
            shape = _delta_shape(delta)
            if tuple(weight.shape) != shape:
                raise _error(f"LoRA {name!r} does not fit this model: {path_} is {tuple(weight.shape)}, "
                             f"the LoRA's delta {shape} (a LoRA for another model family?)")
        return place(deltas, {path_: targets[path_].weight for path_ in deltas})


def _files(folder: Path | None) -> list[Path]:
    """The LoRA files directly in ``folder`` (none if it is None or missing), by name."""
    if folder is None or not folder.is_dir():
        return []
    return [path for path in sorted(folder.glob("*.safetensors")) if path.is_file() and not path.name.startswith(".")]


def _to_peft(component: str, state: dict, pipe) -> dict:
    """diffusers' own conversion of old diffusers/kohya-converted keys to PEFT's lora_A/lora_B."""
    from diffusers.utils.state_dict_utils import (convert_state_dict_to_diffusers, convert_state_dict_to_peft,
                                                  convert_unet_state_dict_to_peft)

    if any("lora_A" in k for k in state):
        out = state
    elif component == "unet":
        out = convert_unet_state_dict_to_peft(state)
    else:
        out = convert_state_dict_to_peft(convert_state_dict_to_diffusers(state))
    return out


def _module_path(component: str, key: str, modules: dict) -> str:
    """The key's module in this model: kohya text-encoder keys may carry "text_model." or not."""
    module = key.split(".lora_A")[0]
    if component == "unet" or f"{component}.{module}" in modules:
        return module
    other = module.removeprefix("text_model.") if module.startswith("text_model.") else "text_model." + module
    return other if f"{component}.{other}" in modules else module


def _component_deltas(component: str, state: dict, alphas: dict, pipe) -> dict[str, Delta]:
    if not state:
        return {}
    modules = dict(_modules(pipe))
    peft = _to_peft(component, state, pipe)
    # kohya's per-layer alphas are keyed like their down weights (or their layer): converted the same way.
    stems = [key.removesuffix(".alpha") for key in alphas]
    probe = _to_peft(component, {stem if stem.endswith(".weight") else stem + ".lora.down.weight": i
                                 for i, stem in enumerate(stems)}, pipe) if stems else {}
    values = list(alphas.values())
    scales = {_module_path(component, key, modules): float(values[i]) for key, i in probe.items()}
    out = {}
    for key, down in peft.items():
        if not key.endswith(".lora_A.weight"):
            continue
        up = peft.get(key.replace(".lora_A.", ".lora_B."))
        module = _module_path(component, key, modules)
        if up is None:
            raise _error(f"{component}.{module} has a down projection without its up projection")
        # diffusers/PEFT: no alpha means alpha = rank (scale 1).
        out[module] = Delta(down, up, scales.get(module, float(down.shape[0])))
    return out


def _delta_shape(delta: Delta) -> tuple[int, ...]:
    if delta.down.dim() == 2:
        return delta.up.shape[0], delta.down.shape[1]
    return (delta.up.shape[0], *delta.down.shape[1:])


def _modules(pipe):
    for component in COMPONENTS:
        if getattr(pipe, component, None) is None:  # sd2 pipelines have one text encoder
            continue
        for name, module in getattr(pipe, component).named_modules():
            yield f"{component}.{name}", module


class Loras:
    """The renderer's LoRA hook: the catalog (loader side) and the folder (render side)."""

    def __init__(self, pipe, folder: Path | None, demo_folder: Path | None = None):
        self.catalog = LoraCatalog(folder, pipe, demo_folder) if folder is not None else None
        self._folder = LoraFolder(dict(_modules(pipe)))
        self.applied: tuple[tuple[str, float], ...] = ()

    def update(self, loras: tuple[tuple[str, float], ...]) -> tuple:
        """Fold ``loras``; returns the text encoders' variant: which LoRAs (and weights) shape them."""
        if loras and self.catalog is None:
            raise _error("LoRAs need a LoRA folder (--lora-dir)")
        active = tuple((self.catalog.cached(name), weight) for name, weight in loras)
        self._folder.fold(active)
        self.applied = loras
        return tuple((f.name, f.stamp, w) for f, w in active if f.text_encoder)
