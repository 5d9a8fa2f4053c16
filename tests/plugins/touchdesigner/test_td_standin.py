"""The TouchDesigner stand-in checks what TouchDesigner's documentation says TD checks.

The plugin tests are only as good as ``td_standin``; these pin down its rules (each one's
doc page is in plugins/touchdesigner/README.md, "Tested against a stand-in").
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import td_standin

OP = td_standin.OP_TYPES


def script_top(td, name: str = "t", on_cook: str = "scriptOp.copyNumpyArray(ARRAY)"):
    top = td.project.create(OP["scriptTOP"], name)
    top.par.callbacks.eval().text = f"ARRAY = None\n\ndef onCook(scriptOp):\n    {on_cook}\n"
    return top, top.par.callbacks.eval().module


def test_copy_numpy_array_takes_height_width_channels_only():
    td = td_standin.TouchDesigner()
    top, module = script_top(td)
    sizes = {}
    for array in (np.zeros((4, 6, 4), np.uint8), np.zeros((4, 6, 3), np.uint16), np.zeros((4, 6, 4), np.float32)):
        module.ARRAY = array
        top.cook(force=True)
        sizes[array.dtype.name] = (top.width, top.height, top.numpyArray().shape)
    assert top.copies == 3 and sizes["uint8"] == (6, 4, (4, 6, 4))
    assert sizes["uint16"][2] == (4, 6, 4)  # three channels become RGBA, alpha 1
    bad = [np.zeros((4, 6), np.float32), np.zeros((4, 6, 1), np.uint8), np.zeros((4, 6, 2), np.uint8),
           np.zeros((4, 6, 4), np.float64), np.zeros((4, 6, 4), np.int32), np.zeros((4, 6, 5), np.uint8),
           np.zeros((24,), np.uint8), np.zeros((1, 4, 6, 4), np.uint8), np.zeros((0, 6, 4), np.uint8),
           [[0, 0], [0, 0]]]
    for array in bad:
        module.ARRAY = array
        with pytest.raises(td_standin.TdError, match="copyNumpyArray"):
            top.cook(force=True)
    with pytest.raises(td_standin.TdError, match="only during the TOP's cook"):
        top.copyNumpyArray(np.zeros((2, 2, 4), np.uint8))
    top.par.modoutsidecook = True
    top.copyNumpyArray(np.full((2, 2, 4), 255, np.uint8))
    assert top.numpyArray().dtype == np.float32 and top.numpyArray().max() == 1.0 and top.copies == 4


def test_a_cook_that_copies_nothing_leaves_no_image():
    td = td_standin.TouchDesigner()
    top, module = script_top(td, on_cook="if ARRAY is not None: scriptOp.copyNumpyArray(ARRAY)")
    module.ARRAY = np.full((2, 3, 4), 7, np.uint8)
    top.cook(force=True)
    assert (top.width, top.height) == (3, 2)
    module.ARRAY = None
    top.cook(force=True)  # no page says the texture survives this: the stand-in assumes it does not
    assert top.numpyArray() is None and top.width == 0


def test_numpy_array_gives_the_tops_channels_and_delayed_lags_one_call():
    td = td_standin.TouchDesigner()
    video = td.project.create(OP["moviefileinTOP"], "video")
    mono = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    video.play(mono)
    assert video.numpyArray().shape == (3, 4, 1)
    assert np.array_equal(np.round(video.numpyArray() * 255).astype(np.uint8), mono)
    video.play(np.zeros((3, 4, 2), np.uint8))
    assert video.numpyArray().shape == (3, 4, 2)
    assert video.numpyArray(delayed=True) is None  # the download was only started
    video.play(np.ones((3, 4, 2), np.uint8))
    assert video.numpyArray(delayed=True).max() == 0.0  # the previous call's download
    assert video.numpyArray(delayed=True).max() == np.float32(1 / 255)


def test_select_and_fit_tops_cook_when_pulled_and_only_when_required():
    """A Select TOP fetches a TOP by path, a Fit TOP re-sizes its input (Common page resolution,
    Fill); both cook when cooked or downloaded, and only when their source or parameters changed."""
    td = td_standin.TouchDesigner()
    video = td.project.create(OP["moviefileinTOP"], "video")
    select = td.project.create(OP["selectTOP"], "select")
    fit = td.project.create(OP["fitTOP"], "fit")
    fit.inputConnectors[0].connect(select)
    select.par.top, fit.par.fit = video, "fill"
    picture = np.arange(4 * 6 * 4, dtype=np.uint8).reshape(4, 6, 4)
    video.play(picture)
    assert video.totalCooks == 1 and fit.totalCooks == 0  # nothing asked for the Fit TOP's image yet
    fit.cook()
    fit.cook()  # nothing changed: not required
    assert fit.totalCooks == 1 and np.array_equal(fit._texture, picture)  # Use Input
    fit.par.outputresolution, fit.par.resolutionw, fit.par.resolutionh = "custom", 3, 2
    fit.cook()
    assert fit.totalCooks == 2 and np.array_equal(fit._texture, picture[[1, 3]][:, [1, 3, 5]])  # pixel centres
    video.play(picture + 1)
    assert np.array_equal(np.round(fit.numpyArray() * 255), picture[[1, 3]][:, [1, 3, 5]] + 1)  # pulled
    assert fit.totalCooks == 3 and select.totalCooks == 2  # the Fit TOP's own parameters do not cook its source
    fit.par.outputresolution, fit.par.resolutionw, fit.par.resolutionh = "limit", 3, 3
    assert (fit.width, fit.height) == (3, 2)  # shrunk into 3 x 3, aspect kept
    fit.par.resolutionw = fit.par.resolutionh = 100
    assert (fit.width, fit.height) == (6, 4)  # Limit never grows
    with pytest.raises(td_standin.TdError, match="menu names"):
        fit.par.outputresolution = "double"
    fit.par.fit = "fitbest"
    with pytest.raises(td_standin.TdError, match="models Fit 'fill' only"):
        fit.cook()


def test_create_renumbers_a_taken_name():
    td = td_standin.TouchDesigner()
    first = td.project.create(OP["tableDAT"], "status")
    second = td.project.create(OP["tableDAT"], "status")
    third = td.project.create(OP["tableDAT"], "top2")
    fourth = td.project.create(OP["tableDAT"], "top2")
    assert [first.name, second.name, third.name, fourth.name] == ["status", "status1", "top2", "top3"]
    assert td.project.op("status1") is second


def test_a_pulse_cooks_the_script_top_after_its_callback():
    td = td_standin.TouchDesigner()
    top, module = script_top(td, on_cook="ORDER.append('cook')")
    module.ORDER = []
    module.onSetupParameters = lambda op: module.ORDER.append("setup")
    top.par.setuppars.pulse()
    assert module.ORDER == ["setup", "cook"] and top.cook_count == 1


def test_a_cook_reading_a_table_cooks_again_when_the_table_changes():
    td = td_standin.TouchDesigner()
    table = td.project.create(OP["tableDAT"], "status")
    table.appendRow(["seq", "0"])
    top, _ = script_top(td, on_cook="op('status')['seq', 1]")
    top.cook(force=True)
    td.run_frame()
    assert top.cook_count == 1  # nothing it read changed
    table["seq", 1] = "1"
    td.run_frame()
    assert top.cook_count == 2
    loop, _ = script_top(td, "loop", on_cook="c = op('status')['seq', 1]; c.val; op('status')['seq', 1] = "
                                            "str(int(c.val) + 1)")
    loop.cook(force=True)
    for _ in range(3):
        td.run_frame()
    assert loop.cook_count == 4  # a cook that writes what it reads cooks every frame


def test_custom_parameters_follow_touchdesigner_rules_and_threads_are_refused():
    td = td_standin.TouchDesigner()
    comp = td.project.create(OP["baseCOMP"], "c")
    page = comp.appendCustomPage("Page")
    for bad in ("prompt", "My_par", "MyPar", "1st"):
        with pytest.raises(td_standin.TdError, match="invalid custom parameter name"):
            page.appendStr(bad)
    assert [p.name for p in page.appendInt("Ports", size=3)] == ["Ports1", "Ports2", "Ports3"]
    steps = page.appendInt("Steps")[0]
    steps.min, steps.clampMin, steps.max, steps.clampMax = 1, True, 4, True
    comp.par.Steps = 9
    assert comp.par.Steps.eval() == 4
    with pytest.raises(td_standin.TdError, match="read-only"):
        steps.help = "how many steps"
    with pytest.raises(AttributeError):
        comp.par.Nosuchpar  # noqa: B018
    errors = []
    worker = threading.Thread(target=lambda: errors.append(_raises(lambda: comp.par.Steps.eval())))
    worker.start()
    worker.join()
    assert errors == [True]  # TD objects are main-thread only


def test_int_parameters_are_bounded_and_strings_keep_64_bit_seeds():
    td = td_standin.TouchDesigner()
    page = td.project.create(OP["baseCOMP"], "c").appendCustomPage("Page")
    number, text = page.appendInt("Number")[0], page.appendStr("Text")[0]
    number.val = 2**31 - 1
    for too_wide in (2**31, 2**64 - 1, -(2**31) - 1):
        with pytest.raises(td_standin.TdError, match="does not fit an Int parameter"):
            number.val = too_wide
    assert number.eval() == 2**31 - 1
    text.val = 2**64 - 1
    assert int(text.eval()) == 2**64 - 1


def _raises(action) -> bool:
    try:
        action()
    except td_standin.TdError:
        return True
    return False
