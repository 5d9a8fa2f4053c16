"""Shared by the Blender add-on tests: helpers that read the add-on's state and Blender's images.

The fixtures (``blender_daemon``, ``extension_zip``, ``installed``, ``ext``) are in conftest.py;
bpy is imported by the caller (the test modules skip when it cannot be).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import bpy
import numpy as np

from bridge.client import HttpClient

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "plugins" / "blender") not in sys.path:
    sys.path.insert(0, str(ROOT / "plugins" / "blender"))
import bpy_harness as harness  # noqa: E402  (a daemon process, the extension installed from its zip)
from bpy_harness import pump  # noqa: E402

REPO_MODULE = "tb_tests"
ADDON = f"bl_ext.{REPO_MODULE}.turbo_bridge"
__all__ = ["ADDON", "REPO_MODULE", "harness", "pump"]


DEMO_LORA = """
import sys, torch
from bridge.pipeline.loading.loader import load_pipeline
from lora_files import lora_layers, write_diffusers
cache, path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
write_diffusers(lora_layers(load_pipeline("demo", "cpu", torch.float32, cache), seed=seed, text=False), path)
"""


def write_demo_lora(cache_dir: Path, path: Path, seed: int) -> Path:
    """A random LoRA for the demo model, made in the daemon's Python (torch is there; the bpy
    process of an LTS venv has none)."""
    support = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(support), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([harness.daemon_python(), "-c", DEMO_LORA, str(cache_dir), str(path), str(seed)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return path


def http(blender_daemon) -> HttpClient:
    return HttpClient(blender_daemon.url)


def settings(address: str, transport: str = "AUTO", **params):
    s = bpy.context.scene.turbo_bridge
    s.live = False  # set everything quietly, then connect (which sends it all)
    s.address, s.transport = address, transport
    for name, value in {"width": 64, "height": 64, "steps": 1, "guidance": 0.0, **params}.items():
        setattr(s, name, value)
    s.live = True
    return s


def frame_current(ext, blender_daemon) -> bool:
    """The live image shows the daemon's newest state."""
    session = ext.live.current()
    return session.applied is not None and session.applied.version == http(blender_daemon).params()["version"]


def with_nodes(datablock):
    """A new material or world with its node tree: before Blender 5.0 only with use_nodes on."""
    if bpy.app.version < (5, 0, 0):
        datablock.use_nodes = True
    return datablock


def image_floats(image) -> np.ndarray:
    width, height = image.size
    buffer = np.empty(width * height * 4, np.float32)
    image.pixels.foreach_get(buffer)
    return buffer.reshape(height, width, 4)


def assert_shows(image, top_first_rgba8: np.ndarray) -> None:
    """The image holds exactly these pixels, bottom row first, as Blender's float RGBA."""
    expected = top_first_rgba8[::-1].astype(np.float32) / 255
    assert tuple(image.size) == (top_first_rgba8.shape[1], top_first_rgba8.shape[0])
    actual = image_floats(image)
    assert np.array_equal(np.rint(actual * 255).astype(np.uint8), top_first_rgba8[::-1])
    assert np.abs(actual - expected).max() < 1e-6
    assert not np.array_equal(top_first_rgba8, top_first_rgba8[::-1])  # the flip is observable
