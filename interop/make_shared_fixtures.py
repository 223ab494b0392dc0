#!/usr/bin/env python3
"""PEFT-made VB-LoRA, RandLoRA and Uni-LoRA adapters on the tiny fixture models (PEFT -> lorakit), for lorakit's
methods with model-level shared tensors (src/peft/methods/{vblora,randlora,unilora}.ts).

    interop/.venv/bin/python interop/make_shared_fixtures.py                      # VB-LoRA, RandLoRA (PEFT 0.18.1)
    interop/.venv-current/bin/python interop/make_shared_fixtures.py --versions current   # Uni-LoRA (PEFT 0.21.2)

Uni-LoRA exists from PEFT 0.21 on, so its cases are made by the current set; the others by the pinned set. A run
deletes and rewrites only its own set's cases under test/fixtures/shared/peft/ (about 1 MB in all, mostly logits):
  <case>/   the folder PeftModel.save_pretrained wrote (adapter_config.json, adapter_model.safetensors, README.md)
            + expected.json (config, perturbation, PEFT's layers, the file's tensors) and expected.safetensors:
            `logits` and `merged_logits` of the *reloaded* folder (unmerged, then after merge_and_unload), and what a
            reader must rebuild when the file lacks it: RandLoRA's `randlora_A` / `randlora_B` as PEFT drew them from
            projection_prng_key (cases saved with save_projection=False), Uni-LoRA's `indices` / `scales` (every
            layer's A then B, in PEFT's module order) as PEFT assigned them from proj_seed.
Every trainable tensor is moved off its init with one seeded torch.Generator (PERTURBATION). Checks: no warning while
making or reloading (save_projection=False and save_only_topk_weights warn by design when saving), the reload
reproduces the in-memory logits (top-k-only folders: to 1e-5, the weights are renormalised), the adapter moves the
logits by more than 0.05, merged and unmerged agree to 1e-4. Deterministic (fixed seeds, 2 threads, deterministic
algorithms, PYTHONHASHSEED=0). A failed check ends with `make_shared_fixtures: FAILED: ...`.
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
    versions,
)

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import warnings  # noqa: E402

import torch  # noqa: E402
import peft  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

OUT_REL = "test/fixtures/shared/peft"
MODELS_REL = "test/fixtures/models"
LLAMA_ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

CASES = {
    "llama_vblora": dict(
        set="pinned",
        method="VBLORA",
        base="llama",
        seed=501,
        description="VB-LoRA on q_proj, v_proj, up_proj, down_proj (in 64/128, out 32/64/128), bank 12 x 16, top-2",
        config=dict(
            target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
            r=4,
            num_vectors=12,
            vector_length=16,
            topk=2,
            task_type="CAUSAL_LM",
        ),
    ),
    "gpt2_vblora_topk": dict(
        set="pinned",
        method="VBLORA",
        base="gpt2",
        seed=502,
        description="VB-LoRA on GPT-2 Conv1D c_attn, c_fc saved with save_only_topk_weights (300 vectors: int16 "
        "indices, top-3)",
        config=dict(
            target_modules=["c_attn", "c_fc"],
            r=4,
            num_vectors=300,
            vector_length=32,
            topk=3,
            save_only_topk_weights=True,
            fan_in_fan_out=True,
            task_type="CAUSAL_LM",
        ),
    ),
    "llama_randlora": dict(
        set="pinned",
        method="RANDLORA",
        base="llama",
        seed=503,
        description="RandLoRA on k_proj (out < in), o_proj, up_proj (in < out), r 8 (n = 4 or 8 bases per layer), "
        "projections saved (with PEFT's per-layer copies)",
        config=dict(
            target_modules=["k_proj", "o_proj", "up_proj"],
            r=8,
            randlora_alpha=16,
            projection_prng_key=5,
            task_type="CAUSAL_LM",
        ),
    ),
    "gpt2_randlora_noproj": dict(
        set="pinned",
        method="RANDLORA",
        base="gpt2",
        seed=504,
        description="RandLoRA on GPT-2 Conv1D c_attn, attn.c_proj saved with save_projection=False: a reader "
        "regenerates PEFT's bfloat16 Kaiming bases from projection_prng_key",
        config=dict(
            target_modules=["c_attn", "attn.c_proj"],
            r=16,
            randlora_alpha=32,
            save_projection=False,
            fan_in_fan_out=True,
            task_type="CAUSAL_LM",
        ),
    ),
    "llama_randlora_sparse": dict(
        set="pinned",
        method="RANDLORA",
        base="llama",
        seed=505,
        description="RandLoRA with sparse ternary bases on q_proj, down_proj, saved with save_projection=False",
        config=dict(
            target_modules=["q_proj", "down_proj"],
            r=8,
            randlora_alpha=16,
            sparse=True,
            save_projection=False,
            projection_prng_key=9,
            task_type="CAUSAL_LM",
        ),
    ),
    "llama_randlora_very_sparse": dict(
        set="pinned",
        method="RANDLORA",
        base="llama",
        seed=506,
        description="RandLoRA with very sparse ternary bases on v_proj, up_proj, saved with save_projection=False",
        config=dict(
            target_modules=["v_proj", "up_proj"],
            r=16,
            randlora_alpha=32,
            very_sparse=True,
            save_projection=False,
            task_type="CAUSAL_LM",
        ),
    ),
    "llama_unilora": dict(
        set="current",
        method="UNILORA",
        base="llama",
        seed=507,
        description="Uni-LoRA on all 7 projections, theta_d 500, saved without its index maps (PEFT's default)",
        config=dict(target_modules=LLAMA_ALL, r=4, theta_d_length=500, proj_seed=7, task_type="CAUSAL_LM"),
    ),
    "gpt2_unilora_indices": dict(
        set="current",
        method="UNILORA",
        base="gpt2",
        seed=508,
        description="Uni-LoRA on GPT-2 Conv1D c_attn, c_fc with save_indices=True (int64 maps, float32 norm factors)",
        config=dict(
            target_modules=["c_attn", "c_fc"],
            r=2,
            theta_d_length=3000,
            save_indices=True,
            fan_in_fan_out=True,
            task_type="CAUSAL_LM",
        ),
    ),
}
PERTURBATION = (
    "one torch.Generator seeded with the case seed, parameters in named_parameters() order: "
    "vblora_vector_bank ~ N(0, 0.3), vblora_logits_* += N(0, 1); randlora_lambda ~ N(0, 0.1), "
    "randlora_gamma *= 1 + N(0, 0.2); unilora_theta_d ~ N(0, 1)"
)
# Warnings that say nothing about the adapter: transformers 5.25 deprecates the property PEFT 0.21.2 reads in
# PeftModel.__init__ (as in check_lorakit_adapters.py).
SET_WARNINGS = ["`is_gradient_checkpointing` is deprecated"]
# Warnings PEFT gives by design while making a case (its own advice), by config key.
BY_DESIGN = {"save_projection": "save_projection", "save_only_topk_weights": "save_only_topk"}  # checked below


def perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    counts = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            kind = name.split(".")[-2] if name.endswith(".default") else name.split(".")[-1]
            if "vblora_vector_bank" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif "vblora_logits" in name:
                p.add_(torch.randn(p.shape, generator=g))
            elif "randlora_lambda" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "randlora_gamma" in name:
                p.mul_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif "unilora_theta_d" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                check(False, f"unexpected trainable parameter {name}")
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def config_of(spec):
    cls = {"VBLORA": peft.VBLoRAConfig, "RANDLORA": peft.RandLoraConfig, "UNILORA": getattr(peft, "UniLoraConfig", None)}
    check(cls[spec["method"]] is not None, f"PEFT {peft.__version__} has no {spec['method']}")
    return cls[spec["method"]](**copy.deepcopy(spec["config"]))


def tuner_layers(model):
    """Module path -> kind, in/out features of every wrapped layer, in PEFT's module order."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, BaseTunerLayer):
            out[name.replace("base_model.model.", "", 1)] = {
                "kind": type(mod.get_base_layer()).__name__,
                "in_features": int(mod.in_features),
                "out_features": int(mod.out_features),
            }
    return out


def rebuilt_tensors(model, spec):
    """What a reader must rebuild when the file lacks it, as PEFT built it."""
    c = spec["config"]
    if spec["method"] == "RANDLORA" and not c.get("save_projection", True):
        bm = model.base_model
        return {"randlora_A": bm.randlora_A["default"].float(), "randlora_B": bm.randlora_B["default"].float()}
    if spec["method"] == "UNILORA":
        layers = [m for m in model.modules() if hasattr(m, "unilora_indices_A") and "default" in m.unilora_indices_A]
        pick = lambda kind: torch.cat([getattr(m, f"unilora_{kind}_{ab}")["default"].flatten() for m in layers for ab in "AB"])  # noqa: E731
        return {"indices": pick("indices"), "scales": pick("scales").float()}
    return {}


def file_tensors(folder):
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        return {k: {"shape": list(f.get_slice(k).get_shape()), "dtype": f.get_slice(k).get_dtype()} for k in sorted(f.keys())}


def make_case(out, name, spec):
    folder = out / name
    base_rel = f"{MODELS_REL}/{spec['base']}"
    expected = json.loads((REPO / base_rel / "expected.json").read_text())
    inputs = {"input_ids": expected["input_ids"]}
    with safe_open(str(REPO / base_rel / "expected.safetensors"), "pt") as f:
        base_logits = f.get_tensor("logits")
    allowed = []
    if spec["config"].get("save_projection") is False:
        allowed.append(BY_DESIGN["save_projection"])
    if spec["config"].get("save_only_topk_weights"):
        allowed.append(BY_DESIGN["save_only_topk_weights"])

    def unexpected(caught):
        return [str(w.message) for w in caught if not any(a in str(w.message) for a in allowed + SET_WARNINGS)]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = peft.get_peft_model(load(base_rel), config_of(spec))
    check(not unexpected(caught), f"{name}: PEFT warned: {unexpected(caught)}")
    counts = perturb(pm, spec["seed"])
    pm.eval()
    in_memory = forward(pm, inputs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm.save_pretrained(str(folder))
    check(not unexpected(caught), f"{name}: PEFT warned while saving: {unexpected(caught)}")
    layers = tuner_layers(pm)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm2 = peft.PeftModel.from_pretrained(load(base_rel), str(folder)).eval()
    check(not unexpected(caught), f"{name}: PEFT warned while loading: {unexpected(caught)}")
    logits = forward(pm2, inputs)
    reload_diff = max_abs_diff(logits, in_memory)
    check(reload_diff <= (1e-5 if spec["config"].get("save_only_topk_weights") else 0.0), f"{name}: reload moved the logits by {reload_diff}")
    rebuilt = rebuilt_tensors(pm2, spec)
    vs_base = adapter_effect(logits, base_logits, False, name)
    merged, merge_diff = merged_logits(pm2, inputs, logits, name)
    save_file({"logits": logits, "merged_logits": merged, **rebuilt}, str(folder / "expected.safetensors"), {"format": "pt"})
    info = {
        "case": name,
        "description": spec["description"],
        "base_model": base_rel,
        "peft_type": spec["method"],
        "config": copy.deepcopy(spec["config"]),
        "perturbation": PERTURBATION,
        "seed": spec["seed"],
        "perturbed_tensor_counts": counts,
        "versions": versions("torch", "transformers", "peft", "numpy"),
        "attn_implementation": ATTN_IMPL,
        "input_ids": inputs["input_ids"],
        "peft_layers": layers,
        "max_abs_diff_reload_vs_in_memory": f32(reload_diff),
        "max_abs_diff_vs_base_model": f32(vs_base),
        "max_abs_diff_merged_vs_unmerged": f32(merge_diff),
        "adapter_tensors": file_tensors(folder),
        "safetensors_keys": {k: list(v.shape) for k, v in {"logits": logits, "merged_logits": merged, **rebuilt}.items()},
    }
    (folder / "expected.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description="PEFT-made adapters of methods with shared tensors.")
    parser.add_argument("--versions", choices=["pinned", "current"], default="pinned")
    args = parser.parse_args(argv)
    setup("torch", "transformers", "peft", "numpy", version_set=args.versions)
    out = REPO / OUT_REL
    out.mkdir(parents=True, exist_ok=True)
    for name, spec in CASES.items():
        if spec["set"] != args.versions:
            continue
        shutil.rmtree(out / name, ignore_errors=True)
        torch.manual_seed(spec["seed"])  # PEFT's own inits draw from the global stream; the perturbation overwrites them
        info = make_case(out, name, spec)
        print(
            f"{spec['method'].lower():9s} {name:28s} ok  {len(info['adapter_tensors'])} tensors  vs-base "
            f"{info['max_abs_diff_vs_base_model']:.3f}  merged-vs-unmerged {info['max_abs_diff_merged_vs_unmerged']:.1e}",
            flush=True,
        )


if __name__ == "__main__":
    run("make_shared_fixtures", main)
