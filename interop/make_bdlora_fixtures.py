#!/usr/bin/env python3
"""BD-LoRA adapters made by PEFT (`LoraConfig(use_bdlora=BdLoraConfig(...))`, PEFT >= 0.19) for lorakit's bdlora
variant.

    interop/.venv-current/bin/python interop/make_bdlora_fixtures.py        # the "current" set (PEFT 0.21.2)

Deletes and rewrites test/fixtures/bdlora/ (about 200 KB):
  <case>/          what make_fixtures.make_peft_case writes for the pinned LoRA cases, with the same procedure:
                   get_peft_model on the committed base, every lora_A ~ N(0, 0.1) and lora_B ~ N(0, 0.05) (block-diagonal ones in their
                   stored [r, in/nb] / [out, r/nb] shapes), save_pretrained, reload, `logits` and `merged_logits` in
                   expected.safetensors, expected.json (config, seed, resolved r / alpha / scaling per layer, tensors)
  init.json        PEFT's initialisation before any perturbation, per case and layer: which factor is block-diagonal,
                   the stored shapes, max |A| against the Kaiming bound √(6·nb/in) (a = 0) for a block-diagonal A,
                   and whether a block-diagonal B is all zeros
Deterministic (PYTHONHASHSEED=0, fixed seeds, 2 threads): reruns give identical files. A failed check ends the script
with `make_bdlora_fixtures: FAILED: ...`. interop/README.md documents the files.
"""

import os
import sys

# PEFT writes target_modules with list(set): pin the string hash seed by re-executing once with PYTHONHASHSEED=0.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, PYTHONHASHSEED="0"))

# first: sets the offline environment before the Hugging Face libraries are imported
from common import REPO, check, f32, load, run, setup  # noqa: E402

import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402

import torch  # noqa: E402
from make_fixtures import MODELS_REL, make_peft_case, write_json  # noqa: E402

OUT_REL = "test/fixtures/bdlora"

# name -> base, seed, description, LoraConfig arguments (use_bdlora as the dict a saved config holds)
CASES = {
    "llama_bdlora": dict(
        base="llama",
        seed=601,
        description="the tensor-parallel layout: block-diagonal B on the column-parallel q, k, v, gate, up "
        "projections, block-diagonal A on the row-parallel o, down projections, 2 blocks, r 4, alpha 8",
        config=dict(
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            r=4,
            lora_alpha=8,
            use_bdlora=dict(
                target_modules_bd_a=["o_proj", "down_proj"],
                target_modules_bd_b=["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"],
                nblocks=2,
            ),
            task_type="CAUSAL_LM",
        ),
    ),
    "llama_bdlora_loose": dict(
        base="llama",
        seed=602,
        description="match_strict false: block-diagonal A on down_proj only (4 blocks), q_proj and v_proj plain LoRA; "
        "rsLoRA, r 8, rank_pattern v_proj 4",
        config=dict(
            target_modules=["q_proj", "v_proj", "down_proj"],
            r=8,
            lora_alpha=8,
            use_rslora=True,
            rank_pattern={"v_proj": 4},
            use_bdlora=dict(target_modules_bd_a=["down_proj"], nblocks=4, match_strict=False),
            task_type="CAUSAL_LM",
        ),
    ),
}


def init_facts(spec):
    """PEFT's BD-LoRA initialisation on the case's base, before any perturbation, per wrapped layer."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer
    from peft.tuners.lora.variants import BlockDiagonalLinear

    torch.manual_seed(spec["seed"])
    pm = get_peft_model(load(f"{MODELS_REL}/{spec['base']}"), LoraConfig(**copy.deepcopy(spec["config"])))
    nb = spec["config"]["use_bdlora"]["nblocks"]
    out = {}
    for name, mod in pm.named_modules():
        if not isinstance(mod, LoraLayer):
            continue
        a, b = mod.lora_A["default"], mod.lora_B["default"]
        fact = {"lora_A": list(a.weight.shape), "lora_B": list(b.weight.shape)}
        if isinstance(a, BlockDiagonalLinear):
            bound = math.sqrt(6 * nb / mod.in_features)
            fact.update(block_diagonal="A", max_abs_A=f32(a.weight.abs().max().item()), kaiming_a0_bound=f32(bound))
            check(a.weight.abs().max().item() <= bound, f"{name}: block-diagonal A exceeds its Kaiming bound")
        elif isinstance(b, BlockDiagonalLinear):
            fact.update(block_diagonal="B", B_all_zero=bool((b.weight == 0).all()))
            check(fact["B_all_zero"], f"{name}: block-diagonal B is not zero at init")
        else:
            fact["block_diagonal"] = None
        out[name.replace("base_model.model.", "", 1)] = fact
    return dict(sorted(out.items()))


def main():
    setup(version_set="current")  # also chdir REPO: adapters record base_model_name_or_path relative to it
    out = REPO / OUT_REL
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    bases = {c["base"] for c in CASES.values()}
    infos = {n: json.loads((REPO / MODELS_REL / n / "expected.json").read_text()) for n in bases}
    init = {}
    for case, spec in CASES.items():
        info = make_peft_case(case, spec, infos, out_rel=OUT_REL, base_atol=1e-5)
        init[case] = init_facts(spec)
        print(f"peft   {case:22s} ok  merged-vs-unmerged {info['max_abs_diff_merged_vs_unmerged']:.2e}", flush=True)
    write_json(out / "init.json", init)


if __name__ == "__main__":
    run("make_bdlora_fixtures", main)
