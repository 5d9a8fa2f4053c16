# turbo-bridge for TouchDesigner: builds the whole network, no .tox needed.
#
# In TouchDesigner's Textport (Alt+T), one line (use your own path; forward slashes work on Windows):
#
#   TB_PLUGIN_DIR = 'C:/turbo-bridge/plugins/touchdesigner'; exec(open(TB_PLUGIN_DIR + '/setup_network.py').read())
#
# Or paste this whole file into a Text DAT, set TB_PLUGIN_DIR below, right-click it > Run Script.
# Optional, before running: TB_PARENT = '/project1' (where to build), TB_NAME = 'turbo_bridge',
# TB_HOST = '127.0.0.1', TB_PORTS = (8787, 9000, 9001) (HTTP, OSC, feedback), TB_SHM_NAME = 'turbo-bridge'.
# It creates TB_PARENT/TB_NAME: a Base COMP with the control parameters (Bridge, Connection and
# Cues pages) holding the Script TOP 'frame' (and its Out TOP), OSC Out / OSC In DATs, the 'cues'
# and 'status' tables and the Execute / Parameter Execute DATs. Start the daemon first (see README).
import os
import sys

try:
    TB_PLUGIN_DIR  # noqa: B018  (is it set? the Text DAT running this file may set it first)
except NameError:
    TB_PLUGIN_DIR = ''  # set this when running from a Text DAT
if not TB_PLUGIN_DIR:
    try:
        TB_PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))  # run as a file: python's exec of a path
    except NameError:
        raise RuntimeError('turbo-bridge: set TB_PLUGIN_DIR to the plugins/touchdesigner folder first') from None
if not os.path.isdir(os.path.join(TB_PLUGIN_DIR, 'turbo_bridge_td')):
    raise RuntimeError(f'turbo-bridge: no turbo_bridge_td folder in TB_PLUGIN_DIR={TB_PLUGIN_DIR!r}')
if TB_PLUGIN_DIR not in sys.path:
    sys.path.insert(0, TB_PLUGIN_DIR)
# Every folder the plugin imports from goes on the path before the first import that needs it:
# turbo_bridge_td.network reaches bridge.client (the repository root in a checkout).
from turbo_bridge_td.paths import import_paths as _tb_import_paths  # noqa: E402  (stdlib only)

for _tb_path in _tb_import_paths(TB_PLUGIN_DIR):
    if _tb_path not in sys.path:
        sys.path.insert(0, _tb_path)
from turbo_bridge_td import network as _tb_network  # noqa: E402  (needs the paths above)

try:
    TB_PARENT  # noqa: B018  (is it set? the Text DAT running this file may set it first)
except NameError:
    TB_PARENT = '/project1'
_tb_options = {}
for _tb_var, _tb_option in (('TB_NAME', 'name'), ('TB_HOST', 'host'), ('TB_PORTS', 'ports'),
                            ('TB_SHM_NAME', 'shm_name')):
    if _tb_var in globals():
        _tb_options[_tb_option] = globals()[_tb_var]

# TouchDesigner's operator types are globals of the Textport and of DAT scripts.
_tb_comp = _tb_network.build(op(TB_PARENT), TB_PLUGIN_DIR,  # noqa: F821 (op: a TouchDesigner global)
                             {name: eval(name) for name in _tb_network.OP_TYPES},
                             **_tb_options)
print(f'turbo-bridge: built {_tb_comp.path}; frames appear in {_tb_comp.path}/frame '
      f'once the daemon runs (status table: {_tb_comp.path}/status)')
