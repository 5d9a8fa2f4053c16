"""Build the Krita plugin so it works without pip: the plugin plus its copy of bridge.client.

    python plugins/krita/build.py                        # dist/turbo_bridge_krita.zip
    python plugins/krita/build.py --install ~/.local/share/krita/pykrita

The zip is what Krita's Tools > Scripts > Import Python Plugin from File... takes; ``--install``
copies the same files into a pykrita folder. ``bridge/client/`` (stdlib + numpy) goes into
``turbo_bridge/_vendor/bridge/client/``, which the plugin imports first.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PACKAGE = "turbo_bridge"
CLIENT = REPO / "bridge" / "client"  # self-contained: stdlib + numpy, its wire format included
VENDOR_INIT = '"""bridge.client (bridge/client/), copied from turbo-bridge by plugins/krita/build.py."""\n'


def plugin_files() -> dict[str, bytes]:
    """Archive path -> contents, for everything the plugin folder needs."""
    files = {f"{PACKAGE}.desktop": (HERE / f"{PACKAGE}.desktop").read_bytes()}
    for path in sorted((HERE / PACKAGE).glob("*.py")):
        files[f"{PACKAGE}/{path.name}"] = path.read_bytes()
    files[f"{PACKAGE}/_vendor/__init__.py"] = b""
    files[f"{PACKAGE}/_vendor/bridge/__init__.py"] = VENDOR_INIT.encode()
    for path in sorted(CLIENT.glob("*.py")):
        files[f"{PACKAGE}/_vendor/bridge/client/{path.name}"] = path.read_bytes()
    return files


def directories(names) -> list[str]:
    """Every folder above ``names``, as zip directory entries (``turbo_bridge/``, ...), parents first."""
    found = {"/".join(parts[:i]) + "/" for parts in (name.split("/") for name in names) for i in range(1, len(parts))}
    return sorted(found)


def build_zip(out: Path) -> Path:
    """Krita's importer (``plugin_importer.py``, ``get_source_module``) finds the plugin by its folder's
    own directory entry, ``turbo_bridge/``: without one it says "No plugins found in archive"."""
    out.parent.mkdir(parents=True, exist_ok=True)
    files = plugin_files()
    now = time.localtime()[:6]
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder in directories(files):
            entry = zipfile.ZipInfo(folder, now)  # a name ending in "/" is a directory entry
            entry.external_attr = (0o40755 << 16) | 0x10  # drwxr-xr-x and MS-DOS's directory flag, as zip -r
            archive.writestr(entry, b"")
        for name, data in files.items():
            entry = zipfile.ZipInfo(name, now)
            entry.external_attr = 0o100644 << 16  # rw-r--r-- when unpacked by hand (writestr's default: rw-------)
            archive.writestr(entry, data, zipfile.ZIP_DEFLATED)
    return out


def install(pykrita: Path) -> Path:
    """Copy the plugin into a pykrita folder, replacing an older copy."""
    shutil.rmtree(pykrita / PACKAGE, ignore_errors=True)
    for name, data in plugin_files().items():
        target = pykrita / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return pykrita / PACKAGE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist" / "turbo_bridge_krita.zip", help="zip to write")
    parser.add_argument("--install", type=Path, metavar="PYKRITA_DIR", help="copy into this pykrita folder instead")
    args = parser.parse_args(argv)
    if args.install:
        print(f"installed {install(args.install.expanduser())}")
    else:
        print(f"wrote {build_zip(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
