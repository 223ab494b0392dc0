#!/usr/bin/env python3
"""Check LoRAM's recovery against torch and PEFT: the recovered adapter lorakit writes for the full model.

    node --import tsx scripts/make-loram-fixtures.ts    # sliced folders (git-ignored), pruned and recovered adapters
    interop/.venv/bin/python interop/check_loram.py [case ...]

For every case (test/fixtures/loram/<case>: a LoRA on the sliced folder test/fixtures/pruned/<case>/model and lorakit's
recovery of it to the full fixture model):
  * recovers the pruned adapter here, from the plan in lorakit_pruning.json, as the official
    3_recovered_low_rank_matrix_generation.py does (zeroA): lora_B of q/k/v/gate/up gets zero rows and lora_A of
    o/down_proj zero columns at every position the plan pruned (pads of narrower layers included); every tensor of
    the recovered folder must equal it exactly;
  * PeftModel.from_pretrained(full model, recovered folder) must load every key with its full shape;
  * for a case without pads, the pruned folder with the pruned adapter (PEFT) and the full model with the pruned
    groups' q/k/v/gate/up rows zeroed (check_pruned.masked) with the recovered adapter must give the same logits (1e-4);
  * writes `peft_logits.safetensors` (full model + recovered adapter, float32) and `peft.json`.
Exits non-zero with `check_loram: FAILED: ...` on any problem.
"""

import argparse
import json

# first: sets the offline environment before the Hugging Face libraries are imported
from common import ATTN_IMPL, REPO, check, f32, forward, load, max_abs_diff, run, setup, versions

import torch
from check_pruned import masked
from peft import PeftModel
from safetensors.torch import load_file, save_file

CASES_DIR = REPO / "test" / "fixtures" / "loram"
PRUNED_DIR = REPO / "test" / "fixtures" / "pruned"
CHECKED = ("torch", "transformers", "peft")
AXIS = {"q_proj": "out", "k_proj": "out", "v_proj": "out", "gate_proj": "out", "up_proj": "out", "o_proj": "in", "down_proj": "in"}


def held_and_kept(plan, layer, proj):
    """Full-model positions of the pruned folder's rows/columns of proj in layer (ascending), and the kept ones."""
    o = plan["original"]
    widest = max(len(l["heads"]) for l in plan["layers"]), max(len(l["channels"]) for l in plan["layers"])
    heads = proj in ("q_proj", "k_proj", "v_proj", "o_proj")
    kept = plan["layers"][layer]["heads" if heads else "channels"]
    total = o["num_key_value_heads"] if heads else o["intermediate_size"]
    want = widest[0] if heads else widest[1]
    pads = [g for g in range(total) if g not in set(kept)][: want - len(kept)]  # the lowest pruned groups
    held = sorted(kept + pads)
    if not heads:
        width = 1
    elif proj in ("k_proj", "v_proj"):
        width = o["head_dim"]
    else:
        width = o["head_dim"] * o["num_attention_heads"] // o["num_key_value_heads"]
    lines = lambda groups: [g * width + k for g in groups for k in range(width)]  # noqa: E731
    return lines(held), set(lines(kept)), len(pads) > 0


def recover(pruned, plan, full_shapes):
    """The official zeroA recovery of a pruned adapter's tensors (dict key -> tensor), by the plan."""
    out, padded = {}, False
    for key, t in pruned.items():
        parts = key.split(".")
        proj, factor = parts[-3], parts[-2]
        layer = int(parts[parts.index("layers") + 1]) if "layers" in parts else None
        axis = AXIS.get(proj)
        widen = (axis == "out" and factor == "lora_B") or (axis == "in" and factor == "lora_A")
        if layer is None or not widen:
            out[key] = t
            continue
        held, kept, has_pads = held_and_kept(plan, layer, proj)
        padded |= has_pads
        r = torch.zeros(full_shapes[key], dtype=t.dtype)
        for j, pos in enumerate(held):
            if pos not in kept:
                continue
            if axis == "out":
                r[pos, :] = t[j, :]
            else:
                r[:, pos] = t[:, j]
        out[key] = r
    return out, padded


def check_case(case_dir):
    case = case_dir.name
    pruned_folder = PRUNED_DIR / case / "model"
    inputs = json.loads((PRUNED_DIR / case / "inputs.json").read_text())
    plan = json.loads((pruned_folder / "lorakit_pruning.json").read_text())
    recovered = load_file(str(case_dir / "recovered" / "adapter_model.safetensors"))
    mine, padded = recover(
        load_file(str(case_dir / "pruned-adapter" / "adapter_model.safetensors")),
        plan,
        {k: v.shape for k, v in recovered.items()},
    )
    check(set(mine) == set(recovered), f"{case}: keys differ: {sorted(set(mine) ^ set(recovered))}")
    for k in mine:
        check(torch.equal(mine[k], recovered[k]), f"{case}: {k} differs from the zeroA recovery")
    full = load(REPO / inputs["base_model"])
    pm = PeftModel.from_pretrained(full, str(case_dir / "recovered"))
    logits = forward(pm, inputs)
    report = {
        "case": case,
        "checked_by": "interop/check_loram.py",
        "versions": versions(*CHECKED),
        "attn_implementation": ATTN_IMPL,
        "recovered_tensors": len(mine),
        "padded": padded,
        "logits_shape": list(logits.shape),
    }
    if not padded:
        small = PeftModel.from_pretrained(load(pruned_folder), str(case_dir / "pruned-adapter"))
        big = PeftModel.from_pretrained(masked(inputs["base_model"], plan), str(case_dir / "recovered"))
        diff = max_abs_diff(forward(big, inputs), forward(small, inputs))
        check(diff < 1e-4, f"{case}: masked full model + recovered differs from pruned + adapter by {diff}")
        report["max_abs_diff_masked_full_vs_pruned"] = f32(diff)
    save_file({"logits": logits}, str(case_dir / "peft_logits.safetensors"), metadata={"format": "pt"})
    (case_dir / "peft.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description="Check LoRAM's recovered adapters with torch and PEFT.")
    parser.add_argument("cases", nargs="*", help="case folders under test/fixtures/loram (default: all)")
    args = parser.parse_args(argv)
    setup(*CHECKED)
    dirs = [CASES_DIR / n for n in args.cases] if args.cases else sorted(p for p in CASES_DIR.iterdir() if p.is_dir())
    check(dirs, f"no case folders under {CASES_DIR}; run scripts/make-loram-fixtures.ts first")
    for d in dirs:
        check((PRUNED_DIR / d.name / "model" / "config.json").is_file(), f"run scripts/make-loram-fixtures.ts ({d.name})")
        r = check_case(d)
        extra = f", masked full vs pruned {r['max_abs_diff_masked_full_vs_pruned']:.1e}" if not r["padded"] else ""
        print(f"loram {r['case']:16s} ok  {r['recovered_tensors']} tensors equal the zeroA recovery{extra}", flush=True)


if __name__ == "__main__":
    run("check_loram", main)
