"""Which torch is installed and what it can run on: one line at start when ``--device`` and the
installed torch disagree, instead of a traceback from deep inside torch.

A CPU-only torch with ``--device cuda`` is refused; a GPU that sits unused (``--device cpu`` on a
machine with CUDA, or a CPU-only torch on a machine with an NVIDIA driver) is worth a warning.
Called on the start path (``bridge.app.renderers``, the ``bench`` command), never at import.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ...core.errors import ConfigError

SETUP = "docs/setup.md"  # where the install lines for CUDA and CPU-only machines are
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass(frozen=True)
class TorchBuild:
    """What the installed torch is and what it sees (read once at start)."""

    version: str  # torch.__version__, e.g. "2.13.0+cpu"
    cuda: str | None  # torch.version.cuda: None for a CPU-only build
    gpus: tuple[str, ...]  # the names of the CUDA devices torch sees, in index order
    nvidia_driver: bool  # an NVIDIA driver is installed, whether or not torch can use it

    @classmethod
    def current(cls) -> TorchBuild:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return cls(torch.__version__, torch.version.cuda, tuple(torch.cuda.get_device_name(i) for i in range(count)),
                   _nvidia_driver())


def _nvidia_driver() -> bool:
    if sys.platform.startswith("linux") and Path("/proc/driver/nvidia/version").exists():
        return True
    return shutil.which("nvidia-smi") is not None  # Windows installs it with the driver


def check_device(build: TorchBuild, requested: str | None, device: str) -> str | None:
    """Raise ``ConfigError`` when ``device`` cannot run on ``build``; return a warning line when a
    GPU sits unused, else None. ``requested``: the ``--device`` value as given (None: the default)."""
    option = f"--device {requested}" if requested else f"the default device ({device})"
    if device.startswith("cuda"):
        if build.cuda is None:
            raise ConfigError(f"{option}: this torch ({build.version}) is a CPU-only build. Install a CUDA build of "
                              f"torch that matches your NVIDIA driver (see {SETUP}), or use --device cpu")
        if not build.gpus:
            driver = "an NVIDIA driver is installed: is it new enough for" if build.nvidia_driver else \
                "no NVIDIA driver was found: install one that supports"
            raise ConfigError(f"{option}: torch {build.version} finds no CUDA device ({driver} CUDA {build.cuda}? "
                              "nvidia-smi tells); use --device cpu")
        index = device.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= len(build.gpus)):
            seen = ", ".join(f"cuda:{i} {name}" for i, name in enumerate(build.gpus))
            raise ConfigError(f"{option}: torch sees {len(build.gpus)} CUDA device(s): {seen}")
        return None
    if device != "cpu":
        return None
    if build.gpus:
        return (f"{option}: rendering on the CPU while the CUDA GPU {build.gpus[0]} sits unused "
                "(drop --device to use it)")
    if build.nvidia_driver and build.cuda is None:
        return (f"an NVIDIA driver is installed but this torch ({build.version}) is a CPU-only build: rendering on the "
                f"CPU. Install a CUDA build of torch to use the GPU (see {SETUP})")
    if build.nvidia_driver:
        return (f"torch {build.version} (CUDA {build.cuda}) finds no CUDA device although an NVIDIA driver is "
                f"installed (older than CUDA {build.cuda}?): rendering on the CPU")
    return None
