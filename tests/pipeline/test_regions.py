"""Regional compilation (speed/regions.py): every U-Net family's and SANA's denoiser names its repeated
blocks, a text encoder or a VAE none; a U-Net compiled block by block gives the eager output exactly
(traced with aot_eager: no kernels to build on the CPU) from far fewer graphs than blocks, and compiles
nothing more for the next frame; the renderer's ``compile_scope`` leaves the denoiser's call eager around
its compiled blocks and compiles every other call whole, and each family's calls so compiled trace
(Dynamo's fullgraph) and give the eager conditioning and model output."""

import pytest

torch = pytest.importorskip("torch")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from bridge.pipeline.families.registry import FAMILIES  # noqa: E402
from bridge.pipeline.families.sd2 import SD2  # noqa: E402
from bridge.pipeline.families.sd15 import SD15  # noqa: E402
from bridge.pipeline.families.sdxl import SDXL  # noqa: E402
from bridge.pipeline.loading.demo import build_random_pipeline  # noqa: E402
from bridge.pipeline.render import model_calls  # noqa: E402
from bridge.pipeline.render.model_calls import ModelCalls  # noqa: E402
from bridge.pipeline.speed.optimize import CompileCounter, Tuning  # noqa: E402
from bridge.pipeline.speed.regions import compile_blocks, repeated_blocks  # noqa: E402
from bridge.pipeline.steering.controlnet import ControlNets  # noqa: E402


def demo(family):
    torch.manual_seed(0)
    return build_random_pipeline(True, torch.float32, "cpu", family=family)


@pytest.mark.parametrize("family", [SDXL, SD2, SD15], ids=lambda f: f.name)
def test_every_unet_family_names_its_denoiser_blocks_and_no_text_encoder_or_vae_block(family):
    pipe = demo(family)
    assert repeated_blocks(pipe.unet) == ("BasicTransformerBlock", "ResnetBlock2D")
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if family is SDXL else [])
    # transformers' output-capturing hooks on CLIP's layers read a ContextVar Dynamo cannot trace in a region
    assert all(repeated_blocks(encoder) == () for encoder in encoders)
    assert repeated_blocks(pipe.vae) == ()
    with pytest.raises(ValueError, match="AutoencoderKL has no repeated blocks"):
        compile_blocks(pipe.vae)


def unet_inputs(pipe, seed: int):
    generator = torch.Generator().manual_seed(seed)
    config = pipe.unet.config
    latents = torch.randn((1, config.in_channels, 16, 16), generator=generator)
    embeds = torch.randn((1, 77, config.cross_attention_dim), generator=generator)
    added = {"text_embeds": torch.randn((1, pipe.text_encoder_2.config.projection_dim), generator=generator),
             "time_ids": torch.tensor([[128.0, 128, 0, 0, 128, 128]])}
    return latents, torch.tensor(999.0), embeds, added


def test_a_unet_compiled_by_blocks_gives_the_eager_output_from_one_graph_per_block_shape():
    pipe = demo(SDXL)
    unet = pipe.unet.eval()
    blocks = [m for m in unet.modules() if type(m).__name__ in repeated_blocks(unet)]
    with torch.inference_mode():
        want = [unet(*unet_inputs(pipe, seed)[:3], added_cond_kwargs=unet_inputs(pipe, seed)[3]).sample
                for seed in (1, 2)]
        torch._dynamo.reset()
        assert compile_blocks(unet, backend="aot_eager") == len(blocks) > 0
        with CompileCounter() as first:
            got = unet(*unet_inputs(pipe, 1)[:3], added_cond_kwargs=unet_inputs(pipe, 1)[3]).sample
        # one graph per block class and input shape, not one per block
        assert 2 <= first.done < len(blocks)
        with CompileCounter() as second:  # the next frame, other values at the same shapes: no compile
            again = unet(*unet_inputs(pipe, 2)[:3], added_cond_kwargs=unet_inputs(pipe, 2)[3]).sample
        assert second.done == 0
    torch.testing.assert_close(got, want[0], rtol=0, atol=0)
    torch.testing.assert_close(again, want[1], rtol=0, atol=0)


def test_the_blocks_scope_compiles_the_denoiser_blocks_and_every_other_call_whole(monkeypatch):
    pipe = demo(SDXL)
    parts = FAMILIES["sdxl"].parts(pipe, torch.device("cpu"), torch.float32)
    whole, regional, modes = [], [], {}
    monkeypatch.setattr(model_calls, "compiled",
                        lambda fn, device, mode="default": whole.append(fn) or modes.update({fn: mode}) or fn)
    monkeypatch.setattr(model_calls, "compile_blocks",
                        lambda module, mode="default": regional.append((module, mode)) or 1)
    calls = ModelCalls(parts, torch.device("cpu"), torch.float32, ControlNets({}))
    calls.compile(Tuning(compile_scope="blocks"))
    assert regional == [(pipe.unet, "default")]
    assert parts.denoiser.denoise not in whole and calls.denoise == parts.denoiser.denoise
    assert parts.text.encode in whole
    assert len(whole) == 6  # encode, decode, decode_batch, encode_image, control, adapt
    whole.clear(), regional.clear()
    ModelCalls(parts, torch.device("cpu"), torch.float32, ControlNets({})).compile(Tuning(compile_scope="calls"))
    assert regional == [] and len(whole) == 7 and parts.denoiser.denoise in whole
    # the denoiser's compile mode reaches its call, or its blocks; the decoder's its two calls
    autotune = "max-autotune-no-cudagraphs"
    ModelCalls(parts, torch.device("cpu"), torch.float32, ControlNets({})).compile(Tuning(denoiser_mode=autotune))
    assert modes[parts.denoiser.denoise] == autotune and modes[parts.text.encode] == "default"
    ModelCalls(parts, torch.device("cpu"), torch.float32, ControlNets({})).compile(
        Tuning(decoder_mode=autotune, compile_scope="blocks", denoiser_mode=autotune))
    assert regional == [(pipe.unet, autotune)] and modes[parts.decoder.decode] == autotune
    # without compile_text the text encoders stay eager (captured in the frame graphs all the same)
    whole.clear()
    calls = ModelCalls(parts, torch.device("cpu"), torch.float32, ControlNets({}))
    calls.compile(Tuning(compile_text=False))
    assert parts.text.encode not in whole and calls.encode == parts.text.encode and len(whole) == 6
    with pytest.raises(ValueError, match="compile scope 'regions': one of calls, blocks"):
        ModelCalls(parts, torch.device("cpu"), torch.float32, ControlNets({})).compile(Tuning(compile_scope="regions"))


@pytest.mark.parametrize("model", ["demo", "demo-sd15", "demo-sana"])
def test_each_familys_calls_compiled_by_blocks_trace_whole_and_give_the_eager_results(model, cache_dir, monkeypatch):
    """Dynamo traces what the renderer compiles with the blocks scope (full graphs: a break fails),
    with the aot_eager backend, which runs the traced graphs as they are: the eager values exactly."""
    from bridge.pipeline.loading.loader import load_pipeline

    pipe = load_pipeline(model, "cpu", torch.float32, cache_dir)
    family = FAMILIES[{"demo": "sdxl", "demo-sd15": "sd15", "demo-sana": "sana"}[model]]
    parts = family.parts(pipe, torch.device("cpu"), torch.float32)
    ids = parts.text.token_ids("a lighthouse at dusk")
    latents = torch.randn(parts.denoiser.latent_shape(64, 64), generator=torch.Generator().manual_seed(0))
    timestep = torch.tensor(999.0) if family.name != "sana" else torch.tensor(1.5)
    guidance = family.default_guidance

    def frame(calls):
        with torch.inference_mode():
            embeds, extra = calls.encode(ids)
            added = parts.denoiser.added(64, 64, 1, guidance)
            return embeds, calls.denoise(latents, timestep, embeds, extra, added)

    want = frame(ModelCalls(parts, torch.device("cpu"), torch.float32, ControlNets({})))
    torch._dynamo.reset()
    monkeypatch.setattr(model_calls, "compiled", lambda fn, device, mode="default": torch.compile(
        fn, fullgraph=True, dynamic=False, backend="aot_eager"))
    monkeypatch.setattr(model_calls, "compile_blocks",
                        lambda module, mode="default": compile_blocks(module, mode, backend="aot_eager"))
    calls = ModelCalls(parts, torch.device("cpu"), torch.float32, ControlNets({}))
    calls.compile(Tuning(compile_scope="blocks"))
    with CompileCounter() as counter:
        got = frame(calls)
    assert counter.done >= 2  # the text call and at least one block class
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_compile_modes_ask_inductor_for_autotuning_and_the_last_also_for_epilogue_fusion():
    from bridge.pipeline.speed.optimize import COMPILE_MODES, compile_options

    assert compile_options("default") == {"mode": None}
    assert compile_options("max-autotune-no-cudagraphs") == {"mode": "max-autotune-no-cudagraphs"}
    epilogue = compile_options("max-autotune-epilogue")["options"]
    assert epilogue["max_autotune"] is True and epilogue["epilogue_fusion"] is True
    assert not epilogue.get("triton.cudagraphs")  # CUDA graphs are the renderer's (graphs.py), never Inductor's
    assert COMPILE_MODES == ("default", "max-autotune-no-cudagraphs", "max-autotune-epilogue")
    from bridge import cli_tools

    assert cli_tools.COMPILE_MODES == COMPILE_MODES  # the command line's copy (it imports no torch)
    with pytest.raises(ValueError, match="compile mode 'max-autotune': one of default, "):
        compile_options("max-autotune")  # Inductor's own CUDA graphs: refused


class HostReads(TorchDispatchMode):
    """Counts the ops that read a device tensor's values on the host (``.item()``, ``bool(t)``,
    ``nonzero``): each a synchronisation, which a CUDA graph capture refuses."""

    READS = ("item", "_local_scalar_dense", "nonzero", "is_nonzero")

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.split(".")[0] in self.READS:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("model", ["demo", "demo-sd", "demo-sd15", "demo-sana"])  # one per family (FAMILIES)
def test_each_familys_text_encoders_read_nothing_back_so_they_can_be_captured_uncompiled(model, cache_dir):
    """``--compile-text off`` captures the eager text encoders in the frame graphs: no op of theirs may
    read a value back to the host (Dynamo would have traced such a read away; eager, it would end the capture)."""
    from bridge.pipeline.families.registry import family_of_pipeline
    from bridge.pipeline.loading.loader import load_pipeline

    pipe = load_pipeline(model, "cpu", torch.float32, cache_dir)
    text = family_of_pipeline(pipe).parts(pipe, torch.device("cpu"), torch.float32).text
    ids = text.token_ids("a lighthouse at dusk")
    with torch.inference_mode(), HostReads() as reads:
        text.encode(ids)
    with torch.inference_mode(), HostReads() as probe:  # the counter itself sees a read
        torch.ones(2).sum().item()
    assert reads.seen == [] and probe.seen == ["aten.item.default"]
