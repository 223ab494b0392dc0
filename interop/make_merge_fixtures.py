#!/usr/bin/env python3
"""PEFT's add_weighted_adapter on small LoRA adapters of the tiny llama fixture, for lorakit's adapter merging.

    interop/.venv-current/bin/python interop/make_merge_fixtures.py           # today's PEFT: the reference
    interop/.venv/bin/python interop/make_merge_fixtures.py                   # PEFT 0.18.1: the SVD scaling bug

The current set deletes and rewrites test/fixtures/compose/ (about 400 KB):
  adapters/<name>/     the source adapters, as PeftModel.save_pretrained wrote them (seeded perturbation of A and B)
  merges/<case>/       the merged adapter PEFT wrote (adapter_config.json, adapter_model.safetensors) after
                       torch.manual_seed(case seed); add_weighted_adapter(...) + expected.safetensors: the logits of
                       the merged adapter (`logits`) and, for the rsLoRA cases, PEFT's ΔW of every merged module
                       (`delta.<module path>`)
  merges.json          per case: the adapters, weights, combination type and options, the seed, and the module order
                       of PEFT's merge loop (named_modules order; DARE's Bernoulli draws follow it)
The pinned set (PEFT 0.18.1) writes test/fixtures/compose/pinned/<case>/ for the SVD cases only: 0.18.1 multiplies
each ΔWᵢ (which already holds its scaling sᵢ) by sᵢ again (fixed in peft#3111); test/compose/merge.test.ts shows it.

Deterministic (fixed seeds, 2 threads, PYTHONHASHSEED=0). A failed check ends the script with
`make_merge_fixtures: FAILED: ...`. interop/README.md documents the files.
"""

import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, PYTHONHASHSEED="0"))

from common import REPO, check, forward, load, run, setup, versions  # noqa: E402

import copy  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import peft  # noqa: E402
import torch  # noqa: E402
from make_fixtures import fresh_dir, save_tensors, write_json  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from safetensors import safe_open  # noqa: E402

OUT_REL = "test/fixtures/compose"
BASE_REL = "test/fixtures/models/llama"
QVD = ["q_proj", "v_proj", "down_proj"]

# name -> (seed of the perturbation, LoraConfig keywords)
ADAPTERS = {
    "t1": (501, dict(r=4, lora_alpha=8, target_modules=QVD)),
    # an alpha_pattern: the scaling sᵢ differs between modules of one adapter
    "t2": (502, dict(r=4, lora_alpha=16, target_modules=QVD, alpha_pattern={"model.layers.1.self_attn.v_proj": 2})),
    # another module set: up_proj has only this adapter, v_proj and down_proj lack it
    "t3": (503, dict(r=4, lora_alpha=4, target_modules=["q_proj", "up_proj"])),
    # another rank (cat and the SVD types only)
    "t4": (504, dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])),
    # rsLoRA sources: the merged adapter inherits use_rslora (peft#3449)
    "rs1": (505, dict(r=4, lora_alpha=8, use_rslora=True, target_modules=["q_proj", "v_proj"])),
    "rs2": (506, dict(r=4, lora_alpha=16, use_rslora=True, target_modules=["q_proj", "v_proj"])),
}

ABC = (["t1", "t2", "t3"], [0.7, -0.4, 1.3])
# case -> adapters, weights, add_weighted_adapter keywords, seed (torch.manual_seed right before the call)
CASES = {
    "linear": (*ABC, dict(combination_type="linear")),
    "cat": (*ABC, dict(combination_type="cat")),
    "svd": (*ABC, dict(combination_type="svd", svd_rank=6)),
    "svd_clamp": (*ABC, dict(combination_type="svd", svd_rank=6, svd_clamp=0.9)),
    "ties": (*ABC, dict(combination_type="ties", density=0.5)),
    "ties_frequency": (*ABC, dict(combination_type="ties", density=0.5, majority_sign_method="frequency")),
    "ties_svd": (*ABC, dict(combination_type="ties_svd", density=0.4, svd_rank=5)),
    "dare_linear": (*ABC, dict(combination_type="dare_linear", density=0.6)),
    "dare_ties": (*ABC, dict(combination_type="dare_ties", density=0.6)),
    "dare_linear_svd": (*ABC, dict(combination_type="dare_linear_svd", density=0.3, svd_rank=4)),
    "dare_ties_svd": (*ABC, dict(combination_type="dare_ties_svd", density=0.7, svd_rank=4)),
    "magnitude_prune": (*ABC, dict(combination_type="magnitude_prune", density=0.3)),
    "magnitude_prune_svd": (*ABC, dict(combination_type="magnitude_prune_svd", density=0.5, svd_rank=6)),
    "cat_ranks": (["t1", "t4"], [1.5, 0.5], dict(combination_type="cat")),
    "svd_ranks": (["t1", "t4"], [1.5, 0.5], dict(combination_type="svd")),
    "svd_rslora": (["rs1", "rs2"], [1.0, 1.0], dict(combination_type="svd", svd_rank=4)),
    "cat_rslora": (["rs1", "rs2"], [1.0, 1.0], dict(combination_type="cat")),
}
SEED = 77
PINNED_CASES = ("svd", "svd_ranks")


def perturb(pm, name, seed):
    """lora_A ~ N(0, 0.1), lora_B ~ N(0, 0.05) from torch.Generator(seed), for adapter `name` only."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in pm.named_parameters():
            if pname.endswith(f".lora_A.{name}.weight"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif pname.endswith(f".lora_B.{name}.weight"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def save_adapter(pm, name, dest):
    """pm.save_pretrained of adapter `name` alone, moved to dest (PEFT writes non-default adapters to a subfolder)."""
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm.save_pretrained(tmp, selected_adapters=[name])
        src = Path(tmp) / name if (Path(tmp) / name).is_dir() else Path(tmp)
        dest.mkdir(parents=True)
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy(src / f, dest / f)


def build():
    base = load(BASE_REL)
    pm = None
    for name, (seed, kw) in ADAPTERS.items():
        cfg = LoraConfig(**copy.deepcopy(kw))
        if pm is None:
            pm = get_peft_model(base, cfg, adapter_name=name)
        else:
            pm.add_adapter(name, cfg)
        perturb(pm, name, seed)
    pm.eval()
    return pm


def merge_order(pm, name):
    """The module paths PEFT's merge loop visits for adapter `name`, in its (named_modules) order."""
    from peft.tuners.lora import LoraLayer

    return [
        k.replace("base_model.model.", "", 1)
        for k, m in pm.named_modules()
        if isinstance(m, LoraLayer) and name in m.lora_A
    ]


def merge(pm, case):
    names, weights, kw = CASES[case]
    torch.manual_seed(SEED)
    pm.add_weighted_adapter(names, weights, case, **kw)
    return merge_order(pm, case)


def logits_with(pm, name, inputs):
    pm.set_adapter(name)
    return forward(pm, inputs)


def deltas(pm, name):
    from peft.tuners.lora import LoraLayer

    out = {}
    for k, m in pm.named_modules():
        if isinstance(m, LoraLayer) and name in m.lora_A:
            out["delta." + k.replace("base_model.model.", "", 1)] = m.get_delta_weight(name).detach().clone()
    return out


def main_current():
    setup(version_set="current")
    out = fresh_dir(OUT_REL)
    inputs = json.loads((REPO / BASE_REL / "expected.json").read_text())
    pm = build()
    for name in ADAPTERS:
        save_adapter(pm, name, out / "adapters" / name)
    info = {"versions": versions(), "peft_version": peft.__version__, "seed": SEED, "base_model": BASE_REL, "cases": {}}
    for case, (names, weights, kw) in CASES.items():
        order = merge(pm, case)
        folder = out / "merges" / case
        save_adapter(pm, case, folder)
        logits = logits_with(pm, case, inputs)
        # PEFT's own ΔW only where it is not B·A·α/r of the saved folder (the rsLoRA cases: peft#3449)
        extra = deltas(pm, case) if "rslora" in case else {}
        save_tensors(folder / "expected.safetensors", {"logits": logits, **extra})
        # PEFT reads back what it wrote
        re = PeftModel.from_pretrained(load(BASE_REL), str(folder))
        d = (forward(re, inputs) - logits).abs().max().item()
        check(d < 1e-5, f"{case}: the reloaded merged adapter gives other logits ({d})")
        info["cases"][case] = {"adapters": names, "weights": weights, **kw, "seed": SEED, "module_order": order}
        pm.delete_adapter(case)
    write_json(out / "merges.json", info)
    print(f"wrote {OUT_REL}: {len(ADAPTERS)} adapters, {len(CASES)} merges")


def main_pinned():
    setup(version_set="pinned")
    out = REPO / OUT_REL / "pinned"
    check((REPO / OUT_REL / "adapters").is_dir(), "run the current set first (it writes the source adapters)")
    if out.exists():
        shutil.rmtree(out)
    pm = build()
    for name in ADAPTERS:  # the same seeds give the same adapters under both sets
        with safe_open(str(REPO / OUT_REL / "adapters" / name / "adapter_model.safetensors"), "pt") as f:
            for k in f.keys():
                mod = k.replace("base_model.model.", "base_model.model.", 1).replace(".weight", f".{name}.weight")
                p = pm.get_parameter(mod)
                check(torch.equal(p, f.get_tensor(k)), f"{name}: {k} differs from the current set's adapter")
    for case in PINNED_CASES:
        merge(pm, case)
        with torch.no_grad():  # 0.18.1 leaves the SVD factors as views, which its own save_pretrained refuses
            for pname, p in pm.named_parameters():
                if f".{case}." in pname:
                    p.data = p.data.contiguous()
        folder = out / case
        save_adapter(pm, case, folder)
        pm.delete_adapter(case)
    print(f"wrote {OUT_REL}/pinned: {', '.join(PINNED_CASES)} (peft {peft.__version__})")


if __name__ == "__main__":
    pinned = peft.__version__.startswith("0.18.")
    run("make_merge_fixtures", main_pinned if pinned else main_current)
