"""The Qt binding, chosen at runtime: PyQt6 in Krita 6, PyQt5 in Krita 5.

Krita imports its own binding before it loads plugins, so whichever is already loaded wins:
loading the other one into the same process would mix two Qt versions. Outside Krita (tests,
the build step) ``TURBO_BRIDGE_QT`` picks one, else PyQt5 then PyQt6, whichever imports.
"""

from __future__ import annotations

import importlib
import os
import sys

BINDINGS = ("PyQt6", "PyQt5")


def choose_binding() -> str:
    loaded = [name for name in BINDINGS if name + ".QtCore" in sys.modules]
    if loaded:
        return loaded[0]
    wanted = os.environ.get("TURBO_BRIDGE_QT")
    if wanted:
        if wanted not in BINDINGS:
            raise ImportError(f"TURBO_BRIDGE_QT={wanted!r}: expected one of {', '.join(BINDINGS)}")
        return wanted
    for name in ("PyQt5", "PyQt6"):
        try:
            importlib.import_module(name + ".QtCore")
            return name
        except ImportError:
            continue
    raise ImportError("turbo-bridge's Krita plugin needs PyQt5 (Krita 5) or PyQt6 (Krita 6)")


BINDING = choose_binding()
QtCore = importlib.import_module(BINDING + ".QtCore")
QtGui = importlib.import_module(BINDING + ".QtGui")
QtWidgets = importlib.import_module(BINDING + ".QtWidgets")
Signal = QtCore.pyqtSignal
QT_VERSION = QtCore.QT_VERSION_STR
