"""One Q/K/V projection per CLIP attention layer gives transformers' own result (float32, CPU) with either
attention kind, with and without a padding mask, at batch 1 and 4, and every CLIP family's conditioning;
q_proj/k_proj/v_proj stay at their paths as views of the fused rows, so a text-encoder LoRA folds into the
fused weight (the same embeddings as unfused, the base back bit for bit at weight 0); only a CUDA
preparation fuses, and the knob turns it off (the eager CPU path keeps transformers' modules)."""

import copy

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bridge.core.params import Params  # noqa: E402
from bridge.pipeline.loading.loader import load_pipeline  # noqa: E402
from bridge.pipeline.render.renderer import DiffusersRenderer  # noqa: E402
from bridge.pipeline.speed.clip_qkv import FusedQKVAttention, ProjectionRows, fuse_clip_qkv  # noqa: E402
from bridge.pipeline.speed.optimize import Tuning, prepare_modules  # noqa: E402
from lora_files import lora_layers, write_diffusers  # noqa: E402

TOKENS = 77
PROMPTS = ["a lighthouse", "a cat on a windowsill, oil painting", "", "a castle, " * 30]


def clip(with_projection: bool, attention: str, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=3,
                            vocab_size=1000, max_position_embeddings=TOKENS, projection_dim=32, bos_token_id=0,
                            eos_token_id=2, pad_token_id=1)
    kind = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return kind._from_config(config, attn_implementation=attention).eval()


def inputs(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (an end token at a different place in each row) and the matching padding mask."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 1000, (batch, TOKENS), generator=generator)
    mask = torch.ones((batch, TOKENS), dtype=torch.long)
    for row in range(batch):
        end = 5 + 17 * row + seed
        ids[row, end] = 2
        mask[row, end + 1:] = 0
    return ids, mask


def outputs(model, ids, mask) -> list[torch.Tensor]:
    with torch.inference_mode():
        out = model(ids, attention_mask=mask, output_hidden_states=True)
    pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
    return [out.last_hidden_state, out.hidden_states[-2], pooled]


@pytest.mark.parametrize("with_projection", [False, True], ids=["CLIPTextModel", "WithProjection"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_the_fused_layers_give_transformers_result(with_projection, attention):
    plain = clip(with_projection, attention)
    fused = copy.deepcopy(plain)
    assert fuse_clip_qkv(fused) == 3
    for batch in (1, 4):
        for seed in range(3):  # several prompts' ids
            ids, padding = inputs(batch, seed)
            for mask in (None, padding):  # causal alone (diffusers' call), causal and padding
                for want, got in zip(outputs(plain, ids, mask), outputs(fused, ids, mask)):
                    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_the_projections_keep_their_paths_as_views_of_the_fused_rows():
    model = clip(False, "sdpa")
    layers = {name: m for name, m in model.named_modules() if type(m).__name__ == "CLIPAttention"}
    attn = list(layers.values())[1]
    q, k, v = (getattr(attn, n).weight.detach().clone() for n in ("q_proj", "k_proj", "v_proj"))
    biases = torch.cat([getattr(attn, n).bias.detach() for n in ("q_proj", "k_proj", "v_proj")])
    names = {name for name, _ in model.named_modules()}
    fuse_clip_qkv(model)
    assert type(attn) is FusedQKVAttention and isinstance(attn.k_proj, ProjectionRows)
    assert names | {f"{name}.qkv" for name in layers} == {name for name, _ in model.named_modules()}  # LoRAs' paths
    assert torch.equal(attn.qkv.weight, torch.cat([q, k, v])) and torch.equal(attn.qkv.bias, biases)
    storage = attn.qkv.weight.untyped_storage().data_ptr()
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        weight = getattr(attn, name).weight
        assert weight.untyped_storage().data_ptr() == storage and weight.shape == (64, 64)
        assert weight.data_ptr() == attn.qkv.weight[64 * i].data_ptr()
    with torch.no_grad():
        attn.v_proj.weight.add_(1.0)  # as the LoRA folder writes: through the projection's weight, in place
        attn.k_proj.bias.zero_()
    assert torch.equal(attn.qkv.weight[128:], v + 1.0) and torch.equal(attn.qkv.weight[:128], torch.cat([q, k]))
    assert not attn.qkv.bias[64:128].any()
    assert fuse_clip_qkv(model) == 0  # nothing left to fuse: a second preparation changes nothing


def test_an_attention_forward_of_another_shape_is_left_unfused(monkeypatch, caplog):
    from bridge.pipeline.speed import clip_qkv

    model = clip(False, "sdpa")
    monkeypatch.setattr(clip_qkv, "FORWARD_PARAMETERS", ("self", "hidden_states", "causal_attention_mask"))
    assert fuse_clip_qkv(model) == 0
    assert not any(isinstance(m, FusedQKVAttention) for m in model.modules())
    assert "keep three Q/K/V projections" in caplog.text


def test_a_forward_that_reads_its_input_another_way_is_caught_at_load_and_undone(monkeypatch, caplog):
    """The signature matches but the body takes the embedding width from the input (as transformers 4.x
    did): the probe at load sees other values, every layer gets its three projections back."""
    from transformers.models.clip.modeling_clip import CLIPAttention

    model = clip(False, "sdpa")
    ids, _ = inputs(1, 0)
    want = outputs(model, ids, None)
    original = CLIPAttention.forward

    def wider(self, hidden_states, attention_mask=None, **kwargs):
        width = hidden_states.shape[-1]  # 3D when fed the fused projection: the heads come out wrong
        out, weights = original(self, hidden_states, attention_mask, **kwargs)
        return out[..., :width] if width == out.shape[-1] else out * 0, weights

    monkeypatch.setattr(CLIPAttention, "forward", wider)
    assert fuse_clip_qkv(model) == 0
    assert "did not reproduce" in caplog.text
    assert all(type(m) is CLIPAttention and type(m.q_proj) is torch.nn.Linear and not hasattr(m, "qkv")
               for m in model.modules() if isinstance(m, CLIPAttention))
    monkeypatch.setattr(CLIPAttention, "forward", original)
    for a, b in zip(want, outputs(model, ids, None)):
        assert torch.equal(a, b)  # the same weights, in the same modules, as before


@pytest.mark.parametrize("model,family", [("demo", "sdxl"), ("demo-sd", "sd2"), ("demo-sd15", "sd15"),
                                          ("demo-sdxs", "sd2")])
def test_every_clip_familys_conditioning_is_unchanged(cache_dir, model, family):
    renderer = DiffusersRenderer(load_pipeline(model, "cpu", torch.float32, cache_dir), "cpu", torch.float32)
    assert renderer.family.name == family
    text = renderer.parts.text
    one = text.token_ids(PROMPTS[1])
    four = torch.stack([text.token_ids(p) for p in PROMPTS], dim=1)  # (encoders, 4, 77)
    with torch.inference_mode():
        before = [text.encode(one), text.encode(four)]
    layers = sum(encoder.config.num_hidden_layers for encoder in text.encoders)
    assert sum(fuse_clip_qkv(encoder) for encoder in text.modules) == layers
    with torch.inference_mode():
        after = [text.encode(one), text.encode(four)]
    for want, got in zip(before, after):
        for a, b in zip(want, got):  # embeds (SDXL: CLIP-L and bigG side by side) and the pooled projection
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)


def test_sanas_gemma_is_not_clip(cache_dir):
    pipe = load_pipeline("demo-sana", "cpu", torch.float32, cache_dir)
    assert fuse_clip_qkv(pipe.text_encoder) == 0


def test_only_a_cuda_preparation_fuses_and_the_knob_turns_it_off():
    flags = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        cpu, off, cuda = clip(True, "sdpa"), clip(True, "sdpa"), clip(True, "sdpa")
        prepare_modules([cpu], torch.device("cpu"))
        prepare_modules([off], torch.device("cuda"), Tuning(fused_text_qkv=False))
        prepare_modules([cuda], torch.device("cuda"))  # flags and the fusing: no CUDA call
        assert not any(isinstance(m, FusedQKVAttention) for m in (*cpu.modules(), *off.modules()))
        assert sum(isinstance(m, FusedQKVAttention) for m in cuda.modules()) == 3
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, cache_dir):
    folder = tmp_path_factory.mktemp("qkv-loras")
    pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir)
    write_diffusers(lora_layers(pipe, seed=5, conv=False), folder / "ink.safetensors")  # q/k/v/out of both encoders
    return folder


def test_a_text_encoder_lora_folds_into_the_fused_weight(cache_dir, lora_dir):
    plain = DiffusersRenderer(load_pipeline("demo", "cpu", torch.float32, cache_dir), "cpu", torch.float32,
                              lora_dir=lora_dir)
    pipe = load_pipeline("demo", "cpu", torch.float32, cache_dir)
    for encoder in (pipe.text_encoder, pipe.text_encoder_2):
        fuse_clip_qkv(encoder)  # before the renderer: its LoRA folder reads the fused model's modules
    fused = DiffusersRenderer(pipe, "cpu", torch.float32, lora_dir=lora_dir)
    for renderer in (plain, fused):
        renderer.loras.catalog.load("ink")
    qkv = [m.qkv.weight for m in pipe.text_encoder_2.modules() if isinstance(m, FusedQKVAttention)]
    base = [w.detach().clone() for w in qkv]
    prompt = "a lighthouse in a storm"
    base_embeds = fused.embeddings(prompt)
    lora = Params(prompt=prompt, seed=1, steps=1, width=64, height=64, loras=(("ink", 1.3),))
    for renderer in (plain, fused):
        renderer.render(lora)  # folds the LoRA, encodes the prompt with it
    for want, got in zip(plain.embeddings(prompt), fused.embeddings(prompt)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert not torch.equal(fused.embeddings(prompt)[0], base_embeds[0])  # the LoRA shows
    assert all(not torch.equal(w, b) for w, b in zip(qkv, base))  # in the weight the fused product reads
    fused.render(lora.merged({"loras": (("ink", 0.0),)}))  # removed: the base back, bit for bit
    assert all(torch.equal(w, b) for w, b in zip(qkv, base))
    for want, got in zip(base_embeds, fused.embeddings(prompt)):
        assert torch.equal(got, want)
