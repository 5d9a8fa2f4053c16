#!/usr/bin/env bash
# From the project's venv: the wheels a GPU device call carries (the device image has torch, transformers, aiohttp and peft, but not
# diffusers, python-osc or PyAV; Python 3.12): downloaded here into .whl/ (git-ignored: add `/.whl/` and
# `/.whl-ray/` to .git/info/exclude once). Then each call carries ".whl" and starts with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site:$PWD
#
#   bench/device_wheels.sh          diffusers, python-osc, av (about 42 MB)
#   bench/device_wheels.sh ray      also .whl-ray/: Ray for tests/cluster and `latency -- --cluster ray`, its
#                                   Java jars and its libraries for training, tuning, serving, data and RL
#                                   left out (a device call carries 64 MiB at most; Ray's wheel is 79 MB),
#                                   with the needs the device image lacks (jsonschema and its own), and
#                                   diffusers and python-osc: a cluster call (`gpu_session.sh cluster`)
#                                   carries .whl-ray alone (47 MB; with .whl's PyAV it would not fit)
set -euo pipefail
cd "$(dirname "$0")/.."
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
get() {  # get FOLDER NAME==VERSION...
    local folder=$1
    shift
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${PLATFORMS[@]}" -d "$folder" "$@"
}
version() { python -c "import importlib.metadata as m; print(m.version('$1'))"; }

mkdir -p .whl
get .whl "diffusers==$(version diffusers)" "python-osc==$(version python-osc)" "av==$(version av)"
if [[ "${1:-}" == ray ]]; then
    mkdir -p .whl-ray
    get .whl-ray jsonschema jsonschema-specifications referencing rpds-py attrs \
        "diffusers==$(version diffusers)" "python-osc==$(version python-osc)"
    tmp=$(mktemp -d)
    get "$tmp" "ray==$(version ray)"
    python - "$tmp"/ray-*.whl .whl-ray <<'PY'
import sys, zipfile
from pathlib import Path

source, folder = Path(sys.argv[1]), Path(sys.argv[2])
DROP = ("ray/jars/", "ray/rllib/", "ray/tune/", "ray/train/", "ray/serve/", "ray/data/", "ray/llm/")
with zipfile.ZipFile(source) as zin, zipfile.ZipFile(folder / source.name, "w", zipfile.ZIP_DEFLATED) as zout:
    for item in zin.infolist():
        if item.filename.startswith(DROP):
            continue
        data = zin.read(item.filename)
        if item.filename.endswith(".dist-info/RECORD"):  # no entry for a file the wheel no longer has
            data = b"".join(line for line in data.splitlines(keepends=True)
                           if not line.decode().startswith(DROP))
        zout.writestr(item, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
print(f"{folder / source.name}: {(folder / source.name).stat().st_size / 1e6:.1f} MB")
PY
    rm -rf "$tmp"
fi
du -sh .whl .whl-ray 2>/dev/null || true
