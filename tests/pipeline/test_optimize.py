"""Progress lines while compiling: the graphs Dynamo compiled are counted, so a long cold start moves.
The renderer's default tuning keeps cuDNN's benchmark off: frames must not depend on the thread."""

import logging

import pytest

torch = pytest.importorskip("torch")

from bridge.pipeline.speed.optimize import Tuning, prepare_modules, progress  # noqa: E402


def test_the_compile_progress_counts_the_graphs_compiled(caplog):
    caplog.set_level(logging.INFO, logger="bridge.pipeline.speed.optimize")
    f = torch.compile(lambda x: x.cos() + 1, fullgraph=True, dynamic=False)
    g = torch.compile(lambda x: x.sin() * 3, fullgraph=True, dynamic=False)
    with progress("compiling two", every=3600, compiling=True):
        f(torch.randn(4))
        g(torch.randn(4))
    assert caplog.messages[0] == "compiling two ..."
    assert caplog.messages[-1].startswith("compiling two: done in ") and "(2 graph(s) compiled)" in caplog.messages[-1]
    with progress("compiled already", every=3600, compiling=True):
        f(torch.randn(4))  # a cache hit in this process: nothing compiled, and the count says so
    assert "(0 graph(s) compiled)" in caplog.messages[-1]
    with progress("not compiling", every=3600):
        pass
    assert "graph" not in caplog.messages[-1]


def test_the_default_tuning_turns_cudnn_benchmark_off_so_frames_do_not_depend_on_the_thread():
    """Issue 31: with the benchmark on, each render thread times cuDNN's engines itself (torch keeps
    the plans per thread) and may keep one that rounds differently, so the same params would give
    other pixels on another thread, device or start."""
    flags = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cudnn.benchmark = True  # as a bench run with --cudnn-benchmark on leaves it
        prepare_modules([], torch.device("cuda"))  # a CUDA renderer's preparation with Tuning() (flags only)
        assert torch.backends.cudnn.benchmark is False
        prepare_modules([], torch.device("cuda"), Tuning(cudnn_benchmark=True))
        assert torch.backends.cudnn.benchmark is True  # still a knob the bench measures
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
