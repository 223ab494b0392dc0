#!/usr/bin/env python3
"""lorakit's GGUF exports, checked by llama.cpp itself (llama-cpp-python built from PyPI).

    # once: llama-cpp-python 0.3.36 from PyPI, built for the machine's CPU. The default native build crashes on some
    # Xeons (see the SmolLM2 SOURCE.md), an AVX-512 build dies with SIGILL on AVX2-only CPUs (AMD EPYC here): pick
    # the flags by `grep -o 'avx512[a-z]*\|avx2' /proc/cpuinfo`. AVX2 machine (this one; ~1 h on 2 busy cores):
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DLLAVA_BUILD=OFF" \
      interop/.venv-gguf/bin/pip install llama-cpp-python==0.3.36 diskcache==5.6.3
    # or: the package's Python files on PYTHONPATH and its shared libraries (libllama, libggml*) built with cmake
    # from its vendor/llama.cpp with the flags above, named by LLAMA_CPP_LIB_PATH (how the committed result was made)
    interop/.venv-gguf/bin/python interop/check_gguf_llamacpp.py

Runs interop/gguf_lorakit_side.ts on the shared SmolLM2-135M-Instruct Q4_1 GGUF: it writes a seeded random LoRA
adapter (r 8, alpha 16, all seven Linear targets of all 30 layers), exports it with `exportAdapterGguf`, exports the
merged model as GGUF F16 and the base as GGUF Q8_0, and records lorakit's last-position logits with and without the
adapter and its 16-token greedy continuation with the adapter. Then llama.cpp loads the base with the adapter
(`lora_path`, the API of `--lora`), and the exported F16/Q8_0 files, and the same numbers are compared. llama.cpp's token ids of the texts of
smollm2.json are recorded too (test/models/gguf.test.ts compares lorakit's tokenizer with them).

llama.cpp multiplies Q4_1 (and Q8_0) weights with activations it quantizes to 8 bits, lorakit dequantizes the weights
to float32 (as transformers does), so on the Q4_1 base alone the two already differ by that quantization (reported
under `q4_1_base`, not checked). The check therefore runs llama.cpp on the same base exported by lorakit as F16
(`base-f16.gguf`: llama.cpp's float path) and requires (1) logits with the adapter within TOL of lorakit's, (2) the
adapter's effect (adapted − base logits) agreeing within TOL while being far larger than TOL, (3) the merged F16
export within TOL, (4) the same 16-token greedy continuation. An adapter written without llama.cpp's q/k row order
is measured too (`unpermuted`): it must disagree by at least 10·TOL, which shows the
check can fail. Writes test/fixtures/gguf/llamacpp.json; exits non-zero with `check_gguf_llamacpp: FAILED: ...`.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BASE = REPO.parent / "shared/data/models/smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = REPO / "test/fixtures/gguf/llamacpp.json"
TOL = 0.1  # logits, F16 base: llama.cpp's F16 weights (lorakit's are the F32 values they round) and F16 math


def fail(msg):
    print(f"check_gguf_llamacpp: FAILED: {msg}")
    sys.exit(1)


def llama(path, lora=None):
    from llama_cpp import Llama

    kw = {"lora_path": str(lora)} if lora else {}
    return Llama(model_path=str(path), n_ctx=128, n_threads=2, n_batch=128, logits_all=True, verbose=False, **kw)


def last_logits(llm, ids):
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[len(ids) - 1], dtype=np.float64)


def greedy(llm, ids, n):
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(n):
        t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(t)
        llm.eval([t])
    return out


def unpermuted_adapter(src, dst):
    """The exported adapter with lora_b of q/k put back in HF row order: what a converter that forgets it writes."""
    import gguf

    r = gguf.GGUFReader(str(src))
    heads = {"attn_q": 9, "attn_k": 3}
    w = gguf.GGUFWriter(str(dst), "llama")
    w.add_type("adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(r.fields["adapter.lora.alpha"].contents()))
    for t in r.tensors:
        data = np.array(t.data, dtype=np.float32).reshape([int(d) for d in reversed(t.shape)])
        kind = t.name.split(".")[2]
        if t.name.endswith(".lora_b") and kind in heads:
            h = heads[kind]
            rows, cols = data.shape
            # GGUF row h·hd + 2i + a ← HF row h·hd + a·hd/2 + i: invert to get HF order back
            data = data.reshape(h, rows // h // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)
        w.add_tensor(t.name, np.ascontiguousarray(data))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    if not BASE.exists():
        fail(f"{BASE} is absent")
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        env = dict(os.environ, LORAKIT_CACHE=str(work / "cache"))
        subprocess.run(
            ["node", "--import", "tsx", "interop/gguf_lorakit_side.ts", str(BASE), str(work)],
            cwd=REPO, env=env, check=True,
        )
        lk = json.loads((work / "lorakit.json").read_text())
        ids = lk["ids"]
        lk_ad, lk_base = np.array(lk["withAdapter"]), np.array(lk["base"])
        base = llama(BASE)
        q41_base = last_logits(base, ids)
        texts = [t["text"] for t in json.loads((REPO / "test/fixtures/gguf/smollm2.json").read_text())["tokens"]]
        cpp_tokens = [{"text": t, "ids": base.tokenize(t.encode(), add_bos=False, special=True)} for t in texts]
        del base
        adapted = llama(BASE, work / "adapter.gguf")
        q41_ad = last_logits(adapted, ids)
        q41_greedy = greedy(adapted, ids, len(lk["greedy"]))
        del adapted
        f16 = work / "base-f16.gguf"  # the same base as F16: llama.cpp's float path, no 8-bit activations
        base = llama(f16)
        cpp_base = last_logits(base, ids)
        del base
        adapted = llama(f16, work / "adapter.gguf")
        cpp_ad = last_logits(adapted, ids)
        cpp_greedy = greedy(adapted, ids, len(lk["greedy"]))
        del adapted
        unpermuted_adapter(work / "adapter.gguf", work / "adapter-unpermuted.gguf")
        wrong = llama(f16, work / "adapter-unpermuted.gguf")
        cpp_wrong = last_logits(wrong, ids)
        del wrong
        merged = llama(work / "merged-f16.gguf")
        cpp_merged = last_logits(merged, ids)
        del merged
        q8 = llama(work / "base-q8_0.gguf")
        cpp_q8 = last_logits(q8, ids)
        del q8

    def md(a, b):
        return float(np.max(np.abs(a - b)))

    def mean(a, b):
        return float(np.mean(np.abs(a - b)))

    res = {
        "base": BASE.name,
        "prompt": lk["prompt"],
        "tolerance": TOL,
        "llama_cpp_python": __import__("llama_cpp").__version__,
        "f16_base": {
            "max_abs_logits": {
                "base_vs_base": md(cpp_base, lk_base),
                "adapter_vs_adapter": md(cpp_ad, lk_ad),
                "adapter_effect": md(cpp_ad - cpp_base, lk_ad - lk_base),
                "adapter_effect_size": float(np.max(np.abs(lk_ad - lk_base))),
                "unpermuted_adapter_vs_adapter": md(cpp_wrong, lk_ad),
                "merged_f16_vs_adapter": md(cpp_merged, lk_ad),
            },
            "mean_abs_logits": {"adapter_vs_adapter": mean(cpp_ad, lk_ad), "unpermuted": mean(cpp_wrong, lk_ad)},
            "greedy": {"lorakit": lk["greedy"], "llama_cpp": cpp_greedy},
        },
        "q4_1_base": {
            "max_abs_logits": {"base_vs_base": md(q41_base, lk_base), "adapter_vs_adapter": md(q41_ad, lk_ad)},
            "mean_abs_logits": {"base_vs_base": mean(q41_base, lk_base), "adapter_vs_adapter": mean(q41_ad, lk_ad)},
            "greedy_llama_cpp": q41_greedy,
        },
        "q8_0_base_export": {"max_abs_vs_base": md(cpp_q8, lk_base), "mean_abs_vs_base": mean(cpp_q8, lk_base)},
        "tokens": cpp_tokens,
    }
    OUT.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "tokens"}, indent=1))
    m = res["f16_base"]["max_abs_logits"]
    if m["adapter_vs_adapter"] > TOL or m["adapter_effect"] > TOL or m["merged_f16_vs_adapter"] > TOL:
        fail(f"logits with the adapter differ by more than {TOL}: {m}")
    if m["adapter_effect_size"] < 10 * TOL:
        fail(f"the adapter changes the logits by only {m['adapter_effect_size']}: the check could not fail")
    if m["unpermuted_adapter_vs_adapter"] < 10 * TOL:
        fail("an adapter without llama.cpp's q/k row order agrees too: the check could not see it")
    g = res["f16_base"]["greedy"]
    if g["lorakit"] != g["llama_cpp"]:
        fail(f"greedy continuations differ: {g}")
    print("check_gguf_llamacpp: ok")


if __name__ == "__main__":
    main()
