"""A sender's TOP, scaled on TouchDesigner's GPU and downloaded only when it changed.

For each sender (``ROLES``) the network holds a Select TOP ``<role>_select``, which fetches the
chosen TOP from anywhere, wired into a Fit TOP ``<role>_fit``, which re-sizes it (Fit: Fill) to
what the daemon uses. So an HD camera reaches Python at the frame's size, scaled by the GPU.

What a frame start costs the main thread: a few parameter reads, ``fit.cook()`` (TouchDesigner
cooks it only "if required", OP Class: when its input changed) and one ``totalCooks`` read. A
download (``numpyArray(delayed=True)``, which returns the download the previous call started)
is asked for when the Fit TOP cooked, and once more the frame after to collect that image.
Converting and writing the pixels is the uploader thread's work (``upload.py``).
"""

from __future__ import annotations

ROLES = ("input", "control1", "control2", "style")


def build(comp, optypes: dict, x: int, y: int) -> None:
    """The Select and Fit TOPs of every role, inside the control COMP (``network.build``)."""
    for i, role in enumerate(ROLES):
        select = comp.create(optypes["selectTOP"], f"{role}_select")
        fit = comp.create(optypes["fitTOP"], f"{role}_fit")
        fit.inputConnectors[0].connect(select)
        fit.par.fit = "fill"  # the daemon stretches to the frame too (diffusers' image processor)
        fit.par.resmult = False  # our resolution, not one scaled by the Global Resolution Multiplier
        select.nodeX, select.nodeY = x + 200 * i, y
        fit.nodeX, fit.nodeY = x + 200 * i, y - 150


def resolution(top_size: tuple[int, int], limit: tuple[int, int], keep_aspect: bool) -> tuple[str, int, int]:
    """The Fit TOP's Output Resolution (menu name, width, height) for a TOP of ``top_size``:
    stretched to ``limit`` when larger (the daemon stretches input and control images to the
    frame), or ``limit``-ed with its aspect kept (a style image: the image encoder crops it);
    never enlarged (the daemon scales small images up itself, and the download stays small)."""
    width, height = limit
    if keep_aspect:
        return "limit", width, height
    if top_size[0] > width or top_size[1] > height:
        return "custom", width, height
    return "useinput", width, height


class Downscaler:
    """The main thread's side of one role: keeps the Select/Fit pair pointed at the TOP and sized,
    and hands out each new image once (float32, rows bottom-first, as ``numpyArray`` gives it)."""

    def __init__(self, comp, role: str):
        self.comp, self.role = comp, role
        self.downloads = 0
        self._cooks: int | None = None  # the Fit TOP's totalCooks when its image was last asked for
        self._owed = False  # a delayed download of a new image was started and not collected yet

    def operators(self):
        """(select, fit), or None when the network has none (built by an older setup script)."""
        select, fit = self.comp.op(f"{self.role}_select"), self.comp.op(f"{self.role}_fit")
        return None if select is None or fit is None else (select, fit)

    def take(self, top, limit: tuple[int, int], keep_aspect: bool = False):
        """The TOP's newest image if it changed (one frame after it did), else None."""
        select, fit = self.operators()
        chosen = select.par.top.eval()
        if chosen is None or chosen.path != top.path:
            select.par.top = top.path
        wanted = resolution((top.width, top.height), limit, keep_aspect)
        par = fit.par
        if (par.outputresolution.eval(), par.resolutionw.eval(), par.resolutionh.eval()) != wanted:
            par.outputresolution, par.resolutionw, par.resolutionh = wanted
        fit.cook()
        cooks = fit.totalCooks
        fresh = cooks != self._cooks
        if not (fresh or self._owed):
            return None
        self._cooks, self._owed = cooks, fresh
        self.downloads += 1
        return fit.numpyArray(delayed=True)

    def forget(self) -> None:
        """The next ``take`` downloads again (a new uploader must get the current image)."""
        self._cooks, self._owed = None, False
