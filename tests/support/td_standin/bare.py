"""Run the README's Textport line in an interpreter whose sys.path holds what TouchDesigner's does.

Started as ``python -I -S bare.py STANDIN_PARENT OSC_DIR NUMPY_DIR PLUGIN_DIR SHM_NAME PORTS_JSON``
(isolated, no site: no repository, no venv site-packages, no PYTHONPATH). TouchDesigner's Python
has its stdlib, numpy and its own built-in modules; here the stand-in plays the built-in ones:
it is imported (with python-osc, which it uses) and then its folders leave sys.path again, so
the setup script sees only the stdlib and NUMPY_DIR (a folder holding numpy alone). Prints one
JSON line: what got imported from where, and the frame the Script TOP shows.
"""

import json
import sys
import time

standin_parent, osc_dir, numpy_dir, plugin_dir, shm_name, ports = sys.argv[1:7]
sys.path.append(numpy_dir)
sys.path[:0] = [standin_parent, osc_dir]
import td_standin  # noqa: E402  (TouchDesigner's own modules)

del sys.path[:2]
path_before = list(sys.path)
td = td_standin.TouchDesigner()
line = (f"TB_SHM_NAME = {shm_name!r}; TB_PORTS = {tuple(json.loads(ports))!r}\n"
        f"TB_PLUGIN_DIR = {plugin_dir!r}; exec(open(TB_PLUGIN_DIR + '/setup_network.py').read())\n")
td.textport(line)
td.start()
top = td.project.op("turbo_bridge/frame")
deadline = time.monotonic() + 20
while top.numpyArray() is None and time.monotonic() < deadline:
    td.run_frame()
    time.sleep(0.005)
image = top.numpyArray()
td.exit()
print(json.dumps({
    "path_before": path_before,
    "added": [p for p in sys.path if p not in path_before],
    "client": sys.modules["turbo_bridge_td._client"].client.__file__,  # the bridge.client the plugin uses
    "bridge_importable": "bridge" in sys.modules,
    "shown": None if image is None else (image * 255).round().astype("uint8").tolist(),
}))
