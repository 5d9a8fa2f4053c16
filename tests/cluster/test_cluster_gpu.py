"""On a CUDA machine (opt-in: ``-m gpu``): a local cluster's renderer worker takes the GPU, and its frames
are the frames of ``--device cuda`` for the same parameters (the same compiled graphs, one process away)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ray", reason="the cluster extra: pip install -e '.[cluster]'")

from conftest import unique_shm_name
from ray_daemons import ClusterDaemon

pytestmark = pytest.mark.gpu


def frame(cache_dir, *args):
    daemon = ClusterDaemon(cache_dir, unique_shm_name(), "--model", "demo", *args, timeout=900)
    try:
        version = daemon.patch("main", {"prompt": "a lighthouse at dusk", "seed": 42})
        return daemon.health(), daemon.frame_of("main", version, timeout=300)[2]
    finally:
        assert daemon.stop(timeout=120) == 0


def test_a_cluster_worker_renders_on_the_gpu_the_frames_of_device_cuda(cache_dir):
    health, through_ray = frame(cache_dir, "--cluster", "ray", "--cluster-workers", "1")
    assert health["cluster"]["gpus"] >= 1 and [w["device"] for w in health["workers"]] == ["cuda"]
    _, local = frame(cache_dir, "--device", "cuda")
    # The same compiled graphs on the same card: equal, or within one 8-bit level on a few values.
    difference = np.abs(through_ray.astype(int) - local.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01
