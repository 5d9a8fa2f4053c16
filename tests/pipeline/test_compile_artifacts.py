"""``--compile-artifacts``: the compiler's portable cache file, written by one process, makes a
fresh process with empty compile caches hit them; harmless where nothing is compiled."""

import json
import os
import subprocess
import sys
import textwrap
import urllib.request

import pytest

torch = pytest.importorskip("torch")

# the demo_daemon fixture's (CPU: nothing compiles)
DAEMON_ARGS = ("--compile-artifacts", "on", "--compile-scope", "blocks", "--compile-text", "off")

COMPILE_ONCE = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = sys.argv[1]
    import torch
    from torch._dynamo.utils import counters
    from bridge.pipeline.speed.compile_artifacts import CompileArtifacts
    artifacts = CompileArtifacts(Path(sys.argv[2]), {"model": "a tiny function", "vae": "none"})
    loaded = artifacts.load()
    f = torch.compile(lambda x: (x.sin() * 2 + 1).relu(), fullgraph=True, dynamic=False)
    f(torch.randn(8))
    written = artifacts.save()
    print(json.dumps({"loaded": loaded, "written": written, "path": str(artifacts.path),
                      **{k: v for k, v in counters["inductor"].items() if k.startswith("fxgraph_cache")}}))
""")


def compile_in_a_fresh_process(inductor_dir, cache_dir) -> dict:
    done = subprocess.run([sys.executable, "-c", COMPILE_ONCE, str(inductor_dir), str(cache_dir)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TORCHINDUCTOR_FX_GRAPH_CACHE": "1"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_process_with_empty_compile_caches_hits_the_artefacts_another_wrote(tmp_path):
    first = compile_in_a_fresh_process(tmp_path / "inductor-a", tmp_path / "cache")
    assert first["loaded"] is False and first["written"] > 0 and first.get("fxgraph_cache_miss") == 1
    assert os.path.isfile(first["path"]) and "/compile/artifacts/" in first["path"]
    # Another "machine": its Inductor cache is empty; only the artefact file carries the compile over.
    second = compile_in_a_fresh_process(tmp_path / "inductor-b", tmp_path / "cache")
    assert second["loaded"] is True and second.get("fxgraph_cache_hit") == 1 and "fxgraph_cache_miss" not in second
    assert second["written"] == 0  # nothing new: the file is left as it was


def test_a_file_torch_cannot_read_is_skipped_not_fatal(tmp_path, caplog):
    from bridge.pipeline.speed.compile_artifacts import CompileArtifacts

    artifacts = CompileArtifacts(tmp_path, {"model": "x"})
    artifacts.path.parent.mkdir(parents=True)
    artifacts.path.write_bytes(b"not a cache")
    assert artifacts.load() is False
    assert "not loaded" in caplog.text


def test_the_name_records_the_setup(tmp_path):
    from bridge.pipeline.speed.compile_artifacts import CompileArtifacts

    a = CompileArtifacts.for_renderer(tmp_path, "/models/My Model.safetensors", "tiny", torch.bfloat16, "cpu")
    b = CompileArtifacts.for_renderer(tmp_path, "/models/My Model.safetensors", "full", torch.bfloat16, "cpu")
    assert a.path.name.startswith("My-Model.safetensors-tiny-") and a.path != b.path
    blocks = CompileArtifacts.for_renderer(tmp_path, "/models/My Model.safetensors", "tiny", torch.bfloat16, "cpu",
                                           compile_scope="blocks")
    assert blocks.path != a.path  # the blocks scope's graphs are other graphs


def test_the_daemon_on_the_cpu_starts_with_the_option_and_reports_its_start_up_phases(demo_daemon, cache_dir):
    with urllib.request.urlopen(f"{demo_daemon.url}/v1/health") as r:
        health = json.load(r)
    assert health["compile"] is False and set(health["startup_s"]) == {"imports", "setup", "model"}
    assert health["compile_scope"] is None and health["compile_text"] is None  # nothing compiles on the CPU
    phases = health["startup_s"]  # on the CPU the set-up (no CUDA context, no compiler) can round to 0.0 s
    assert phases["imports"] > 0 and phases["model"] > 0 and phases["setup"] >= 0
    log = "".join(demo_daemon.log)
    assert "this daemon does not compile" in log and "start-up: imports" in log
    assert not (cache_dir / "compile" / "artifacts").exists()


def test_the_name_records_a_tiny_batch_decoder_only_where_it_adds_graphs(tmp_path):
    from bridge.app.renderers import compiled_setup
    from bridge.config import Config
    from bridge.pipeline.speed.compile_artifacts import CompileArtifacts

    def path(**options):
        config = Config(model="random", **options)
        return CompileArtifacts.for_renderer(tmp_path, config.model, config.vae, torch.bfloat16, "cpu",
                                             **compiled_setup(config)).path

    assert path(batch_vae="tiny") != path()  # the tiny decoder's batch graphs beside the full VAE's
    assert path(vae="tiny", batch_vae="tiny") == path(vae="tiny")  # one decoder: the same graphs, the same file
    assert path(batch_vae="same") == path()  # today's setups keep their files
