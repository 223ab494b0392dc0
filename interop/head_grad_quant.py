"""How much of the head's loss gradient E = (softmax - onehot)·W survives per-row integer grids of the output
gradient (bench/RESULTS.md, "The head's E product stays in float32"). SmolLM2-135M-Instruct from the shared GGUF
(transformers dequantizes it to float32), six texts of six Alpaca chats each (up to 256 tokens), the tied head W.
For each grid: the mean over positions of ||E_grid - E|| / ||E||, and the probability mass under half a step of
one 8-bit grid per row.

    interop/.venv/bin/python -m pip install gguf      # transformers' GGUF loading needs it
    interop/.venv/bin/python interop/head_grad_quant.py ../shared/data/alpaca/alpaca_5000.json
"""

import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL_DIR = "../shared/data/models/smollm2-135m-instruct-q4_1"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def per_row_grid(x, levels=255):
    """x on a grid of `levels` steps over [-r, r] per row, r its largest magnitude (DynamicQuantizeMatMul after /r)."""
    r = x.abs().amax(-1, keepdim=True).clamp_min(1e-30)
    step = 2 / levels
    return torch.round(x / r / step) * step * r


def main():
    rows = json.load(open(sys.argv[1]))
    chat = lambda r: r["instruction"] + "\n" + r["input"] + "\n" + r["output"]
    texts = ["\n\n".join(chat(r) for r in rows[100 + 6 * i : 106 + 6 * i]) for i in range(6)]
    tok = AutoTokenizer.from_pretrained(MODEL_DIR, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, gguf_file=GGUF, dtype=torch.float32).eval()
    W = model.get_output_embeddings().weight.detach()  # [V, D]
    res = {}
    with torch.no_grad():
        for text in texts:
            ids = tok(text, return_tensors="pt").input_ids[0][:257]
            t = ids[1:]
            P = model(ids[None, :-1]).logits[0].softmax(-1)
            G = P.clone()
            G[torch.arange(len(t)), t] -= 1
            E = G @ W
            rel = lambda Eh: ((Eh - E).norm(dim=-1) / E.norm(dim=-1)).mean().item()
            Gq = per_row_grid(G)
            cands = {
                "one 8-bit grid per row of G": Gq @ W,
                "8-bit grid of softmax, minus W[target]": per_row_grid(P) @ W - W[t],
                "two 8-bit grids (G, then its residual)": (Gq + per_row_grid(G - Gq)) @ W,
                "bfloat16 G and W (torch autocast)": G.bfloat16().float() @ W.bfloat16().float(),
            }
            for k, v in cands.items():
                res.setdefault(k, []).append(rel(v))
            below = P < P.amax(-1, keepdim=True) / 255
            res.setdefault("mass under half a step (not an error)", []).append((below * P).sum(-1).mean().item())
    for k, v in res.items():
        print(f"{k:42s} {sum(v) / len(v):.4f}")


if __name__ == "__main__":
    main()
