"""SplitGroupNorm gives GroupNorm's result (up to float32 rounding) in every layout the VAE meets, compiled
too; the CUDA preparation swaps the VAE's GroupNorms for it, and only there (the eager CPU path keeps
diffusers' own modules, whose pixels the families' tests match exactly)."""

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from bridge.pipeline.speed.group_norm import SplitGroupNorm, swap_group_norms  # noqa: E402
from bridge.pipeline.speed.optimize import Tuning, prepare_modules  # noqa: E402


def norm(channels: int, groups: int = 32, affine: bool = True) -> nn.GroupNorm:
    gn = nn.GroupNorm(groups, channels, eps=1e-6, affine=affine)
    if affine:
        nn.init.normal_(gn.weight)
        nn.init.normal_(gn.bias)
    return gn


def layouts(x: torch.Tensor) -> list[torch.Tensor]:
    """The tensor as NCHW and as the channels-last view the compiled VAE hands its norms."""
    if x.dim() == 4:
        return [x, x.to(memory_format=torch.channels_last)]
    return [x, x.transpose(1, 2).contiguous().transpose(1, 2)]  # [N, C, L] with channels adjacent (attention)


@pytest.mark.parametrize("shape", [(1, 128, 64, 64), (2, 256, 32, 16), (1, 512, 4096), (1, 64, 7, 9), (3, 96, 5, 5)])
@pytest.mark.parametrize("affine", [True, False])
def test_the_split_statistics_give_groupnorms_result_in_both_layouts(shape, affine):
    torch.manual_seed(0)
    gn = norm(shape[1], affine=affine)
    split = SplitGroupNorm(gn)
    x = torch.randn(shape) * 3 + 1.5  # an offset mean: the variance must not come from E[x^2] - E[x]^2 alone
    for view in layouts(x):
        out = split(view)
        assert out.shape == view.shape and out.stride() == view.stride()  # the layout is kept: no copy after
        torch.testing.assert_close(out, gn(view), rtol=1e-5, atol=1e-5)


def test_bf16_rounds_as_the_modules_own_result_does():
    torch.manual_seed(1)
    gn = norm(128)
    x = (torch.randn(1, 128, 32, 32) * 4).bfloat16().to(memory_format=torch.channels_last)
    out = SplitGroupNorm(gn)(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), gn(x).float(), rtol=0, atol=2 ** -5)  # a few bf16 ulps at |y| < 8


def test_compiled_matches_and_keeps_channels_last():
    torch.manual_seed(2)
    gn = norm(64)
    x = torch.randn(1, 64, 32, 32).to(memory_format=torch.channels_last)
    fn = torch.compile(SplitGroupNorm(gn), fullgraph=True, dynamic=False)
    out = fn(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, gn(x), rtol=1e-5, atol=1e-5)


def small_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(3)
    return AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=32).eval()


def test_swapping_every_vae_norm_keeps_its_decode_and_its_parameters():
    vae = small_vae()
    latents = torch.randn(1, 4, 8, 8)
    with torch.inference_mode():
        before = vae.decode(latents).sample
    norms = [m for m in vae.modules() if type(m) is nn.GroupNorm]
    weights = {id(m.weight) for m in norms}
    assert swap_group_norms(vae) == len(norms) > 10  # resnets, the mid block's attention, the output norms
    assert not any(type(m) is nn.GroupNorm for m in vae.modules())
    assert {id(m.weight) for m in vae.modules() if isinstance(m, SplitGroupNorm)} == weights
    with torch.inference_mode():
        torch.testing.assert_close(vae.decode(latents).sample, before, rtol=1e-4, atol=1e-4)
    assert swap_group_norms(vae) == 0  # nothing left to swap: a second preparation changes nothing


def test_only_a_cuda_preparation_swaps_the_decoders_norms_and_the_knob_turns_it_off():
    flags = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        cpu, off, cuda = small_vae(), small_vae(), small_vae()
        prepare_modules([], torch.device("cpu"), decoder=cpu)
        prepare_modules([], torch.device("cuda"), Tuning(split_group_norm=False), decoder=off)
        prepare_modules([], torch.device("cuda"), decoder=cuda)  # flags and the swap: no CUDA call
        assert not any(isinstance(m, SplitGroupNorm) for m in cpu.modules())
        assert not any(isinstance(m, SplitGroupNorm) for m in off.modules())
        assert any(isinstance(m, SplitGroupNorm) for m in cuda.modules())
        assert not any(type(m) is nn.GroupNorm for m in cuda.modules())
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
