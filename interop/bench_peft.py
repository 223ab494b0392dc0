"""PEFT side of lorakit's benchmark (bench/peft.ts): runs one workload, given as the JSON spec of bench/workloads.ts
in argv[1], with transformers + PEFT in this process, and prints one line `RESULT {json}` with the same fields as
bench/lorakit.ts. One process per workload, so the peak RSS (VmHWM) is that workload's own.

Same work as lorakit: the HF folder written by bench/models.ts, fp32, transformers' default attention (sdpa; the
spec's peftAttention can ask for eager), dropout 0, LoRA r / alpha = 2r
on the same target_modules, model.train(), AdamW (lr 1e-4, weight decay 0.01), torch threads = the spec's threads.
  train: loss = model(input_ids, labels=input_ids).loss (transformers shifts the labels), backward, step, zero_grad;
         with the spec's peftAutocast "bf16" the forward runs under torch.autocast("cpu", dtype=torch.bfloat16)
  eval:  the same forward and loss under torch.no_grad()      gen: model.generate, greedy, no eos, timed per token
  matmul: torch.mm of two [n, n] fp32 matrices into a preallocated output, best of the runs
  gemm:   each Linear shape of the spec as a step runs it, x·Wᵀ and dY·W with batch·seq rows (torch.mm into
          preallocated outputs), best of the runs; bench/gemm.ts is lorakit's side
"""
import json
import os
import re
import sys
import time


def peak_rss_mb():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) / 1024


def minor_faults():
    """Minor page faults of this process so far (as bench/lorakit.ts counts them): a step that faults fresh memory
    every time pays the kernel for it (bench/workloads.ts Malloc)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[(n - 1) // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def tokens(n, vocab, seed=7):
    """The same ids as bench/lorakit.ts (an LCG), so both sides see the same batch."""
    out, s = [], seed
    for _ in range(n):
        s = (s * 1103515245 + 12345) & 0xFFFFFFFF
        out.append(s % vocab)
    return out


def main():
    w = json.loads(sys.argv[1])
    import torch

    torch.set_num_threads(w["threads"])
    t0 = time.perf_counter()
    if w["kind"] == "matmul":
        n = w["size"]
        dt = getattr(torch, w.get("dtype", "float32"))  # bfloat16 runs on AMX where the CPU has it (bench/precision.ts)
        a, b, c = torch.full((n, n), 0.5, dtype=dt), torch.full((n, n), 0.25, dtype=dt), torch.empty((n, n), dtype=dt)
        for _ in range(w["warmup"]):
            torch.mm(a, b, out=c)
        times = []
        for _ in range(w["steps"]):
            s = time.perf_counter()
            torch.mm(a, b, out=c)
            times.append((time.perf_counter() - s) * 1000)
        r = {"gflops": 2 * n**3 / min(times) / 1e6, "msPerStep": min(times)}
    elif w["kind"] == "gemm":
        r = run_gemm(w)
    else:
        r = run_model(w, t0)
    print("RESULT " + json.dumps({"id": w["id"], "side": "peft", **r, "peakRssMb": peak_rss_mb()}), flush=True)


def run_gemm(w):
    import torch

    m = w["batch"] * w["seq"]

    def best(fn):
        for _ in range(w["warmup"]):
            fn()
        times = []
        for _ in range(w["steps"]):
            s = time.perf_counter()
            fn()
            times.append((time.perf_counter() - s) * 1000)
        return min(times)

    rows, ms, flops = [], 0.0, 0.0
    for s in w["shapes"]:
        k, n = s["inFeatures"], s["outFeatures"]
        weight = torch.full((n, k), 0.01)  # W [out, in], as nn.Linear stores it
        x, dy = torch.full((m, k), 0.5), torch.full((m, n), 0.5)
        y, dx = torch.empty((m, n)), torch.empty((m, k))
        fwd = best(lambda: torch.mm(x, weight.t(), out=y))
        bwd = best(lambda: torch.mm(dy, weight, out=dx))
        rows.append({**s, "forwardMs": fwd, "backwardMs": bwd})
        ms += s["count"] * (fwd + bwd)
        flops += s["count"] * 4 * m * k * n
    return {"shapes": rows, "msPerStep": ms, "gflops": flops / ms / 1e6}


def run_model(w, t0):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    attn = w.get("peftAttention", "sdpa")
    path = w["dir"]
    if path.endswith(".gguf"):  # the real SmolLM2 (bench/models.ts smollm2): transformers dequantizes it to float32
        folder, gguf = os.path.dirname(path), os.path.basename(path)
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=gguf, dtype=torch.float32, attn_implementation=attn
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn)
    cfg = dict(w["lora"])
    cfg.pop("peft_type")
    if w["kind"] == "gen":
        cfg["init_lora_weights"] = False  # non-zero B, as lorakit's gen workload
    model = get_peft_model(model, LoraConfig(**cfg))
    vocab = model.config.vocab_size
    B, T = w["batch"], w["seq"]
    ids = torch.tensor(tokens(B * T, vocab), dtype=torch.long).view(B, T)
    if w["kind"] == "gen":
        return run_gen(w, model, ids)
    adapter_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # peftAutocast "bf16": the forward (and so the loss) under torch.autocast(cpu, bfloat16), as PEFT's users speed up
    # CPU training; the backward runs outside it, as torch's docs advise, in the dtypes the forward chose.
    bf16 = w.get("peftAutocast") == "bf16"

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    if w["kind"] == "train":
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01)

        def step():
            with autocast():
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.item()
    else:
        model.eval()

        def step():
            with torch.no_grad(), autocast():
                return model(input_ids=ids, labels=ids).loss.item()

    loss0 = step()
    first = (time.perf_counter() - t0) * 1000
    for _ in range(w["warmup"]):
        step()
    times, loss = [], loss0
    faults0 = minor_faults()
    for _ in range(w["steps"]):
        s = time.perf_counter()
        loss = step()
        times.append((time.perf_counter() - s) * 1000)
    ms = median(times)
    return {"msPerStep": ms, "stepTimesMs": times, "tokensPerSec": B * T * 1000 / ms, "timeToFirstStepMs": first,
            "minorFaultsPerStep": (minor_faults() - faults0) / w["steps"],
            "loss0": loss0, "lossLast": loss, "adapterParams": adapter_params}


class Clock:
    """A generate() streamer that stamps each put(): the prompt, then one put per new token (batch-wide)."""

    def __init__(self):
        self.stamps = []

    def put(self, value):
        self.stamps.append(time.perf_counter())

    def end(self):
        pass


def run_gen(w, model, ids):
    import torch

    model.eval()
    B, T, N = w["batch"], w["seq"], w["newTokens"]
    mask = torch.ones_like(ids)

    def gen(n):
        clock = Clock()
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                           eos_token_id=None, pad_token_id=0, streamer=clock)
        return clock.stamps

    gen(2)
    prefill, decode = [], []
    for _ in range(max(1, w["steps"])):
        st = gen(N)
        # stamps: [prompt, token 1 (after the prefill), token 2, ..., token N]
        prefill.append(B * T / (st[1] - st[0]))
        decode.append(B * (len(st) - 2) / (st[-1] - st[1]))
    return {"prefillTokensPerSec": median(prefill), "decodeTokensPerSec": median(decode)}


if __name__ == "__main__":
    main()
