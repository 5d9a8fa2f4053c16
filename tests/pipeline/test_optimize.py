"""Progress lines while compiling: the graphs Dynamo compiled are counted, so a long cold start moves."""

import logging

import pytest

torch = pytest.importorskip("torch")

from bridge.pipeline.speed.optimize import progress  # noqa: E402


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
