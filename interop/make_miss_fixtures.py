#!/usr/bin/env python3
"""PEFT-made MiSS and Bone adapters on the tiny llama fixture, for lorakit's `miss` and `bone` methods (PEFT -> lorakit).

    interop/.venv/bin/python interop/make_miss_fixtures.py                               # pinned: writes the fixtures
    interop/.venv-current/bin/python interop/make_miss_fixtures.py --versions current    # today's PEFT: compares

Needs test/fixtures/models (make_fixtures.py). The pinned run (peft 0.18.1, which has both MISS and the deprecated
BONE) deletes and rewrites test/fixtures/miss/ (about 0.6 MB): per case
  <case>/   a folder PeftModel.save_pretrained wrote (adapter_config.json, adapter_model.safetensors, README.md)
            + expected.json and expected.safetensors: `logits` (unmerged) and `merged_logits` (merge_and_unload), from
            reloading the folder; for the bat cases also `merged.<path>.weight`, the weights merge_adapter() wrote.
Each adapter is get_peft_model(base, MissConfig / BoneConfig(...)) with every block then drawn N(0, 0.05²) by a
torch.Generator seeded with the case seed (the blocks start at 0, which would hide the forward). For bat, the script
also runs PEFT's unmerge_adapter() after merge_adapter() and records how far its (W' − T)·(I + T)⁻¹ lands from W0.

The current run (peft 0.21.2, no BONE) re-makes every MISS case in a temporary folder and writes current.json into the
case folder: config keys and values that differ, whether every tensor and the logits equal the pinned files.

Deterministic (fixed seeds, 2 threads, deterministic algorithms, PYTHONHASHSEED=0): two runs give identical files.
A failed check ends the script with `make_miss_fixtures: FAILED: ...`. interop/README.md documents the files.
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
    shard_layers,
    versions,
)

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import peft  # noqa: E402
from peft import PeftModel, get_peft_model  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

OUT_REL = "test/fixtures/miss"
BASE_REL = "test/fixtures/models/llama"
# PEFT 0.18.1 warns whenever a BoneConfig is made (and so when a Bone folder is loaded): that warning is expected.
BONE_DEPRECATION = "Bone will be removed in v0.19.0 of PEFT"
# The warning the current set gives for every model (interop/README.md, "Two version sets"): says nothing about MiSS.
SET_WARNING = "`is_gradient_checkpointing` is deprecated"

CASES = {
    "llama_miss": dict(
        peft_type="MISS",
        seed=501,
        description="MiSS balance, r 12 (in 64 and 128 are not multiples: a partial last shard), q/v/down_proj",
        config=dict(target_modules=["q_proj", "v_proj", "down_proj"], r=12, task_type="CAUSAL_LM"),
    ),
    "llama_miss_bat": dict(
        peft_type="MISS",
        seed=502,
        description='MiSS "bat" (W + W·T + T blockwise), r 16, q/k/up/down_proj of layer 0 (out 64, 32, 128; in 64, 128)',
        config=dict(
            target_modules=["q_proj", "k_proj", "up_proj", "down_proj"],
            layers_to_transform=[0],
            r=16,
            init_weights="bat",
            task_type="CAUSAL_LM",
        ),
    ),
    "llama_miss_mini": dict(
        peft_type="MISS",
        seed=503,
        description='MiSS "mini", r 8, mini_r 16 (the [8, 16] block tiled along out), q/v/up_proj',
        config=dict(target_modules=["q_proj", "v_proj", "up_proj"], r=8, mini_r=16, init_weights="mini", task_type="CAUSAL_LM"),
    ),
    "llama_bone": dict(
        peft_type="BONE",
        seed=504,
        description="Bone (PEFT 0.18.1, removed in 0.19), r 12, q/o_proj",
        config=dict(target_modules=["q_proj", "o_proj"], r=12, task_type="CAUSAL_LM"),
    ),
    "llama_bone_bat": dict(
        peft_type="BONE",
        seed=505,
        description='Bone "bat", r 16, v/up_proj of layer 1',
        config=dict(target_modules=["v_proj", "up_proj"], layers_to_transform=[1], r=16, init_weights="bat", task_type="CAUSAL_LM"),
    ),
}
PERTURBATION = "miss_block / bone_block ~ N(0, 0.05²); torch.Generator seed = the case seed"


def config_of(spec):
    cls = peft.MissConfig if spec["peft_type"] == "MISS" else peft.BoneConfig
    return cls(**copy.deepcopy(spec["config"]))


def expected_warnings(spec, caught, what):
    allowed = BONE_DEPRECATION if spec["peft_type"] == "BONE" else None
    bad = [
        str(w.message)
        for w in caught
        if not (allowed and allowed in str(w.message)) and not str(w.message).startswith(SET_WARNING)
    ]
    check(not bad, f"{what}: PEFT warned: {bad}")


def perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    n = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".miss_block." in name or ".bone_block." in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
                n += 1
    check(n > 0, "no block to perturb")
    return n


def file_tensors(folder):
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in sorted(f.keys())}


def make_case(out, name, spec):
    """Writes the case folder; returns its expected.json content."""
    folder = out / name
    expected = json.loads((REPO / BASE_REL / "expected.json").read_text())
    inputs = {"input_ids": expected["input_ids"]}
    with safe_open(str(REPO / BASE_REL / "expected.safetensors"), "pt") as f:
        base_logits = f.get_tensor("logits")
    torch.manual_seed(spec["seed"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = get_peft_model(load(BASE_REL), config_of(spec))
    expected_warnings(spec, caught, name)
    count = perturb(pm, spec["seed"])
    pm.eval()
    logits = forward(pm, inputs)
    pm.save_pretrained(str(folder))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm2 = PeftModel.from_pretrained(load(BASE_REL), str(folder)).eval()
    expected_warnings(spec, caught, f"{name} reload")
    check(max_abs_diff(forward(pm2, inputs), logits) == 0.0, f"{name}: the reloaded adapter gives other logits")
    layers = shard_layers(pm2)
    check(layers and all(v["r"] == spec["config"]["r"] for v in layers.values()), f"{name}: layers {layers}")
    vs_base = adapter_effect(logits, base_logits, False, name)
    tensors = {"logits": logits}
    unmerge_error = None
    if spec["config"].get("init_weights") == "bat":
        # PEFT's merged weights, and how exactly its unmerge ((W' − T)·(I + T)⁻¹ per block) restores W0
        w0 = {p: pm2.get_submodule(f"base_model.model.{p}").get_base_layer().weight.detach().clone() for p in layers}
        pm2.merge_adapter()
        for p in layers:
            tensors[f"merged.{p}.weight"] = pm2.get_submodule(f"base_model.model.{p}").get_base_layer().weight.detach().clone()
        pm2.unmerge_adapter()
        unmerge_error = max(
            max_abs_diff(pm2.get_submodule(f"base_model.model.{p}").get_base_layer().weight, w0[p]) for p in layers
        )
        check(unmerge_error < 1e-5, f"{name}: PEFT's unmerge is {unmerge_error} off W0")
    merged, merge_diff = merged_logits(pm2, inputs, logits, name)
    tensors["merged_logits"] = merged
    save_file(tensors, str(folder / "expected.safetensors"), {"format": "pt"})
    info = {
        "case": name,
        "description": spec["description"],
        "base_model": BASE_REL,
        "peft_type": spec["peft_type"],
        "config": copy.deepcopy(spec["config"]),
        "perturbation": PERTURBATION,
        "seed": spec["seed"],
        "perturbed_tensor_count": count,
        "versions": versions("torch", "transformers", "peft"),
        "attn_implementation": ATTN_IMPL,
        "input_ids": inputs["input_ids"],
        "shard_layers": layers,
        "logits_shape": list(logits.shape),
        "max_abs_diff_vs_base_model": f32(vs_base),
        "max_abs_diff_merged_vs_unmerged": f32(merge_diff),
        **({"max_abs_diff_peft_unmerge_vs_w0": f32(unmerge_error)} if unmerge_error is not None else {}),
        "adapter_tensors": {k: list(t.shape) for k, t in file_tensors(folder).items()},
        "safetensors_keys": {k: list(t.shape) for k, t in tensors.items()},
    }
    (folder / "expected.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def compare_current(out, name, spec):
    """Re-makes a MISS case with today's PEFT in a temporary folder; writes <case>/current.json comparing it."""
    pinned = out / name
    with tempfile.TemporaryDirectory() as tmp:
        info = make_case(Path(tmp), name, spec)
        now = Path(tmp) / name
        a = json.loads((pinned / "adapter_config.json").read_text())
        b = json.loads((now / "adapter_config.json").read_text())
        ta, tb = file_tensors(pinned), file_tensors(now)
        with safe_open(str(pinned / "expected.safetensors"), "pt") as f, safe_open(str(now / "expected.safetensors"), "pt") as g:
            logits = {k: f32(max_abs_diff(f.get_tensor(k), g.get_tensor(k))) for k in sorted(f.keys())}
    report = {
        "case": name,
        "versions": info["versions"],
        "config_keys_only_pinned": sorted(set(a) - set(b)),
        "config_keys_only_current": sorted(set(b) - set(a)),
        "config_values_changed": {k: [a[k], b[k]] for k in sorted(set(a) & set(b)) if a[k] != b[k]},
        "same_tensor_names": sorted(ta) == sorted(tb),
        "tensors_bit_identical": sorted(ta) == sorted(tb) and all(torch.equal(ta[k], tb[k]) for k in ta),
        "max_abs_diff_vs_pinned": logits,
    }
    check(report["tensors_bit_identical"], f"{name}: today's PEFT saves other tensors")
    (pinned / "current.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description="PEFT MiSS/Bone fixtures for lorakit.")
    parser.add_argument("--versions", choices=("pinned", "current"), default="pinned")
    args = parser.parse_args(argv)
    setup("torch", "transformers", "peft", version_set=args.versions)
    out = REPO / OUT_REL
    if args.versions == "current":
        for name, spec in CASES.items():
            if spec["peft_type"] != "MISS":
                continue  # BONE left PEFT in 0.19
            r = compare_current(out, name, spec)
            print(f"miss   {name:16s} current ok  logits vs pinned {r['max_abs_diff_vs_pinned']}", flush=True)
        return
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name, spec in CASES.items():
        info = make_case(out, name, spec)
        print(
            f"miss   {name:16s} ok  {len(info['adapter_tensors'])} tensors  vs-base {info['max_abs_diff_vs_base_model']:.3f}"
            f"  merged-vs-unmerged {info['max_abs_diff_merged_vs_unmerged']:.1e}",
            flush=True,
        )


if __name__ == "__main__":
    run("make_miss_fixtures", main)
