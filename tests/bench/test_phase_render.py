"""A phase's figures from two ``/v1/health`` replies (bridge/bench/phase_render.py), on made-up replies."""

import pytest

from bridge.bench.phase_render import batch_rows, overlapping, phase_render


def device(name: str, rounds: int, batches: int, frames: int, sizes: dict[str, int], busy_s: float,
           overlap: bool = False) -> dict:
    return {"name": name, "rounds": rounds, "batches": batches, "frames": frames, "batch_sizes": sizes,
            "busy_s": busy_s, "overlap": overlap, "channels": ["main"], "load": 1}


BEFORE = {"devices": [device("cuda:0", 10, 12, 20, {"1": 6, "2": 4, "3": 2}, 3.0),
                      device("cuda:1", 5, 5, 5, {"1": 5}, 1.0)]}
AFTER = {"devices": [device("cuda:0", 14, 17, 38, {"1": 6, "2": 4, "3": 4, "4": 3}, 5.0),
                     device("cuda:1", 7, 7, 7, {"1": 7}, 1.5),
                     device("cuda:2", 1, 1, 10, {"10": 1}, 0.25)]}  # a device that came during the phase


def test_a_phase_counts_only_what_grew_between_its_replies():
    p = phase_render(BEFORE, AFTER, 2.0, frames_seen=31)
    assert (p.frames, p.rounds, p.batches, p.frames_seen) == (18 + 2 + 10, 4 + 2 + 1, 5 + 2 + 1, 31)
    # Sizes that did not grow are left out; rows sort as numbers ("10" after "4").
    assert list(p.batch_rows.items()) == [("1", 2), ("3", 2), ("4", 3), ("10", 1)]
    assert sum(int(rows) * n for rows, n in p.batch_rows.items()) == p.frames
    assert p.mean_rows_per_batch == 3.75
    assert p.mean_batches_in_flight == {"cuda:0": 1.0, "cuda:1": 0.25, "cuda:2": 0.125}


def test_a_phase_without_frames_has_no_batches_and_no_rows():
    p = phase_render(AFTER, AFTER, 1.0, frames_seen=0)
    assert (p.frames, p.batches, p.batch_rows, p.mean_rows_per_batch) == (0, 0, {}, 0.0)
    assert set(p.mean_batches_in_flight.values()) == {0.0}


def test_the_warm_up_rows_and_the_overlap_come_from_the_replies():
    assert batch_rows(BEFORE, AFTER) == phase_render(BEFORE, AFTER, 1.0, 0).batch_rows
    assert not overlapping(AFTER)
    assert overlapping({"devices": [device("cuda:0", 0, 0, 0, {}, 0.0, overlap=True)]})


def test_a_phase_of_no_time_is_refused_with_its_value():
    with pytest.raises(ValueError, match="wall_s=0"):
        phase_render(BEFORE, AFTER, 0.0, frames_seen=0)
