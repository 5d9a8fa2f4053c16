"""What the daemon rendered during one measured phase: the difference of two ``GET /v1/health``.

Each device's render queue (bridge/engine/render_queue.py) counts from the daemon's start: rounds,
batches, frames, batches by size and ``busy_s``. A phase's figures are those counters right after
it minus right before it, so the other phases, the warm-ups and the all-at-once bundles stay out.

Batch sizes are rows: the frames a batch really held (the queue's ``len(batch)``). The renderer pads
a batch to the next power of two (bridge/pipeline/render/batch.py, ``padded_size``), so a batch of
3 rows costs what a batch of 4 does.

``mean_batches_in_flight`` is each device's ``busy_s`` difference over the phase's wall time, and
what ``busy_s`` adds per batch depends on ``--overlap``:
- off (``RenderQueue``): the batch's time inside ``render_batch`` on the render thread, one batch
  at a time (publishing into the sinks not included): 0..1, the share of the phase that thread
  spent rendering;
- on (``OverlappingQueue``): the batch's span from its begin on the render thread to its pixels on
  the host as the publishing thread sees them, and up to ``MAX_IN_FLIGHT`` (2, core.renderer) batches overlap:
  0..2, the mean number of batches in flight, not how busy either thread was.
"""

from __future__ import annotations

from dataclasses import dataclass

COUNTERS = ("rounds", "batches", "frames", "busy_s")  # a device's health keys that only grow


@dataclass(frozen=True)
class PhaseRender:
    """One phase, all devices: the daemon's counters' differences and the loops' own frame count."""

    wall_s: float  # from the health reply before the phase to the request after it
    frames_seen: int  # frames the closed loops saw in their segments (counted apart from the daemon)
    frames: int  # frames the daemon rendered
    rounds: int
    batches: int
    batch_rows: dict[str, int]  # rows in a batch (real frames, before padding) -> batches
    mean_rows_per_batch: float  # frames / batches (0.0 without batches)
    mean_batches_in_flight: dict[str, float]  # per device: busy_s difference / wall_s (module docstring)


def _devices(health: dict) -> dict[str, dict]:
    return {device["name"]: device for device in health.get("devices", [])}


def batch_rows(before: dict, after: dict) -> dict[str, int]:
    """Batches by rows rendered between two health replies, all devices, smallest rows first."""
    old = _devices(before)
    rows: dict[int, int] = {}
    for name, device in _devices(after).items():
        earlier = old.get(name, {}).get("batch_sizes", {})
        for size, count in device.get("batch_sizes", {}).items():
            if grown := count - earlier.get(size, 0):
                rows[int(size)] = rows.get(int(size), 0) + grown
    return {str(size): rows[size] for size in sorted(rows)}


def phase_render(before: dict, after: dict, wall_s: float, frames_seen: int) -> PhaseRender:
    """The phase between health replies ``before`` and ``after``, ``wall_s`` apart."""
    if wall_s <= 0:
        raise ValueError(f"a phase lasts more than 0 s; got wall_s={wall_s}")
    old = _devices(before)
    grown = {name: {key: device.get(key, 0) - old.get(name, {}).get(key, 0) for key in COUNTERS}
             for name, device in _devices(after).items()}
    frames = sum(device["frames"] for device in grown.values())
    batches = sum(device["batches"] for device in grown.values())
    return PhaseRender(
        round(wall_s, 3), frames_seen, frames, sum(device["rounds"] for device in grown.values()), batches,
        batch_rows(before, after), round(frames / batches, 3) if batches else 0.0,
        {name: round(device["busy_s"] / wall_s, 3) for name, device in grown.items()})


LONE = ("lone_collected_here", "lone_handed_over")  # --overlap on: lone batches (engine/overlap_queue.py)


def lone_batches(before: dict, after: dict) -> dict[str, int] | None:
    """Lone batches between two health replies, all devices: collected on the render thread and handed to the
    publishing thread (a job arrived during the poll); None when no device counts them (``--overlap off``)."""
    old = _devices(before)
    counting = [(name, device) for name, device in _devices(after).items() if LONE[0] in device]
    if not counting:
        return None
    return {key: sum(device[key] - old.get(name, {}).get(key, 0) for name, device in counting) for key in LONE}


def overlapping(health: dict) -> bool:
    """Whether the daemon's render queues overlap batches (``--overlap on``): how to read busy_s."""
    return any(device.get("overlap", False) for device in health.get("devices", []))


def rows_text(rows: dict[str, int]) -> str:
    """``{"1": 5, "4": 2}`` as ``1: 5, 4: 2`` (rows: batches)."""
    return ", ".join(f"{size}: {count}" for size, count in rows.items()) or "none"


def format_phase(label: str, p: PhaseRender) -> str:
    in_flight = ", ".join(f"{name} {share:.2f}" for name, share in p.mean_batches_in_flight.items())
    return (f"    {label}: {p.frames} frames (the loops saw {p.frames_seen}) in {p.rounds} rounds, {p.batches} "
            f"batches of {p.mean_rows_per_batch:.2f} rows on average (rows: batches {rows_text(p.batch_rows)}); "
            f"batches in flight on average: {in_flight}")


def in_flight_meaning(overlap: bool) -> str:
    """What ``mean_batches_in_flight`` says with this ``--overlap`` (the module docstring, in one line)."""
    if overlap:
        return ("--overlap on: batches from begin to pixels on the host, up to 2 at once; "
                "not how busy the render thread was")
    return "--overlap off: the share of the phase the render thread spent rendering (0..1)"
