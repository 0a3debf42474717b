#!/usr/bin/env python3
"""Writes a Qwen3-VL checkpoint in the layout of Qwen's published FP8 checkpoints, with torch
and safetensors only (no ostrakon code): every 2-D linear weight of the text decoder becomes
torch.float8_e4m3fn with `<name>.weight_scale_inv` holding one scale per 128x128 block
(amax / 448, stored as bf16 as the published checkpoints do), and config.json gets
quantization_config {quant_method: fp8, fmt: e4m3, activation_scheme: dynamic,
weight_block_size: [128, 128], modules_to_not_convert: [...]}. Embeddings, norms, lm_head and the
whole vision tower stay bf16.

usage: fp8_official_writer.py SRC_DIR DST_DIR [bf16|f32]   (the dtype of weight_scale_inv)
"""
import json
import os
import re
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

B = 128
FP8_MAX = 448.0
LINEAR = re.compile(r"^model\.language_model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$")


def quantize(w: torch.Tensor, scale_dtype):
    rows, cols = w.shape
    rb, cb = (rows + B - 1) // B, (cols + B - 1) // B
    wp = torch.zeros(rb * B, cb * B, dtype=torch.float32)
    wp[:rows, :cols] = w.float()
    blocks = wp.view(rb, B, cb, B)
    amax = blocks.abs().amax(dim=(1, 3))
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax)).to(scale_dtype)
    q = (blocks / scale.float()[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q.view(rb * B, cb * B)[:rows, :cols].contiguous(), scale


def main():
    src, dst = sys.argv[1], sys.argv[2]
    scale_dtype = torch.float32 if len(sys.argv) > 3 and sys.argv[3] == "f32" else torch.bfloat16
    if os.path.exists(dst):
        shutil.rmtree(dst)
    os.makedirs(dst)
    for f in os.listdir(src):
        p = os.path.join(src, f)
        if os.path.isfile(p) and not f.endswith(".safetensors") and f != "model.safetensors.index.json":
            shutil.copy(p, os.path.join(dst, f))
    out, n_q = {}, 0
    for f in sorted(os.listdir(src)):
        if not f.endswith(".safetensors"):
            continue
        for name, t in load_file(os.path.join(src, f)).items():
            if LINEAR.match(name) and t.dim() == 2:
                q, s = quantize(t, scale_dtype)
                out[name] = q
                out[name + "_scale_inv"] = s
                n_q += 1
            else:
                out[name] = t
    save_file(out, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    cfg_path = os.path.join(dst, "config.json")
    with open(cfg_path) as fh:
        cfg = json.load(fh)
    cfg["quantization_config"] = {
        "activation_scheme": "dynamic",
        "fmt": "e4m3",
        "quant_method": "fp8",
        "weight_block_size": [B, B],
        "modules_to_not_convert": ["lm_head", "model.language_model.embed_tokens", "model.visual"],
    }
    with open(cfg_path, "w") as fh:
        json.dump(cfg, fh, indent=2)
    print(f"wrote {dst}: {n_q} fp8 linears")


if __name__ == "__main__":
    main()
