"""Where the plugin's imports come from; stdlib only, so setup_network.py can import it first.

TouchDesigner's Python sees its own stdlib and numpy, nothing of this repository: the plugin
folder and (in a checkout, where ``bridge.client`` is not vendored) the repository root must be
on ``sys.path`` before anything imports ``turbo_bridge_td.network``.
"""

from __future__ import annotations

import os


def import_paths(plugin_dir: str) -> list[str]:
    """The folders the plugin needs on sys.path: the plugin, plus the repository root when
    ``bridge.client`` is not vendored (a checkout, not a build.py folder)."""
    plugin_dir = os.path.abspath(plugin_dir)
    paths = [plugin_dir]
    if not os.path.exists(os.path.join(plugin_dir, "turbo_bridge_td", "_vendor", "client", "__init__.py")):
        repo = os.path.dirname(os.path.dirname(plugin_dir))
        if os.path.exists(os.path.join(repo, "bridge", "client", "__init__.py")):
            paths.append(repo)
    return paths
