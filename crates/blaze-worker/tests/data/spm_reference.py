"""Regenerates spm_reference.json: a small SentencePiece BPE vocabulary (byte fallback,
llama-style normalisation) trained with the `sentencepiece` package, and that package's own
encodings of some texts. The Rust tests compare the worker's GGUF `llama` tokenizer with them.

    pip install sentencepiece==0.2.3 && python3 spm_reference.py
"""
import io
import json
import pathlib

import sentencepiece as spm

CORPUS = """The capital of France is Paris. The capital of Italy is Rome.
Hello world! Hello there, how are you today? I am fine, thank you.
Tokenizers turn text into pieces; models turn pieces into text again.
The quick brown fox jumps over the lazy dog while the cat sleeps.
Numbers like 12, 345 and 2026 appear in text, as do dates and times.
She said: "don't worry, we'll be there at noon." They weren't late.
    Indented lines, tabs\tand  double  spaces  happen in code and prose.
def main():\n    print("hello")\n    return 0
"""

TEXTS = [
    "Hello world",
    "The capital of France is",
    " leading space",
    "trailing space ",
    "two  spaces and   three",
    "line one\nline two\n\nafter a blank line",
    "tabs\there",
    "Numbers: 12345 and 2026.",
    "unicode: café, naïve, 東京, emoji 🙂!",
    "don't WORRY, we'll BE there",
    "Zürich ≠ Zurich",
    "    print(\"hello\")",
    "x",
    "",
]


def main():
    here = pathlib.Path(__file__).parent
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.splitlines() * 20),
        model_writer=model,
        model_type="bpe",
        vocab_size=420,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    types = []
    for i in range(sp.get_piece_size()):
        if sp.is_unknown(i):
            types.append(2)
        elif sp.is_control(i):
            types.append(3)
        elif sp.is_byte(i):
            types.append(6)
        elif sp.is_unused(i):
            types.append(5)
        else:
            types.append(1)
    out = {
        "tokens": pieces,
        "scores": [sp.get_score(i) for i in range(sp.get_piece_size())],
        "token_types": types,
        "encodings": [{"text": t, "ids": sp.encode(t)} for t in TEXTS],
    }
    (here / "spm_reference.json").write_text(json.dumps(out, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
