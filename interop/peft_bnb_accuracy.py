"""PEFT + bitsandbytes beside bench/quant-accuracy.ts: the demo's LoRA run (models/demo-base, Brown fiction,
r 16 / alpha 32 on q/k/v/o/gate/up/down, 30 steps of 4 x 128 bytes, lr 2e-3 with 10 % warmup then cosine to 10 %,
clip 1, AdamW 0.9/0.999/1e-8, no weight decay) with a float32 base, a bitsandbytes 8-bit base (LLM.int8, threshold
6.0 as transformers' default) and 4-bit bases (nf4 and fp4, float32 compute), on the same windows in the same order
(interop/quant_accuracy_data.ts writes them). Differences that remain: PEFT's LoRA init (kaiming-uniform A from
torch's seeded generator) is not lorakit's draw, and dropout is 0 on both sides.

Run with interop/.venv-bnb (torch 2.9.1, transformers 4.57.6 and peft 0.18.1 from the pinned venv through a .pth,
plus bitsandbytes; docs/quantization.md says how it is made):
    node --import tsx interop/quant_accuracy_data.ts /tmp/qa-data.json
    interop/.venv-bnb/bin/python interop/peft_bnb_accuracy.py /tmp/qa-data.json --mode fp32|bnb8|nf4|fp4
Prints one RESULT line (held-out loss before/after in nats per byte, final train loss, seconds) and appends it to
bench/results/quant-accuracy-peft.jsonl.
"""

import argparse
import json
import math
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--mode", choices=["fp32", "bnb8", "nf4", "fp4"], default="fp32")
    ap.add_argument("--lr", type=float, default=2e-3)
    # one thread: on the shared, oversubscribed machine torch's 2-thread barriers made a step of this 3M model 10x
    # slower (50 s against 5 s, measured)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    import transformers
    import peft
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    d = json.load(open(a.data))
    B, T = d["batch"], d["seqLen"]
    q = None
    bnb_version = None
    if a.mode != "fp32":
        import bitsandbytes

        bnb_version = bitsandbytes.__version__
        if a.mode == "bnb8":
            q = BitsAndBytesConfig(load_in_8bit=True)
        else:
            q = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type=a.mode, bnb_4bit_compute_dtype=torch.float32
            )
    t0 = time.time()
    kw = {"torch_dtype": torch.float32}
    if q is not None:
        kw.update(quantization_config=q, device_map="cpu")
    model = AutoModelForCausalLM.from_pretrained(os.path.join(ROOT, "models", "demo-base"), **kw)
    quantized = sorted({type(m).__name__ for m in model.modules() if "bit" in type(m).__name__.lower()})
    cfg = peft.LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    model = peft.get_peft_model(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    steps = d["steps"]
    sched = transformers.get_cosine_with_min_lr_schedule_with_warmup(
        opt, num_warmup_steps=math.ceil(0.1 * steps), num_training_steps=steps, min_lr_rate=0.1
    )

    def nll(batch):
        ids = torch.tensor(batch["input_ids"]).view(B, T)
        labels = torch.tensor(batch["labels"]).view(-1)
        logits = model(input_ids=ids).logits.float().view(-1, model.config.vocab_size)
        return torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="sum"), (
            labels != -100
        ).sum()

    def held_out():
        model.eval()
        s, n = 0.0, 0
        with torch.no_grad():
            for b in d["eval"]:
                l, c = nll(b)
                s += l.item()
                n += c.item()
        model.train()
        return s / n

    before = held_out()
    losses = []
    for b in d["train"]:
        l, c = nll(b)
        loss = l / c
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    after = held_out()
    row = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": a.mode,
        "quantized_modules": quantized,
        "steps": steps,
        "batch": B,
        "seqLen": T,
        "heldOutBefore": before,
        "heldOutAfter": after,
        "finalTrainLoss": losses[-1],
        "seconds": time.time() - t0,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "bitsandbytes": bnb_version,
        },
    }
    print("RESULT " + json.dumps(row))
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "quant-accuracy-peft.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
