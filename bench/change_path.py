"""Where a lone OSC change's time goes inside the daemon, before and after its render, on this machine.

Runs ``turbo-bridge latency`` (a real daemon, real UDP and shared memory) with ``change_path/sitecustomize.py``
stamping the daemon's OSC handler, its parts, the hand-over to the render thread, the render and the
publication; then prints each step's median over the changes (microseconds). Run it from the checkout
to measure (its ``bridge`` is the daemon's), e.g. before and after a change to the path:

    OMP_NUM_THREADS=1 python bench/change_path.py --model demo --size 128 --count 300 --rate 20

``OMP_NUM_THREADS=1`` leaves the second core of a 2-core machine to the event loop while the CPU renders.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# (from, to, label): consecutive stamps of one change, as the daemon passes them
STEPS = (
    ("datagram>", "parse>", "sender check and OSC parse"),
    ("parse>", "parse<", "addresses to a change set"),
    ("apply>", "apply<", "the door: check, warnings, commit"),
    ("warnings>", "warnings<", "of which the prompt's warnings (tokenizing)"),
    ("datagram<", "submit>", "to the render loop's submit"),
    ("submit>", "take>", "to the round taking the state"),
    ("take>", "render>", "to the render thread's start"),
    ("render>", "publish>", "the render"),
    ("publish>", "publish<", "the publication into shared memory"),
)


def changes(stamps: list) -> list[dict]:
    """The stamps of each datagram, up to the next (the first stamp of each tag)."""
    out, current = [], None
    for tag, at in stamps:
        if tag == "datagram>":
            current = {}
            out.append(current)
        if current is not None:
            current.setdefault(tag, at)
    return out


def summary(stamps: list) -> list[str]:
    found = changes(stamps)
    lines = [f"{len(found)} datagrams"]
    for start, end, label in STEPS:
        spans = [(c[end] - c[start]) * 1e6 for c in found if start in c and end in c]
        lines.append(f"{label}: " + (f"p50 {statistics.median(spans):.0f} us (n {len(spans)})" if spans else "none"))
    whole = [(c["render>"] - c["datagram>"]) * 1e6 for c in found if "render>" in c]
    if whole:
        lines.append(f"datagram to render start: p50 {statistics.median(whole):.0f} us, "
                     f"mean {statistics.fmean(whole):.0f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("serve", nargs="*", help="after --: serve options (e.g. --cache-dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "stamps.json"
        env = {**os.environ, "CHANGE_PATH_OUT": str(out),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent / "change_path"),
                                                           os.environ.get("PYTHONPATH")]))}
        cmd = [sys.executable, "-m", "bridge", "latency", "--model", args.model, "--size", str(args.size),
               "--count", str(args.count), "--rate", str(args.rate), "--", *args.serve]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        print(done.stdout.strip() or done.stderr.strip()[-2000:])  # latency's line, or why it failed
        if done.returncode != 0 or not out.exists():
            sys.exit(f"latency failed (rc {done.returncode}) or left no stamps")
        print("\n".join(summary(json.loads(out.read_text()))))


if __name__ == "__main__":
    main()
