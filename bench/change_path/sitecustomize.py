"""Stamps along a change's path inside a daemon that ``bench/change_path.py`` starts (through ``latency``).

Python imports ``sitecustomize`` at start-up from ``PYTHONPATH``; in a ``serve`` process this wraps a few
methods of the daemon's own code (the working directory's ``bridge``) to record when each starts and
ends (``time.perf_counter``), and writes the stamps to ``$CHANGE_PATH_OUT`` (JSON) when the daemon exits.
Any other process (the latency tool itself) is left alone. A measuring aid, not part of the daemon.
"""

import atexit
import json
import os
import sys
import time
from pathlib import Path

# (module, class, method, tag): the OSC handler, its parse and its door, the render loop's hand-over, the
# render thread's job, the shared-memory publication, and a CLIP prompt's warnings where the family has them
WRAPPED = (
    ("bridge.frontends.osc.server", "OscServer", "datagram_received", "datagram"),
    ("bridge.frontends.osc.server", "OscServer", "_change_set", "parse"),
    ("bridge.engine.changes", "ChangeDoor", "apply_now", "apply"),
    ("bridge.pipeline.families.sd_unet", "ClipPromptLength", "__call__", "warnings"),
    ("bridge.engine.render_queue", "RenderQueue", "submit", "submit"),
    ("bridge.engine.scheduler", "Scheduler", "_take", "take"),
    ("bridge.engine.render_queue", "RenderQueue", "_render", "render"),
    ("bridge.outputs.shm", "ShmWriter", "publish", "publish"),
)


def _wrap(cls, name: str, tag: str, stamps: list) -> None:
    method = getattr(cls, name)

    def stamped(*args, **kwargs):
        stamps.append((tag + ">", time.perf_counter()))
        try:
            return method(*args, **kwargs)
        finally:
            stamps.append((tag + "<", time.perf_counter()))

    setattr(cls, name, stamped)


def _install(out: str) -> None:
    import importlib

    sys.path.insert(0, os.getcwd())  # the daemon's code is the working directory's, as ``python -m bridge`` runs it
    stamps: list = []
    for module, cls, name, tag in WRAPPED:
        try:
            _wrap(getattr(importlib.import_module(module), cls), name, tag, stamps)
        except (ImportError, AttributeError) as exc:  # a family or method this checkout lacks: not stamped
            print(f"change_path: {module}.{cls}.{name} not stamped: {exc}", file=sys.stderr)
    atexit.register(lambda: Path(out).write_text(json.dumps(stamps)))


if "serve" in sys.argv and os.environ.get("CHANGE_PATH_OUT"):
    _install(os.environ["CHANGE_PATH_OUT"])
