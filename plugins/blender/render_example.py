"""Render the README's picture headless: the default cube wearing a live frame from the daemon.

    python plugins/blender/render_example.py                       # docs/images/blender-live-texture.png
    python plugins/blender/render_example.py --out /tmp/cube.png --samples 64

Starts a demo daemon, installs the extension from its zip, connects, waits for a frame, presses
"Use on Active Material" on the cube and renders with Cycles on the CPU. With ``--model demo``
the frame is noise (random weights); with real SDXL-Turbo weights it is the prompt's picture.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import bpy_harness as harness

REPO_MODULE = "tb_render"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=harness.ROOT / "docs" / "images" / "blender-live-texture.png")
    parser.add_argument("--size", type=int, default=256, help="frame size (default 256)")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--prompt", default="weathered copper plates, rivets, studio light")
    args = parser.parse_args()

    import bpy

    with harness.demo_session(args.size, REPO_MODULE) as (daemon, live):
        settings = bpy.context.scene.turbo_bridge
        settings.address, settings.prompt, settings.seed = daemon.url, args.prompt, 42
        settings.width = settings.height = args.size
        bpy.ops.turbo_bridge.connect()
        harness.pump(live, lambda: live.current().applied is not None and live.current().applied.seed == 42,
                     timeout=120)  # connect sends prompt and seed in one change
        cube = bpy.data.objects["Cube"]  # the default scene: cube, camera, light
        bpy.context.view_layer.objects.active = cube
        bpy.ops.turbo_bridge.use_on_material()
        frame = live.current().applied
        live.disconnect()

    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples = "CPU", args.samples
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 480, 360, 100
    scene.render.image_settings.file_format = "PNG"
    scene.world.color = (0.05, 0.05, 0.06)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    scene.render.filepath = str(args.out)
    bpy.ops.render.render(write_still=True)
    print(f"{args.out}: frame {frame.seq} ({frame.width}x{frame.height}, seed {frame.seed}) on the cube")


if __name__ == "__main__":
    main()
    harness.leave(0)  # bpy 4.2 / 4.5 would crash or hang in the interpreter's own exit
