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
SUPPORT = Path(__file__).resolve().parent
PLUGIN_DIR = SUPPORT.parents[1] / "plugins" / "krita"
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


# -- Krita's own "Tools > Scripts > Import Python Plugin from File..." ------------------------------
KRITA_IMPORTER = Path("/usr/share/krita/pykrita/plugin_importer/plugin_importer.py")  # Debian's krita-data


def kritas_importer():
    """Krita's importer module (``plugin_importer.py``) loaded on its own, as its docstring allows:
    it needs only the standard library and the ``i18n`` function Krita puts into builtins."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("krita_plugin_importer", KRITA_IMPORTER)
    module = importlib.util.module_from_spec(spec)
    module.i18n = lambda text: text
    spec.loader.exec_module(module)
    return module


def import_plugin_zip(archive: Path, resources_dir: Path) -> list[str]:
    """Install ``archive`` into ``resources_dir/pykrita`` as Krita's menu item does; the plugins' names."""
    resources_dir.mkdir(parents=True, exist_ok=True)  # Krita's resource folder always exists
    importer = kritas_importer().PluginImporter(str(archive), str(resources_dir), lambda plugin: True)
    return [plugin["name"] for plugin in importer.import_all()]


# -- the real Krita (the Debian package) under Xvfb, driven by tests/support/krita_real/tb_krita_e2e ----
def krita_missing() -> str | None:
    import shutil
    import subprocess

    if not (shutil.which("krita") and shutil.which("xvfb-run") and KRITA_IMPORTER.exists()):
        return "needs the krita and xvfb packages (apt-get install krita xvfb python3-pyqt5 python3-numpy)"
    probe = subprocess.run(["/usr/bin/python3", "-c", "import numpy, PyQt5.QtCore"], capture_output=True)
    return None if probe.returncode == 0 else "Krita's Python (Debian's python3) needs python3-numpy and python3-pyqt5"


def run_real_krita(tmp_path: Path, url: str, mode: str = "", timeout: float = 150) -> tuple[dict, Path, str]:
    """The built plugin and the driver plugin in a real Krita under Xvfb, against the daemon at
    ``url``; ``mode`` picks the driver's script (TB_E2E_MODE). Returns (report, out folder, stderr)."""
    import json
    import shutil
    import signal
    import subprocess

    sys.path.insert(0, str(PLUGIN_DIR))
    import build

    # installed the way the README tells users: the built zip through Krita's own importer
    assert import_plugin_zip(build.build_zip(tmp_path / "turbo_bridge_krita.zip"), tmp_path / "share" / "krita") \
        == ["turbo_bridge"]
    pykrita = tmp_path / "share" / "krita" / "pykrita"
    shutil.copytree(SUPPORT / "krita_real", pykrita, dirs_exist_ok=True)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "kritarc").write_text(  # plugins on; the docker's saved address: our daemon
        f"[python]\nenable_turbo_bridge=true\nenable_tb_krita_e2e=true\n\n[turbo_bridge]\naddress={url}\n")
    out = Path(os.environ.get("TB_KRITA_OUT") or tmp_path / "out")
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_DATA_HOME": str(tmp_path / "share"),
           "TB_E2E_URL": url, "TB_E2E_OUT": str(out), "TB_E2E_MODE": mode}
    env.pop("QT_QPA_PLATFORM", None)
    display = str(100 + os.getpid() % 800)  # -a alone races other Xvfb servers starting at :99
    proc = subprocess.Popen(["xvfb-run", "-a", "-n", display, "-s", "-screen 0 1600x1000x24", "krita", "--nosplash"],
                            env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    assert (out / "report.json").exists(), err[-3000:]
    return json.loads((out / "report.json").read_text()), out, err
