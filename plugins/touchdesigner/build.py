"""Make a standalone TouchDesigner plugin folder and zip: the plugin plus a vendored bridge.client.

    python plugins/touchdesigner/build.py [--out DIR]

writes DIR/turbo-bridge-touchdesigner/ (setup_network.py, README.md, turbo_bridge_td/ with
_vendor/client/, a copy of bridge/client/) and DIR/turbo-bridge-touchdesigner.zip.
Default DIR: plugins/touchdesigner/dist. A repository checkout needs no build: setup_network.py
then imports bridge.client from the checkout.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
NAME = "turbo-bridge-touchdesigner"
CLIENT = REPO / "bridge" / "client"  # self-contained: stdlib + numpy, its wire format included


def build(out: Path) -> Path:
    """Create ``out/NAME`` (replacing an older build) and its zip; returns the folder."""
    target = out / NAME
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(HERE / "turbo_bridge_td", target / "turbo_bridge_td",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_vendor"))
    for name in ("setup_network.py", "README.md"):
        shutil.copy2(HERE / name, target / name)
    vendor = target / "turbo_bridge_td" / "_vendor"
    vendor.mkdir()
    (vendor / "__init__.py").write_text('"""bridge/client/, copied by build.py; do not edit."""\n')
    shutil.copytree(CLIENT, vendor / "client", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.make_archive(str(out / NAME), "zip", root_dir=out, base_dir=NAME)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "dist", help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    target = build(args.out)
    sys.stdout.write(f"built {target} and {target}.zip\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
