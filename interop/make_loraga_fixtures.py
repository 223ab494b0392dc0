#!/usr/bin/env python3
"""Reference fixtures for lorakit's LoRA-GA (init_lora_weights="lora_ga"): PEFT's own gradient estimation
(preprocess_loraga) on fixed calibration batches and its lora_ga_init on the tiny fixture models.

PEFT has LoRA-GA from 0.19 on, the pinned interop venv has 0.18.1: run this with a second venv that sees the
pinned torch / transformers / safetensors / numpy and adds a newer PEFT, for example

    python3 -m venv /tmp/peft-now
    echo "$PWD/interop/.venv/lib/python3.11/site-packages" > /tmp/peft-now/lib/python3.11/site-packages/interop.pth
    /tmp/peft-now/bin/pip install --no-deps peft==0.21.2
    /tmp/peft-now/bin/python interop/make_loraga_fixtures.py

Deletes and rewrites test/fixtures/lora_ga/ (about 570 KB):
  <case>/expected.json          config, seed, versions, the calibration batches, per-layer r / alpha / scaling, the
                                measured checks below
  <case>/expected.safetensors   `grad.<path>.weight`: PEFT's estimated gradient (stored layout: GPT-2's Conv1D is
                                [in, out]); `init.<path>.lora_A.weight`, `init.<path>.lora_B.weight`: PEFT's factors
                                right after get_peft_model; `residual.<path>.weight`: the base layer's weight then
                                (stored layout)

The calibration: `batches` [n, bsz, T] of token ids drawn uniformly with a generator seeded by the case seed; PEFT's
train_step runs model(input_ids=b, labels=b).loss.backward() on each batch (train mode; every dropout is 0 in these
configs), so the gradient is the mean over batches of the gradient of each batch's mean loss. Every batch has the
same number of counted tokens (bsz·(T−1), no padding), so this is also the token-weighted mean lorakit computes.
The gradients have rank at most n·bsz·(T−1), below torch.svd_lowrank's q = 4r: the randomized SVD then finds the
exact singular triplets whatever its random sketch, so PEFT's factors are checked here against a float64 exact SVD
of PEFT's own gradient (to 1e-4), and lorakit's can be compared with them up to one sign per singular component.
Only the `weight_svd` case depends on the sketch beyond rounding: its scale takes the largest singular value of W0
from svd_lowrank(W0, q=r, niter=4); the relative error of that estimate is recorded.
Deterministic (fixed seeds, 2 threads, deterministic algorithms, PYTHONHASHSEED=0): two runs give identical files.
A check that fails ends the script with `make_loraga_fixtures: FAILED: ...`. interop/README.md documents the files.
"""

import os
import sys

# PEFT writes target_modules with list(set): pin the string hash seed by re-executing once with PYTHONHASHSEED=0.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, PYTHONHASHSEED="0"))

# first: sets the offline environment before the Hugging Face libraries are imported
from common import ATTN_IMPL, REPO, check, f32, load, lora_layers, run, setup, versions  # noqa: E402

import copy  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

OUT_REL = "test/fixtures/lora_ga"
MODELS_REL = "test/fixtures/models"
MIN_PEFT = (0, 19)

# name -> base model, seed, what it shows, calibration shape [n, bsz, T], LoraConfig arguments (lora_ga_config as a
# dict). Targets cover both orientations of the [out, in] matrix and GPT-2's Conv1D.
CASES = {
    "llama_default": {
        "base": "llama",
        "seed": 501,
        "description": "PEFT's defaults (ArB2r, stable, gamma 16) on v_proj, up_proj, down_proj of layer 0, r 4, "
        "alpha 8 (s = 2)",
        "batches": [2, 2, 4],
        "config": {"target_modules": ["v_proj", "up_proj", "down_proj"], "layers_to_transform": [0], "r": 4,
                   "lora_alpha": 8, "init_lora_weights": "lora_ga", "lora_ga_config": {}, "task_type": "CAUSAL_LM"},
    },
    "gpt2_default": {
        "base": "gpt2",
        "seed": 502,
        "description": "PEFT's defaults on GPT-2's Conv1D attn.c_attn (64 -> 192) and mlp.c_proj (256 -> 64) of "
        "layer 0 (fan_in_fan_out; stable's m is the stored weight's first dimension, in_features), r 4, alpha 8",
        "batches": [2, 2, 4],
        "config": {"target_modules": ["attn.c_attn", "mlp.c_proj"], "layers_to_transform": [0], "r": 4,
                   "lora_alpha": 8, "fan_in_fan_out": True, "init_lora_weights": "lora_ga", "lora_ga_config": {},
                   "task_type": "CAUSAL_LM"},
    },
    "llama_arbr_gd_rslora": {
        "base": "llama",
        "seed": 503,
        "description": "direction ArBr, scale gd_scale, rsLoRA (s = alpha/sqrt(r)) on q_proj and o_proj of layer 1, "
        "r 3, alpha 6",
        "batches": [3, 1, 4],
        "config": {"target_modules": ["q_proj", "o_proj"], "layers_to_transform": [1], "r": 3, "lora_alpha": 6,
                   "use_rslora": True, "init_lora_weights": "lora_ga",
                   "lora_ga_config": {"direction": "ArBr", "scale": "gd_scale"}, "task_type": "CAUSAL_LM"},
    },
    "llama_a2rbr_weight_svd": {
        "base": "llama",
        "seed": 504,
        "description": "direction A2rBr, scale weight_svd (B scaled to W0's largest singular value, estimated by "
        "svd_lowrank(W0, q=r, niter=4)) on gate_proj of layer 0, r 2, alpha 4",
        "batches": [2, 1, 4],
        "config": {"target_modules": ["gate_proj"], "layers_to_transform": [0], "r": 2, "lora_alpha": 4,
                   "init_lora_weights": "lora_ga", "lora_ga_config": {"direction": "A2rBr", "scale": "weight_svd"},
                   "task_type": "CAUSAL_LM"},
    },
}


def save(path, tensors):
    save_file({k: v.detach().float().contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def keys_and_shapes(path):
    with safe_open(str(path), "pt") as f:
        return {k: list(f.get_slice(k).get_shape()) for k in sorted(f.keys())}


def lora_modules(pm):
    """Module path (as in the base model) -> the LoRA layer of adapter "default"."""
    from peft.tuners.lora import LoraLayer

    return {
        n.replace("base_model.model.", "", 1): m
        for n, m in pm.named_modules()
        if isinstance(m, LoraLayer) and "default" in m.r
    }


def as_matrix(t, fan_in_fan_out):
    """A stored weight (or gradient) as its [out, in] matrix, in float64."""
    return (t.T if fan_in_fan_out else t).double()


def exact_factors(grad, r, direction):
    """PEFT's A [r, in] and B [out, r] (before scaling) from a float64 exact SVD of grad [out, in]."""
    u, s, vh = torch.linalg.svd(grad, full_matrices=False)
    a_idx, b_idx = {
        "ArB2r": (list(range(r)), list(range(r, 2 * r))),
        "A2rBr": (list(range(r, 2 * r)), list(range(r))),
        "ArBr": (list(range(1, 2 * r, 2)), list(range(0, 2 * r, 2))),
    }[direction]
    return vh[a_idx, :], u[:, b_idx] * s[b_idx], s


def sign_aligned_diff(got, want, dim):
    """max |got − want| after flipping each row (dim 0) or column (dim 1) of got to want's sign."""
    dots = (got * want).sum(dim=1 - dim, keepdim=True)
    return (got * torch.where(dots < 0, -1.0, 1.0) - want).abs().max().item()


def make_case(out, name, spec):
    from peft import LoraConfig, LoraGAConfig, get_peft_model
    from peft.tuners.lora.loraga import preprocess_loraga

    folder = out / name
    folder.mkdir()
    base_rel = f"{MODELS_REL}/{spec['base']}"
    model = load(base_rel)
    n, bsz, T = spec["batches"]
    gen = torch.Generator().manual_seed(spec["seed"])
    batches = torch.randint(0, model.config.vocab_size, (n, bsz, T), generator=gen)
    cfg = copy.deepcopy(spec["config"])
    ga = LoraGAConfig(**cfg.pop("lora_ga_config"))
    config = LoraConfig(**cfg, lora_ga_config=ga)

    def train_step():
        for b in batches:
            model(input_ids=b, labels=b).loss.backward()

    preprocess_loraga(model, config, train_step)
    grads = {
        p: m._peft_loraga_grad.detach().clone() for p, m in model.named_modules() if hasattr(m, "_peft_loraga_grad")
    }
    w0 = {p: m.weight.detach().clone() for p, m in model.named_modules() if p in grads}
    torch.manual_seed(spec["seed"])  # the sketches of svd_lowrank and the weight_svd estimate
    pm = get_peft_model(model, config)
    layers = lora_layers(pm)
    mods = lora_modules(pm)
    check(sorted(mods) == sorted(grads), f"{name}: PEFT adapted {sorted(mods)}, estimated {sorted(grads)}")
    fan = bool(cfg.get("fan_in_fan_out", False))
    tensors, checks = {}, {}
    for path, m in sorted(mods.items()):
        a = m.lora_A["default"].weight.detach().clone()
        b = m.lora_B["default"].weight.detach().clone()
        res = m.get_base_layer().weight.detach().clone()
        s, r = layers[path]["scaling"], layers[path]["r"]
        tensors.update({f"grad.{path}.weight": grads[path], f"init.{path}.lora_A.weight": a,
                        f"init.{path}.lora_B.weight": b, f"residual.{path}.weight": res})
        g = as_matrix(grads[path], fan)
        rank = torch.linalg.matrix_rank(g, rtol=1e-5).item()
        check(rank < min(4 * r, *g.shape), f"{name} {path}: the gradient's rank {rank} is not below q = 4r")
        check(g.abs().max().item() > 1e-6, f"{name} {path}: the gradient vanishes")
        # W_res + s·B·A = W0 in float64
        inv = (as_matrix(res, fan) + s * b.double() @ a.double() - as_matrix(w0[path], fan)).abs().max().item()
        check(inv < 1e-5, f"{name} {path}: W_res + s·B·A differs from W0 by {inv}")
        # PEFT's factors against an exact SVD of its own gradient, with its scale applied
        ea, eb, sv = exact_factors(g, r, ga.direction)
        shape0 = m.get_base_layer().weight.shape[0]  # PEFT's "out_features": the stored weight's first dimension
        if ga.scale == "stable":
            eb = eb * shape0**0.25 / ga.stable_gamma**0.5
        elif ga.scale == "gd_scale":
            ea, eb = ea / s, eb / s
        elif ga.scale == "weight_svd":
            # B = U[:, b]·diag(S[b])·σ̂1/S[b0], so |B[:, 0]| is PEFT's estimate σ̂1 of W0's largest singular value
            sw = torch.linalg.svdvals(as_matrix(w0[path], fan))[0].item()
            est = b.double()[:, 0].norm().item()
            checks[f"{path}.weight_svd_sigma1_exact"] = f32(sw)
            checks[f"{path}.weight_svd_sigma1_peft"] = f32(est)
            eb = eb * (est / eb[:, 0].norm().item())
        da = sign_aligned_diff(a.double(), ea, 0)
        db = sign_aligned_diff(b.double(), eb, 1)
        check(max(da, db) < 1e-4, f"{name} {path}: PEFT's factors differ from the exact SVD's by {da}, {db}")
        checks[f"{path}.max_abs_diff_A_vs_exact_svd"] = f32(da)
        checks[f"{path}.max_abs_diff_B_vs_exact_svd"] = f32(db)
        checks[f"{path}.max_abs_diff_residual_plus_sBA_vs_W0"] = f32(inv)
        checks[f"{path}.gradient_singular_values"] = [f32(x) for x in sv[: 2 * r + 1].tolist()]
    save(folder / "expected.safetensors", tensors)
    info = {
        "case": name,
        "description": spec["description"],
        "base_model": base_rel,
        "lora_config": copy.deepcopy(spec["config"]),
        "lora_ga_config": {"direction": ga.direction, "scale": ga.scale, "stable_gamma": ga.stable_gamma},
        "seed": spec["seed"],
        "batches": batches.tolist(),
        "versions": versions("torch", "transformers", "peft", "safetensors", "numpy"),
        "attn_implementation": ATTN_IMPL,
        "lora_layers": lora_layers(pm, number=f32),
        "checks": checks,
        "safetensors_keys": keys_and_shapes(folder / "expected.safetensors"),
    }
    (folder / "expected.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main():
    import peft

    setup("torch", "transformers", "safetensors", "numpy")
    have = tuple(int(x) for x in peft.__version__.split(".")[:2])
    check(have >= MIN_PEFT, f"peft {peft.__version__} has no LoRA-GA; run with a venv holding peft >= 0.19")
    out = REPO / OUT_REL
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name, spec in CASES.items():
        info = make_case(out, name, spec)
        worst = max(v for k, v in info["checks"].items() if "vs_exact_svd" in k)
        print(f"{name:24s} ok  factors vs exact SVD {worst:.1e}", flush=True)


if __name__ == "__main__":
    run("make_loraga_fixtures", main)
