#!/usr/bin/env python3
"""PEFT-made VeRA adapters on the tiny fixture models, for lorakit's VeRA method (PEFT -> lorakit).

    interop/.venv/bin/python interop/make_vera_fixtures.py

Needs test/fixtures/models (make_fixtures.py). Deletes and rewrites test/fixtures/vera/ (about 360 KB, mostly expected logits):
  <case>/   a folder PeftModel.save_pretrained wrote (adapter_config.json, adapter_model.safetensors, README.md)
            + expected.json and expected.safetensors (`logits` unmerged, `merged_logits` after merge_and_unload)

Each adapter is made by get_peft_model(base, VeraConfig(...)) with PEFT's own projections (torch's generator seeded
with projection_prng_key), then every λ is moved off its init (λ_b = 0 would hide the projections) with a seeded
torch.Generator. The logits come from reloading the saved folder. `llama_vera_noproj` is saved with
save_projection=False: its file has no vera_A / vera_B, and a reader must regenerate them from the key (PEFT 0.18.1
does so for every VeRA folder: it leaves the saved `base_model.vera_A` / `vera_B` unused, which the script checks).

Deterministic (fixed seeds, 2 threads, deterministic algorithms, PYTHONHASHSEED=0): two runs give identical files.
A failed check ends the script with `make_vera_fixtures: FAILED: ...`. interop/README.md documents the files.
"""

import os
import sys

# PEFT writes target_modules with list(set): pin the string hash seed by re-executing once with PYTHONHASHSEED=0.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, PYTHONHASHSEED="0"))

from common import (  # noqa: E402  (first: the offline environment)
    ATTN_IMPL,
    REPO,
    adapter_effect,
    check,
    f32,
    forward,
    load,
    max_abs_diff,
    merged_logits,
    run,
    setup,
    vera_layers,
    versions,
)

import copy  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import warnings  # noqa: E402

import torch  # noqa: E402
from peft import PeftModel, VeraConfig, get_peft_model  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

OUT_REL = "test/fixtures/vera"
MODELS_REL = "test/fixtures/models"

CASES = {
    "llama_vera": dict(
        base="llama",
        seed=401,
        description="VeRA on q_proj, v_proj, up_proj, down_proj (in 64/128, out 32/64/128: both projections sliced)",
        config=dict(
            target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
            r=8,
            projection_prng_key=3,
            d_initial=0.2,
            task_type="CAUSAL_LM",
        ),
    ),
    "gpt2_vera": dict(
        base="gpt2",
        seed=402,
        description="VeRA on GPT-2 Conv1D c_attn, c_proj (attention and MLP), c_fc with fan_in_fan_out",
        config=dict(target_modules=["c_attn", "c_proj", "c_fc"], r=16, fan_in_fan_out=True, task_type="CAUSAL_LM"),
    ),
    "llama_vera_noproj": dict(
        base="llama",
        seed=403,
        description="VeRA on q_proj, v_proj of layer 1 saved with save_projection=False: no vera_A / vera_B in the file",
        config=dict(
            target_modules=["q_proj", "v_proj"],
            r=8,
            layers_to_transform=[1],
            save_projection=False,
            task_type="CAUSAL_LM",
        ),
    ),
}
PERTURBATION = "vera_lambda_b ~ N(0, 0.5); vera_lambda_d += N(0, 0.5); torch.Generator seed = the case seed"


def perturb(model, seed):
    """Moves every λ off its init (λ_b = 0, λ_d = d_initial); returns how many tensors of each kind it changed."""
    g = torch.Generator().manual_seed(seed)
    counts = {"vera_lambda_b": 0, "vera_lambda_d": 0}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".vera_lambda_b." in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
                counts["vera_lambda_b"] += 1
            elif ".vera_lambda_d." in name:
                p.add_(0.5 * torch.randn(p.shape, generator=g))
                counts["vera_lambda_d"] += 1
    check(counts["vera_lambda_b"] > 0 and counts["vera_lambda_b"] == counts["vera_lambda_d"], f"λ tensors {counts}")
    return counts


def file_tensors(folder):
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        return {k: list(f.get_slice(k).get_shape()) for k in sorted(f.keys())}


def check_projection_shapes(case, tensors, layers, r):
    """vera_A is [r, largest in], vera_B [largest out, r] over the wrapped layers (PEFT's _find_dim)."""
    in_max = max(v["in_features"] for v in layers.values())
    out_max = max(v["out_features"] for v in layers.values())
    check(tensors.get("base_model.vera_A") == [r, in_max], f"{case}: vera_A {tensors.get('base_model.vera_A')}")
    check(tensors.get("base_model.vera_B") == [out_max, r], f"{case}: vera_B {tensors.get('base_model.vera_B')}")


def reload(base_rel, folder, expect_warnings):
    """PeftModel.from_pretrained on a fresh base; any warning fails unless the case expects them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = PeftModel.from_pretrained(load(base_rel), str(folder)).eval()
    check(expect_warnings or not caught, f"{folder.name}: PEFT warned: {[str(w.message) for w in caught]}")
    return pm


def projections_unused(case, base_rel, folder, inputs, logits):
    """PEFT 0.18.1 does not load the saved projections: zeroing them in a copy of the file changes nothing."""
    copy_dir = folder.parent / f".{case}-zeroed"
    shutil.copytree(folder, copy_dir)
    path = copy_dir / "adapter_model.safetensors"
    with safe_open(str(path), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for k in ("base_model.vera_A", "base_model.vera_B"):
        tensors[k] = torch.zeros_like(tensors[k])
    save_file(tensors, str(path), {"format": "pt"})
    same = max_abs_diff(forward(reload(base_rel, copy_dir, expect_warnings=False), inputs), logits) == 0.0
    shutil.rmtree(copy_dir)
    return same


def make_case(out, name, spec):
    folder = out / name
    base_rel = f"{MODELS_REL}/{spec['base']}"
    expected = json.loads((REPO / base_rel / "expected.json").read_text())
    inputs = {"input_ids": expected["input_ids"]}
    with safe_open(str(REPO / base_rel / "expected.safetensors"), "pt") as f:
        base_logits = f.get_tensor("logits")
    saved = spec["config"].get("save_projection", True)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = get_peft_model(load(base_rel), VeraConfig(**copy.deepcopy(spec["config"])))
    check(not saved or not caught, f"{name}: PEFT warned: {[str(w.message) for w in caught]}")
    counts = perturb(pm, spec["seed"])
    pm.eval()
    logits = forward(pm, inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # save_projection=False warns by design
        pm.save_pretrained(str(folder))
    layers = vera_layers(pm)
    tensors = file_tensors(folder)
    r = spec["config"]["r"]
    if saved:
        check_projection_shapes(name, tensors, layers, r)
        check(projections_unused(name, base_rel, folder, inputs, logits), f"{name}: PEFT now loads the projections")
    else:
        check(not any(".vera_A" in k or ".vera_B" in k for k in tensors), f"{name}: projections were saved")
    pm2 = reload(base_rel, folder, expect_warnings=not saved)
    check(max_abs_diff(forward(pm2, inputs), logits) == 0.0, f"{name}: the reloaded adapter gives other logits")
    vs_base = adapter_effect(logits, base_logits, False, name)
    merged, merge_diff = merged_logits(pm2, inputs, logits, name)
    save_file({"logits": logits, "merged_logits": merged}, str(folder / "expected.safetensors"), {"format": "pt"})
    in_max = max(v["in_features"] for v in layers.values())
    out_max = max(v["out_features"] for v in layers.values())
    info = {
        "case": name,
        "description": spec["description"],
        "base_model": base_rel,
        "vera_config": copy.deepcopy(spec["config"]),
        "perturbation": PERTURBATION,
        "seed": spec["seed"],
        "perturbed_tensor_counts": counts,
        "versions": versions("torch", "transformers", "peft"),
        "attn_implementation": ATTN_IMPL,
        "input_ids": inputs["input_ids"],
        "vera_layers": layers,
        "projection_shapes": {"vera_A": [r, in_max], "vera_B": [out_max, r]},
        "saved_projections_used_by_peft": False,
        "logits_shape": list(logits.shape),
        "max_abs_diff_vs_base_model": f32(vs_base),
        "max_abs_diff_merged_vs_unmerged": f32(merge_diff),
        "adapter_tensors": tensors,
        "safetensors_keys": {"logits": list(logits.shape), "merged_logits": list(merged.shape)},
    }
    (folder / "expected.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main():
    setup("torch", "transformers", "peft")
    out = REPO / OUT_REL
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name, spec in CASES.items():
        torch.manual_seed(spec["seed"])
        info = make_case(out, name, spec)
        print(
            f"vera   {name:18s} ok  {len(info['adapter_tensors'])} tensors  vs-base {info['max_abs_diff_vs_base_model']:.3f}"
            f"  merged-vs-unmerged {info['max_abs_diff_merged_vs_unmerged']:.1e}",
            flush=True,
        )


if __name__ == "__main__":
    run("make_vera_fixtures", main)
