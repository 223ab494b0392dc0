#!/usr/bin/env python3
"""GGUF fixtures, made by the `gguf` Python package (llama.cpp's own gguf-py) and transformers' GGUF loading.

    python -m venv interop/.venv-gguf && interop/.venv-gguf/bin/pip install gguf==0.17.1 numpy==2.3.5
    # torch and transformers: the pinned set of interop/.venv (a .pth file in .venv-gguf pointing at its
    # site-packages, or pip install torch==2.9.1 transformers==4.57.6)
    interop/.venv-gguf/bin/python interop/make_gguf_fixtures.py

Writes test/fixtures/gguf/:
  types.gguf            one small tensor per ggml type lorakit reads (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
                        Q2_K..Q6_K, Q8_K) plus metadata of every GGUF value type (arrays included), written by
                        gguf.GGUFWriter; the legacy types quantized by gguf.quants.quantize, the K types as random blocks
                        with finite f16 scales (gguf-py has no K quantizer);
  types.expected.safetensors   each tensor dequantized by gguf.quants.dequantize (Q8_K, which gguf-py cannot
                        dequantize, by numpy from ggml's formula d · q), float32, in the row-major shape;
  types.expected.json   the metadata values as gguf's reader reads them;
  smollm2.json          when ../shared holds SmolLM2-135M-Instruct.Q4_1.gguf: per tensor of a few, its first 64
                        dequantized values and their float64 sum; transformers' token ids for real texts (GGUF loading)
                        and the top-5 ids per position of its logits for one real text (`from_pretrained(dir, gguf_file=...)`,
                        float32);
  smollm2.logits.safetensors   those logits: `at_cols` [T, 256] at the 256 fixed vocabulary ids smollm2.json lists,
                        and `last` [V], the full last row.
Deterministic: fixed numpy seeds, torch on 2 threads.
"""

import json
import os
import sys
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "test/fixtures/gguf"
SHARED_GGUF = REPO.parent / "shared/data/models/smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf"

LEGACY = [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1]
K_TYPES = [Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q8_K]
# byte offsets of the f16 scale fields in each K block (kept finite and small), and Q8_K's f32 d
K_F16_FIELDS = {Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208]}

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! How are you doing today? I'm fine, thanks :)",
    "def add(a, b):\n    return a + b  # 42\n\n\ttabs\tand   spaces",
    "Ünïcödé — naïve café, 日本語のテキスト, emoji 🤗🚀, numbers 1234567 and 3.14159.",
    "<|im_start|>user\nWhat is GGUF?<|im_end|>\n<|im_start|>assistant\n",
]
LOGITS_TEXT = "Gravity is the force by which a planet or other body draws objects toward its centre. It keeps"


def fail(msg):
    print(f"make_gguf_fixtures: FAILED: {msg}")
    sys.exit(1)


def k_blocks(qtype, n_blocks, rng):
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off in K_F16_FIELDS.get(qtype, []):
        raw[:, off : off + 2] = np.frombuffer(
            rng.uniform(0.001, 0.05, n_blocks).astype(np.float16).tobytes(), np.uint8
        ).reshape(n_blocks, 2)
    if qtype == Q.Q8_K:
        raw[:, 0:4] = np.frombuffer(rng.uniform(0.001, 0.05, n_blocks).astype(np.float32).tobytes(), np.uint8).reshape(
            n_blocks, 4
        )
    return raw


def dequant_q8_k(raw):
    d = raw[:, 0:4].copy().view(np.float32)  # [n, 1]
    q = raw[:, 4:260].copy().view(np.int8).astype(np.float32)
    return (d * q).reshape(-1)


def plain(v):
    """numpy scalars and lists of them as Python values (for JSON)."""
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v.item() if hasattr(v, "item") else v


def make_types():
    from safetensors.numpy import save_file

    rng = np.random.default_rng(11)
    w = gguf.GGUFWriter(str(OUT / "types.gguf"), "llama")
    meta = {
        "test.u8": (w.add_uint8, 200),
        "test.i8": (w.add_int8, -100),
        "test.u16": (w.add_uint16, 60000),
        "test.i16": (w.add_int16, -30000),
        "test.u32": (w.add_uint32, 4000000000),
        "test.i32": (w.add_int32, -2000000000),
        "test.f32": (w.add_float32, 0.25),
        "test.bool": (w.add_bool, True),
        "test.string": (w.add_string, "héllo ✓"),
        "test.u64": (w.add_uint64, 2**60 + 3),
        "test.i64": (w.add_int64, -(2**40)),
        "test.f64": (w.add_float64, 1 / 3),
        "test.array_i32": (w.add_array, [1, -2, 3]),
        "test.array_str": (w.add_array, ["a", "bc", ""]),
        "test.array_f32": (w.add_array, [0.5, -1.5]),
    }
    for k, (fn, v) in meta.items():
        fn(k, v)
    w.add_custom_alignment(64)
    expected = {}
    for t in LEGACY:
        values = rng.standard_normal((3, 64)).astype(np.float32)  # 2-D: ggml dims [64, 3]
        if t == Q.F32:
            stored = values
        elif t == Q.F16:
            stored = values.astype(np.float16)
        else:
            stored = gguf.quants.quantize(values, t)
        name = f"t.{t.name}"
        w.add_tensor(name, stored, raw_dtype=t)
        expected[name] = gguf.quants.dequantize(stored, t).astype(np.float32).reshape(3, 64)
    for t in K_TYPES:
        raw = k_blocks(t, 4, rng)  # 4 super-blocks of 256: shape [2, 2, 256] (3-D)
        name = f"t.{t.name}"
        stored = raw.reshape(2, 2, -1)
        w.add_tensor(name, stored, raw_dtype=t)
        vals = dequant_q8_k(raw) if t == Q.Q8_K else gguf.quants.dequantize(raw, t)
        expected[name] = np.ascontiguousarray(vals.astype(np.float32).reshape(2, 2, 256))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    for k, v in expected.items():
        if not np.isfinite(v).all():
            fail(f"{k}: non-finite dequantized values")
    save_file(expected, str(OUT / "types.expected.safetensors"))
    r = gguf.GGUFReader(str(OUT / "types.gguf"))
    md = {}
    for k, f in r.fields.items():
        if k.startswith("test."):
            v = plain(f.contents())
            md[k] = v if not isinstance(v, int) or abs(v) < 2**53 else str(v)
    md["alignment"] = int(r.alignment)
    md["data_offset"] = int(r.data_offset)
    md["tensors"] = {t.name: {"type": t.tensor_type.name, "dims": [int(d) for d in t.shape]} for t in r.tensors}
    (OUT / "types.expected.json").write_text(json.dumps(md, indent=1, ensure_ascii=False) + "\n")


def make_smollm2():
    if not SHARED_GGUF.exists():
        print(f"make_gguf_fixtures: {SHARED_GGUF} absent; smollm2.json not made")
        return
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    r = gguf.GGUFReader(str(SHARED_GGUF))
    digest = {}
    want = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.7.ffn_down.weight"]
    want += ["blk.29.attn_norm.weight", "output_norm.weight"]
    for t in r.tensors:
        if t.name in want:
            v = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
            digest[t.name] = {
                "type": t.tensor_type.name,
                "first64": [float(x) for x in v[:64]],
                "sum": float(v.astype(np.float64).sum()),
            }
    d, f = str(SHARED_GGUF.parent), SHARED_GGUF.name
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    tokens = [
        {"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"], "ids_special": tok(t)["input_ids"]}
        for t in TEXTS
    ]
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32).eval()
    ids = tok(LOGITS_TEXT, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float().numpy()  # [T, V]
    rng = np.random.default_rng(5)
    cols = np.sort(rng.choice(logits.shape[1], 256, replace=False))
    out = {
        "file": SHARED_GGUF.name,
        "versions": {"gguf": gguf.__version__ if hasattr(gguf, "__version__") else "0.17.1",
                     "transformers": __import__("transformers").__version__, "torch": torch.__version__},
        "tensors": digest,
        "tokens": tokens,
        "logits": {
            "text": LOGITS_TEXT,
            "ids": ids,
            "cols": [int(c) for c in cols],
            "top5": [[int(i) for i in np.argsort(-row)[:5]] for row in logits],
        },
    }
    (OUT / "smollm2.json").write_text(json.dumps(out) + "\n")
    from safetensors.numpy import save_file

    at_cols = np.ascontiguousarray(logits[:, cols])
    save_file({"at_cols": at_cols, "last": np.ascontiguousarray(logits[-1])}, str(OUT / "smollm2.logits.safetensors"))


def main():
    os.chdir(REPO)
    OUT.mkdir(parents=True, exist_ok=True)
    make_types()
    make_smollm2()
    print("make_gguf_fixtures: ok")


if __name__ == "__main__":
    main()
