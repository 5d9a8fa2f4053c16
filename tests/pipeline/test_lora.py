"""LoRAs on the eager renderer (CPU, demo model, random LoRAs with random up-projections), checked
against diffusers' load_lora_weights + fuse_lora; weight 0 restores the base bit for bit; a
kohya-layout file folds to the same frame as its diffusers-layout twin; bad files change nothing."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")  # diffusers' load_lora_weights (the reference) needs it

from bridge.core.errors import ValidationError  # noqa: E402
from bridge.core.params import Params  # noqa: E402
from bridge.pipeline.loading.loader import load_pipeline  # noqa: E402
from bridge.pipeline.render.renderer import DiffusersRenderer  # noqa: E402
from lora_files import lora_layers, write_diffusers, write_kohya  # noqa: E402

BASE = Params(prompt="a lighthouse", seed=9, steps=2, width=64, height=64)


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, cache_dir):
    folder = tmp_path_factory.mktemp("loras")
    pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir)
    ink = lora_layers(pipe, seed=1)
    write_diffusers(ink, folder / "ink.safetensors")
    write_kohya(ink, folder / "ink_kohya.safetensors")
    write_diffusers(lora_layers(pipe, seed=2, rank=8, conv=False), folder / "paper.safetensors")
    write_diffusers(lora_layers(pipe, seed=3, text=False), folder / "unet_only.safetensors")
    (folder / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    wrong = {k: (d[:, :5] if d.dim() == 2 else d, u) for k, (d, u) in lora_layers(pipe, seed=4, text=False).items()}
    write_diffusers(wrong, folder / "other_family.safetensors")
    return folder


@pytest.fixture(scope="module")
def renderer(cache_dir, lora_dir):
    pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir)
    return DiffusersRenderer(pipe, "cpu", torch.float32, lora_dir=lora_dir)


def weights(pipe) -> dict:
    return {f"{c}.{k}": v.clone() for c in ("unet", "text_encoder", "text_encoder_2")
            for k, v in getattr(pipe, c).state_dict().items()}


def load_all(renderer, *names):
    for name in names:
        renderer.loras.catalog.load(name)


def test_catalog_lists_names_targets_ranks_sizes(renderer, lora_dir):
    infos = {info.name: info for info in renderer.loras.catalog.scan()}
    assert set(infos) == {"ink", "ink_kohya", "paper", "unet_only", "other_family", "broken"}
    assert "not a safetensors file" in infos["broken"].error and infos["ink"].error is None
    assert infos["ink"].targets == ("unet", "text_encoder", "text_encoder_2") and infos["ink"].rank == 4
    assert infos["unet_only"].targets == ("unet",) and infos["paper"].rank == 8
    assert infos["ink"].size == (lora_dir / "ink.safetensors").stat().st_size


@pytest.mark.parametrize("active", [(("ink", 0.8),), (("ink", -1.5), ("paper", 0.6))])
def test_frames_match_diffusers_fuse_lora(renderer, cache_dir, lora_dir, active):
    load_all(renderer, *(name for name, _ in active))
    params = BASE.merged({"loras": active, "guidance": 0.0})
    ours = renderer.render(params).pixels[..., :3].astype(int)
    ref_pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir)
    for name, _ in active:
        ref_pipe.load_lora_weights(str(lora_dir), weight_name=f"{name}.safetensors", adapter_name=name)
    ref_pipe.set_adapters([n for n, _ in active], adapter_weights=[w for _, w in active])
    ref_pipe.fuse_lora()
    ref = ref_pipe(prompt=params.prompt, guidance_scale=0.0, num_inference_steps=params.steps, width=64, height=64,
                   generator=torch.Generator("cpu").manual_seed(params.seed), output_type="np").images[0]
    assert np.array_equal(ours, np.round(ref * 255).astype(int))
    renderer.render(BASE)


def test_weight_zero_restores_the_base_weights_bit_for_bit(renderer):
    load_all(renderer, "ink", "paper")
    base_frame = renderer.render(BASE).pixels
    before = weights(renderer.pipe)
    with_loras = renderer.render(BASE.merged({"loras": (("ink", 1.2), ("paper", -0.7))})).pixels
    assert not np.array_equal(with_loras, base_frame)
    renderer.render(BASE.merged({"loras": (("ink", 2.0), ("paper", 0.0))}))  # re-weight, then remove
    after_params = BASE.merged({"loras": (("ink", 0.0),)})
    assert after_params.loras == ()
    assert np.array_equal(renderer.render(after_params).pixels, base_frame)
    after = weights(renderer.pipe)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_kohya_layout_gives_the_same_frame_as_its_diffusers_twin(renderer):
    load_all(renderer, "ink", "ink_kohya")
    a = renderer.render(BASE.merged({"loras": (("ink", 0.9),)})).pixels
    b = renderer.render(BASE.merged({"loras": (("ink_kohya", 0.9),)})).pixels
    assert np.array_equal(a, b) and not np.array_equal(a, renderer.render(BASE).pixels)


def test_weights_are_the_same_storage_as_before(renderer):
    """A captured CUDA graph reads the weights' storage: folding must write into it, not replace it."""
    load_all(renderer, "ink")
    module = renderer.pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q
    pointer = module.weight.data_ptr()
    renderer.render(BASE.merged({"loras": (("ink", 1.0),)}))
    assert module.weight.data_ptr() == pointer
    renderer.render(BASE)


def test_text_encoder_lora_invalidates_exactly_its_embeddings(renderer):
    load_all(renderer, "ink", "unet_only")
    base = BASE.merged({"prompt": "a lighthouse in a storm"})  # a prompt no other test encodes
    renderer.render(base)
    runs = renderer.text_encoder_runs
    renderer.render(base.merged({"loras": (("unet_only", 1.0),)}))  # UNet only: embeddings still valid
    assert renderer.text_encoder_runs == runs
    renderer.render(base.merged({"loras": (("ink", 1.0),)}))  # touches the text encoders: encoded again
    assert renderer.text_encoder_runs == runs + 1
    embeds = renderer.embeddings(base.prompt)[0]
    ref = renderer.pipe.encode_prompt(base.prompt, device="cpu", do_classifier_free_guidance=False)[0]
    assert torch.equal(embeds, ref)  # encoded with the folded text encoders
    renderer.render(base)  # back to the base weights: the base embeddings come back from the cache
    assert renderer.text_encoder_runs == runs + 1


def test_fused_qkv_projections_get_the_lora_too(cache_dir, lora_dir):
    """The compiled path fuses q/k/v into one matmul: the LoRA must reach the fused weight."""
    plain = DiffusersRenderer(load_pipeline("demo", "cpu", torch.float32, cache_dir), "cpu", torch.float32,
                              lora_dir=lora_dir)
    fused_pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir)
    fused_pipe.unet.fuse_qkv_projections()
    fused = DiffusersRenderer(fused_pipe, "cpu", torch.float32, lora_dir=lora_dir)
    params = BASE.merged({"loras": (("unet_only", 1.0),)})
    a, b = plain.render(params).pixels.astype(int), fused.render(params).pixels.astype(int)
    assert np.abs(a - b).max() <= 1 and not np.array_equal(b, fused.render(BASE).pixels)


@pytest.mark.parametrize("name,message", [("broken", "not a readable LoRA"), ("other_family", "does not fit"),
                                          ("nobody", "unknown LoRA")])
def test_bad_files_fail_before_anything_changes(renderer, name, message):
    base_frame = renderer.render(BASE).pixels
    before = weights(renderer.pipe)
    with pytest.raises(ValidationError, match=message) as info:
        renderer.loras.catalog.load(name)
    assert info.value.field == "loras"
    assert all(torch.equal(before[k], v) for k, v in weights(renderer.pipe).items())
    assert np.array_equal(renderer.render(BASE).pixels, base_frame)


def test_bench_mode_runs_on_the_cpu(tmp_path, cache_dir):
    """The plumbing of ``bench --modes lora`` (figures come from the GPU: tests/pipeline/test_gpu_lora.py)."""
    from bridge.bench.lora import measure_lora_switch

    renderer = DiffusersRenderer(load_pipeline("demo", "cpu", torch.float32, cache_dir), "cpu", torch.float32)
    result = measure_lora_switch(renderer, 64, 2, tmp_path)
    assert result["recompiles"] == 0 and "32 layers" in result["what"]
    assert renderer.loras.applied == () and {"base_ms", "folded_ms", "switch_extra_ms"} <= set(result)


def test_catalog_keeps_the_most_recently_used_files(renderer, monkeypatch):
    """Loaded deltas live on the model's device: the catalog keeps a few, the least recently used go."""
    import bridge.pipeline.steering.lora as lora_module

    monkeypatch.setattr(lora_module, "LOADED_KEPT", 2)
    catalog = renderer.loras.catalog
    monkeypatch.setattr(catalog, "in_use_s", 0.0)  # earlier tests folded these files: no grace for that here
    ink = catalog.load("ink")
    catalog.load("paper")
    assert catalog.load("ink") is ink  # used again: now the most recent
    catalog.load("unet_only")
    assert catalog.ready(["ink", "unet_only"]) and not catalog.ready(["paper"])
    frame = renderer.render(BASE.merged({"loras": (("paper", 0.5),)})).pixels  # reloaded when needed
    assert catalog.ready(["paper"]) and not np.array_equal(frame, renderer.render(BASE).pixels)


def test_pinned_files_stay_loaded_however_long_idle(renderer, monkeypatch):
    """What the channels use (pinned by the LoRA gate) never goes; unpinned, it goes like any other."""
    import bridge.pipeline.steering.lora as lora_module

    monkeypatch.setattr(lora_module, "LOADED_KEPT", 1)
    catalog = renderer.loras.catalog
    monkeypatch.setattr(catalog, "in_use_s", 0.0)  # no grace for a file folded recently: only the pin keeps it
    catalog.load("ink")
    catalog.pin(frozenset({"ink"}))
    catalog.load("paper")
    catalog.load("unet_only")
    assert catalog.ready(["ink", "unet_only"]) and not catalog.ready(["paper"])
    catalog.pin(frozenset())
    catalog.load("paper")
    assert catalog.ready(["paper"]) and not catalog.ready(["ink"])
