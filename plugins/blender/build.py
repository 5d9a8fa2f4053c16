"""Build the installable Blender extension: the add-on plus a copy of the bridge client.

    python plugins/blender/build.py              # writes dist/turbo_bridge-<version>.zip
    python plugins/blender/build.py --out DIR

The zip holds the files of ``turbo_bridge/`` at its root (as Blender's own
``blender --command extension build`` lays it out) and ``_bridge/``, a copy of
``bridge/client/`` (stdlib + numpy), so the add-on needs no pip inside Blender.
Install it with Edit > Preferences > Get Extensions > Install from Disk.
"""

from __future__ import annotations

import argparse
import re
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "turbo_bridge"
REPO = HERE.parents[1]
CLIENT = REPO / "bridge" / "client"  # self-contained: stdlib + numpy, its wire format included
VENDOR_INIT = '"""A copy of bridge/client/, made by plugins/blender/build.py."""\n'


def manifest_field(name: str) -> str:
    text = (SOURCE / "blender_manifest.toml").read_text(encoding="utf-8")
    match = re.search(rf'^{name}\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise ValueError(f"blender_manifest.toml has no {name!r}")
    return match.group(1)


def source_files() -> list[Path]:
    """The add-on's own files: the manifest and every module (no caches, no vendored copy)."""
    files = [SOURCE / "blender_manifest.toml", *sorted(SOURCE.glob("*.py"))]
    return [f for f in files if f.is_file()]


def build(out_dir: Path) -> Path:
    """Write the extension zip into ``out_dir`` and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{manifest_field('id')}-{manifest_field('version')}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in source_files():
            archive.write(path, path.name)
        archive.writestr("_bridge/__init__.py", VENDOR_INIT)
        for path in sorted(CLIENT.glob("*.py")):
            archive.write(path, f"_bridge/client/{path.name}")
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="output folder (default: dist/)")
    args = parser.parse_args(argv)
    print(build(args.out))


if __name__ == "__main__":
    main()
