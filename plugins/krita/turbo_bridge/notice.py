"""Registering the docker, and the docker that only explains why the plugin cannot start.

Imports nothing beyond Qt, so it works when numpy is missing."""

from __future__ import annotations

from .qt import QtWidgets

DOCKER_ID = "turbo_bridge_docker"
HINT = ("turbo-bridge needs numpy in Krita's Python. Linux packages: install python3-numpy. "
        "Krita's own builds (Windows, macOS, AppImage) ship without it: see the plugin's README.")


def register_notice(krita, error: Exception) -> None:
    text = f"{HINT}\n\n({type(error).__name__}: {error})" if "numpy" in str(error) else \
        f"turbo-bridge could not start: {type(error).__name__}: {error}"

    class TurboBridgeNotice(krita.DockWidget):
        def __init__(self):
            super().__init__()
            self.setWindowTitle("turbo-bridge")
            label = QtWidgets.QLabel(text)
            label.setWordWrap(True)
            self.setWidget(label)

        def canvasChanged(self, canvas):  # noqa: N802 (Krita's name)
            pass

    add_docker(krita, TurboBridgeNotice)


def add_docker(krita, docker_class) -> None:
    """Register ``docker_class`` on the right of every window (PyQt5 or PyQt6 enum spelling)."""
    base = krita.DockWidgetFactoryBase
    position = getattr(base, "DockRight", None) or base.DockPosition.DockRight
    krita.Krita.instance().addDockWidgetFactory(krita.DockWidgetFactory(DOCKER_ID, position, docker_class))
