"""What a channel's next frame is made of: the params and their version, the images that steer the
frames (the input for image-to-image, a control image per ControlNet, the style image) and the
glide in progress.

Every change that alters the next frame bumps the version and wakes the render loop; an image
with the current content, or one the params leave inactive (scale or strength 0), does not.
``Scheduler`` (bridge.engine.scheduler) is this state plus the render loop that renders it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ..core.controls import active as active_controls
from ..core.params import GLIDE_FIELDS, Limits, Params
from ..core.scene import Glide, InputImage, Scene


@dataclass
class Stats:
    """A channel's counters (``/v1/health``): changes, frames, render errors, images taken."""

    changes: int = 0
    rejected: int = 0
    frames: int = 0
    render_errors: int = 0
    last_error: str | None = None  # stays after recovery
    failing: bool = False  # the last render failed; a good frame clears it
    last_stages_ms: dict[str, float] = field(default_factory=dict)
    inputs: int = 0  # input images accepted with new content
    inputs_unchanged: int = 0  # input images skipped: same content as the current one
    controls: int = 0  # control images accepted with new content
    controls_unchanged: int = 0  # control images skipped: same content as that name's current one
    styles: int = 0  # style images accepted with new content
    styles_unchanged: int = 0  # style images skipped: same content as the current one


class Transition:
    """A glide over ``frames`` frames; ``step`` hands out each frame's ``Glide`` in turn."""

    def __init__(self) -> None:
        self._token = 0
        self._frames = 0
        self._done = 0

    @property
    def active(self) -> bool:
        return self._done < self._frames

    def start(self, frames: int) -> None:
        self._token += 1
        self._frames, self._done = frames, 0

    def cancel(self) -> None:
        self._frames = self._done = 0

    def step(self) -> Glide | None:
        if not self.active:
            return None
        self._done += 1
        return Glide(self._token, self._done / self._frames)


class ChannelState:
    """The params + version, the steering images and the glide; ``_wake`` is set by every new version."""

    def __init__(self, initial: Params, limits: Limits):
        self._limits = limits
        self._params = initial
        self._input: InputImage | None = None
        self._controls: dict[str, InputImage] = {}  # control image per ControlNet name
        self._style: InputImage | None = None  # the IP-Adapter's style image
        self._transition = Transition()
        self._version = 1
        self._wake = asyncio.Event()
        self.stats = Stats()

    @property
    def params(self) -> Params:
        return self._params

    @property
    def version(self) -> int:
        return self._version

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def input(self) -> InputImage | None:
        return self._input

    @property
    def input_active(self) -> bool:
        """Whether frames are rendered from the input image (image-to-image) now."""
        return self._input is not None and self._params.input and self._params.strength > 0

    @property
    def transition_active(self) -> bool:
        return self._transition.active

    def _change(self, merged: Params) -> None:
        """Make ``merged`` (not the current params) the state, as a new version."""
        if any(getattr(merged, name) != getattr(self._params, name) for name in GLIDE_FIELDS):
            # A newer change mid-glide starts a new glide from wherever the frames have got to.
            if merged.transition_frames > 0:
                self._transition.start(merged.transition_frames)
            else:
                self._transition.cancel()
        self._params = merged
        self._bump()

    def set_input(self, image: InputImage) -> bool:
        """Make ``image`` the input; False (and no new frame) when its content is the current one's."""
        if self._input is not None and self._input.digest == image.digest:
            self.stats.inputs_unchanged += 1
            return False
        self._input = image
        self.stats.inputs += 1
        if self.input_active:
            self._bump()
        return True

    def clear_input(self) -> bool:
        """Back to text-to-image; False when there was no input."""
        if self._input is None:
            return False
        was_active = self.input_active
        self._input = None
        if was_active:
            self._bump()
        return True

    def control(self, name: str) -> InputImage | None:
        return self._controls.get(name)

    def control_active(self, name: str) -> bool:
        """Whether ControlNet ``name`` steers the frames now (an image set and a scale above 0)."""
        return name in self._controls and name in active_controls(self._params.controls)

    def set_control(self, name: str, image: InputImage) -> bool:
        """Make ``image`` the control image of ``name``; False (no new frame) for the current content."""
        current = self._controls.get(name)
        if current is not None and current.digest == image.digest:
            self.stats.controls_unchanged += 1
            return False
        self._controls[name] = image
        self.stats.controls += 1
        if self.control_active(name):
            self._bump()
        return True

    def clear_control(self, name: str) -> bool:
        """Drop the control image of ``name``; False when there was none."""
        if name not in self._controls:
            return False
        was_active = self.control_active(name)
        del self._controls[name]
        if was_active:
            self._bump()
        return True

    @property
    def style(self) -> InputImage | None:
        return self._style

    @property
    def style_active(self) -> bool:
        """Whether the style image steers the frames now (an image set and style_scale above 0)."""
        return self._style is not None and self._params.style_scale > 0

    def set_style(self, image: InputImage) -> bool:
        """Make ``image`` the style image; False (no new frame, no image encoding) for the current content."""
        if self._style is not None and self._style.digest == image.digest:
            self.stats.styles_unchanged += 1
            return False
        self._style = image
        self.stats.styles += 1
        if self.style_active:
            self._bump()
        return True

    def clear_style(self) -> bool:
        """Drop the style image; False when there was none."""
        if self._style is None:
            return False
        was_active = self.style_active
        self._style = None
        if was_active:
            self._bump()
        return True

    def _scene(self) -> Scene:
        """The images of the next frame, and its step of the glide (taking it)."""
        controls = tuple((name, self._controls[name]) for name in active_controls(self._params.controls)
                         if name in self._controls)
        return Scene(self._input if self.input_active else None, self._transition.step(), controls,
                     self._style if self.style_active else None)

    def _bump(self) -> None:
        self._version += 1
        self._wake.set()
