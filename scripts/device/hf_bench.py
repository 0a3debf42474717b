"""Side-by-side timing of Hugging Face transformers on the same seeded checkpoint and the same
request shapes as `ostrakon bench engine`: Qwen3VLForConditionalGeneration, bf16 on cuda, one
512x512 image (random pixel values, grid 32x32), a 30-token question, greedy 128 tokens; then
the time to first token for a 1280x960 image (grid 60x80, 1,200 image tokens). Pixel values
are random (no JPEG decode or resize on the HF side: its TTFT starts at the model's input).

usage: python3 hf_bench.py MODEL_DIR [--new-tokens 128] [--question-tokens 30]
"""
import json
import sys
import time

import torch
from transformers import Qwen3VLForConditionalGeneration


def main():
    model_dir = sys.argv[1]
    new_tokens = int(sys.argv[sys.argv.index("--new-tokens") + 1]) if "--new-tokens" in sys.argv else 128
    q_tokens = int(sys.argv[sys.argv.index("--question-tokens") + 1]) if "--question-tokens" in sys.argv else 30
    t0 = time.perf_counter()
    model = Qwen3VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.bfloat16, device_map="cuda")
    model.eval()
    load_s = time.perf_counter() - t0

    def request(gh, gw):
        n_img = gh * gw // 4
        ids = [151644, 872, 198, 151652] + [151655] * n_img + [151653] + [1158] * q_tokens + [151645, 198, 151644, 77091, 198]
        input_ids = torch.tensor([ids], device="cuda")
        g = torch.Generator().manual_seed(0)
        pixel_values = (torch.rand(gh * gw, 1536, generator=g) * 2 - 1).to("cuda")
        grid = torch.tensor([[1, gh, gw]], device="cuda")
        return ids, dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=pixel_values,
                         image_grid_thw=grid, do_sample=False)

    ids, kw = request(32, 32)  # 512x512 pixels

    def timed(n):
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**kw, max_new_tokens=n, min_new_tokens=n)
        torch.cuda.synchronize()
        return time.perf_counter() - t, out.shape[1] - len(ids)

    timed(4)  # warm-up
    ttft, _ = timed(1)
    total, n = timed(new_tokens)
    decode_tps = (n - 1) / (total - ttft)
    ids_l, kw_l = request(60, 80)  # 1280x960 pixels
    kw_small = kw
    kw = kw_l
    timed(1)  # warm-up at this shape
    ttft_l = sorted(timed(1)[0] for _ in range(3))[1]
    kw = kw_small
    res = {
        "impl": "transformers " + __import__("transformers").__version__ + ", torch " + torch.__version__,
        "device": torch.cuda.get_device_name(0),
        "load_s": load_s,
        "prompt_tokens": len(ids),
        "generated_tokens": n,
        "ttft_ms": ttft * 1e3,
        "prompt_tokens_1280x960": len(ids_l),
        "ttft_1280x960_ms": ttft_l * 1e3,
        "total_s": total,
        "decode_tokens_per_s": decode_tps,
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
    }
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
