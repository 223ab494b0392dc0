#!/usr/bin/env python3
"""Check that transformers loads the structurally pruned folders lorakit writes, and that they compute the masked model.

    node --import tsx scripts/make-pruned-fixtures.ts      # writes test/fixtures/pruned/<case>/model/ (git-ignored)
    interop/.venv/bin/python interop/check_pruned.py [case ...]

For every case (a sliced folder lorakit wrote from a fixture model, its plan in lorakit_pruning.json):
  * `AutoModelForCausalLM.from_pretrained(folder)` (float32, eager) must report no missing, unexpected or mismatched
    keys, and its config the sliced sizes;
  * the masked full model — the base fixture with the pruned groups' rows of q/k/v (and their biases) and of gate/up
    set to zero, which zeroes exactly the outputs LoRAPrune's masks zero — must give the same logits (1e-4);
  * writes `transformers_logits.safetensors` (`logits`, float32) and `transformers.json` (versions, the sha256 of the
    folder's config.json and model.safetensors, sizes and parameter counts).
Exits non-zero with `check_pruned: FAILED: ...` on any problem.
"""

import argparse
import hashlib
import json

# first: sets the offline environment before the Hugging Face libraries are imported
from common import ATTN_IMPL, REPO, check, f32, forward, load, max_abs_diff, run, setup, versions

import torch
from safetensors.torch import save_file

CASES_DIR = REPO / "test" / "fixtures" / "pruned"
CHECKED = ("torch", "transformers")


def masked(base_folder, plan):
    """The base model with every pruned group's output rows (q/k/v/gate/up weights and biases) zeroed."""
    model = load(REPO / base_folder)
    o = plan["original"]
    rep = o["num_attention_heads"] // o["num_key_value_heads"]
    hd = o["head_dim"]
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            keep = plan["layers"][i]
            for g in range(o["num_key_value_heads"]):
                if g in keep["heads"]:
                    continue
                for proj, width in (("q_proj", rep * hd), ("k_proj", hd), ("v_proj", hd)):
                    lin = getattr(layer.self_attn, proj)
                    lin.weight[g * width : (g + 1) * width] = 0
                    if lin.bias is not None:
                        lin.bias[g * width : (g + 1) * width] = 0
            dropped = [c for c in range(o["intermediate_size"]) if c not in set(keep["channels"])]
            layer.mlp.gate_proj.weight[dropped] = 0
            layer.mlp.up_proj.weight[dropped] = 0
    return model


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_case(case_dir):
    case = case_dir.name
    folder = case_dir / "model"
    inputs = json.loads((case_dir / "inputs.json").read_text())
    plan = json.loads((folder / "lorakit_pruning.json").read_text())
    model, info = load(folder, output_loading_info=True)
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        check(not info[k], f"{case}: transformers reports {k}: {info[k]}")
    c = model.config
    kept_heads = max(len(l["heads"]) for l in plan["layers"])
    kept_channels = max(len(l["channels"]) for l in plan["layers"])
    rep = plan["original"]["num_attention_heads"] // plan["original"]["num_key_value_heads"]
    check(c.num_key_value_heads == kept_heads and c.num_attention_heads == kept_heads * rep, f"{case}: heads {c}")
    check(c.intermediate_size == kept_channels, f"{case}: intermediate_size {c.intermediate_size}")
    logits = forward(model, inputs)
    reference = forward(masked(inputs["base_model"], plan), inputs)
    diff = max_abs_diff(logits, reference)
    check(diff < 1e-4, f"{case}: the pruned folder's logits differ from the masked full model's by {diff}")
    base = load(REPO / inputs["base_model"])
    save_file({"logits": logits}, str(case_dir / "transformers_logits.safetensors"), metadata={"format": "pt"})
    report = {
        "case": case,
        "checked_by": "interop/check_pruned.py",
        "versions": versions(*CHECKED),
        "attn_implementation": ATTN_IMPL,
        "sha256": {f: sha256(folder / f) for f in ("config.json", "model.safetensors", "lorakit_pruning.json")},
        "sizes": {
            "num_attention_heads": c.num_attention_heads,
            "num_key_value_heads": c.num_key_value_heads,
            "head_dim": c.head_dim,
            "intermediate_size": c.intermediate_size,
        },
        "parameters": {"base": sum(p.numel() for p in base.parameters()), "pruned": sum(p.numel() for p in model.parameters())},
        "max_abs_diff_vs_masked_full_model": f32(diff),
        "logits_shape": list(logits.shape),
    }
    (case_dir / "transformers.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description="Check lorakit-pruned folders with transformers.")
    parser.add_argument("cases", nargs="*", help="case folders under test/fixtures/pruned (default: all)")
    args = parser.parse_args(argv)
    setup(*CHECKED)
    dirs = [CASES_DIR / n for n in args.cases] if args.cases else sorted(p for p in CASES_DIR.iterdir() if p.is_dir())
    check(dirs, f"no case folders under {CASES_DIR}; run scripts/make-pruned-fixtures.ts first")
    for d in dirs:
        check((d / "model" / "config.json").is_file(), f"{d}/model is missing; run scripts/make-pruned-fixtures.ts")
        r = check_case(d)
        p = r["parameters"]
        print(
            f"pruned {r['case']:16s} ok  params {p['base']} -> {p['pruned']}, vs masked full model "
            f"{r['max_abs_diff_vs_masked_full_model']:.1e}",
            flush=True,
        )


if __name__ == "__main__":
    run("check_pruned", main)
