#!/usr/bin/env python3
"""Check that PEFT reads the adapters lorakit writes, and record PEFT's logits for them.

    node --import tsx scripts/make-lorakit-adapters.ts        # writes test/fixtures/lorakit/<case>/
    interop/.venv/bin/python interop/check_lorakit_adapters.py [case ...]

For every case folder (adapter_config.json, adapter_model.safetensors, inputs.json written by lorakit):
  * `PeftModel.from_pretrained(base, folder)` with the base from test/fixtures/models (float32, eager attention);
    any warning raised while loading fails the case (PEFT warns about missing adapter keys, unknown config keys, ...);
  * PEFT's state dict of the loaded adapter must hold exactly the file's keys with bit-identical values (so no key
    was dropped as unexpected and none was left at its init as missing);
  * the adapter must change the logits clearly; unmerged and merge_and_unload logits must agree (1e-4);
  * writes `peft_logits.safetensors` (`logits`, `merged_logits`, float32) and `peft.json` (versions, PEFT's resolved
    r / alpha / scaling per wrapped module, loaded keys, differences), both deterministic.
Exits non-zero with `check_lorakit_adapters: FAILED: ...` on any problem.
"""

import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import json  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import peft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from peft import PeftModel  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402
from peft.utils import get_peft_model_state_dict  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification  # noqa: E402

PINNED = {"torch": "2.9.1", "transformers": "4.57.6", "peft": "0.18.1"}
REPO = Path(__file__).resolve().parent.parent
CASES_DIR = REPO / "test" / "fixtures" / "lorakit"
ATTN_IMPL = "eager"


class CheckError(RuntimeError):
    pass


def check(cond, msg):
    if not cond:
        raise CheckError(msg)


def versions():
    return {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__, "peft": peft.__version__}


def f32(x):
    return float(np.float32(x))


def load_base(rel, seqcls):
    cls = AutoModelForSequenceClassification if seqcls else AutoModelForCausalLM
    m = cls.from_pretrained(str(REPO / rel), dtype=torch.float32, attn_implementation=ATTN_IMPL)
    return m.eval()


def forward(model, inputs):
    kw = {k: torch.tensor(inputs[k]) for k in ("input_ids", "token_type_ids", "attention_mask") if k in inputs}
    with torch.no_grad():
        return model(**kw).logits.float().contiguous()


def peft_layers(model):
    """Module path (as in the base model) -> r, alpha, scaling, DoRA, as PEFT resolved them from the config."""
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, LoraLayer) and "default" in mod.r:
            out[name.replace("base_model.model.", "", 1)] = {
                "kind": type(mod).__name__,
                "r": int(mod.r["default"]),
                "lora_alpha": f32(mod.lora_alpha["default"]),
                "scaling": f32(mod.scaling["default"]),
                "use_dora": bool(mod.use_dora.get("default", False)),
            }
    return dict(sorted(out.items()))


def check_case(folder):
    case = folder.name
    inputs = json.loads((folder / "inputs.json").read_text())
    base_rel = inputs["base_model"]
    config = json.loads((folder / "adapter_config.json").read_text())
    seqcls = config.get("task_type") == "SEQ_CLS"

    base = load_base(base_rel, seqcls)
    base_logits = forward(base, inputs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = PeftModel.from_pretrained(base, str(folder))
    check(not caught, f"{case}: PEFT warned while loading: " + " | ".join(f"{w.category.__name__}: {w.message}" for w in caught))
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

    layers = peft_layers(pm)
    check(layers, f"{case}: PEFT wrapped no layer")
    logits = forward(pm, inputs)
    vs_base = (logits - base_logits).abs().max().item()
    check(vs_base > (0.02 if seqcls else 0.05), f"{case}: the adapter barely changes the logits ({vs_base})")
    merged = pm.merge_and_unload().eval()
    merged_logits = forward(merged, inputs)
    merge_diff = (merged_logits - logits).abs().max().item()
    check(merge_diff < 1e-4, f"{case}: merged logits differ from unmerged by {merge_diff}")

    save_file({"logits": logits, "merged_logits": merged_logits}, str(folder / "peft_logits.safetensors"), metadata={"format": "pt"})
    info = {
        "case": case,
        "checked_by": "interop/check_lorakit_adapters.py",
        "versions": versions(),
        "attn_implementation": ATTN_IMPL,
        "peft_warnings": [],
        "loaded_tensors": {k: list(t.shape) for k, t in sorted(file_tensors.items())},
        "peft_layers": layers,
        "logits_shape": list(logits.shape),
        "max_abs_diff_vs_base_model": f32(vs_base),
        "max_abs_diff_merged_vs_unmerged": f32(merge_diff),
    }
    (folder / "peft.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(names):
    v = versions()
    for name, want in PINNED.items():
        check(v[name] == want, f"{name} {v[name]} installed, {want} pinned in interop/requirements.txt")
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    os.chdir(REPO)
    folders = [CASES_DIR / n for n in names] if names else sorted(p for p in CASES_DIR.iterdir() if p.is_dir())
    check(folders, f"no case folders under {CASES_DIR}; run scripts/make-lorakit-adapters.ts first")
    for folder in folders:
        check((folder / "adapter_config.json").is_file(), f"{folder}: adapter_config.json missing")
        info = check_case(folder)
        print(
            f"peft   {info['case']:22s} ok  {len(info['loaded_tensors'])} tensors, {len(info['peft_layers'])} layers"
            f"  vs-base {info['max_abs_diff_vs_base_model']:.3f}  merged-vs-unmerged {info['max_abs_diff_merged_vs_unmerged']:.1e}",
            flush=True,
        )


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except CheckError as e:
        print(f"check_lorakit_adapters: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
