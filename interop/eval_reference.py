#!/usr/bin/env python3
"""Reference numbers for `lorakit eval`: mean token loss and perplexity computed with transformers (+ PEFT).

    interop/.venv/bin/python interop/eval_reference.py

Writes test/fixtures/eval/:
  * shakespeare.txt   — a ~3 KB excerpt of /work/shared/data/tinyshakespeare/input.txt (whole lines from the first
                        line start at or after character 200 000; offsets recorded in expected.json). If the shared
                        file is absent the committed excerpt is used as it is.
  * shakespeare.jsonl — the same excerpt as one {"text": ...} record per speech (blank-line separated), for the
                        one-document-per-record rule;
  * expected.json     — per case: model, adapter, data file, seq_len, and the reference loss, perplexity, tokens
                        (adapter cases also the base model's loss on the same windows).

The rule (what lorakit must reproduce): each document is tokenised with `tokenizer(text)` (default
add_special_tokens=True), cut into consecutive non-overlapping windows of seq_len tokens (the last one shorter);
each window is one forward pass from position 0 and predicts its tokens 1..len-1; the loss is the sum of the
per-token negative log-likelihoods of all windows (float64 accumulation of float32 per-window sums) divided by the
number of predicted tokens. float32 weights (bf16 upcast), eager attention.
"""

import json
import math
from pathlib import Path

# first: sets the offline environment before the Hugging Face libraries are imported
from common import REPO, check, load, run, setup, versions

import torch
import torch.nn.functional as F
from peft import PeftModel
from transformers import AutoTokenizer

OUT = REPO / "test" / "fixtures" / "eval"
SOURCE = Path("/work/shared/data/tinyshakespeare/input.txt")
START, MIN_CHARS = 200_000, 3_000

# name: (model, adapter or None, data file, seq_len as passed to lorakit, or None for its default)
CASES = {
    "llama_text_64": ("test/fixtures/models/llama", None, "shakespeare.txt", 64),
    "qwen2_text_100": ("test/fixtures/models/qwen2", None, "shakespeare.txt", 100),
    "gpt2_text_default": ("test/fixtures/models/gpt2", None, "shakespeare.txt", None),
    "llama_lora_patterns_text_128": ("test/fixtures/models/llama", "test/fixtures/peft/llama_lora_patterns", "shakespeare.txt", 128),
    "gpt2_lora_jsonl_48": ("test/fixtures/models/gpt2", "test/fixtures/peft/gpt2_lora", "shakespeare.jsonl", 48),
}


def excerpt():
    """The excerpt text and its character offsets in the source (or the committed file when the source is absent)."""
    path = OUT / "shakespeare.txt"
    if not SOURCE.is_file():
        check(path.is_file(), f"neither {SOURCE} nor {path} exists")
        return path.read_text(encoding="utf-8"), None
    text = SOURCE.read_text(encoding="utf-8")
    begin = text.index("\n", START - 1) + 1
    end = begin
    while end - begin < MIN_CHARS:
        end = text.index("\n", end) + 1
    piece = text[begin:end]
    path.write_text(piece, encoding="utf-8")
    return piece, [begin, end]


def documents(file):
    raw = (OUT / file).read_text(encoding="utf-8")
    if file.endswith(".jsonl"):
        return [json.loads(line)["text"] for line in raw.split("\n") if line.strip()]
    return [raw]


def mean_loss(model, tok, docs, seq_len):
    total, count, windows = 0.0, 0, 0
    for doc in docs:
        ids = tok(doc)["input_ids"]
        for i in range(0, len(ids), seq_len):
            w = ids[i : i + seq_len]
            if len(w) < 2:
                continue
            x = torch.tensor([w])
            with torch.no_grad():
                logits = model(input_ids=x).logits[0].float()  # [T, V]
            total += F.cross_entropy(logits[:-1], x[0, 1:], reduction="sum").item()
            count += len(w) - 1
            windows += 1
    return total / count, count, windows


def main():
    setup("transformers")
    OUT.mkdir(parents=True, exist_ok=True)
    text, offsets = excerpt()
    speeches = [s.strip("\n") for s in text.split("\n\n") if s.strip()]
    (OUT / "shakespeare.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in speeches), encoding="utf-8")

    cases = {}
    for name, (model_rel, adapter_rel, file, seq_len) in CASES.items():
        model = load(REPO / model_rel)
        tok = AutoTokenizer.from_pretrained(str(REPO / model_rel))
        max_pos = getattr(model.config, "max_position_embeddings", None) or model.config.n_positions
        used = seq_len if seq_len is not None else min(256, max_pos)
        docs = documents(file)
        base_loss = mean_loss(model, tok, docs, used)[0] if adapter_rel else None
        if adapter_rel:
            model = PeftModel.from_pretrained(model, str(REPO / adapter_rel)).eval()
        loss, tokens, windows = mean_loss(model, tok, docs, used)
        check(math.isfinite(loss) and tokens > 0, f"{name}: loss {loss} over {tokens} tokens")
        cases[name] = {
            "model": model_rel, "adapter": adapter_rel, "data": f"test/fixtures/eval/{file}", "seq_len": seq_len,
            "seq_len_used": used, "loss": loss, "perplexity": math.exp(loss), "tokens": tokens, "windows": windows,
        }
        if adapter_rel:
            check(abs(loss - base_loss) > 1e-3 * loss, f"{name}: the adapter barely changes the loss ({base_loss} -> {loss})")
            cases[name]["loss_without_adapter"] = base_loss
        print(f"eval   {name:30s} loss {loss:.6f}  ppl {math.exp(loss):9.3f}  {tokens} tokens in {windows} windows", flush=True)

    info = {
        "source": "tinyshakespeare input.txt (Karpathy's char-rnn data), /work/shared/data/tinyshakespeare/input.txt",
        "source_char_offsets": offsets,
        "made_by": "interop/eval_reference.py",
        "versions": versions("torch", "transformers"),
        "jsonl_records": len(speeches),
        "cases": cases,
    }
    if offsets is None:
        info["source_char_offsets"] = json.loads((OUT / "expected.json").read_text())["source_char_offsets"]
    (OUT / "expected.json").write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    run("eval_reference", main)
