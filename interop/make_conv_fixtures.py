#!/usr/bin/env python3
"""Reference fixtures for lorakit's Conv2d: a tiny torch conv net, and PEFT LoRA / DoRA adapters on its convolutions.

    interop/.venv/bin/python interop/make_conv_fixtures.py

Deletes and rewrites test/fixtures/conv/ (about 60 KB):
  config.json, model.safetensors     the base net: nn.Sequential of Conv2d/ReLU, weights under torch's names (0.weight)
  expected.json, expected.safetensors  input [2, 3, 9, 9] and the base output
  <case>/                             a PEFT adapter folder (save_pretrained) + expected.json/expected.safetensors
                                      (`output`: adapted, unmerged; `merged_output` and merged_model.safetensors
                                      where PEFT can merge)

Deterministic (fixed seeds, 2 threads, deterministic algorithms, PYTHONHASHSEED=0): two runs give identical files.
A check that fails ends the script with `make_conv_fixtures: FAILED: ...`. interop/README.md documents the files.
"""

import os
import sys

# PEFT writes target_modules with list(set): pin the string hash seed by re-executing once with PYTHONHASHSEED=0.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, PYTHONHASHSEED="0"))

from common import REPO, check, f32, run, setup, versions  # noqa: E402  (first: the offline environment)

import copy  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import warnings  # noqa: E402

import peft  # noqa: E402
import torch  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

OUT_REL = "test/fixtures/conv"
INPUT_SHAPE = [2, 3, 9, 9]
SEED = 1234

# The base net, layer by layer (index = torch.nn.Sequential's name). Every conv differs in what it exercises:
# 0 plain 3x3 "same"; 2 grouped, strided, no bias; 4 dilated 2x2 kernel; 6 pointwise 1x1.
LAYERS = [
    {"type": "conv2d", "in_channels": 3, "out_channels": 8, "kernel_size": [3, 3], "stride": [1, 1],
     "padding": [1, 1], "dilation": [1, 1], "groups": 1, "bias": True},
    {"type": "relu"},
    {"type": "conv2d", "in_channels": 8, "out_channels": 8, "kernel_size": [3, 3], "stride": [2, 2],
     "padding": [1, 1], "dilation": [1, 1], "groups": 2, "bias": False},
    {"type": "relu"},
    # On a 5x5 input, PEFT's dilation-free lora_A (k 2, s 2, p 1) gives the base layer's 3x3 output size, so PEFT
    # can run an adapter here; with a 3x3 dilated kernel the sizes differ and PEFT's forward fails.
    {"type": "conv2d", "in_channels": 8, "out_channels": 8, "kernel_size": [2, 2], "stride": [2, 2],
     "padding": [1, 1], "dilation": [2, 2], "groups": 1, "bias": True},
    {"type": "relu"},
    {"type": "conv2d", "in_channels": 8, "out_channels": 4, "kernel_size": [1, 1], "stride": [1, 1],
     "padding": [0, 0], "dilation": [1, 1], "groups": 1, "bias": True},
]

# name -> what it shows, the LoraConfig arguments, whether PEFT can merge it (and why not).
CASES = {
    "lora": {
        "description": "LoRA on the 3x3 conv 0 and the 1x1 conv 6 (both groups 1, dilation 1): PEFT merges it",
        "config": {"target_modules": ["0", "6"], "r": 4, "lora_alpha": 8, "init_lora_weights": False},
        "merge": True,
    },
    "lora_groups": {
        "description": "LoRA on conv 2 (groups 2, stride 2): lora_B is a grouped 1x1 conv; PEFT refuses to merge",
        "config": {"target_modules": ["2"], "r": 4, "lora_alpha": 8, "init_lora_weights": False},
        "merge": "NotImplementedError: Merging is not supported for _ConvNd layers with groups > 1",
    },
    "lora_dilated": {
        "description": "LoRA on conv 4 (dilation 2): lora_A has the base kernel, stride and padding but no dilation",
        "config": {"target_modules": ["4"], "r": 4, "lora_alpha": 8, "init_lora_weights": False},
        "merge": "unfaithful: merge_and_unload runs but the merged net is not the adapted net (see merge_mismatch)",
    },
    "dora": {
        "description": "DoRA on conv 0 and conv 6; magnitudes [1, out, 1, 1] perturbed so that m / ||W + sBA|| != 1",
        "config": {"target_modules": ["0", "6"], "r": 4, "lora_alpha": 8, "init_lora_weights": False,
                   "use_dora": True},
        "merge": True,
    },
}


def build_net():
    mods = []
    for spec in LAYERS:
        if spec["type"] == "relu":
            mods.append(nn.ReLU())
            continue
        mods.append(nn.Conv2d(spec["in_channels"], spec["out_channels"], tuple(spec["kernel_size"]),
                              stride=tuple(spec["stride"]), padding=tuple(spec["padding"]),
                              dilation=tuple(spec["dilation"]), groups=spec["groups"], bias=spec["bias"]))
    return nn.Sequential(*mods).eval()


def load_net(folder):
    """The base net with the weights saved in `folder` (fresh module, like a user loading the file)."""
    net = build_net()
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        net.load_state_dict({k: f.get_tensor(k) for k in f.keys()}, strict=True)
    return net


def run_net(net, x):
    with torch.no_grad():
        return net(x).contiguous()


def save(path, tensors):
    save_file({k: v.detach().float().contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def keys_and_shapes(path):
    with safe_open(str(path), "pt") as f:
        return {k: list(f.get_slice(k).get_shape()) for k in sorted(f.keys())}


def write_json(path, obj):
    path.write_text(json.dumps(obj, indent=2) + "\n")


def max_abs(a, b):
    return (a - b).abs().max().item()


def make_base(out):
    torch.manual_seed(SEED)
    net = build_net()  # torch's default init (Kaiming-uniform weights, uniform biases), from the seed
    save(out / "model.safetensors", net.state_dict())
    write_json(out / "config.json", {"architectures": ["Sequential"], "layers": LAYERS})
    g = torch.Generator().manual_seed(SEED + 1)
    x = torch.randn(*INPUT_SHAPE, generator=g)
    y = run_net(load_net(out), x)
    check(y.abs().max().item() > 0.05, f"base output is nearly zero ({y.abs().max().item()})")
    save(out / "expected.safetensors", {"input": x, "base_output": y})
    write_json(out / "expected.json", {
        "description": "the base net of config.json on `input`; weights are torch's default init under the seed",
        "seed": SEED,
        "versions": versions("torch", "peft", "safetensors", "numpy"),
        "model_tensors": keys_and_shapes(out / "model.safetensors"),
        "safetensors_keys": keys_and_shapes(out / "expected.safetensors"),
    })
    return x, y


def make_case(out, name, spec, x, base_y):
    folder = out / name
    folder.mkdir()
    torch.manual_seed(SEED + 10 + list(CASES).index(name))  # PEFT's lora_A/lora_B: torch's Conv2d default init
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "groups > 1: merging is not supported" (recorded in expected.json)
        pm = get_peft_model(load_net(out), LoraConfig(**copy.deepcopy(spec["config"])))
    magnitudes = 0
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_magnitude_vector" in n:  # DoRA's init is ||W + sBA|| per output channel: move it off that
                p.mul_(1 + 0.1 * torch.randn(p.shape))
                magnitudes += 1
    pm.eval()
    y = run_net(pm, x)
    effect = max_abs(y, base_y)
    check(effect > 0.05, f"{name}: the adapter barely changes the output ({effect})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm.save_pretrained(str(folder))
        reloaded = PeftModel.from_pretrained(load_net(out), str(folder)).eval()
    check(max_abs(run_net(reloaded, x), y) == 0.0, f"{name}: the reloaded adapter gives another output")

    info = {
        "case": name,
        "description": spec["description"],
        "lora_config": copy.deepcopy(spec["config"]),
        "seed": SEED + 10 + list(CASES).index(name),
        "init": "init_lora_weights=False: lora_A and lora_B keep torch's Conv2d default init (B != 0)"
        + (f"; {magnitudes} DoRA magnitudes *= 1 + 0.1 N(0, 1)" if magnitudes else ""),
        "versions": versions("torch", "peft", "safetensors", "numpy"),
        "layers": {
            n.replace("base_model.model.", ""): {
                "r": m.r["default"],
                "lora_alpha": m.lora_alpha["default"],
                "scaling": m.scaling["default"],
                "use_dora": bool(m.use_dora.get("default", False)),
                "lora_A": str(m.lora_A["default"]),
                "lora_B": str(m.lora_B["default"]),
            }
            for n, m in reloaded.named_modules()
            if isinstance(m, peft.tuners.lora.LoraLayer)
        },
        "max_abs_diff_vs_base": f32(effect),
    }
    tensors = {"output": y}
    if spec["merge"] is True:
        merged = reloaded.merge_and_unload()
        my = run_net(merged, x)
        d = max_abs(my, y)
        check(d < 1e-5, f"{name}: merged output differs from unmerged by {d}")
        save(folder / "merged_model.safetensors", merged.state_dict())
        tensors["merged_output"] = my
        info["max_abs_diff_merged_vs_unmerged"] = f32(d)
        info["merged_model_tensors"] = keys_and_shapes(folder / "merged_model.safetensors")
    elif spec["merge"].startswith("NotImplementedError"):
        try:
            reloaded.merge_and_unload()
            check(False, f"{name}: PEFT merged a layer it is documented to refuse")
        except NotImplementedError as e:
            info["merge"] = f"NotImplementedError: {e}"
    else:
        d = max_abs(run_net(reloaded.merge_and_unload(), x), y)
        check(d > 0.01, f"{name}: PEFT's merge was expected to differ from the adapted net, got {d}")
        info["merge"] = spec["merge"]
        info["merge_mismatch"] = f32(d)
    save(folder / "expected.safetensors", tensors)
    info["adapter_tensors"] = keys_and_shapes(folder / "adapter_model.safetensors")
    info["safetensors_keys"] = keys_and_shapes(folder / "expected.safetensors")
    write_json(folder / "expected.json", info)
    return info


def main():
    setup("torch", "peft", "safetensors", "numpy")
    out = REPO / OUT_REL
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    x, y = make_base(out)
    print(f"base   output {list(y.shape)}", flush=True)
    for name, spec in CASES.items():
        info = make_case(out, name, spec, x, y)
        extra = info.get("max_abs_diff_merged_vs_unmerged", info.get("merge_mismatch", "-"))
        print(f"{name:13s} ok  vs-base {info['max_abs_diff_vs_base']:.3f}  merge {extra}", flush=True)


if __name__ == "__main__":
    run("make_conv_fixtures", main)
