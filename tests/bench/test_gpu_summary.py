"""bench/gpu_summary.py: the summary a GPU session brings back, from the files the session left (junit XML,
bench and latency JSON), as the device call's last output."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "docs" / "runs"

PASSING = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest" errors="0"
failures="0" skipped="1" tests="3" time="12.6"><testcase classname="t" name="a" time="1"/><testcase classname="t"
name="b" time="1"/><testcase classname="t" name="c" time="0"><skipped message="needs two GPUs"/></testcase>
</testsuite></testsuites>"""
FAILING = """<?xml version="1.0" encoding="utf-8"?><testsuite name="pytest" errors="1" failures="1" skipped="0"
tests="4" time="101.4"><testcase classname="t" name="d" time="1"><failure message="assert 1 == 2">trace</failure>
</testcase><testcase classname="t" name="e[x]" time="1"><error message="fixture broke">trace</error></testcase>
<testcase classname="t" name="f" time="1"/><testcase classname="t" name="g" time="1"/></testsuite>"""


def summary(folder: Path) -> list[str]:
    done = subprocess.run([sys.executable, "bench/gpu_summary.py", str(folder)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_a_session_folder_gives_each_kind_its_table_and_the_machine_and_steps(tmp_path):
    (tmp_path / "junit-test_a.xml").write_text(PASSING)
    (tmp_path / "junit-test_b.xml").write_text(FAILING)
    shutil.copy(RUNS / "bench-h100-sdxl-tiny-lanes-s12.json", tmp_path / "bench-lanes.json")
    shutil.copy(RUNS / "bench-h100-lone-sd-tiny-s16.json", tmp_path / "bench-lone.json")
    shutil.copy(RUNS / "latency-h100-lone-sd-tiny-on-s16.json", tmp_path / "latency-lone-on.json")
    lone = json.loads((RUNS / "latency-h100-lone-sd-tiny-on-s16.json").read_text())  # as a run since 7d5f2e7 writes it
    (tmp_path / "latency-lone-on2.json").write_text(json.dumps(
        {**lone, "lone_batches": {"lone_collected_here": 198, "lone_handed_over": 2}}))
    (tmp_path / "gpu.txt").write_text("NVIDIA H100 80GB HBM3, 580.159.04, 81559 MiB\n")
    (tmp_path / "steps.txt").write_text("test_a rc=0 13s\ntest_b rc=1 102s\n")
    lines = summary(tmp_path)

    at = lines.index("== GPU tests")
    assert lines[at + 1:at + 8] == [
        "| test file | passed | failed | errors | skipped | s |",
        "| --- | --- | --- | --- | --- | --- |",
        "| test_a | 2 | 0 | 0 | 1 | 13 |",
        "| test_b | 2 | 1 | 1 | 0 | 101 |",
        "|   FAILED d: assert 1 == 2 |  |  |  |  |  |",
        "|   FAILED e[x]: fixture broke |  |  |  |  |  |",
        "| all | 4 | 1 | 1 | 1 |  |"]
    assert "| 512 | tiny | prompt | off | 12.90 | 77.5 | 14.24 | 12.90 | - | 16.0 | 37.28 | - |" in lines
    assert "| bf16 | tiny | 512 | on | 8.166 | 8.496 | 1.224 | 6.966 | 5.918 | 1.046 | 0.310 | 1002 | " \
           "begin 1.732, collect 0.726, (no range) 0.078 |" in lines  # the lone rows, report.py's own table
    assert "latency-lone-on: OSC->frame p50 9.24 ms, p99 9.67, render 8.03, start to ready 29.4 s (imports 2.93, " \
           "setup 3.68, model 7.2, warm_up 14.73)" in lines
    assert "latency-lone-on2: OSC->frame p50 9.24 ms, p99 9.67, render 8.03, start to ready 29.4 s (imports 2.93, " \
           "setup 3.68, model 7.2, warm_up 14.73); lone batches 198 collected on the render thread, " \
           "2 handed over" in lines
    assert lines[lines.index("== machine") + 1] == "NVIDIA H100 80GB HBM3, 580.159.04, 81559 MiB"
    steps = lines.index("== steps (rc 124: cut by its time limit)")
    assert lines[steps + 1:] == ["test_a rc=0 13s", "test_b rc=1 102s"]
    assert "== kernels by stage" not in lines and "== probes" not in lines  # no such files: no section


def test_every_table_has_as_many_cells_in_each_row_as_in_its_header(tmp_path):
    (tmp_path / "junit-test_b.xml").write_text(FAILING)
    for name in ("bench-h100-sdxl-tiny-lanes-s12.json", "bench-h100-lone-sd-tiny-s16.json",
                 "kernels-h100-sdxs-s5.json"):
        shutil.copy(RUNS / name, tmp_path / name)
    lines, tables, width = summary(tmp_path), 0, None
    for line in lines:
        if not line.startswith("|"):
            width = None
            continue
        cells = line.count("|") - 1
        if width is None:  # a header: the rule under it
            width, tables = cells, tables + 1
        assert cells == width, line
    assert tables >= 4  # tests, bench, kernels, lone


def test_an_empty_folder_prints_nothing_but_does_not_fail(tmp_path):
    assert summary(tmp_path) == []


def test_channels_runs_with_and_without_the_together_phase_each_get_their_line(tmp_path):
    shutil.copy(RUNS / "channels4-h100-batchvae-tiny-overlap-on-s9.json", tmp_path / "channels4-new.json")
    shutil.copy(RUNS / "channels4-h100-full-overlap-on-s8.json", tmp_path / "channels4-old.json")  # before S9's fields
    lines = summary(tmp_path)
    new = next(line for line in lines if line.startswith("channels4-new: "))
    old = next(line for line in lines if line.startswith("channels4-old: "))
    assert "; together: " in new and new.endswith("(overlap True)")
    assert "together" not in old and old.endswith("(overlap not recorded)")
    assert " 4 channels " in old and "per channel {" in old
