#!/usr/bin/env python3
"""Reference fixtures for lorakit's PiSSA and OLoRA: PEFT's own initialisation, training-like perturbation, save,
reload and conversion on the tiny fixture models (test/fixtures/models).

    interop/.venv/bin/python interop/make_init_fixtures.py

Deletes and rewrites test/fixtures/peft_init/ (about 450 KB):
  <case>/expected.json          config, seed, versions, input ids, per-layer r / alpha / scaling, measured differences
  <case>/expected.safetensors   PEFT's state right after get_peft_model: `init.<path>.lora_A.weight`,
                                `init.<path>.lora_B.weight` (and `init.<path>.lora_magnitude_vector` with DoRA),
                                `residual.<path>.weight` (the base layer's weight after the init, stored layout:
                                GPT-2's Conv1D [in, out]); `logits` of the adapted model after the perturbation (the
                                base model's, at init and of the converted folder are differences in expected.json)
  <case>/adapter/               save_pretrained after the perturbation: the PiSSA/OLoRA folder as trained
                                (init_lora_weights kept; PEFT re-runs the initialisation when it loads it)
  <case>/converted/             save_pretrained(path_initial_model_for_weight_conversion=...): PEFT's rank-2r plain
                                LoRA of the untouched base (not written for DoRA, whose magnitude PEFT drops)
  olora_conv1d.json             what PEFT's olora_init does on GPT-2's Conv1D (it factors the stored [in, out]
                                weight without fan_in_fan_out's transpose)

The perturbation stands in for training: lora_A and lora_B += N(0, 0.02), DoRA magnitudes *= 1 + N(0, 0.05), from
a torch.Generator seeded with the case seed, in parameter-name order.
Deterministic (fixed seeds, 2 threads, deterministic algorithms, PYTHONHASHSEED=0): two runs give identical files.
A check that fails ends the script with `make_init_fixtures: FAILED: ...`. interop/README.md documents the files.
"""

import os
import sys

# PEFT writes target_modules with list(set): pin the string hash seed by re-executing once with PYTHONHASHSEED=0.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, PYTHONHASHSEED="0"))

# first: sets the offline environment before the Hugging Face libraries are imported
from common import (  # noqa: E402
    ATTN_IMPL,
    REPO,
    check,
    f32,
    forward,
    load,
    lora_layers,
    max_abs_diff,
    run,
    setup,
    versions,
)

import copy  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

OUT_REL = "test/fixtures/peft_init"
MODELS_REL = "test/fixtures/models"
PERTURBATION = (
    "lora_A, lora_B += N(0, 0.02); DoRA magnitudes *= 1 + N(0, 0.05); one torch.Generator seeded with the case "
    "seed, parameters in name order"
)

# name -> base model, seed, what it shows, LoraConfig arguments. Targets cover both orientations of the [out, in]
# matrix (v_proj 32x64, up_proj 128x64; GPT-2 c_attn 64->192, c_proj 256->64) in layer 0 only (small files).
CASES = {
    "llama_pissa": {
        "base": "llama",
        "seed": 401,
        "description": "PiSSA (exact SVD) on v_proj and up_proj of layer 0, r 4, alpha 8 (s = 2)",
        "config": {"target_modules": ["v_proj", "up_proj"], "layers_to_transform": [0], "r": 4, "lora_alpha": 8,
                   "init_lora_weights": "pissa", "task_type": "CAUSAL_LM"},
    },
    "llama_olora": {
        "base": "llama",
        "seed": 402,
        "description": "OLoRA on v_proj and up_proj of layer 0, r 4, alpha 16 (s = 4)",
        "config": {"target_modules": ["v_proj", "up_proj"], "layers_to_transform": [0], "r": 4, "lora_alpha": 16,
                   "init_lora_weights": "olora", "task_type": "CAUSAL_LM"},
    },
    "gpt2_pissa": {
        "base": "gpt2",
        "seed": 403,
        "description": "PiSSA on GPT-2 Conv1D c_attn and the MLP's c_proj of layer 0 (fan_in_fan_out), r 4, alpha 8",
        "config": {"target_modules": ["attn.c_attn", "mlp.c_proj"], "layers_to_transform": [0], "r": 4,
                   "lora_alpha": 8, "fan_in_fan_out": True, "init_lora_weights": "pissa", "task_type": "CAUSAL_LM"},
    },
    "llama_pissa_dora": {
        "base": "llama",
        "seed": 404,
        "description": "DoRA with a PiSSA init on v_proj and up_proj of layer 0: the magnitude starts as the row norms "
        "of W_res + s·B·A = W0",
        "config": {"target_modules": ["v_proj", "up_proj"], "layers_to_transform": [0], "r": 4, "lora_alpha": 8,
                   "init_lora_weights": "pissa", "use_dora": True, "task_type": "CAUSAL_LM"},
    },
}


def save(path, tensors):
    save_file({k: v.detach().float().contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def keys_and_shapes(path):
    with safe_open(str(path), "pt") as f:
        return {k: list(f.get_slice(k).get_shape()) for k in sorted(f.keys())}


def write_json(path, obj):
    path.write_text(json.dumps(obj, indent=2) + "\n")


def inputs_of(base):
    e = json.loads((REPO / MODELS_REL / base / "expected.json").read_text())
    return {"input_ids": e["input_ids"]}


def lora_modules(pm):
    """Module path (as in the base model) -> the LoRA layer, for the adapter "default"."""
    from peft.tuners.lora import LoraLayer

    return {
        n.replace("base_model.model.", "", 1): m
        for n, m in pm.named_modules()
        if isinstance(m, LoraLayer) and "default" in m.r
    }


def initial_state(pm):
    out = {}
    for path, m in sorted(lora_modules(pm).items()):
        out[f"init.{path}.lora_A.weight"] = m.lora_A["default"].weight.detach().clone()
        out[f"init.{path}.lora_B.weight"] = m.lora_B["default"].weight.detach().clone()
        if m.use_dora.get("default", False):
            out[f"init.{path}.lora_magnitude_vector"] = m.lora_magnitude_vector["default"].weight.detach().clone()
        out[f"residual.{path}.weight"] = m.get_base_layer().weight.detach().clone()
    return out


def perturb(pm, seed):
    g = torch.Generator().manual_seed(seed)
    n = 0
    with torch.no_grad():
        for name, p in sorted(pm.named_parameters()):
            if ".lora_A." in name or ".lora_B." in name:
                p.add_(0.02 * torch.randn(p.shape, generator=g))
                n += 1
            elif "lora_magnitude_vector" in name:
                p.mul_(1 + 0.05 * torch.randn(p.shape, generator=g))
                n += 1
    return n


def make_case(out, name, spec):
    folder = out / name
    folder.mkdir()
    base_rel = f"{MODELS_REL}/{spec['base']}"
    inputs = inputs_of(spec["base"])
    base_logits = forward(load(base_rel), inputs)
    torch.manual_seed(spec["seed"])
    pm = get_peft_model(load(base_rel), LoraConfig(**copy.deepcopy(spec["config"])))
    pm.eval()
    init = initial_state(pm)
    init_logits = forward(pm, inputs)
    init_diff = max_abs_diff(init_logits, base_logits)
    check(init_diff < 1e-4, f"{name}: PEFT's init changes the logits by {init_diff}")
    tmp = Path(tempfile.mkdtemp(prefix="lk-init-"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pm.save_pretrained(str(tmp / "initial"))  # before training, as PEFT's conversion requires
        perturbed = perturb(pm, spec["seed"])
        logits = forward(pm, inputs)
        effect = max_abs_diff(logits, base_logits)
        check(effect > 0.01, f"{name}: the perturbed adapter barely changes the logits ({effect})")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pm.save_pretrained(str(folder / "adapter"))
        # PEFT loads a PiSSA/OLoRA folder on the original base by re-running the initialisation there
        reloaded = forward(PeftModel.from_pretrained(load(base_rel), str(folder / "adapter")), inputs)
        reload_diff = max_abs_diff(reloaded, logits)
        check(reload_diff < 1e-5, f"{name}: PEFT's reloaded adapter differs by {reload_diff}")

        conv_dir = tmp / "converted"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pm.save_pretrained(str(conv_dir), path_initial_model_for_weight_conversion=str(tmp / "initial"))
        conv_keys = keys_and_shapes(conv_dir / "adapter_model.safetensors")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DoRA: PEFT warns that the magnitudes are missing
            converted = forward(PeftModel.from_pretrained(load(base_rel), str(conv_dir)), inputs)
        conv_diff = max_abs_diff(converted, logits)
        tensors = {**init, "logits": logits}
        info_conv = {
            "converted_tensors": conv_keys,
            "converted_config": json.loads((conv_dir / "adapter_config.json").read_text()),
            "conversion_warnings": sorted({str(w.message) for w in caught}),
            "max_abs_diff_converted_vs_adapted": f32(conv_diff),
        }
        if spec["config"].get("use_dora"):
            # subtract_mutated_init keeps only lora_A / lora_B: the trained magnitudes are lost
            check(not any("magnitude" in k for k in conv_keys), f"{name}: PEFT's conversion kept the magnitudes")
            check(conv_diff > 1e-3, f"{name}: PEFT's converted DoRA adapter was expected to differ ({conv_diff})")
            info_conv["converted"] = "not written: PEFT's conversion drops lora_magnitude_vector"
        else:
            check(conv_diff < 1e-4, f"{name}: PEFT's converted adapter differs from the adapted model by {conv_diff}")
            shutil.copytree(conv_dir, folder / "converted")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for f in ("adapter", "converted"):
        if (folder / f / "README.md").exists():
            (folder / f / "README.md").unlink()  # the model card holds nothing the tests read
    save(folder / "expected.safetensors", tensors)
    info = {
        "case": name,
        "description": spec["description"],
        "base_model": base_rel,
        "lora_config": copy.deepcopy(spec["config"]),
        "seed": spec["seed"],
        "perturbation": PERTURBATION,
        "perturbed_tensors": perturbed,
        "versions": versions("torch", "transformers", "peft", "safetensors", "numpy"),
        "attn_implementation": ATTN_IMPL,
        **inputs,
        "lora_layers": lora_layers(pm, number=f32),
        "max_abs_diff_init_vs_base": f32(init_diff),
        "max_abs_diff_vs_base": f32(effect),
        "max_abs_diff_reloaded_vs_adapted": f32(reload_diff),
        **info_conv,
        "adapter_tensors": keys_and_shapes(folder / "adapter" / "adapter_model.safetensors"),
        "safetensors_keys": keys_and_shapes(folder / "expected.safetensors"),
    }
    write_json(folder / "expected.json", info)
    return info


def olora_conv1d(out):
    """PEFT's olora_init on GPT-2's Conv1D: c_attn (64 -> 192) fails in the forward, c_proj (64 -> 64) runs but no
    longer computes the base model at init."""
    base_rel = f"{MODELS_REL}/gpt2"
    inputs = inputs_of("gpt2")
    base_logits = forward(load(base_rel), inputs)
    report = {"description": olora_conv1d.__doc__.replace("\n   ", ""), "versions": versions("torch", "peft")}
    for target in ("attn.c_attn", "attn.c_proj"):
        cfg = LoraConfig(target_modules=[target], layers_to_transform=[0], r=4, lora_alpha=8, fan_in_fan_out=True,
                         init_lora_weights="olora", task_type="CAUSAL_LM")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pm = get_peft_model(load(base_rel), cfg)
        m = lora_modules(pm)[f"transformer.h.0.{target}"]
        entry = {
            "lora_A": list(m.lora_A["default"].weight.shape),
            "lora_B": list(m.lora_B["default"].weight.shape),
            "stored_weight": list(m.get_base_layer().weight.shape),
        }
        try:
            d = max_abs_diff(forward(pm, inputs), base_logits)
            entry["max_abs_diff_init_vs_base"] = f32(d)
            check(d > 1e-3, f"olora_conv1d {target}: PEFT's init was expected to change the output ({d})")
        except RuntimeError as e:
            entry["forward_error"] = f"RuntimeError: {str(e).splitlines()[0]}"
        report[target] = entry
    check("forward_error" in report["attn.c_attn"], "olora_conv1d: PEFT's c_attn forward was expected to fail")
    write_json(out / "olora_conv1d.json", report)
    return report


def main():
    setup("torch", "transformers", "peft", "safetensors", "numpy")
    out = REPO / OUT_REL
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name, spec in CASES.items():
        info = make_case(out, name, spec)
        print(
            f"{name:18s} ok  init-vs-base {info['max_abs_diff_init_vs_base']:.1e}  vs-base "
            f"{info['max_abs_diff_vs_base']:.3f}  converted {info['max_abs_diff_converted_vs_adapted']:.1e}",
            flush=True,
        )
    report = olora_conv1d(out)
    print(f"olora_conv1d       c_attn: {report['attn.c_attn'].get('forward_error')}", flush=True)


if __name__ == "__main__":
    run("make_init_fixtures", main)
