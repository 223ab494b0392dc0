#!/usr/bin/env python3
"""Check that PEFT reads the adapters lorakit writes, and record PEFT's logits for them.

    node --import tsx scripts/make-lorakit-adapters.ts        # writes test/fixtures/lorakit/<case>/
    interop/.venv/bin/python interop/check_lorakit_adapters.py [case ...]                            # pinned set
    (a case whose inputs.json lists `peft_sets` is checked only under those sets: BD-LoRA needs PEFT >= 0.19)
    interop/.venv-current/bin/python interop/check_lorakit_adapters.py --versions current [case ...]  # current set

For every case folder (adapter_config.json, adapter_model.safetensors, inputs.json written by lorakit):
  * `PeftModel.from_pretrained(base, folder)` with the base from test/fixtures/models (float32, eager attention);
    any warning raised while loading fails the case (PEFT warns about missing adapter keys, unknown config keys, ...),
    except the one the case's inputs.json names as `expected_peft_warning`;
  * PEFT's state dict of the loaded adapter must hold exactly the file's keys with bit-identical values (so no key
    was dropped as unexpected and none was left at its init as missing);
  * the adapter must change the logits clearly; unmerged and merge_and_unload logits must agree (1e-4);
  * writes `peft_logits.safetensors` (`logits`, `merged_logits`, float32) and `peft.json` (versions, PEFT's resolved
    r / alpha / scaling per wrapped module — VeRA: r, in/out features, fan_in_fan_out; MiSS and Bone: r, mode,
    mini_r —, loaded keys, differences),
    both deterministic; under the current version set (`--versions current`, interop/README.md)
    `peft_current_logits.safetensors` and `peft_current.json` instead, the JSON also holding the largest difference
    from the pinned set's logits when those are there.
A folder whose peft_type the installed PEFT lacks (BONE, removed in PEFT 0.19) is skipped with a note.
Exits non-zero with `check_lorakit_adapters: FAILED: ...` on any problem.
"""

import argparse
import json
import warnings

# first: sets the offline environment before the Hugging Face libraries are imported
from common import (
    ATTN_IMPL,
    REPO,
    adapter_effect,
    check,
    f32,
    forward,
    max_abs_diff,
    load,
    lora_layers,
    merged_logits,
    run,
    setup,
    shard_layers,
    vera_layers,
    versions,
)

import torch
from peft import PeftModel
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import save_file

CASES_DIR = REPO / "test" / "fixtures" / "lorakit"
# The libraries whose versions are checked and recorded.
CHECKED = ("torch", "transformers", "peft")
# What each version set writes into a case folder: (logits file, report file).
OUTPUTS = {
    "pinned": ("peft_logits.safetensors", "peft.json"),
    "current": ("peft_current_logits.safetensors", "peft_current.json"),
}
# Warnings a version set gives for every model and adapter, which therefore say nothing about the folder: (category,
# start of the message). PEFT 0.21.2's PeftModel.__init__ (peft_model.py) reads `model.is_gradient_checkpointing`,
# a property transformers 5.25 deprecated with this FutureWarning.
SET_WARNINGS = {
    "pinned": (),
    "current": ((FutureWarning, "`is_gradient_checkpointing` is deprecated"),),
}


def check_case(folder, version_set):
    case = folder.name
    logits_file, report_file = OUTPUTS[version_set]
    inputs = json.loads((folder / "inputs.json").read_text())
    base_rel = inputs["base_model"]
    config = json.loads((folder / "adapter_config.json").read_text())
    seqcls = config.get("task_type") == "SEQ_CLS"

    base = load(REPO / base_rel, seqcls)
    base_logits = forward(base, inputs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = PeftModel.from_pretrained(base, str(folder))
    # a case may name the one warning PEFT rightly gives for it (a trained copy of one of two tied modules)
    allowed = inputs.get("expected_peft_warning")
    about_folder = [
        w for w in caught if not any(w.category is c and str(w.message).startswith(m) for c, m in SET_WARNINGS[version_set])
    ]
    unexpected_warnings = [w for w in about_folder if not (allowed and allowed in str(w.message))]
    check(
        not unexpected_warnings,
        f"{case}: PEFT warned while loading: " + " | ".join(f"{w.category.__name__}: {w.message}" for w in unexpected_warnings),
    )
    pm.eval()

    # Every tensor of the file became an adapter tensor of the model, and every adapter tensor came from the file.
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        file_tensors = {k: f.get_tensor(k) for k in f.keys()}
        check(f.metadata() == {"format": "pt"}, f"{case}: safetensors metadata {f.metadata()}, PEFT writes {{'format': 'pt'}}")
    state = get_peft_model_state_dict(pm, save_embedding_layers=False)
    missing = sorted(set(state) - set(file_tensors))
    unexpected = sorted(set(file_tensors) - set(state))
    check(not missing, f"{case}: PEFT expects tensors the file lacks: {missing}")
    check(not unexpected, f"{case}: the file has tensors PEFT does not use: {unexpected}")
    for k, t in file_tensors.items():
        check(t.dtype == torch.float32, f"{case}: {k} is {t.dtype}")
        check(tuple(state[k].shape) == tuple(t.shape), f"{case}: {k} has shape {tuple(t.shape)}, PEFT's is {tuple(state[k].shape)}")
        check(torch.equal(state[k].cpu(), t), f"{case}: {k} differs after PEFT loaded it")

    kind = config["peft_type"]
    layers = vera_layers(pm) if kind == "VERA" else shard_layers(pm) if kind in ("MISS", "BONE") else lora_layers(pm, number=f32)
    check(layers, f"{case}: PEFT wrapped no layer")
    logits = forward(pm, inputs)
    vs_base = adapter_effect(logits, base_logits, seqcls, case)
    merged, merge_diff = merged_logits(pm, inputs, logits, case)

    save_file({"logits": logits, "merged_logits": merged}, str(folder / logits_file), metadata={"format": "pt"})
    info = {
        "case": case,
        "checked_by": "interop/check_lorakit_adapters.py",
        "versions": versions(*CHECKED),
        "attn_implementation": ATTN_IMPL,
        "peft_warnings": sorted({str(w.message) for w in caught}),
        "loaded_tensors": {k: list(t.shape) for k, t in sorted(file_tensors.items())},
        "peft_layers": layers,
        "logits_shape": list(logits.shape),
        "max_abs_diff_vs_base_model": f32(vs_base),
        "max_abs_diff_merged_vs_unmerged": f32(merge_diff),
    }
    pinned_logits = folder / OUTPUTS["pinned"][0]
    if version_set != "pinned" and pinned_logits.is_file():
        with safe_open(str(pinned_logits), "pt") as f:
            info["max_abs_diff_vs_pinned"] = {k: f32(max_abs_diff(v, f.get_tensor(k))) for k, v in (("logits", logits), ("merged_logits", merged))}
    (folder / report_file).write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description="Check lorakit-written adapters with PEFT.")
    parser.add_argument("--versions", choices=sorted(OUTPUTS), default="pinned", help="the version set installed")
    parser.add_argument("cases", nargs="*", help="case folders under test/fixtures/lorakit (default: all)")
    args = parser.parse_args(argv)
    setup(*CHECKED, version_set=args.versions)
    names = args.cases
    folders = [CASES_DIR / n for n in names] if names else sorted(p for p in CASES_DIR.iterdir() if p.is_dir())
    check(folders, f"no case folders under {CASES_DIR}; run scripts/make-lorakit-adapters.ts first")
    for folder in folders:
        check((folder / "adapter_config.json").is_file(), f"{folder}: adapter_config.json missing")
        # a method only newer PEFT releases have (BD-LoRA: 0.19) or only older ones (Bone: before 0.19) names the sets that can check it
        sets = json.loads((folder / "inputs.json").read_text()).get("peft_sets", list(OUTPUTS))
        if args.versions not in sets:
            print(f"peft   {folder.name:22s} skipped: the {args.versions} set's PEFT lacks the method", flush=True)
            continue
        info = check_case(folder, args.versions)
        print(
            f"peft   {info['case']:22s} ok  {len(info['loaded_tensors'])} tensors, {len(info['peft_layers'])} layers"
            f"  vs-base {info['max_abs_diff_vs_base_model']:.3f}  merged-vs-unmerged {info['max_abs_diff_merged_vs_unmerged']:.1e}",
            flush=True,
        )


if __name__ == "__main__":
    run("check_lorakit_adapters", main)
