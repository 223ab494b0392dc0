#!/usr/bin/env python3
"""Check that PEFT reads the conv LoRA / DoRA adapters lorakit writes, and record PEFT's outputs for them.

    node --import tsx scripts/make-lorakit-conv-adapters.ts     # writes test/fixtures/lorakit-conv/<case>/
    interop/.venv/bin/python interop/check_lorakit_conv.py [case ...]

For every case folder (adapter_config.json, adapter_model.safetensors, case.json written by lorakit):
  * `PeftModel.from_pretrained(net, folder)` on the conv net of test/fixtures/conv (make_conv_fixtures.py builds it);
    any warning fails the case, except the one PEFT itself raises whenever it wraps a grouped conv ("LoRA adapter
    added to ConvNd layer with groups > 1. Merging is not supported."), which does not depend on the file;
  * PEFT's state dict of the loaded adapter must hold exactly the file's keys with bit-identical values;
  * the adapter must change the net's output clearly;
  * merge_and_unload: where lorakit merges (case.json "merge": true) the merged output must equal the unmerged one
    (1e-5); otherwise PEFT's behaviour is recorded (NotImplementedError for groups > 1, the merged net's distance
    from the adapted one for a dilated conv);
  * writes `peft_output.safetensors` (`output`, and `merged_output` where merged; float32) and `peft.json`
    (versions, PEFT's r / lora_alpha / scaling / use_dora per wrapped module, loaded tensors, differences).
Deterministic; exits non-zero with `check_lorakit_conv: FAILED: ...` on any problem.
"""

import json
import sys
import warnings

# first: make_conv_fixtures pins PYTHONHASHSEED (re-executing this script once) and imports common, which sets the
# offline environment before torch and PEFT are imported
from make_conv_fixtures import OUT_REL as NET_REL, load_net, max_abs, run_net  # noqa: I001
from common import REPO, check, f32, run, setup, versions

import peft
import torch
from peft import PeftModel
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import save_file

CASES_DIR = REPO / "test" / "fixtures" / "lorakit-conv"
PINNED = ("torch", "peft", "safetensors", "numpy")
GROUPS_WARNING = "LoRA adapter added to ConvNd layer with groups > 1. Merging is not supported."


def check_case(folder, x):
    case = folder.name
    spec = json.loads((folder / "case.json").read_text())
    net = REPO / NET_REL
    base_y = run_net(load_net(net), x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = PeftModel.from_pretrained(load_net(net), str(folder)).eval()
    lora_layers = [m for m in pm.modules() if isinstance(m, peft.tuners.lora.LoraLayer)]
    grouped = any(getattr(m.get_base_layer(), "groups", 1) > 1 for m in lora_layers)
    others = [w for w in caught if not (grouped and str(w.message) == GROUPS_WARNING)]
    warned = " | ".join(f"{w.category.__name__}: {w.message}" for w in others)
    check(not others, f"{case}: PEFT warned while loading: {warned}")

    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        file_tensors = {k: f.get_tensor(k) for k in f.keys()}
        check(f.metadata() == {"format": "pt"}, f"{case}: safetensors metadata {f.metadata()}")
    state = get_peft_model_state_dict(pm)
    check(set(state) == set(file_tensors), f"{case}: PEFT's keys {sorted(state)} != the file's {sorted(file_tensors)}")
    for k, t in file_tensors.items():
        check(t.dtype == torch.float32, f"{case}: {k} is {t.dtype}")
        shape, peft_shape = tuple(t.shape), tuple(state[k].shape)
        check(shape == peft_shape, f"{case}: {k} has shape {shape}, PEFT's {peft_shape}")
        check(torch.equal(state[k].cpu(), t), f"{case}: {k} differs after PEFT loaded it")

    y = run_net(pm, x)
    effect = max_abs(y, base_y)
    check(effect > 0.05, f"{case}: the adapter barely changes the output ({effect})")
    tensors = {"output": y}
    info = {
        "case": case,
        "checked_by": "interop/check_lorakit_conv.py",
        "versions": versions(*PINNED),
        "peft_warnings": [str(w.message) for w in caught],
        "loaded_tensors": {k: list(t.shape) for k, t in sorted(file_tensors.items())},
        "peft_layers": {
            n.replace("base_model.model.", ""): {
                "r": m.r["default"],
                "lora_alpha": m.lora_alpha["default"],
                "scaling": f32(m.scaling["default"]),
                "use_dora": bool(m.use_dora.get("default", False)),
            }
            for n, m in pm.named_modules()
            if isinstance(m, peft.tuners.lora.LoraLayer)
        },
        "max_abs_diff_vs_base": f32(effect),
    }
    try:
        merged = run_net(pm.merge_and_unload(), x)
    except NotImplementedError as e:
        check(spec["merge"] is not True, f"{case}: PEFT refused a merge lorakit does: {e}")
        info["peft_merge"] = f"NotImplementedError: {e}"
    else:
        d = max_abs(merged, y)
        if spec["merge"] is True:
            check(d < 1e-5, f"{case}: merged output differs from unmerged by {d}")
            tensors["merged_output"] = merged
            info["max_abs_diff_merged_vs_unmerged"] = f32(d)
        else:
            info["peft_merge"] = "merge_and_unload runs, but the merged net is not the adapted one"
            info["merge_mismatch"] = f32(d)
    save_file(tensors, str(folder / "peft_output.safetensors"), metadata={"format": "pt"})
    (folder / "peft.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(names):
    setup(*PINNED)
    with safe_open(str(REPO / NET_REL / "expected.safetensors"), "pt") as f:
        x = f.get_tensor("input")
    folders = [CASES_DIR / n for n in names] if names else sorted(p for p in CASES_DIR.iterdir() if p.is_dir())
    check(folders, f"no case folders under {CASES_DIR}; run scripts/make-lorakit-conv-adapters.ts first")
    for folder in folders:
        info = check_case(folder, x)
        merge = info.get("max_abs_diff_merged_vs_unmerged", info.get("peft_merge", ""))
        print(f"peft   {info['case']:13s} ok  {len(info['loaded_tensors'])} tensors  vs-base "
              f"{info['max_abs_diff_vs_base']:.3f}  merge {merge}", flush=True)


if __name__ == "__main__":
    run("check_lorakit_conv", main, sys.argv[1:])
