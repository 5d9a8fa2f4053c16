"""The TouchDesigner plugin's control side: parameters to OSC, feedback, cues, 64-bit seeds.

Against ``td_standin`` (TD has no Linux build) and a real demo_daemon (demo model); see td_harness.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pythonosc.udp_client import SimpleUDPClient

from bridge.client import parse_osc_message
from td_harness import changes_sent, run_until, status, tb_session, wait_for_version


def test_osc_controls_change_the_daemon_params(td, net, demo_daemon):
    before = demo_daemon.client.params()["version"]
    net.par.Prompt = "a cat on a windowsill"
    net.par.Seed = 42
    net.par.Guidance = 1.5
    net.par.Steps = 2
    net.par.Width, net.par.Height = 128, 96
    params = run_until(td, lambda: (p := demo_daemon.client.params())["height"] == 96 and p, what="size applied")
    assert (params["prompt"], params["seed"], params["guidance"], params["steps"], params["width"]) == \
        ("a cat on a windowsill", 42, 1.5, 2, 128)
    assert params["version"] > before
    addresses = {parse_osc_message(d)[0] for d in changes_sent(net.op("osc_out"))}
    assert addresses == {"/bridge/prompt", "/bridge/seed", "/bridge/guidance", "/bridge/steps", "/bridge/size"}
    net.par.Prompt = "über den Wolken"  # not ASCII: goes as JSON in /bridge/params
    run_until(td, lambda: demo_daemon.client.params()["prompt"] == "über den Wolken", what="unicode prompt")


def test_live_off_holds_changes_and_send_applies_them_as_one_change(td, net, demo_daemon):
    net.par.Live = False
    td.run_frame()
    out = net.op("osc_out")
    sent, version = len(changes_sent(out)), demo_daemon.client.params()["version"]
    net.par.Prompt, net.par.Seed, net.par.Steps = "held back", 7, 3
    net.par.Width, net.par.Height = 64, 64  # within this daemon's --max-size 256
    for _ in range(10):
        td.run_frame()
    assert len(changes_sent(out)) == sent and demo_daemon.client.params()["version"] == version
    net.par.Send.pulse()
    params = wait_for_version(td, demo_daemon, version + 1)
    assert params["version"] == version + 1  # all fields, one change
    assert (params["prompt"], params["seed"], params["steps"]) == ("held back", 7, 3)
    net.par.Live = True


def test_bundle_is_one_atomic_change(td, net, demo_daemon):
    version = demo_daemon.client.params()["version"]
    tb_session.session_for(net).controller.send_changes({"prompt": "a lion", "seed": 9, "guidance": 0.5},
                                                        bundle=True)
    params = wait_for_version(td, demo_daemon, version + 1)
    assert params["version"] == version + 1 and (params["prompt"], params["seed"]) == ("a lion", 9)


def test_feedback_frames_and_errors_reach_the_status_table(td, net, demo_daemon):
    version = demo_daemon.client.patch({"seed": 31337})["version"]
    run_until(td, lambda: status(net, "params version") == str(version), what="/bridge/frame feedback")
    assert status(net, "frame seq") == str(demo_daemon.client.health()["frame_seq"])
    assert float(status(net, "render ms")) > 0
    net.par.Width = 100  # not a multiple of 8: the daemon refuses it
    message = run_until(td, lambda: status(net, "last error"), what="/bridge/error feedback")
    assert "multiple of 8" in message


def test_cues_advance_by_pulse_and_by_osc(td, net, demo_daemon):
    cues = net.op("cues")
    prompts = {i: cues[i, "prompt"].val for i in range(1, cues.numRows)}
    version = demo_daemon.client.params()["version"]
    net.par.Cuenext.pulse()
    params = wait_for_version(td, demo_daemon, version + 1)
    assert (params["prompt"], params["seed"], params["version"]) == (prompts[1], 1, version + 1)
    assert net.par.Cue.eval() == 1 and net.par.Prompt.eval() == prompts[1] and status(net, "cue") == "1 opening"
    remote = SimpleUDPClient("127.0.0.1", net.par.Ports3.eval())  # a show controller
    remote.send_message("/cue/next", [])
    run_until(td, lambda: demo_daemon.client.params()["prompt"] == prompts[2], what="cue 2 by OSC")
    remote.send_message("/cue/go", "night")
    params = run_until(td, lambda: (p := demo_daemon.client.params())["prompt"] == prompts[3] and p, what="cue night")
    assert params["seed"] == 7 and net.par.Cue.eval() == 3
    remote.send_message("/cue/next", [])  # already the last cue: stays
    remote.send_message("/cue/prev", [])
    run_until(td, lambda: net.par.Cue.eval() == 2 and demo_daemon.client.params()["prompt"] == prompts[2],
              what="previous cue")
    sent = len(changes_sent(net.op("osc_out")))
    for _ in range(5):
        td.run_frame()  # the Cue / Prompt parameter echoes send nothing more
    assert len(changes_sent(net.op("osc_out"))) == sent
    net.par.Cue = 1  # typed into the parameter
    run_until(td, lambda: demo_daemon.client.params()["prompt"] == prompts[1], what="cue typed by hand")
    remote.send_message("/cue/go", 9)
    assert "cue 9 does not exist" in run_until(td, lambda: status(net, "last error"), what="bad cue error")
    cues.appendRow(["huge seed", "", str(2**64 - 1), "", "", "", ""])  # beyond OSC integers: JSON
    remote.send_message("/cue/go", "huge seed")
    run_until(td, lambda: demo_daemon.client.params()["seed"] == 2**64 - 1, what="cue with a 64-bit seed")


def test_seeds_up_to_2_64_stay_exact_in_the_string_parameter(td, net, demo_daemon):
    """TD documents no 64-bit Int parameter (the stand-in's hold 32 bits): Seed is a string."""
    top_seed = 2**64 - 1
    net.par.Seed = str(top_seed)
    run_until(td, lambda: demo_daemon.client.params()["seed"] == top_seed, what="the largest seed")
    net.par.Seed = str(2**31 + 5)  # past a 32-bit Int, below OSC's 64-bit integers
    run_until(td, lambda: demo_daemon.client.params()["seed"] == 2**31 + 5, what="a seed past 32 bits")
    net.par.Seed = "42.0"  # what a CHOP export writes
    run_until(td, lambda: demo_daemon.client.params()["seed"] == 42, what="a seed from a CHOP")
    net.par.Seed = "forty-two"
    assert "'forty-two' is not a whole number" in run_until(td, lambda: status(net, "last error"),
                                                            what="a seed that is not a number")
    cues = net.op("cues")
    cues.appendRow(["huge seed", "", str(top_seed), "", "", "", ""])
    tb_session.session_for(net).run_cue(lambda: tb_session.session_for(net).cues.go(cues.numRows - 1))
    run_until(td, lambda: demo_daemon.client.params()["seed"] == top_seed, what="cue with a 64-bit seed")
    assert net.par.Seed.eval() == str(top_seed)  # the panel shows the exact seed


def test_the_feedback_subscription_is_renewed_well_within_its_expiry(net):
    from bridge.frontends.osc.subscriptions import TTL_S
    from turbo_bridge_td.control import RESUBSCRIBE_S

    assert RESUBSCRIBE_S * 4 <= TTL_S  # a few lost datagrams do not end the feedback
    controller, out = tb_session.session_for(net).controller, net.op("osc_out")
    subscribes = lambda: sum(d.startswith(b"/bridge/subscribe") for d in out.sent)  # noqa: E731
    start = time.monotonic() + 3600  # past any renewal already due
    controller.maybe_resubscribe(start)
    count = subscribes()
    controller.maybe_resubscribe(start + RESUBSCRIBE_S - 0.5)
    assert subscribes() == count
    controller.maybe_resubscribe(start + RESUBSCRIBE_S)
    assert subscribes() == count + 1


def test_tiling_parameter_and_record_toggle(td, net, demo_daemon):
    client = demo_daemon.client
    net.par.Tiling = "xy"
    run_until(td, lambda: client.params()["tiling"] == "xy", what="tiling xy")
    net.par.Tiling = "none"
    run_until(td, lambda: client.params()["tiling"] == "none", what="tiling off")
    net.par.Record = True
    run_until(td, lambda: client.record()["recording"], what="recording")
    net.par.Seed = str(int(client.params()["seed"]) + 1)  # a frame to record
    run_until(td, lambda: client.record()["frames"] >= 1, what="a recorded frame", timeout=30)
    net.par.Record = False
    state = run_until(td, lambda: (r := client.record())["files"] and not r["recording"] and r,
                      what="the file to be finished", timeout=30)
    assert state["files"][-1].endswith(".mp4")
    tb_session.session_for(net).controller.record(False)  # stop without start: refused, shown in status
    message = run_until(td, lambda: "not recording" in (status(net, "last error") or "") and status(net, "last error"),
                        what="the refusal")
    assert "start with POST /v1/record" in message


def test_style_page_negative_prompt_and_lora_weights_over_osc(td, net, demo_daemon, cache_dir):
    torch = pytest.importorskip("torch")
    from bridge.pipeline.loading.loader import load_pipeline
    from lora_files import lora_layers, write_diffusers

    folder = Path(cache_dir) / "loras"  # the daemon's default --lora-dir under TURBO_BRIDGE_CACHE
    folder.mkdir(exist_ok=True)
    pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir)
    for i, name in enumerate(("td_ink", "td_paper")):
        if not (folder / f"{name}.safetensors").exists():
            write_diffusers(lora_layers(pipe, seed=30 + i, text=False), folder / f"{name}.safetensors")
    net.par.Negprompt = "blurry"
    run_until(td, lambda: demo_daemon.client.params()["negative_prompt"] == "blurry", what="negative prompt")
    net.par.Lora1name = "td_ink"
    net.par.Lora1weight = 0.75
    run_until(td, lambda: demo_daemon.client.params()["loras"] == {"td_ink": 0.75}, timeout=60, what="LoRA weight")
    net.par.Lora1name = "td_paper"  # the slot switches: ink off and paper on, in one bundle
    run_until(td, lambda: demo_daemon.client.params()["loras"] == {"td_paper": 0.75}, timeout=60, what="LoRA switch")
    sent = [parse_osc_message(d) for d in changes_sent(net.op("osc_out")) if d.startswith(b"/bridge/lora")]
    assert sent[0] == ("/bridge/lora", ["td_ink", 0.75])
    net.par.Lora1weight = 0.0
    run_until(td, lambda: demo_daemon.client.params()["loras"] == {}, what="LoRA off")
    assert demo_daemon.client.params()["negative_prompt"] == "blurry"
