"""``--compile-artifacts on``: the compiler's portable cache ("mega-cache") in one file per setup.

``torch.compiler.save_cache_artifacts()`` serialises every compile artefact this process made or
found (Inductor's FX graphs and their Triton kernels, AOTAutograd's graphs, autotuning results);
``load_cache_artifacts()`` puts them back into those caches before the first compile. On the
machine that wrote it, the on-disk caches in ``cache_dir/compile`` already hold the same things;
the file is for a machine or container whose caches are empty (copy one file instead of the
folders), and it is tied to the torch version, the GPU and the model setup, which its name
records. Dynamo still traces the model after a load: this saves compiling, not tracing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


class CompileArtifacts:
    """One artefact file in ``cache_dir/compile/artifacts``; load before compiling, save after."""

    def __init__(self, cache_dir: Path, setup: dict):
        """``setup``: what the compiled graphs depend on (model, VAE, dtype, device, ...); part of the name."""
        setup = {**setup, "torch": torch.__version__}
        digest = hashlib.sha256(json.dumps(setup, sort_keys=True, default=str).encode()).hexdigest()[:16]
        readable = re.sub(r"[^A-Za-z0-9.]+", "-",
                          f"{Path(str(setup.get('model', 'model'))).name}-{setup.get('vae', '')}")
        self.path = Path(cache_dir) / "compile" / "artifacts" / f"{readable.strip('-')[:60]}-{digest}.bin"
        self.setup = setup
        self._saved_bytes = 0

    @classmethod
    def for_renderer(cls, cache_dir: Path, model: str, vae: str, dtype: torch.dtype, device: str,
                     **more) -> CompileArtifacts:
        dev = torch.device(device)
        return cls(cache_dir, {"model": model, "vae": vae, "dtype": str(dtype), "device": _device_name(dev), **more})

    def load(self) -> bool:
        """Load the file into the compiler's caches, if there is one; False otherwise (nothing to do)."""
        if not self.path.is_file():
            log.info("compile artefacts: none yet at %s (written after the first compile)", self.path)
            return False
        start = time.perf_counter()
        data = self.path.read_bytes()
        try:
            info = torch.compiler.load_cache_artifacts(data)  # None for a file it cannot read (logged by torch)
        except Exception as exc:  # a file of another torch build: compile as without one, rewrite it after
            info, why = None, f"{type(exc).__name__}: {str(exc)[:200]}"
        else:
            why = "torch could not read it"
        if info is None:
            log.warning("compile artefacts %s not loaded (%s); compiling without them", self.path, why)
            return False
        self._saved_bytes = len(data)
        kinds = {kind: len(keys) for kind, keys in getattr(info, "artifacts", {}).items()} if info else {}
        log.info("compile artefacts: %.1f MB loaded from %s in %.1f s (%s)", len(data) / 1e6, self.path,
                 time.perf_counter() - start, ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "empty")
        return True

    def save(self) -> int:
        """Write what this process compiled or loaded so far (atomically); the bytes written, 0 if unchanged."""
        start = time.perf_counter()
        out = torch.compiler.save_cache_artifacts()
        if out is None or not out[0] or len(out[0]) == self._saved_bytes:
            return 0  # nothing new since the last save or load (artefacts only accumulate)
        data = out[0]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")
        partial.write_bytes(data)
        os.replace(partial, self.path)
        self._saved_bytes = len(data)
        log.info("compile artefacts: %.1f MB written to %s in %.1f s", len(data) / 1e6, self.path,
                 time.perf_counter() - start)
        return len(data)
