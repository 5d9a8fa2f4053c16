"""LoRAs: the files in ``--lora-dir``, loaded off the render thread, folded into the weights in place.

A LoRA is named by its file's stem; only ``*.safetensors`` directly inside the folder can be
named (names, never paths). Loading (``LoraCatalog.load``, on a loader thread) reads the file,
converts kohya keys with diffusers' own conversion (``lora_state_dict``), checks every delta
against the model's layer shapes, so a LoRA for another family fails before anything changes,
and puts the deltas on their layers' device and dtype (``lora_deltas.place``). Folding
(``lora_fold.LoraFolder``, on the render thread between two frames) writes
``base + sum(weight * scale * up @ down)`` into the existing weight tensors (the storage a
captured CUDA graph reads) from an exact copy of each touched layer's base weight: weight 0
restores the base bit for bit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

from ...core.errors import ValidationError
from .lora_deltas import Delta, DeltaGroup, place
from .lora_fold import LoraFolder
from .lora_header import COMPONENTS, LoraInfo, describe, lora_files, read_header

log = logging.getLogger(__name__)

TEXT_ENCODERS = frozenset({"text_encoder", "text_encoder_2"})
LOADED_KEPT = 8  # loaded files kept beyond the pinned ones (deltas on the GPU); the least recently used go first
IN_USE_S = 60.0  # an unpinned file folded this recently is kept beyond LOADED_KEPT as well


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


class LoraCatalog:
    """The LoRA folder: listing, loading (cached by mtime and size), checks against the model.

    ``demo_folder``: the demo model's LoRAs (``demo_loras.py``), listed after the folder's own files;
    a file of the same name in ``folder`` comes first."""

    def __init__(self, folder: Path, pipe, demo_folder: Path | None = None, in_use_s: float = IN_USE_S):
        self.folder = Path(folder)
        self.in_use_s = in_use_s
        self._demo_folder = demo_folder
        self._pipe = pipe
        self._lock = threading.Lock()  # the loader thread and a rescan may overlap
        self._loaded: OrderedDict[str, LoraFile] = OrderedDict()
        self._names: frozenset[str] = frozenset()
        self._paths: dict[str, Path] = {}  # name -> its file, as the last scan found it
        self._unusable: dict[str, str] = {}  # name -> why the last scan could not read its header
        self._gone_warned: set[str] = set()  # loaded files whose file went away (warned once each)
        self._used: dict[str, float] = {}  # name -> when the render thread last folded it
        self._pinned: frozenset[str] = frozenset()  # what the channels use now (the LoRA gate says): never evicted
        self.reads: Counter[str] = Counter()  # files read, by thread name

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
            raise _error(f"LoRA {name!r} is not a readable LoRA file ({self._unusable[name]}); "
                         "GET /v1/loras lists the others")
        return self._paths[name]

    def scan(self) -> list[LoraInfo]:
        """List the folder (blocking IO: a loader thread). Changed files are read again when used."""
        infos, paths, unusable = [], {}, {}
        for folder, demo in ((self.folder, False), (self._demo_folder, True)):
            for path in lora_files(folder):
                if path.stem in paths:  # the operator's own file of that name shadows a demo LoRA
                    continue
                paths[path.stem] = path
                try:
                    infos.append(replace(describe(path.stem, read_header(path), path.stat().st_size), demo=demo))
                except Exception as exc:  # one file's boundary: whatever is wrong with it, the others list
                    reason = "not a safetensors file: " \
                             f"{type(exc).__name__ + ': ' if not isinstance(exc, ValueError) else ''}" \
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

    def pin(self, names: frozenset[str]) -> None:
        """``names`` (every LoRA the channels of this device use now) stay loaded until unpinned, however
        long they sit idle: the render thread folds them without reading a file. No IO (event loop)."""
        with self._lock:
            self._pinned = frozenset(names)

    def load(self, name: str) -> LoraFile:
        """The file's deltas, checked against the model; cached until the file changes. A file
        removed since it was loaded keeps its loaded deltas (warned once): folded, it stays usable."""
        try:
            path = self._path(name)
            stat = path.stat()
        except (ValidationError, OSError) as exc:
            with self._lock:
                kept = self._loaded.get(name)
            if kept is None:
                raise exc if isinstance(exc, ValidationError) else _error(f"LoRA {name!r} cannot be read: {exc}") \
                    from None
            if name not in self._gone_warned:
                self._gone_warned.add(name)
                log.warning("LoRA %s: its file is gone (%s); the weights loaded before stay in use", name, exc)
            return kept
        self._gone_warned.discard(name)
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._loaded.get(name)
            if cached is not None and cached.stamp == stamp:
                self._keep(name)
                return cached
        self.reads[threading.current_thread().name] += 1  # tests: the render thread never reads a file
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
        """``name`` the most recently used; beyond the pinned files and ``LOADED_KEPT`` others the least
        recently used go, except those the render thread folded within ``in_use_s``. Pinned files
        (a channel's LoRAs) never go: evicted, they would be read again on the render thread at that
        channel's next frame. ``name`` itself stays: its change pins it once it commits. Under ``_lock``."""
        self._loaded.move_to_end(name)
        now = time.monotonic()
        unpinned = [n for n in self._loaded if n != name and n not in self._pinned]
        for old in unpinned[:max(0, len(unpinned) + (name not in self._pinned) - LOADED_KEPT)]:
            if now - self._used.get(old, -self.in_use_s) >= self.in_use_s:
                del self._loaded[old]
                self._used.pop(old, None)

    def cached(self, name: str) -> LoraFile:
        """A loaded file, for the render thread. Loaded there only if a change skipped the loader
        (it never should: the gate loads and pins every channel's LoRAs; ``reads`` counts it, and
        it is logged)."""
        with self._lock:
            found = self._loaded.get(name)
            self._used[name] = time.monotonic()
        if found is None:
            log.warning("LoRA %s was not loaded before its frame: reading it on the %s thread", name,
                        threading.current_thread().name)
            found = self.load(name)
        return found

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


def _to_peft(component: str, state: dict, pipe) -> dict:
    """diffusers' own conversion of old diffusers/kohya-converted keys to PEFT's lora_A/lora_B."""
    from diffusers.utils.state_dict_utils import (
        convert_state_dict_to_diffusers,
        convert_state_dict_to_peft,
        convert_unet_state_dict_to_peft,
    )

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
        folded = {lora.name: lora for lora, _ in self._folder.active}  # kept, even if their files went away
        active = tuple((self.catalog.cached(name) if name not in folded or self.catalog.ready([name])
                        else folded[name], weight) for name, weight in loras)
        self._folder.fold(active)
        self.applied = loras
        return tuple((f.name, f.stamp, w) for f, w in active if f.text_encoder)
