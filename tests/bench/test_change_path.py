"""bench/change_path.py: a real daemon (null model) stamped along each change's path, its steps summed."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_step_of_a_lone_change_is_stamped_for_each_datagram(tmp_path):
    done = subprocess.run([sys.executable, "bench/change_path.py", "--model", "null", "--count", "30", "--rate", "50",
                           "--", "--cache-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    datagrams = int(re.search(r"^(\d+) datagrams$", done.stdout, re.M).group(1))
    assert datagrams >= 30  # the latency tool's warm-up changes come first
    steps = [line for line in lines if ": p50 " in line and "(n " in line]
    assert len(steps) == 8 and all(line.endswith(f"(n {datagrams})") for line in steps), lines
    # the null renderer has no CLIP prompt: no warnings step; the whole path to the render is given
    assert "of which the prompt's warnings (tokenizing): none" in lines
    assert re.search(r"^datagram to render start: p50 \d+ us", done.stdout, re.M)
