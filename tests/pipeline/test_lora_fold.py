"""The grouped LoRA fold (what CUDA runs) against the per-layer fold (diffusers' arithmetic), forced
on the CPU in float64 where both must agree to rounding; weight 0 restores the base bit for bit
either way; ``place`` copies the file's tensors (never views of the mapped file) and stacks them."""

import pytest

torch = pytest.importorskip("torch")

from bridge.pipeline.steering.lora import LoraFile  # noqa: E402
from bridge.pipeline.steering.lora_deltas import Delta, delta_weight, place  # noqa: E402
from bridge.pipeline.steering.lora_fold import LoraFolder  # noqa: E402

# (path, out, in): three shapes, interleaved like attn1/attn2 projections, and one 3x3 convolution
LINEAR = [(f"unet.block{b}.{leaf}", o, i) for b in range(3)
          for leaf, o, i in (("attn1.to_q", 24, 24), ("attn1.to_k", 24, 24), ("attn2.to_k", 24, 40),
                             ("attn2.to_v", 24, 40), ("ff", 48, 24))]


def model(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    modules = {path: torch.nn.Linear(i, o, dtype=torch.float64) for path, o, i in LINEAR}
    modules["unet.block0.conv"] = torch.nn.Conv2d(8, 6, 3, dtype=torch.float64)
    return modules


def lora(modules: dict, name: str, seed: int, paths, rank=lambda path: 4, alpha=lambda path: None) -> LoraFile:
    generator = torch.Generator().manual_seed(seed)
    deltas = {}
    for path in paths:
        weight, r = modules[path].weight, rank(path)
        down = torch.randn((r, *weight.shape[1:]), generator=generator, dtype=torch.float64) * 0.3
        up = torch.randn((weight.shape[0], r, *((1, 1) if weight.dim() == 4 else ())), generator=generator,
                         dtype=torch.float64) * 0.3
        deltas[path] = Delta(down, up, float(alpha(path) or r))
    placed, groups = place(deltas, {p: modules[p].weight for p in deltas})
    return LoraFile(name, (seed, 0), placed, groups)


@pytest.fixture
def pair():
    """Two identical models, each with its own LoRAs placed on it, folded grouped and per layer."""
    out = []
    for grouped in (True, False):
        modules = model()
        linear = [p for p, _, _ in LINEAR]
        loras = {
            # every layer; ranks differ within one shape (two groups of one stack: two row ranges)
            "all": lora(modules, "all", 1, linear + ["unet.block0.conv"], rank=lambda p: 8 if "block1" in p else 4),
            # every other layer of a shape (rows picked by index), its own alphas per layer
            "some": lora(modules, "some", 2, [p for p in linear if "attn1.to_k" in p or "block2" in p],
                         alpha=lambda p: 2.0 if "to_k" in p else 6.0),
        }
        out.append((modules, LoraFolder(modules, grouped=grouped), loras))
    return out


def weights(modules: dict) -> dict:
    return {p: m.weight.detach().clone() for p, m in modules.items()}


def reference(base: dict, active) -> dict:
    """base + sum(scale * up @ down), one LoRA after another, straight from the definition."""
    out = {p: w.clone() for p, w in base.items()}
    for file, weight in active:
        for path, delta in file.deltas.items():
            out[path] += delta_weight(delta, delta.scaling(weight))
    return out


def test_grouped_fold_equals_the_per_layer_fold(pair):
    (grouped_model, grouped, g_loras), (plain_model, plain, p_loras) = pair
    base = weights(plain_model)
    for step in ((("all", 0.8),), (("all", -1.5), ("some", 0.6)), (("some", 2.0),), (("some", 1.0), ("all", 0.3))):
        grouped.fold(tuple((g_loras[n], w) for n, w in step))
        plain.fold(tuple((p_loras[n], w) for n, w in step))
        want = reference(base, tuple((p_loras[n], w) for n, w in step))
        got, exact = weights(grouped_model), weights(plain_model)
        for path in base:
            assert torch.allclose(got[path], exact[path], rtol=1e-12, atol=1e-12), (step, path)
            assert torch.allclose(exact[path], want[path], rtol=1e-12, atol=1e-12), (step, path)
        assert any(not torch.equal(got[p], base[p]) for p in base)  # the LoRAs show


def test_the_grouped_fold_batches_the_linear_layers(pair):
    (_, grouped, loras), _ = pair
    plan = grouped._plan([loras["all"], loras["some"]])
    assert plan.singles == ("unet.block0.conv",)  # only the convolution folds per layer
    assert sorted(len(s.paths) for s in plan.stacks) == [3, 6, 6]  # one stack per weight shape
    rows = [rows for s in plan.stacks for _, _, rows in s.adds]
    assert any(isinstance(r, slice) for r in rows) and any(isinstance(r, torch.Tensor) for r in rows)
    _, plain, p_loras = pair[1]
    assert plain._plan([p_loras["all"]]).stacks == ()  # forced per layer: nothing stacked


def test_weight_zero_restores_the_base_bit_for_bit_grouped(pair):
    (modules, grouped, loras), _ = pair
    base = weights(modules)
    pointers = {p: m.weight.data_ptr() for p, m in modules.items()}
    grouped.fold(((loras["all"], 1.2), (loras["some"], -0.7)))
    grouped.fold(((loras["some"], 0.5),))  # "all" removed: its other layers get their base back
    after = weights(modules)
    untouched = set(base) - set(loras["some"].deltas)
    assert all(torch.equal(after[p], base[p]) for p in untouched)
    assert not torch.equal(after["unet.block2.ff"], base["unet.block2.ff"])
    grouped.fold(())
    assert all(torch.equal(m.weight, base[p]) for p, m in modules.items())
    assert {p: m.weight.data_ptr() for p, m in modules.items()} == pointers  # written in place


def test_a_lora_without_groups_folds_next_to_a_grouped_one(pair):
    """A hand-made LoraFile (no stacks) touching grouped layers: those layers fold per layer."""
    (modules, grouped, loras), (plain_model, plain, p_loras) = pair
    loose = {p: Delta(d.down.clone(), d.up.clone(), d.alpha) for p, d in loras["some"].deltas.items()}
    grouped.fold(((loras["all"], 0.9), (LoraFile("loose", (0, 0), loose), -1.1)))
    plain.fold(((p_loras["all"], 0.9), (p_loras["some"], -1.1)))
    got, want = weights(modules), weights(plain_model)
    assert all(torch.allclose(got[p], want[p], rtol=1e-12, atol=1e-12) for p in got)


def test_place_copies_stacks_and_casts():
    modules = model()
    source = {p: Delta(torch.randn(4, i, dtype=torch.float64), torch.randn(o, 4, dtype=torch.float64), 4.0)
              for p, o, i in LINEAR[:4]}
    placed, groups = place(source, {p: modules[p].weight.to(torch.float32) for p in source})
    assert sorted(g.up.shape for g in groups) == [(2, 24, 4), (2, 24, 4)]
    for path, delta in placed.items():
        assert delta.down.dtype == torch.float32 and torch.equal(delta.down, source[path].down.float())
        assert delta.up.untyped_storage().data_ptr() != source[path].up.untyped_storage().data_ptr()
        group = next(g for g in groups if path in g.paths)
        assert delta.down.untyped_storage().data_ptr() == group.down.untyped_storage().data_ptr()  # views


def test_grouped_fold_on_the_demo_model_with_fused_projections(cache_dir, tmp_path):
    """Real files (diffusers and kohya layouts, text encoders, a convolution) on the fused q/k/v
    slices the compiled path reads: grouped equals per layer to float32 rounding, and goes back."""
    from bridge.pipeline.loading.loader import load_pipeline
    from bridge.pipeline.steering.lora import Loras, _modules
    from lora_files import lora_layers, write_diffusers, write_kohya

    pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir)
    pipe.unet.fuse_qkv_projections()
    write_diffusers(lora_layers(pipe, seed=1), tmp_path / "ink.safetensors")
    write_kohya(lora_layers(pipe, seed=2, conv=False), tmp_path / "paper.safetensors")
    catalog = Loras(pipe, tmp_path).catalog
    ink, paper = catalog.load("ink"), catalog.load("paper")
    modules = dict(_modules(pipe))
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    results = []
    for grouped in (True, False):
        folder = LoraFolder(modules, grouped=grouped)
        folder.fold(((ink, 0.7), (paper, -1.2)))
        results.append({p: folder.target(p).clone() for p in {*ink.deltas, *paper.deltas}})
        folder.fold(())
        assert all(torch.equal(v, before[k]) for k, v in pipe.unet.state_dict().items())
    grouped, plain = results
    assert all(torch.allclose(grouped[p], plain[p], rtol=1e-5, atol=1e-6) for p in plain)
    attn = "down_blocks.1.attentions.0.transformer_blocks.0.attn1"
    width = modules[f"unet.{attn}.to_k"].weight.shape[0]
    fused_k = before[f"{attn}.to_qkv.weight"][width:2 * width]  # to_k's rows of the fused weight
    assert folder.target(f"unet.{attn}.to_k").data_ptr() \
        == pipe.unet.state_dict()[f"{attn}.to_qkv.weight"][width:].data_ptr()
    assert (grouped[f"unet.{attn}.to_k"] - fused_k).abs().max() > 1e-3  # the LoRA reached the fused weight
