"""LoRAs on the compiled path (opt-in: ``python -m pytest -m gpu``; needs CUDA): switching and
re-weighting never recompile, the captured CUDA graphs see the folded weights, weight 0 gives the
base frame exactly, the text encoders' fused Q/K/V projection (speed/clip_qkv.py) gets a text LoRA
with no recompile, the grouped fold (CUDA's) equals the per-layer fold (diffusers' arithmetic)
within bf16 rounding, and the full-size bench mode runs."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from bridge.core.params import Params  # noqa: E402
from lora_files import lora_layers, write_diffusers  # noqa: E402
from test_gpu import assert_compiled_matches_eager, renderer_pair  # noqa: E402

BASE = Params(prompt="a lighthouse", seed=3, width=512, height=512)


@pytest.fixture(scope="module")
def folder(cache_dir, tmp_path_factory):
    from bridge.pipeline.loading.loader import load_pipeline

    folder = tmp_path_factory.mktemp("gpu-loras")
    cpu_pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir)
    write_diffusers(lora_layers(cpu_pipe, seed=1), folder / "a.safetensors")
    write_diffusers(lora_layers(cpu_pipe, seed=2, conv=False), folder / "b.safetensors")
    return folder


@pytest.fixture(scope="module")
def renderers(cache_dir, folder):
    eager, fast = renderer_pair(cache_dir, lora_dir=folder)
    for renderer in (eager, fast):
        renderer.loras.catalog.load("a")
        renderer.loras.catalog.load("b")
    return eager, fast


def test_switching_and_reweighting_never_recompile(renderers):
    _, fast = renderers
    base = fast.render(BASE).pixels
    fast.render(BASE.merged({"loras": (("a", 1.0),)}))  # any first-use work outside the check
    to_q = fast.pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_qkv
    pointer = to_q.weight.data_ptr()
    torch._dynamo.config.error_on_recompile = True
    try:
        for i in range(12):
            name = ("a", "b")[i % 2]
            fast.render(BASE.merged({"seed": i, "loras": ((name, -2.0 + i / 3),)}))
        fast.render(BASE.merged({"loras": (("a", 0.5), ("b", 1.5))}))
        fast.render(BASE.merged({"prompt": "a lighthouse at night", "loras": (("a", 0.7),)}))  # text graph too
        again = fast.render(BASE).pixels
    finally:
        torch._dynamo.config.error_on_recompile = False
    assert to_q.weight.data_ptr() == pointer
    assert np.array_equal(again, base)  # weight 0: the base weights, bit for bit, so the base frame


def test_compiled_frame_with_lora_matches_eager(renderers):
    eager, fast = renderers
    params = BASE.merged({"loras": (("a", 0.8), ("b", -0.6))})
    a, b = eager.render(params).pixels.astype(int), fast.render(params).pixels.astype(int)
    base = fast.render(BASE).pixels.astype(int)
    assert np.abs(a - b).mean() < 2.0, np.abs(a - b).mean()  # bf16 kernels differ a little, not more
    assert np.abs(b - base).mean() > 5 * max(np.abs(a - b).mean(), 0.1)  # and the LoRA shows


def test_fused_text_qkv_matches_eager_and_takes_a_text_lora_without_recompiling(renderers):
    """The compiled renderer's CLIP layers run one Q/K/V product each, the eager one transformers' three:
    frames within bf16's tolerance of eager and repeated bit for bit, with and without a text LoRA; a
    switch between text LoRAs folds into the fused weight the captured graphs read, never recompiling."""
    from bridge.pipeline.speed.clip_qkv import FusedQKVAttention

    eager, fast = renderers
    encoders = (fast.pipe.text_encoder, fast.pipe.text_encoder_2)
    fused = [m for encoder in encoders for m in encoder.modules() if isinstance(m, FusedQKVAttention)]
    assert len(fused) == sum(encoder.config.num_hidden_layers for encoder in encoders)
    assert not any(isinstance(m, FusedQKVAttention) for m in eager.pipe.text_encoder_2.modules())
    params = BASE.merged({"prompt": "a harbour at dawn", "seed": 21})  # a prompt no other test encodes
    assert_compiled_matches_eager(eager, fast, params)
    with_lora = params.merged({"loras": (("a", 2.0),)})  # its largest weight: the clearest effect
    first = assert_compiled_matches_eager(eager, fast, with_lora)  # a and b both touch the text encoders
    qkv = fused[-1].qkv.weight
    pointer, folded = qkv.data_ptr(), qkv.detach().clone()
    runs = fast.text_encoder_runs
    torch._dynamo.config.error_on_recompile = True
    try:
        fast.render(params.merged({"loras": (("b", 1.0),)}))
        fast.render(params.merged({"loras": (("a", -1.5), ("b", 0.5))}))
        fast.render(params)  # the base embeddings: from the cache
        again = fast.render(with_lora).pixels  # a at 2.0: from the cache too
    finally:
        torch._dynamo.config.error_on_recompile = False
    assert fast.text_encoder_runs == runs + 2  # each new text LoRA set encoded the prompt again
    assert qkv.data_ptr() == pointer and torch.equal(qkv, folded)  # the same fold, in the same storage
    assert np.array_equal(again, first)
    # The text LoRA's effect on the embeddings against bf16's: the last frames of both renderers had ``a`` at 2.0.
    ours, theirs = fast.embeddings(params.prompt)[0].float(), eager.embeddings(params.prompt)[0].float()
    fast.render(params)
    base_embeds = fast.embeddings(params.prompt)[0].float()
    print(f"text LoRA: embeddings mean |compiled - eager| {(ours - theirs).abs().mean():.3g}, "
          f"mean |LoRA - base| {(ours - base_embeds).abs().mean():.3g}")
    assert (ours - base_embeds).abs().mean() > 5 * (ours - theirs).abs().mean()  # bf16 differs less than a LoRA


def test_bench_mode_on_the_full_size_model(cache_dir):
    from bridge.bench.lora import measure_lora_switch
    from bridge.pipeline.loading.loader import load_pipeline
    from bridge.pipeline.render.renderer import DiffusersRenderer

    renderer = DiffusersRenderer(load_pipeline("random", "cuda", torch.bfloat16, cache_dir), "cuda", torch.bfloat16,
                                 compile=True)
    result = measure_lora_switch(renderer, 512, 30, cache_dir)
    assert result["recompiles"] == 0 and result["switch_frame_ms"] > 0
    print(result)


def test_grouped_fold_equals_the_per_layer_fold_within_bf16_rounding(cache_dir, folder):
    from bridge.pipeline.loading.loader import load_pipeline
    from bridge.pipeline.speed.clip_qkv import fuse_clip_qkv
    from bridge.pipeline.steering.lora import Loras, _modules
    from bridge.pipeline.steering.lora_deltas import delta_weight
    from bridge.pipeline.steering.lora_fold import LoraFolder

    pipe = load_pipeline("demo", "cuda", torch.bfloat16, cache_dir)
    pipe.unet.fuse_qkv_projections()  # as the compiled path runs: q/k/v are slices of one weight
    for encoder in (pipe.text_encoder, pipe.text_encoder_2):
        fuse_clip_qkv(encoder)  # the text encoders' too (speed/clip_qkv.py)
    loras = Loras(pipe, folder)
    a, b = loras.catalog.load("a"), loras.catalog.load("b")
    assert a.groups and all(g.up.is_cuda and g.up.dtype == torch.bfloat16 for g in a.groups)  # placed at load
    modules = dict(_modules(pipe))
    active = ((a, 0.8), (b, -1.3))
    results = {}
    for grouped in (True, False):
        folds = LoraFolder(modules, grouped=grouped)
        paths = sorted({p for lora, _ in active for p in lora.deltas})
        base = {p: folds.target(p).clone() for p in paths}
        folds.fold(active)
        results[grouped] = {p: folds.target(p).clone() for p in paths}
        folds.fold(((a, 2.0),))
        folds.fold(())
        assert all(torch.equal(folds.target(p), base[p]) for p in paths), grouped  # weight 0: bit for bit
    exact = {p: base[p].double() for p in paths}  # the sum in float64, and how large its terms are
    size = {p: base[p].double().abs() for p in paths}
    for lora, weight in active:
        for p, delta in lora.deltas.items():
            term = delta_weight(type(delta)(delta.down.double(), delta.up.double(), delta.alpha), delta.scaling(weight))
            exact[p] += term
            size[p] += term.abs()
    errors = {True: 0.0, False: 0.0}
    # Linear layers fold as stacks (one baddbmm: the sum rounded once to bf16); the others (the
    # ResNet convolutions) fold per layer in either mode, in diffusers' arithmetic: the delta, its
    # scaling and the sum each rounded (a 3x3 convolution's delta is a bf16 conv2d besides).
    stacked = {p for lora, _ in active for g in lora.groups for p in g.paths}
    assert stacked and stacked != set(paths)
    for p in paths:
        grouped, plain = results[True][p].double(), results[False][p].double()
        # bf16 keeps 8 significant bits: each rounding is within 2**-8 of the terms' size
        assert ((grouped - plain).abs() <= 4 * 2.0 ** -8 * size[p] + 1e-30).all(), p
        if p in stacked:
            assert ((grouped - exact[p]).abs() <= 2 * 2.0 ** -8 * size[p] + 1e-30).all(), p
        else:
            assert torch.equal(grouped, plain), p  # the same per-layer arithmetic in both modes
        errors[True] += (grouped - exact[p]).abs().sum().item()
        errors[False] += (plain - exact[p]).abs().sum().item()
    assert errors[True] <= errors[False] * 1.05  # one rounding, not three: no less exact than per layer
    assert any(not torch.equal(results[True][p], base[p]) for p in paths)  # the LoRAs show


def test_fold_time_at_full_sdxl_attention_shapes():
    """The fold alone on SDXL's 560 attention projections (random weights): printed, not bounded."""
    from bridge.bench.lora import measure_fold

    result = measure_fold("cuda", torch.bfloat16, folds=20)
    assert result["layers"] == 560 and result["grouped_ms"] > 0
    print(result)
