"""Builds the whole turbo-bridge network in a COMP, so no binary .tox is needed.

``build(parent, plugin_dir, optypes)`` creates a Base COMP (the control COMP, with custom
parameters) holding the Script TOP and its callbacks, an Out TOP, the OSC Out and OSC In DATs,
the cue and status tables, the Execute / Parameter Execute DATs and a Select and a Fit TOP per
sent image (``downscale.py``). Every callback DAT holds a few lines that put the plugin folder
on ``sys.path`` and call into this package.
"""

from __future__ import annotations

from . import downscale, session
from .cues import header_row
from .inputs import CONTROL_SLOTS
from .paths import import_paths

OP_TYPES = ("baseCOMP", "scriptTOP", "outTOP", "selectTOP", "fitTOP", "textDAT", "tableDAT", "oscoutDAT",
            "oscinDAT", "executeDAT", "parameterexecuteDAT")
DEFAULT_PORTS = (8787, 9000, 9001)  # HTTP, OSC, feedback (the OSC In DAT)
EXAMPLE_CUES = [["opening", "a lighthouse in a storm, oil painting", "1", "", "", "", ""],
                ["calm", "a lighthouse at dawn, calm sea, oil painting", "1", "", "", "", ""],
                ["night", "a lighthouse at night, stars, long exposure photo", "7", "", "", "", ""]]


def shim(role: str, paths: list[str], module: str, body: str) -> str:
    return (f"# turbo-bridge: {role}. Written by setup_network.py; the code is in "
            f"turbo_bridge_td/{module}.py.\n"
            "import sys\n"
            f"for _path in {paths!r}:\n"
            "    if _path not in sys.path:\n"
            "        sys.path.insert(0, _path)\n"
            f"from turbo_bridge_td import {module} as _tb\n\n\n" + body)


FRAME_CALLBACKS = '''def onSetupParameters(scriptOp):
    _tb.on_setup_parameters(scriptOp)


def onPulse(par):
    return


def onCook(scriptOp):
    _tb.on_cook(scriptOp)
'''
OSC_IN_CALLBACKS = '''def onReceiveOSC(dat, rowIndex, message, byteData, timeStamp, address, args, peer):
    _tb.on_receive_osc(dat, address, args)
'''
FRAME_EXEC = '''def onStart():
    _tb.on_start(me.parent())


def onFrameStart(frame):
    _tb.on_frame_start(me.parent())


def onExit():
    _tb.on_exit()
'''
PAR_EXEC = '''# The arguments of the Parameter Execute DAT's documented template (par, val, prev); the value
# is read from par, and prev's default also takes a build that passes (par, prev).
def onValueChange(par, val, prev=None):
    _tb.on_value_change(par)


def onPulse(par):
    _tb.on_pulse(par)
'''


def add_control_pars(comp) -> None:
    """The control COMP's pages: Bridge (the fields), Connection, Input, Cues."""
    page = comp.appendCustomPage("Bridge")
    _set(page.appendStr("Prompt", label="Prompt")[0], "")
    # A string: seeds run to 2**64-1 and TouchDesigner documents no 64-bit Int parameter.
    _set(page.appendStr("Seed", label="Seed (0 to 2^64-1)")[0], "0")
    _set(page.appendFloat("Guidance", label="Guidance")[0], 0.0, lo=0.0, hi=30.0, norm=(0.0, 10.0))
    _set(page.appendInt("Steps", label="Steps")[0], 1, lo=1, hi=8, norm=(1, 8))
    for name in ("Width", "Height"):
        _set(page.appendInt(name, label=name)[0], 512, lo=64, hi=1024, norm=(64, 1024))
    _set(page.appendToggle("Live", label="Live (send every change)")[0], True)
    page.appendPulse("Send", label="Send All (one change)")

    page = comp.appendCustomPage("Connection")
    source = page.appendMenu("Source", label="Frame Source")[0]
    source.menuNames = ["shm", "http"]
    source.menuLabels = ["Shared Memory (this machine)", "HTTP (remote daemon)"]
    _set(source, "shm")
    _set(page.appendStr("Host", label="Daemon Host")[0], "127.0.0.1")
    for par, port in zip(page.appendInt("Ports", label="Ports: HTTP, OSC, Feedback", size=3), DEFAULT_PORTS):
        _set(par, port, lo=1, hi=65535)
    _set(page.appendStr("Shmname", label="Shared Memory Name")[0], "turbo-bridge")
    # One component per channel: its changes, frames (segment Shmname.NAME) and input go to that channel.
    _set(page.appendStr("Channel", label="Channel")[0], "main")
    _set(page.appendStr("Token", label="Token (HTTP)")[0], "")
    page.appendPulse("Reconnect", label="Reconnect")

    page = comp.appendCustomPage("Input")
    page.appendTOP("Inputtop", label="Input TOP")
    _set(page.appendToggle("Sendinput", label="Send Input (image-to-image)")[0], False)
    _set(page.appendFloat("Strength", label="Strength")[0], 0.5, lo=0.0, hi=1.0, norm=(0.0, 1.0))

    page = comp.appendCustomPage("Control")  # ControlNets: one TOP per name (the daemon's --controlnet NAME)
    for slot in CONTROL_SLOTS:
        _set(page.appendStr(f"Control{slot}name", label=f"ControlNet {slot} Name")[0], "")
        page.appendTOP(f"Control{slot}top", label=f"Control {slot} TOP")
        _set(page.appendFloat(f"Control{slot}scale", label=f"Control {slot} Scale")[0], 0.0, lo=0.0, hi=2.0,
             norm=(0.0, 2.0))

    page = comp.appendCustomPage("Style")
    _set(page.appendStr("Negprompt", label="Negative Prompt (guidance > 0)")[0], "")
    # The style image (the daemon's --ip-adapter): a TOP into a style segment, its scale over OSC.
    page.appendTOP("Styletop", label="Style TOP (IP-Adapter)")
    _set(page.appendFloat("Stylescale", label="Style Scale")[0], 0.0, lo=0.0, hi=2.0, norm=(0.0, 2.0))
    for i in range(1, 5):  # the daemon's at most 4 active LoRAs; names from GET /v1/loras
        _set(page.appendStr(f"Lora{i}name", label=f"LoRA {i}")[0], "")
        _set(page.appendFloat(f"Lora{i}weight", label=f"LoRA {i} Weight")[0], 0.0, lo=-2.0, hi=2.0, norm=(-2.0, 2.0))

    page = comp.appendCustomPage("Output")
    tiling = page.appendMenu("Tiling", label="Seamless Tiling")[0]
    tiling.menuNames = ["none", "x", "y", "xy"]
    tiling.menuLabels = ["Off", "Wrap Left-Right (x)", "Wrap Top-Bottom (y)", "Wrap Both (xy)"]
    _set(tiling, "none")
    _set(page.appendToggle("Record", label="Record (MP4 in the daemon's --output-dir)")[0], False)

    page = comp.appendCustomPage("Cues")
    _set(page.appendInt("Cue", label="Cue")[0], 0, lo=0, norm=(0, 20))
    page.appendPulse("Cueprev", label="Previous Cue")
    page.appendPulse("Cuenext", label="Next Cue")
    page.appendPulse("Cuego", label="Go (Send Cue Again)")


def _set(par, value, lo=None, hi=None, norm=None) -> None:
    if lo is not None:
        par.min, par.clampMin = lo, True
    if hi is not None:
        par.max, par.clampMax = hi, True
    if norm is not None:
        par.normMin, par.normMax = norm
    par.default = value
    par.val = value


def _callbacks_dat(owner, optypes, text: str):
    """The DAT named by ``owner.par.callbacks``: the one TouchDesigner docked to a new operator,
    or a new Text DAT when there is none."""
    dat = owner.par.callbacks.eval()
    if dat is None:
        dat = owner.parent().create(optypes["textDAT"], f"{owner.name}_callbacks")
        owner.par.callbacks = dat.name
    dat.nodeX, dat.nodeY = owner.nodeX, owner.nodeY - 150
    dat.text = text
    return dat


def build(parent, plugin_dir: str, optypes: dict, name: str = "turbo_bridge", host: str = "127.0.0.1",
          ports: tuple[int, int, int] = DEFAULT_PORTS, shm_name: str = "turbo-bridge"):
    """Create ``parent/name`` and everything in it; returns the control COMP.

    ``host``, ``ports`` (HTTP, OSC, feedback) and ``shm_name`` are the Connection page's initial
    values: the daemon's address, and the UDP port this network listens on for feedback."""
    if parent.op(name) is not None:
        raise ValueError(f"{parent.path}/{name} already exists: delete it, or pass another name")
    missing = [t for t in OP_TYPES if t not in optypes]
    if missing:
        raise ValueError(f"operator types missing from optypes: {', '.join(missing)}")
    paths = import_paths(plugin_dir)
    comp = parent.create(optypes["baseCOMP"], name)
    add_control_pars(comp)
    comp.par.Host, comp.par.Shmname = host, shm_name
    comp.par.Ports1, comp.par.Ports2, comp.par.Ports3 = ports

    def child(kind: str, child_name: str, x: int, y: int):
        node = comp.create(optypes[kind], child_name)
        node.nodeX, node.nodeY = x, y
        return node


    osc_out = child("oscoutDAT", "osc_out", 0, 300)
    osc_out.par.address, osc_out.par.port = host, ports[1]
    osc_in = child("oscinDAT", "osc_in", 200, 300)
    osc_in.par.port = ports[2]
    _callbacks_dat(osc_in, optypes, shim("OSC In DAT callbacks (feedback, cues)", paths, "session",
                                         OSC_IN_CALLBACKS))

    cues = child("tableDAT", "cues", 400, 300)
    cues.clear()
    cues.appendRow(header_row())
    for row in EXAMPLE_CUES:
        cues.appendRow(row)
    status = child("tableDAT", "status", 600, 300)
    status.clear()

    frame_exec = child("executeDAT", "frame_exec", 0, 600)
    frame_exec.text = shim("Execute DAT: subscribe on start, poll frames", paths, "session", FRAME_EXEC)
    frame_exec.par.start = frame_exec.par.framestart = frame_exec.par.exit = True
    par_exec = child("parameterexecuteDAT", "par_exec", 200, 600)
    par_exec.text = shim("Parameter Execute DAT: the control COMP's parameters", paths, "session", PAR_EXEC)
    par_exec.par.op = comp.path
    par_exec.par.pars = "*"
    par_exec.par.custom, par_exec.par.builtin = True, False
    par_exec.par.valuechange = par_exec.par.onpulse = True

    downscale.build(comp, optypes, 0, -300)  # the sent TOPs, scaled on the GPU before any download

    # Last: the pulse runs onSetupParameters and cooks the TOP, whose session reads the tables above.
    frame = child("scriptTOP", "frame", 0, 0)
    _callbacks_dat(frame, optypes, shim("Script TOP callbacks", paths, "top", FRAME_CALLBACKS))
    out = child("outTOP", "out1", 200, 0)
    out.inputConnectors[0].connect(frame)
    frame.par.setuppars.pulse()  # runs onSetupParameters: the TOP's Control parameter

    session.on_start(comp)  # onStart only runs when a project opens: subscribe now
    return comp
