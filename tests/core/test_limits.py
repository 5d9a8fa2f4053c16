"""What the daemon's start fixes beyond the parameters' bounds: the rows a frame costs the model."""

import pytest

from bridge.core.limits import Limits


def test_a_frame_costs_two_rows_only_under_classifier_free_guidance_on():
    assert [Limits().rows(guidance) for guidance in (0.0, 0.5, 7.5)] == [1, 2, 2]
    # A model that embeds guidance (SANA-Sprint) runs one row whatever its value.
    assert [Limits(guidance_mode="embedded").rows(guidance) for guidance in (1.0, 4.5, 30.0)] == [1, 1, 1]


def test_an_unknown_guidance_mode_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"one of cfg, embedded \(how the model's denoiser takes guidance\), "
                                         r"got 'classifier-free'"):
        Limits(guidance_mode="classifier-free")
