#!/usr/bin/env python3
"""lorakit's Trainer against a plain PyTorch + PEFT loop, step by step, from one start adapter.

    interop/.venv/bin/python interop/trainer_parity.py            # writes docs/trainer-parity.md

1. PEFT makes a LoRA adapter (r 8 on every projection, random A and B, dropout 0) on the demo base (models/demo-base).
2. lorakit's Trainer continues it (scripts/trainer-parity.ts: 20 steps of 2 micro-batches of 4 x 64 bytes of Brown
   fiction, AdamW with weight decay, warmup + cosine, clipping at 1.0, token-weighted accumulation), recording each
   step's loss, gradient norm and learning rate, a checkpoint per step, and the micro-batches in the order it used.
3. The same micro-batches go through a PyTorch loop written the way transformers' Trainer computes a step: the mean
   loss over all counted tokens of the step's micro-batches (each micro-batch's summed loss / the step's token count),
   torch.nn.utils.clip_grad_norm_, torch.optim.AdamW, transformers' get_cosine_schedule_with_warmup.
4. A markdown table of the per-step differences (loss, gradient norm, lr, largest adapter difference) goes to
   docs/trainer-parity.md, with the versions. float32 on both sides; eager attention.
"""

# first: sets the offline environment before the Hugging Face libraries are imported
from common import REPO, check, run, setup, versions  # noqa: E402

import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup  # noqa: E402

BASE = REPO / "models" / "demo-base"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load_base():
    return AutoModelForCausalLM.from_pretrained(str(BASE), dtype=torch.float32, attn_implementation="eager")


def make_start_adapter(folder):
    torch.manual_seed(3)
    pm = get_peft_model(load_base(), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS,
                                                init_lora_weights=False, task_type="CAUSAL_LM"))
    pm.save_pretrained(str(folder))


def lorakit_key(peft_name):
    """base_model.model.<path>.lora_A.default.weight -> <path>.lora_A.weight#default (lorakit's graph-input name)."""
    path = peft_name.removeprefix("base_model.model.")
    for ab in ("lora_A", "lora_B"):
        if f".{ab}.default.weight" in path:
            return path.replace(f".{ab}.default.weight", f".{ab}.weight") + "#default"
    raise ValueError(peft_name)


def torch_loop(start, batches, s):
    model = PeftModel.from_pretrained(load_base(), str(start), is_trainable=True)
    model.train()  # dropout is 0: train mode changes nothing but is what a user runs
    params = [p for p in model.parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=s["weightDecay"])
    sched = get_cosine_schedule_with_warmup(opt, s["warmupSteps"], s["steps"])
    steps, snapshots = [], []
    k = s["accumulation"]
    for t in range(s["steps"]):
        micro = [torch.tensor(b["input_ids"]) for b in batches[t * k:(t + 1) * k]]
        counts = [ids[:, 1:].numel() for ids in micro]  # every next token counts (no padding here)
        total = sum(counts)
        opt.zero_grad()
        loss = 0.0
        lr = opt.param_groups[0]["lr"]
        for ids, n in zip(micro, counts):
            out = model(input_ids=ids, labels=ids)  # the mean over this micro-batch's tokens
            (out.loss * n / total).backward()
            loss += out.loss.item() * n / total
        norm = torch.nn.utils.clip_grad_norm_(params, s["clipNorm"]).item()
        opt.step()
        sched.step()
        steps.append({"step": t + 1, "loss": loss, "grad_norm": norm, "lr": lr})
        snapshots.append({lorakit_key(n): p.detach().clone() for n, p in zip(names, params)})
    return steps, snapshots


def main():
    setup("torch", "transformers", "peft")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_start_adapter(tmp / "start")
        subprocess.run(["node", "--import", "tsx", "scripts/trainer-parity.ts", str(tmp / "start"), str(tmp / "out")],
                       cwd=REPO, check=True)
        lk = json.loads((tmp / "out" / "lorakit.json").read_text())
        s = lk["settings"]
        batches = json.loads((tmp / "out" / "batches.json").read_text())
        check(len(batches) == s["steps"] * s["accumulation"], "lorakit recorded every micro-batch")
        ref, snapshots = torch_loop(tmp / "start", batches, s)
        rows = []
        for t in range(s["steps"]):
            mine = lk["steps"][t]
            ck = load_file(str(tmp / "out" / "run" / f"checkpoint-{t + 1}" / "params.safetensors"))
            check(set(ck) == set(snapshots[t]), f"step {t + 1}: the same adapter tensors on both sides")
            diff = max((ck[k] - snapshots[t][k]).abs().max().item() for k in ck)
            scale = max(snapshots[t][k].abs().max().item() for k in ck)
            rows.append((t + 1, mine["loss"], abs(mine["loss"] - ref[t]["loss"]), abs(mine["grad_norm"] - ref[t]["grad_norm"]),
                         abs(mine["lr"] - ref[t]["lr"]), diff, diff / scale))
    worst = [max(r[i] for r in rows) for i in range(2, 7)]
    lines = [
        "# Trainer parity: lorakit's Trainer against a PyTorch + PEFT loop",
        "",
        "Made by `interop/.venv/bin/python interop/trainer_parity.py` (the script's docstring says what both sides run).",
        f"Versions: {json.dumps(versions('torch', 'transformers', 'peft'))}. Settings: {json.dumps(s)}.",
        "",
        f"Largest differences over {s['steps']} steps: loss {worst[0]:.1e}, gradient norm {worst[1]:.1e}, "
        f"learning rate {worst[2]:.1e}, adapter tensors {worst[3]:.1e} (relative to the largest entry: {worst[4]:.1e}).",
        "",
        "| step | loss (lorakit) | abs Δ loss | abs Δ grad norm | abs Δ lr | max abs Δ adapter | relative |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {t} | {l:.6f} | {dl:.1e} | {dg:.1e} | {dlr:.1e} | {dp:.1e} | {rel:.1e} |" for t, l, dl, dg, dlr, dp, rel in rows]
    out = REPO / "docs" / "trainer-parity.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    check(worst[0] < 1e-4 and worst[2] == 0, f"lorakit left PyTorch's trajectory: {worst}")


if __name__ == "__main__":
    run("trainer_parity", main)
