"""Canny on the torch side: edges where a shape's border is, one pixel wide, thresholds obeyed."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bridge.pipeline.steering.canny import canny  # noqa: E402


def square(value=200, size=48, lo=12, hi=36):
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[lo:hi, lo:hi] = value
    return torch.from_numpy(rgb)


def test_edges_trace_the_squares_border_and_nothing_else():
    edges = canny(square(), 100, 200).numpy()
    ys, xs = np.nonzero(edges)
    assert len(ys) > 4 * 20  # the whole border, not a few pixels
    # Every edge pixel is within one pixel of the border (rows/columns 11-12 or 35-36).
    near = lambda v: (np.abs(v - 11.5) <= 1) | (np.abs(v - 35.5) <= 1)  # noqa: E731
    assert (near(ys) | near(xs)).all()
    assert not edges[20:28, 20:28].any() and not edges[:5].any()  # flat inside and outside
    # Thin: along the left side, each row has at most 2 edge pixels in the band.
    band = edges[16:32, 8:16]
    assert (band.sum(axis=1) >= 1).all() and (band.sum(axis=1) <= 2).all()


def test_thresholds_decide_and_hysteresis_keeps_connected_weak_edges():
    faint = canny(square(value=30), 100, 200)
    assert not faint.any()  # gradient below both thresholds
    assert canny(square(value=30), 20, 40).any()
    # One edge whose contrast fades from left to right: strong on the left, weak on the right.
    rgb = np.zeros((48, 96, 3), np.uint8)
    rgb[24:] = np.linspace(220, 30, 96).astype(np.uint8)[None, :, None]
    fading = torch.from_numpy(rgb)
    strong_only = canny(fading, 300, 300).numpy()
    grown = canny(fading, 40, 300).numpy()
    right_end = lambda edges: np.nonzero(edges.any(axis=0))[0].max()  # noqa: E731
    assert 20 < right_end(strong_only) < 70
    assert right_end(grown) == 95 and grown.sum() == 96  # weak pixels kept where they touch the strong edge
    assert np.array_equal(grown, canny(fading, 40, 40).numpy())  # the whole edge is connected


def test_bad_thresholds_are_refused():
    with pytest.raises(ValueError, match="low <= high"):
        canny(square(), 200, 100)
