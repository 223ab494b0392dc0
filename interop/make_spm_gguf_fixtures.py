#!/usr/bin/env python3
"""SentencePiece ("llama" tokenizer model) GGUF fixtures, checked by transformers' GGUF loading.

    python -m venv interop/.venv-spm
    echo /work/main/interop/.venv/lib/python3.11/site-packages > \
        interop/.venv-spm/lib/python3.11/site-packages/pinned.pth     # torch 2.9.1, transformers 4.57.6
    interop/.venv-spm/bin/pip install gguf==0.19.0 sentencepiece==0.2.3
    interop/.venv-spm/bin/python interop/make_spm_gguf_fixtures.py

Writes test/fixtures/gguf/:
  spm-tiny.gguf     a tiny Llama model (2 layers, width 64, random weights in Q8_0/F16/F32, q/k rows in llama.cpp's
                    order) whose tokenizer is a 1,000-piece SentencePiece BPE (byte fallback, Llama's trainer settings)
                    trained here on Pride and Prejudice; tokens, scores and token types are written as llama.cpp's
                    converter writes a tokenizer.model, with no merges (transformers recovers them from the scores);
  spm.json          the texts, and transformers' ids for them (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`,
                    with and without special tokens) for: the tiny file; Llama 2's vocabulary (../shared's
                    tokenizer.json) written as GGUF metadata three ways (scores and no merges as llama.cpp writes it;
                    with tokenizer.ggml.merges; with add_space_prefix false); the ids of one text for the logits;
                    transformers' special tokens;
  spm-tiny.logits.safetensors  `logits` [T, V] of `AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)` (float32)
                    on that text.
No "mistral" fixture: transformers 4.57.6 maps a GGUF to model_type "mistral" (general.architecture "mistral", or
"llama" named exactly "mistral") and then fails in get_gguf_hf_weights_map ("Unknown gguf model_type: mistral in
gguf-py", with gguf 0.19.0), so the test checks lorakit's "mistral" against these "llama" logits instead.
The Llama 2 GGUFs are not kept (32,000 tokens of metadata): the test writes the same metadata again from ../shared's
tokenizer.json with `llama2GgufMetadata` (test/io/gguf-spm.test.ts), so the two builders must agree: token i is the
vocab entry with id i; score 0 for <unk>, <s>, </s> and the 256 byte pieces, -(i - 259) for the rest (SentencePiece
orders pieces by score, and the merges recovered from scores depend only on that order); token_type 2 for <unk>,
3 for <s> and </s>, 6 for bytes, 1 for the rest; bos 1, eos 2, unk 0; add_bos_token true, add_eos_token false;
merges (one variant) are tokenizer.json's as "left right", less the 3 whose pieces hold a space (transformers splits
each merge on " " and fails on them).
"""

import json
import os
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "test/fixtures/gguf"
SHARED = REPO.parent / "shared/data"
PRIDE = SHARED / "pride_and_prejudice/1342-0.txt"
LLAMA2 = SHARED / "tokenizers/llama2/tokenizer.json"

EDGE = [
    "",
    " ",
    "  leading spaces and trailing   ",
    "tabs\tand\nnew\n\nlines\r\n",
    "Ünïcödé — naïve café, 日本語のテキスト, emoji 🤗🚀 and Ωμέγα.",
    "digits 1234567 and 3.14159; x^2 + y_1 = {z}",
    "<s>not a bos</s> but <unk> is text, and <0x41> too",
    "▁already▁marked ▁ spaces",
    "Mr.\u00a0Bennet\u2019s \u201cquoted\u201d words\u2026",
]
LOGITS_TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune"


def fail(msg):
    print(f"make_spm_gguf_fixtures: FAILED: {msg}")
    sys.exit(1)


def pride_texts():
    text = PRIDE.read_text(encoding="utf-8")
    start = text.index("It is a truth universally acknowledged")
    chapter = text[start : start + 1600]
    return text, [chapter[:420], chapter[420:900], chapter[900:1600]]


def tokenizer_meta(w, tokens, scores, types, merges=None, add_space_prefix=None):
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    if merges is not None:
        w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    if add_space_prefix is not None:
        w.add_add_space_prefix(add_space_prefix)


def llama_meta(w, vocab, layers=2, width=64, heads=4, kv_heads=2, ffn=128):
    w.add_name("spm-tiny")
    w.add_context_length(256)
    w.add_embedding_length(width)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_rope_dimension_count(width // heads)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(vocab)


def llama2_gguf(path, variant):
    """Llama 2's vocabulary as llama.cpp writes a SentencePiece tokenizer (see the module doc), no tensors."""
    tj = json.loads(LLAMA2.read_text(encoding="utf-8"))
    vocab = tj["model"]["vocab"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    types = [2 if i == 0 else 3 if i < 3 else 6 if i < 259 else 1 for i in range(len(tokens))]
    scores = [0.0 if i < 259 else float(-(i - 259)) for i in range(len(tokens))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    merges = [m for m in merges if m.count(" ") == 1]  # 3 merges of pieces holding spaces: transformers splits on " "
    w = gguf.GGUFWriter(str(path), "llama")
    llama_meta(w, len(tokens))
    tokenizer_meta(
        w,
        tokens,
        scores,
        types,
        merges=merges if variant == "merges" else None,
        add_space_prefix=False if variant == "noprefix" else None,
    )
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def train_spm(text, workdir):
    import sentencepiece as spm

    lines = [l for l in text.splitlines() if l.strip()][:4000]
    src = Path(workdir) / "pride.txt"
    src.write_text("\n".join(lines), encoding="utf-8")
    prefix = str(Path(workdir) / "spm")
    # Llama's trainer settings: BPE, byte fallback, digits split, whitespace kept as it is
    spm.SentencePieceTrainer.train(
        input=str(src),
        model_prefix=prefix,
        model_type="bpe",
        vocab_size=1000,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        character_coverage=0.9995,
        num_threads=1,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        # llama.cpp's SentencePieceTokenTypes: 1 normal, 2 unknown, 3 control, 5 unused, 6 byte
        types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i) else 6 if sp.is_byte(i) else 1)
    if tokens[:3] != ["<unk>", "<s>", "</s>"]:
        fail(f"unexpected first pieces {tokens[:3]}")
    return tokens, scores, types


def tiny_gguf(path, tokens, scores, types):
    rng = np.random.default_rng(23)
    V, D, F, H, KV, L = len(tokens), 64, 128, 4, 2, 2
    hd = D // H
    w = gguf.GGUFWriter(str(path), "llama")
    llama_meta(w, V, layers=L, width=D, heads=H, kv_heads=KV, ffn=F)
    tokenizer_meta(w, tokens, scores, types)
    w.add_chat_template("{% for m in messages %}<s>[INST] {{ m['content'] }} [/INST]{% endfor %}")

    def put(name, shape, qtype, std=0.08, mean=0.0):
        v = (mean + std * rng.standard_normal(shape)).astype(np.float32)
        if qtype == Q.F32:
            w.add_tensor(name, v)
        elif qtype == Q.F16:
            w.add_tensor(name, v.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(v, qtype), raw_dtype=qtype)

    put("token_embd.weight", (V, D), Q.Q8_0, std=0.5)  # tied: no output.weight
    for b in range(L):
        put(f"blk.{b}.attn_norm.weight", (D,), Q.F32, std=0.1, mean=1.0)
        put(f"blk.{b}.attn_q.weight", (H * hd, D), Q.Q8_0, std=0.2)  # random rows: already "in llama.cpp order"
        put(f"blk.{b}.attn_k.weight", (KV * hd, D), Q.F16, std=0.2)
        put(f"blk.{b}.attn_v.weight", (KV * hd, D), Q.Q8_0)
        put(f"blk.{b}.attn_output.weight", (D, H * hd), Q.F16)
        put(f"blk.{b}.ffn_norm.weight", (D,), Q.F32, std=0.1, mean=1.0)
        put(f"blk.{b}.ffn_gate.weight", (F, D), Q.Q8_0)
        put(f"blk.{b}.ffn_up.weight", (F, D), Q.F16)
        put(f"blk.{b}.ffn_down.weight", (D, F), Q.Q8_0)
    put("output_norm.weight", (D,), Q.F32, std=0.1, mean=1.0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def hf_ids(path, texts):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    out = []
    for t in texts:
        ids = tok(t)["input_ids"]
        plain = tok(t, add_special_tokens=False)["input_ids"]
        out.append({"ids": ids, "plain": plain, "decoded": tok.decode(plain)})
    special = {k: getattr(tok, k) for k in ["bos_token", "eos_token", "unk_token", "pad_token"]}
    return tok, out, {"class": type(tok).__name__, **special}


def main():
    import torch
    import transformers
    from safetensors.numpy import save_file
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    os.chdir(REPO)
    if not PRIDE.exists() or not LLAMA2.exists():
        fail(f"{PRIDE} and {LLAMA2} are needed")
    full, pride = pride_texts()
    texts = pride + EDGE
    out = {
        "versions": {"gguf": "0.19.0", "transformers": transformers.__version__, "torch": torch.__version__},
        "texts": texts,
    }
    with tempfile.TemporaryDirectory() as tmp:
        tokens, scores, types = train_spm(full, tmp)
        tiny = OUT / "spm-tiny.gguf"
        tiny_gguf(tiny, tokens, scores, types)
        tok, cases, special = hf_ids(tiny, texts)
        out["tiny"] = {"cases": cases, "special": special}
        ids = tok(LOGITS_TEXT)["input_ids"]
        model = AutoModelForCausalLM.from_pretrained(str(OUT), gguf_file=tiny.name, torch_dtype=torch.float32).eval()
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float().numpy()  # [T, V]
        out["logits"] = {"text": LOGITS_TEXT, "ids": ids}
        save_file({"logits": np.ascontiguousarray(logits)}, str(OUT / "spm-tiny.logits.safetensors"))
        out["llama2"] = {}
        for variant in ["scores", "merges", "noprefix"]:
            p = Path(tmp) / f"llama2-{variant}.gguf"
            llama2_gguf(p, variant)
            _, cases, special = hf_ids(p, texts)
            out["llama2"][variant] = {"cases": cases, "special": special}
            print(f"make_spm_gguf_fixtures: llama2 {variant} done")
    (OUT / "spm.json").write_text(json.dumps(out, ensure_ascii=False) + "\n", encoding="utf-8")
    print("make_spm_gguf_fixtures: ok")


if __name__ == "__main__":
    main()
