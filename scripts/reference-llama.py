"""Hugging Face transformers beside the worker in scripts/gpu-bench.sh: greedy generation with
the same random-weight llama folder, in batches, on one device, timed.

    python scripts/reference-llama.py DIR --device cuda --dtype bf16 --batches 1,16 --tokens 128

For each batch size it prints the decode tokens/s of `generate` over the batch (every sequence
generates exactly --tokens new tokens; the prompts are equal-length byte strings, so no
padding), after one untimed warm-up generation.
"""

import argparse
import time

import torch
import transformers
from transformers import AutoModelForCausalLM
from transformers.utils import logging


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"])
    p.add_argument("--batches", default="1,16")
    p.add_argument("--tokens", type=int, default=128)
    a = p.parse_args()
    logging.disable_progress_bar()
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[a.dtype]
    model = AutoModelForCausalLM.from_pretrained(a.dir, dtype=dtype).to(a.device).eval()
    prompt = list(b"Count from one to one hundred in words:")

    def generate(batch, tokens):
        ids = torch.tensor([prompt] * batch, device=a.device)
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                pad_token_id=0,
            )
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        return (out.shape[1] - ids.shape[1]) * batch

    generate(1, 4)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, {a.dtype} on {a.device}, {a.tokens} tokens")
    for batch in [int(b) for b in a.batches.split(",")]:
        started = time.perf_counter()
        n = generate(batch, a.tokens)
        print(f"batch {batch:>4} {n / (time.perf_counter() - started):>10.1f} tok/s")


if __name__ == "__main__":
    main()
