#!/usr/bin/env python3
"""Reference outputs from Hugging Face transformers for seeded Qwen3-VL test models.

Runs where torch and transformers are installed (not in CI). For every case of a cases.json
(config folder, seed, images, prompt, optional system prompt and max_pixels) it loads the
checkpoint that `ostrakon make-test-model` wrote for that config and seed, runs the reference in
float32 on CPU and records: the prompt token count, image grids, the top-8 log-probabilities at
every prompt position and 24 greedy ids (argmax, no EOS stop).

usage: hf_reference.py --cases cases.json --models DIR --out golden.json
       (DIR/<config>-<seed>/ holds each checkpoint; images are relative to cases.json)
"""
import argparse
import json
import os

import torch
import transformers
from transformers import AutoImageProcessor, PreTrainedTokenizerFast, Qwen3VLForConditionalGeneration
from transformers.image_utils import load_image


def chat_text(case):
    s = ""
    if case.get("system"):
        s += "<|im_start|>system\n" + case["system"] + "<|im_end|>\n"
    s += "<|im_start|>user\n" + "<|vision_start|><|image_pad|><|vision_end|>" * len(case["images"])
    s += case["prompt"] + "<|im_end|>\n<|im_start|>assistant\n"
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=24)
    a = ap.parse_args()
    torch.manual_seed(0)
    base = os.path.dirname(os.path.abspath(a.cases))
    cases = json.load(open(a.cases))
    out = {"transformers": transformers.__version__, "torch": torch.__version__, "cases": {}}
    loaded = {}
    for case in cases:
        key = f"{os.path.basename(case['config'])}-{case['seed']}"
        mdir = os.path.join(a.models, key)
        if key not in loaded:
            model = Qwen3VLForConditionalGeneration.from_pretrained(mdir, dtype=torch.float32).eval()
            proc = AutoImageProcessor.from_pretrained(mdir)
            tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(mdir, "tokenizer.json"))
            loaded[key] = (model, proc, tok)
        model, proc, tok = loaded[key]
        text = chat_text(case)
        kwargs = {}
        if case["images"]:
            images = [load_image(os.path.join(base, p)) for p in case["images"]]
            extra = {}
            if case.get("max_pixels"):
                extra["size"] = {"shortest_edge": 65536, "longest_edge": case["max_pixels"]}
            iv = proc(images=images, return_tensors="pt", **extra)
            grids = iv["image_grid_thw"]
            kwargs = {"pixel_values": iv["pixel_values"].float(), "image_grid_thw": grids}
            parts = text.split("<|image_pad|>")
            text = parts[0]
            for i, g in enumerate(grids.tolist()):
                text += "<|image_pad|>" * (g[0] * g[1] * g[2] // 4) + parts[i + 1]
        ids = tok(text, add_special_tokens=False)["input_ids"]
        input_ids = torch.tensor([ids])

        def mm_types(seq):  # 1 marks image tokens (transformers 5.x derives M-RoPE ids from it)
            return (seq == 151655).long()

        if case["images"]:
            kwargs["mm_token_type_ids"] = mm_types(input_ids)
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs).logits[0]
            lp = torch.log_softmax(logits.float(), dim=-1)
            top = torch.topk(lp, 8, dim=-1)
            greedy, margins = [], []
            seq = input_ids
            last = logits[-1]
            for _ in range(a.steps):
                t2 = torch.topk(last, 2)
                nxt = int(t2.indices[0])
                greedy.append(nxt)
                margins.append(float(t2.values[0] - t2.values[1]))
                seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
                if case["images"]:
                    kwargs["mm_token_type_ids"] = mm_types(seq)
                last = model(input_ids=seq, attention_mask=torch.ones_like(seq), **kwargs).logits[0, -1]
        out["cases"][case["name"]] = {
            "prompt_text": chat_text(case),
            "num_prompt_tokens": len(ids),
            "image_grid_thw": kwargs["image_grid_thw"].tolist() if case["images"] else [],
            "top8_ids": top.indices.tolist(),
            "top8_logprobs": top.values.tolist(),
            "greedy_ids": greedy,
            "greedy_margins": margins,
        }
        print(case["name"], len(ids), "tokens", "greedy", greedy[:6], flush=True)
    json.dump(out, open(a.out, "w"))


if __name__ == "__main__":
    main()
