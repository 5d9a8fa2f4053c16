"""The torch check at start: a CPU-only torch meeting --device cuda is one line (exit 2), and a GPU
sitting unused is a warning. The GPU cases are described to the check (this machine has none); the
CPU-only case runs for real, through the command line."""

import os
import signal
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from bridge.core.errors import ConfigError  # noqa: E402
from bridge.pipeline.loading.devices import TorchBuild, check_device  # noqa: E402

CPU_ONLY = TorchBuild("2.13.0+cpu", None, (), nvidia_driver=False)
CPU_ONLY_ON_A_GPU_MACHINE = TorchBuild("2.13.0+cpu", None, (), nvidia_driver=True)
CUDA_NO_DEVICE = TorchBuild("2.13.0+cu130", "13.0", (), nvidia_driver=True)
CUDA_NO_DRIVER = TorchBuild("2.13.0+cu130", "13.0", (), nvidia_driver=False)
ONE_GPU = TorchBuild("2.13.0+cu130", "13.0", ("NVIDIA H100 80GB HBM3",), nvidia_driver=True)


@pytest.mark.parametrize("build, requested, device, says", [
    (CPU_ONLY, "cuda", "cuda", "--device cuda: this torch (2.13.0+cpu) is a CPU-only build"),
    (CPU_ONLY, "cuda:1", "cuda:1", "CPU-only build"),
    (CUDA_NO_DEVICE, "cuda", "cuda",
     "finds no CUDA device (an NVIDIA driver is installed: is it new enough for CUDA 13.0"),
    (CUDA_NO_DRIVER, "cuda", "cuda", "no NVIDIA driver was found"),
    (ONE_GPU, "cuda:1", "cuda:1", "torch sees 1 CUDA device(s): cuda:0 NVIDIA H100 80GB HBM3"),
    (ONE_GPU, "cuda:x", "cuda:x", "torch sees 1 CUDA device(s)"),
])
def test_a_device_this_torch_cannot_use_is_refused_in_one_line(build, requested, device, says):
    with pytest.raises(ConfigError) as refused:
        check_device(build, requested, device)
    assert says in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("build, requested, device, says", [
    (ONE_GPU, "cpu", "cpu", "--device cpu: rendering on the CPU while the CUDA GPU NVIDIA H100 80GB HBM3 sits unused"),
    (CPU_ONLY_ON_A_GPU_MACHINE, None, "cpu", "an NVIDIA driver is installed but this torch (2.13.0+cpu) is a CPU-only"),
    (CUDA_NO_DEVICE, None, "cpu", "finds no CUDA device although an NVIDIA driver is installed"),
])
def test_a_gpu_sitting_unused_is_a_warning(build, requested, device, says):
    warning = check_device(build, requested, device)
    assert warning is not None and says in warning and "\n" not in warning


@pytest.mark.parametrize("build, requested, device", [
    (CPU_ONLY, None, "cpu"), (CPU_ONLY, "cpu", "cpu"), (ONE_GPU, None, "cuda"), (ONE_GPU, "cuda:0", "cuda:0"),
    (CUDA_NO_DRIVER, None, "cpu"),
])
def test_a_matching_device_says_nothing(build, requested, device):
    assert check_device(build, requested, device) is None


def test_the_installed_torch_is_read_as_it_is():
    build = TorchBuild.current()
    assert build.version == torch.__version__ and build.cuda == torch.version.cuda
    assert len(build.gpus) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)


@pytest.mark.skipif(torch.version.cuda is not None, reason="needs a CPU-only torch build")
@pytest.mark.parametrize("command", [["serve", "--model", "demo", "--http-port", "0", "--osc-port", "0",
                                      "--shm-name", ""],
                                     ["bench", "--model", "demo", "--no-baseline"],
                                     ["latency", "--model", "demo", "--", "--device", "cuda"]])
def test_cuda_on_a_cpu_only_torch_stops_the_command_in_one_line(command, tmp_path):
    device = [] if command[0] == "latency" else ["--device", "cuda"]
    done = subprocess.run([sys.executable, "-m", "bridge", *command, *device], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "TURBO_BRIDGE_CACHE": str(tmp_path)})
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "is a CPU-only build" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_cpu_on_a_gpu_machine_says_the_gpu_sits_unused(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve", "--model", "demo", "--device", "cpu",
                             "--http-port", "0", "--osc-port", "0", "--shm-name", "", "--width", "64",
                             "--height", "64"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "TURBO_BRIDGE_CACHE": str(tmp_path)})
    lines = []
    try:
        for line in proc.stderr:  # until ready (or the end of its log)
            lines.append(line)
            if "ready: http://" in line:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert any("ready: http://" in line for line in lines), "".join(lines)
    unused = [line for line in lines if "sits unused" in line]
    assert len(unused) == 1 and "--device cpu: rendering on the CPU while the CUDA GPU" in unused[0], "".join(lines)
