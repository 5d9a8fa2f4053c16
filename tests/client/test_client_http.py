"""``bridge.client.HttpClient`` against a real daemon process (the demo model)."""

import pytest

from td_harness import CHEAP


def test_frame_of_version_waits_for_that_version_and_says_when_it_never_comes(demo_daemon):
    client = demo_daemon.client
    version = client.patch(CHEAP)["version"]  # what td_harness.idle leaves: no state for later tests
    frame = client.frame_of_version(version)
    assert frame.version >= version and (frame.width, frame.height) == (64, 64)
    with pytest.raises(TimeoutError, match=f"no frame of params version {version + 1000} within 0.5 s"):
        client.frame_of_version(version + 1000, timeout=0.5)  # a version no change made
