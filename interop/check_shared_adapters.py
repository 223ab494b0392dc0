#!/usr/bin/env python3
"""Check that PEFT reads the VB-LoRA, RandLoRA and Uni-LoRA adapters lorakit writes, and record PEFT's logits.

    node --import tsx scripts/make-shared-adapters.ts          # writes test/fixtures/shared/lorakit/<case>/
    interop/.venv/bin/python interop/check_shared_adapters.py                          # pinned set (PEFT 0.18.1)
    interop/.venv-current/bin/python interop/check_shared_adapters.py --versions current   # current set (PEFT 0.21.2)

A run checks the cases whose inputs.json lists its version set (Uni-LoRA is in PEFT from 0.21 only). Per case:
  * `PeftModel.from_pretrained(base, folder)` with the base from test/fixtures/models (float32, eager attention); any
    warning fails the case, except the one the current set gives for every model (transformers 5.25 deprecates
    `is_gradient_checkpointing`, which PEFT 0.21.2 reads) and RandLoRA's advice to save the bases, given by design
    for a save_projection=False folder (recorded in `peft_warnings`);
  * PEFT's state dict of the loaded adapter (what save_pretrained would write) must hold exactly the file's keys, dtypes
    and values: bit for bit for every tensor, and for save_only_topk_weights folders (which PEFT decodes to logits
    and encodes again) the indices exactly and the weights to 1e-6 (`topk_weights_max_abs_diff`);
  * the adapter must change the logits clearly; unmerged and merge_and_unload logits must agree (1e-4);
  * writes `peft_logits.safetensors` (`logits`, `merged_logits`) and `peft.json` (versions, loaded tensors, PEFT's
    layers, differences, `tensors_equal_to_file`); the current set writes `peft_current_logits.safetensors` and
    `peft_current.json`.
Deterministic. Exits non-zero with `check_shared_adapters: FAILED: ...` on any problem.
"""

import argparse
import json
import warnings

from common import ATTN_IMPL, REPO, adapter_effect, check, f32, forward, load, merged_logits, run, setup, versions

import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import save_file

CASES_DIR = REPO / "test" / "fixtures" / "shared" / "lorakit"
OUTPUTS = {
    "pinned": ("peft_logits.safetensors", "peft.json"),
    "current": ("peft_current_logits.safetensors", "peft_current.json"),
}
SET_WARNINGS = {"pinned": (), "current": ("`is_gradient_checkpointing` is deprecated",)}


def compare_state(case, state, file_tensors, topk):
    """The loaded adapter's state dict against the file: same keys and dtypes, equal values."""
    missing = sorted(set(state) - set(file_tensors))
    unexpected = sorted(set(file_tensors) - set(state))
    check(not missing, f"{case}: PEFT expects tensors the file lacks: {missing}")
    check(not unexpected, f"{case}: the file has tensors PEFT does not use: {unexpected}")
    exact, topk_diff = True, 0.0
    for k, t in file_tensors.items():
        s = state[k].cpu()
        check(s.dtype == t.dtype and tuple(s.shape) == tuple(t.shape), f"{case}: {k} is {t.dtype} {tuple(t.shape)}, PEFT's {s.dtype} {tuple(s.shape)}")
        if torch.equal(s, t):
            continue
        exact = False
        check(topk and k.endswith("_topk_weights"), f"{case}: {k} differs after PEFT loaded it")
        topk_diff = max(topk_diff, (s - t).abs().max().item())
    check(topk_diff <= 1e-6, f"{case}: top-k weights differ by {topk_diff} after PEFT's decode and encode")
    return exact, topk_diff


def peft_layers(model):
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, BaseTunerLayer):
            out[name.replace("base_model.model.", "", 1)] = {
                "kind": type(mod.get_base_layer()).__name__,
                "in_features": int(mod.in_features),
                "out_features": int(mod.out_features),
            }
    return out


def check_case(folder, version_set):
    case = folder.name
    logits_file, report_file = OUTPUTS[version_set]
    inputs = json.loads((folder / "inputs.json").read_text())
    config = json.loads((folder / "adapter_config.json").read_text())
    base = load(REPO / inputs["base_model"])
    base_logits = forward(base, inputs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = PeftModel.from_pretrained(base, str(folder))
    about_folder = [str(w.message) for w in caught if not any(str(w.message).startswith(m) for m in SET_WARNINGS[version_set])]
    # RandLoRA's own advice when a folder leaves the bases out, which is what such a case checks
    by_design = [m for m in about_folder if config.get("save_projection") is False and "save_projection" in m]
    unexpected = [m for m in about_folder if m not in by_design]
    check(not unexpected, f"{case}: PEFT warned while loading: {unexpected}")
    pm.eval()
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        file_tensors = {k: f.get_tensor(k) for k in f.keys()}
        check(f.metadata() == {"format": "pt"}, f"{case}: safetensors metadata {f.metadata()}")
    exact, topk_diff = compare_state(case, get_peft_model_state_dict(pm), file_tensors, config.get("save_only_topk_weights", False))
    layers = peft_layers(pm)  # before merge_and_unload unwraps them
    logits = forward(pm, inputs)
    vs_base = adapter_effect(logits, base_logits, False, case)
    merged, merge_diff = merged_logits(pm, inputs, logits, case)
    save_file({"logits": logits, "merged_logits": merged}, str(folder / logits_file), metadata={"format": "pt"})
    info = {
        "case": case,
        "checked_by": "interop/check_shared_adapters.py",
        "versions": versions("torch", "transformers", "peft"),
        "attn_implementation": ATTN_IMPL,
        "peft_warnings": sorted(by_design),
        "loaded_tensors": {k: [str(t.dtype).replace("torch.", ""), *t.shape] for k, t in sorted(file_tensors.items())},
        "tensors_equal_to_file": exact,
        "topk_weights_max_abs_diff": f32(topk_diff),
        "peft_layers": layers,
        "max_abs_diff_vs_base_model": f32(vs_base),
        "max_abs_diff_merged_vs_unmerged": f32(merge_diff),
    }
    (folder / report_file).write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description="Check lorakit-written VB-LoRA / RandLoRA / Uni-LoRA adapters with PEFT.")
    parser.add_argument("--versions", choices=sorted(OUTPUTS), default="pinned")
    parser.add_argument("cases", nargs="*")
    args = parser.parse_args(argv)
    setup("torch", "transformers", "peft", version_set=args.versions)
    folders = [CASES_DIR / n for n in args.cases] if args.cases else sorted(p for p in CASES_DIR.iterdir() if p.is_dir())
    check(folders, f"no case folders under {CASES_DIR}; run scripts/make-shared-adapters.ts first")
    for folder in folders:
        inputs = json.loads((folder / "inputs.json").read_text())
        if args.versions not in inputs["version_sets"]:
            continue
        info = check_case(folder, args.versions)
        print(
            f"peft   {info['case']:22s} ok  {len(info['loaded_tensors'])} tensors, {len(info['peft_layers'])} layers"
            f"  vs-base {info['max_abs_diff_vs_base_model']:.3f}  merged-vs-unmerged {info['max_abs_diff_merged_vs_unmerged']:.1e}"
            f"  exact {info['tensors_equal_to_file']}",
            flush=True,
        )


if __name__ == "__main__":
    run("check_shared_adapters", main)
