"""TOPs that compute their image from another TOP: the Select TOP and the Fit TOP.

Checked against derivative.ca: Select TOP (``top``: the TOP to fetch, from anywhere), Fit TOP
("re-sizes its input to the resolution set on the Common Page using the method specified in the
Fit parameter menu"), the TOPs' Common page (``outputresolution``: useinput, eighth, quarter,
half, 2x, 4x, 8x, fit, limit, custom; ``resolutionw``/``resolutionh``; ``resmult``), OP Class
(``cook(force=False)``: "Cook the contents of the operator if required"; ``totalCooks``).

Cooking is pull-based, as in TouchDesigner: a filter cooks when it is cooked or its image is
asked for (``numpyArray``), first pulling its source, and only when the source's image changed
since (a cook, a Movie File In frame, a Script TOP's copy outside its cook) or one of its own
parameters did; each such cook counts in ``totalCooks``. What the stand-in
does not model: TouchDesigner samples on the GPU with the input's filter (linear, mipmaps); here
each output pixel takes the input pixel under its centre (nearest), so pixels match TD's only in
size and layout, never bit for bit. The Global Resolution Multiplier is 1 (``resmult`` changes
nothing). Fit modes other than ``fill`` raise: the plugin uses Fill only, and a stand-in that
guessed the letterboxing of the others would check nothing.
"""

from __future__ import annotations

import numpy as np

from .ops import TOP
from .pars import TdError, check_main

RESOLUTIONS = ["useinput", "eighth", "quarter", "half", "2x", "4x", "8x", "fit", "limit", "custom"]
FITS = ["fill", "fithorz", "fitvert", "fitbest", "fitoutside", "nativeres"]
FACTORS = {"eighth": 0.125, "quarter": 0.25, "half": 0.5, "2x": 2.0, "4x": 4.0, "8x": 8.0}
COMMON = {"outputresolution": ("Menu", "useinput", RESOLUTIONS), "resolutionw": ("Int", 256),
          "resolutionh": ("Int", 256), "resmult": ("Toggle", True)}


class _Filter(TOP):
    """A TOP whose image comes from ``_source()`` when it cooks."""

    def __init__(self, env, parent, name):
        super().__init__(env, parent, name)
        self._cooked_for: tuple | None = None  # (source, its image changes, our parameters) at the last cook

    def _source(self) -> TOP | None:
        raise NotImplementedError

    def _compute(self, source: TOP | None) -> np.ndarray | None:
        raise NotImplementedError

    def _state(self, source) -> tuple:
        pars = tuple(par._val for par in self._pars.values())
        return (None if source is None else source.id, None if source is None else source.image_changes, pars)

    def cook(self, force: bool = False, recurse: bool = False) -> None:
        check_main(f"{self.path}.cook")
        source = self._source()
        if source is not None:
            source._pull()  # upstream first: a filter of a filter
        state = self._state(source)
        if force or state != self._cooked_for:
            self._cooked_for = state
            self.cook_count += 1
            self._texture = self._compute(source)

    def _pull(self) -> None:
        self.cook()

    @property
    def width(self) -> int:
        self._pull()
        return super().width

    @property
    def height(self) -> int:
        self._pull()
        return super().height


class selectTOP(_Filter):
    """Fetches the image of the TOP named by ``top`` (a path, or an OP: stored as its path)."""

    builtin = {"top": ("TOP", ""), **COMMON}

    def _source(self):
        return self.par.top.eval()

    def _compute(self, source):
        return None if source is None else source._texture


class fitTOP(_Filter):
    """Its input (connector 0) re-sized to the Common page's resolution by the Fit menu's method."""

    builtin = {"fit": ("Menu", "fitbest", FITS), **COMMON}

    def _source(self):
        return self.inputs[0] if self.inputs else None

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The Common page's Output Resolution for an input of ``width`` x ``height``."""
        mode = self.par.outputresolution._val
        w, h = self.par.resolutionw._val, self.par.resolutionh._val
        if mode == "useinput":
            return width, height
        if mode in FACTORS:
            return max(1, round(width * FACTORS[mode])), max(1, round(height * FACTORS[mode]))
        if mode == "custom":
            return w, h
        scale = min(w / width, h / height)  # fit: grow or shrink into w x h; limit: shrink only
        if mode == "limit" and scale >= 1:
            return width, height
        return max(1, round(width * scale)), max(1, round(height * scale))

    def _compute(self, source):
        if source is None or source._texture is None:
            return None
        if self.par.fit._val != "fill":
            raise TdError(f"{self.path}: the stand-in models Fit 'fill' only, not {self.par.fit._val!r}")
        image = source._texture
        height, width = image.shape[:2]
        out_w, out_h = self.output_size(width, height)
        if (out_w, out_h) == (width, height):
            return image
        rows = ((np.arange(out_h) + 0.5) * height / out_h).astype(np.intp)  # nearest, at pixel centres
        cols = ((np.arange(out_w) + 0.5) * width / out_w).astype(np.intp)
        return np.ascontiguousarray(image[rows][:, cols])
