#!/usr/bin/env python3
"""Check lorakit's LoRA-Squeeze against PEFT and torch's SVD, and record PEFT's logits of the squeezed adapters.

    node --import tsx scripts/make-squeeze-fixtures.ts      # writes test/fixtures/squeeze/<case>/
    interop/.venv/bin/python interop/check_squeeze.py [case ...]

For every case folder (a squeezed adapter lorakit wrote from a PEFT fixture adapter, with inputs.json):
  * the source adapter (test/fixtures/peft/<source>, made by PEFT) is loaded with PeftModel.from_pretrained and each
    wrapped module's effective ΔW is taken as PEFT computes it: the merged weight (merge_and_unload) minus the base
    weight, in the [out, in] layout (GPT-2's Conv1D weights are transposed);
  * the squeezed folder is loaded the same way, without any warning, and PEFT's resolved rank of each module is read;
  * each module's squeezed ΔW must equal the rank-k truncation of the source ΔW by torch.linalg.svd in float64
    (k = PEFT's resolved rank), to 1e-5 of ‖ΔW‖_F;
  * writes `peft_logits.safetensors` (`logits`: PEFT's logits of the squeezed adapter, float32) and `peft.json`
    (versions, per-module rank, scaling, the relative error against the truncated SVD and the energy kept).
Exits non-zero with `check_squeeze: FAILED: ...` on any problem.
"""

import argparse
import json
import warnings

# first: sets the offline environment before the Hugging Face libraries are imported
from common import ATTN_IMPL, REPO, check, f32, forward, load, lora_layers, run, setup, versions

import torch
from peft import PeftModel
from safetensors.torch import save_file

CASES_DIR = REPO / "test" / "fixtures" / "squeeze"
CHECKED = ("torch", "transformers", "peft")


def weights(model):
    """Module path -> the [out, in] float64 weight of every Linear / Conv1D the model has."""
    from transformers.pytorch_utils import Conv1D

    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            out[name] = mod.weight.detach().double().clone()
        elif isinstance(mod, Conv1D):
            out[name] = mod.weight.detach().double().t().clone()
    return out


def deltas(base_folder, adapter_folder, modules):
    """ΔW of the given modules: merge_and_unload's weight minus the base weight ([out, in], float64)."""
    base = weights(load(REPO / base_folder))
    pm = PeftModel.from_pretrained(load(REPO / base_folder), str(adapter_folder))
    merged = weights(pm.merge_and_unload())
    return {m: merged[m] - base[m] for m in modules}


def check_case(folder):
    case = folder.name
    inputs = json.loads((folder / "inputs.json").read_text())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = PeftModel.from_pretrained(load(REPO / inputs["base_model"]), str(folder))
    check(not caught, f"{case}: PEFT warned while loading: " + " | ".join(str(w.message) for w in caught))
    pm.eval()
    layers = lora_layers(pm, number=f32)
    check(layers, f"{case}: PEFT wrapped no layer")
    logits = forward(pm, inputs)
    source = deltas(inputs["base_model"], REPO / inputs["source"], layers)
    squeezed = deltas(inputs["base_model"], folder, layers)
    report = {}
    for name, info in layers.items():
        d = source[name]
        k = info["r"]
        u, s, vh = torch.linalg.svd(d, full_matrices=False)
        dk = (u[:, :k] * s[:k]) @ vh[:k]
        norm = torch.linalg.norm(d).item()
        err = torch.linalg.norm(squeezed[name] - dk).item() / norm
        check(err < 1e-5, f"{case}: {name}: squeezed ΔW is {err:.2e} (relative) from the rank-{k} SVD of the source ΔW")
        report[name] = {
            **info,
            "relative_error_vs_torch_svd": f32(err),
            "energy_kept": f32((s[:k] ** 2).sum().item() / (s**2).sum().item()),
        }
    save_file({"logits": logits}, str(folder / "peft_logits.safetensors"), metadata={"format": "pt"})
    info = {
        "case": case,
        "checked_by": "interop/check_squeeze.py",
        "versions": versions(*CHECKED),
        "attn_implementation": ATTN_IMPL,
        "logits_shape": list(logits.shape),
        "layers": report,
    }
    (folder / "peft.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description="Check lorakit-squeezed adapters with PEFT and torch's SVD.")
    parser.add_argument("cases", nargs="*", help="case folders under test/fixtures/squeeze (default: all)")
    args = parser.parse_args(argv)
    setup(*CHECKED)
    folders = [CASES_DIR / n for n in args.cases] if args.cases else sorted(p for p in CASES_DIR.iterdir() if p.is_dir())
    check(folders, f"no case folders under {CASES_DIR}; run scripts/make-squeeze-fixtures.ts first")
    for folder in folders:
        info = check_case(folder)
        worst = max(v["relative_error_vs_torch_svd"] for v in info["layers"].values())
        ranks = sorted({v["r"] for v in info["layers"].values()})
        print(f"squeeze {info['case']:24s} ok  {len(info['layers'])} layers, ranks {ranks}, worst {worst:.1e}", flush=True)


if __name__ == "__main__":
    run("check_squeeze", main)
