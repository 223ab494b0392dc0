"""PEFT side of lorakit's serving benchmark (bench/serve.ts): transformers + PEFT's mixed-adapter batch. Loads the base
folder and every adapter folder given (PeftModel.from_pretrained + load_adapter), then for each count k of distinct
adapters runs model.generate on the same batch bench/serve.ts runs (the same prompt ids in every row, greedy, no eos)
with adapter_names=[row i -> adapter i % k], and times it with max_new_tokens=N and =1: decode tokens/s =
B·(N−1) / (t_N − t_1), best of the repeats. Prints one line `RESULT {json}`. torch threads = --threads.
"""
import argparse
import json
import time

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapters", required=True, help="JSON list of [name, folder]")
    ap.add_argument("--prompt", required=True, help="JSON list of token ids (every row)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--distinct", default="[1,8,32]")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    adapters = json.loads(a.adapters)
    base = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapters[0][1], adapter_name=adapters[0][0])
    for name, folder in adapters[1:]:
        model.load_adapter(folder, adapter_name=name)
    model.eval()
    ids = torch.tensor([json.loads(a.prompt)] * a.batch)
    mask = torch.ones_like(ids)

    def run(names, n):
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                adapter_names=names, pad_token_id=0,
            )
        assert out.shape[1] == ids.shape[1] + n
        return time.perf_counter() - t

    result = {"batch": a.batch, "new_tokens": a.new_tokens, "threads": a.threads, "distinct": {}}
    for k in json.loads(a.distinct):
        names = [adapters[i % k][0] for i in range(a.batch)]
        run(names, 2)  # warm-up
        best = None
        for _ in range(a.repeat):
            full, first = run(names, a.new_tokens), run(names, 1)
            tps = a.batch * (a.new_tokens - 1) / (full - first)
            best = tps if best is None or tps > best else best
        result["distinct"][str(k)] = {"decode_tokens_per_s": best}
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
