"""Test helper: write a diffusers pipeline as one single-file checkpoint in the original layout.

Diffusers reads the LDM/SGM layout but has no writer for it. This is the inverse of its readers,
written from the layouts themselves (the LDM UNet's input/middle/output blocks, the LDM VAE's
encoder.down/decoder.up, OpenCLIP's text tower with fused q/k/v): SDXL as SGM files carry it
(``conditioner.embedders.0.transformer.`` CLIP-L, ``conditioner.embedders.1.model.`` OpenCLIP-G),
SD 2.x as LDM files carry it (``cond_stage_model.model.``), SD 1.x with OpenAI CLIP-L as transformers
names it (``cond_stage_model.transformer.text_model.``).
"""

from __future__ import annotations

import re

import torch

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
          "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
            "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
            "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def _resnet(rest: str) -> str:
    head, tail = rest.split(".", 1)
    return f"{RESNET.get(head, head)}.{tail}"


def unet_to_ldm(sd: dict, config: dict) -> dict:
    per_level = config["layers_per_block"]
    levels = len(config["block_out_channels"])
    out = {}
    for key, value in sd.items():
        new = None
        for old, ldm in UNET_TOP.items():
            if key.startswith(old + "."):
                new = ldm + key[len(old):]
        if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
            i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            block = 1 + i * (per_level + 1) + j
            new = f"input_blocks.{block}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{block}.1.{rest}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            new = f"input_blocks.{(int(m[1]) + 1) * (per_level + 1)}.0.op.{m[2]}"
        elif m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
            i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            block = i * (per_level + 1) + j
            new = f"output_blocks.{block}.0.{_resnet(rest)}" if kind == "resnets" else f"output_blocks.{block}.1.{rest}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.(.*)", key):
            i = int(m[1])
            has_attention = any(k.startswith(f"up_blocks.{i}.attentions.") for k in sd)
            new = f"output_blocks.{i * (per_level + 1) + per_level}.{2 if has_attention else 1}.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
            new = f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
        elif key.startswith("mid_block.attentions.0."):
            new = "middle_block.1." + key[len("mid_block.attentions.0."):]
        assert new is not None, key
        out["model.diffusion_model." + new] = value
    assert levels >= 1
    return out


def vae_to_ldm(sd: dict) -> dict:
    levels = 1 + max(int(m[1]) for k in sd if (m := re.match(r"decoder\.up_blocks\.(\d+)", k)))
    out = {}
    for key, value in sd.items():
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", new):
            new = f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", new):
            new = f"encoder.down.{m[1]}.downsample.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", new):
            new = f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{m[3]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", new):
            new = f"decoder.up.{levels - 1 - int(m[1])}.upsample.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", new):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", new):
            rest = m[2]
            for old, ldm in (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."),
                             ("to_out.0.", "proj_out.")):
                rest = rest.replace(old, ldm)
            new = f"{m[1]}.mid.attn_1.{rest}"
            if value.ndim == 2:  # LDM's attention projections are 1x1 convolutions
                value = value[:, :, None, None]
        out["first_stage_model." + new] = value
    return out


def clip_to_open_clip(sd: dict, prefix: str) -> dict:
    """transformers CLIP text keys (with or without ``text_model.``) to OpenCLIP's text tower."""
    sd = {k.removeprefix("text_model."): v for k, v in sd.items() if not k.endswith("position_ids")}
    out = {prefix + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
           prefix + "positional_embedding": sd["embeddings.position_embedding.weight"],
           prefix + "ln_final.weight": sd["final_layer_norm.weight"],
           prefix + "ln_final.bias": sd["final_layer_norm.bias"]}
    if "text_projection.weight" in sd:
        out[prefix + "text_projection"] = sd["text_projection.weight"].T.contiguous()
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    layers = {int(m[1]) for k in sd if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
    for i in sorted(layers):
        base, block = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{block}attn.in_proj_{kind}"] = torch.cat([sd[f"{base}self_attn.{p}_proj.{kind}"] for p in "qkv"])
            for old, new in names.items():
                out[f"{block}{new}.{kind}"] = sd[f"{base}{old}.{kind}"]
    return out


def pipeline_to_single_file(pipe, sgm: bool = False) -> dict:
    """The whole pipeline's weights in the original layout (SDXL: SGM; SD 1.x: LDM; SD 2.x: LDM, or
    with ``sgm`` the layout of Stability's own sd_turbo.safetensors: ``conditioner.embedders.0.model.``)."""
    out = {**unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config), **vae_to_ldm(pipe.vae.state_dict())}
    if hasattr(pipe, "text_encoder_2"):
        clip_l = {k.removeprefix("text_model."): v for k, v in pipe.text_encoder.state_dict().items()}
        out.update({f"conditioner.embedders.0.transformer.text_model.{k}": v for k, v in clip_l.items()})
        out.update(clip_to_open_clip(pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model."))
    elif pipe.text_encoder.config.hidden_act == "quick_gelu":  # OpenAI CLIP ViT-L: SD 1.x
        out.update({f"cond_stage_model.transformer.{k}": v for k, v in pipe.text_encoder.state_dict().items()})
    else:
        prefix = "conditioner.embedders.0.model." if sgm else "cond_stage_model.model."
        out.update(clip_to_open_clip(pipe.text_encoder.state_dict(), prefix))
    return {k: v.contiguous() for k, v in out.items()}
