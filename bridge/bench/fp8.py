"""How far FP8 frames are from bf16 ones: ``turbo-bridge bench --precision fp8``'s deviation figures."""

from __future__ import annotations

import torch


def pixel_deviation(reference: list, other: list) -> dict[str, float]:
    """Mean and max absolute difference (0-255) and PSNR (dB) of RGB pixels, over frame pairs."""
    import numpy as np

    a = np.stack([np.asarray(f)[..., :3] for f in reference]).astype(np.float64)
    b = np.stack([np.asarray(f)[..., :3] for f in other]).astype(np.float64)
    mse = float(((a - b) ** 2).mean())
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
    return {"mean_abs": round(float(np.abs(a - b).mean()), 3), "max_abs": int(np.abs(a - b).max()),
            "psnr_db": round(psnr, 2), "frames": len(reference)}


def deviation_from_bf16(pipe, device: str, dtype: torch.dtype, size: int, seeds=(1, 2, 3)) -> dict:
    """Frames of the eager renderer before and after quantising ``pipe``'s UNet (in place): the
    pixel deviation FP8 costs on these weights. ``pipe`` is FP8 afterwards."""
    from ..core.params import Params
    from ..pipeline.render.renderer import DiffusersRenderer

    frames = [Params(prompt=f"a lighthouse in a storm, take {s}", seed=s, width=size, height=size) for s in seeds]
    reference = [DiffusersRenderer(pipe, device, dtype).render(p).pixels for p in frames]
    fp8 = DiffusersRenderer(pipe, device, dtype, precision="fp8")
    return {"size": size, **pixel_deviation(reference, [fp8.render(p).pixels for p in frames])}
