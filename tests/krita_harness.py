"""Shared by the Krita plugin tests: the stand-in as the ``krita`` module, the plugin on the path,
and helpers that pump Qt until a condition holds. Fixtures (``qapp``, ``new_doc``, ``panel``,
``demo_daemon``) are in conftest.py.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
TESTS = Path(__file__).resolve().parent
PLUGIN_DIR = TESTS.parent / "plugins" / "krita"
if str(PLUGIN_DIR) not in sys.path:
    sys.path.insert(0, str(PLUGIN_DIR))

import krita_standin  # noqa: E402

sys.modules.setdefault("krita", krita_standin)  # what Krita gives its plugins

import turbo_bridge  # noqa: E402,F401  (registers the docker, as in Krita)
from turbo_bridge.layer import REFERENCE_NAME  # noqa: E402
from turbo_bridge.qt import QtWidgets  # noqa: E402

KRITA = krita_standin.Krita.instance()


def pump(until, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        QtWidgets.QApplication.processEvents()
        if until():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def settled(panel, demo_daemon) -> bool:
    """The layer shows the daemon's newest frame, rendered from its newest parameters."""
    current = panel.controller.current
    if current is None or panel.controller._pending is not None:
        return False
    newest = demo_daemon.client.frame(after=current.seq - 1, timeout=5)
    return newest.seq == current.seq and newest.version == demo_daemon.client.params()["version"]


def type_prompt(panel, demo_daemon, text: str) -> None:
    panel.prompt.setPlainText(text)
    pump(lambda: demo_daemon.client.params()["prompt"] == text, what="the prompt to reach the daemon")
    pump(lambda: settled(panel, demo_daemon), what="the frame of that prompt in the layer")


def daemon_frame_bgra(demo_daemon, seq: int) -> np.ndarray:
    frame = demo_daemon.client.frame(after=seq - 1, timeout=5)
    assert frame.seq == seq, "the daemon moved on; the test needs it idle"
    return frame.pixels[..., [2, 1, 0, 3]]


def layer_bytes(doc, name: str = REFERENCE_NAME) -> np.ndarray:
    node = doc.nodeByName(name)
    assert node is not None, f"no layer {name!r}"
    return np.frombuffer(bytes(node.pixelData(0, 0, doc.width(), doc.height())), np.uint8).reshape(
        doc.height(), doc.width(), 4)
