#!/usr/bin/env python3
"""Fixtures from the official code of methods that exist only as PEFT forks: SLoRA / NLoRA (TracyGuo2001/NLoRA @
b66f88d, PEFT 0.13.3.dev0 modified) and PaCA (WooSunghyeon/paca @ be9a806, PEFT 0.11.2.dev0 with a PACA tuner). Each
fork's `peft/src` runs on the pinned venv's torch and transformers through PYTHONPATH (nothing is installed):

    git clone https://github.com/TracyGuo2001/NLoRA /tmp/NLoRA && git -C /tmp/NLoRA checkout b66f88d
    git clone https://github.com/WooSunghyeon/paca /tmp/paca && git -C /tmp/paca checkout be9a806
    node --import tsx scripts/make-fork-adapters.ts          # lorakit's folders, read by the forks below
    interop/.venv/bin/python interop/make_fork_fixtures.py --nlora /tmp/NLoRA/peft/src --paca /tmp/paca/peft/src

Rewrites test/fixtures/forks/ except the lorakit_* folders' own files (about 400 KB):
  <case>/ for the forks' adapters (fork_slora, fork_nlora, fork_paca): the folder the fork's save_pretrained writes,
     expected.json (config, seed, versions, per layer what the fork made) and expected.safetensors:
       fork_nlora: `init.<path>.lora_{A,N,B}.weight` right after get_peft_model, `init_logits` (the model then: the
                   released NLoRA does not start at the base), then every adapter tensor += N(0, 0.05): `logits`,
                   `merged_logits`;
       fork_slora: A, N, B as drawn by the fork, B ~ N(0, 0.05) (the init has B = 0): `logits`, `merged_logits`;
       fork_paca:  `init.<path>.paca_w`, `init.<path>.paca_indices`, then paca_w += N(0, 0.05): `merged_logits` after
                   merge_and_unload() (the fork's adapted model), `eval_logits` of the loaded adapter in eval mode —
                   which equal the base model's: its forward reads W, into which only a training-mode forward or a
                   merge writes s·P;
  lorakit_<case>/fork_logits.safetensors, fork.json: what the fork computes for lorakit's folder (loaded with
     PeftModel.from_pretrained; the state dict must hold the file's tensors bit for bit): `logits` and `merged_logits`
     (PaCA: `merged_logits` only, for the reason above), and the warnings it gave.
Deterministic (fixed seeds, 2 threads, deterministic algorithms): reruns give identical files. A failed check ends the
script with `make_fork_fixtures: FAILED: ...`. interop/README.md documents the files.
"""

import argparse
import os
import subprocess
import sys

# first: sets the offline environment before the Hugging Face libraries are imported
from common import REPO, check, f32, forward, load, max_abs_diff, run, setup, versions

OUT_REL = "test/fixtures/forks"
BASE_REL = "test/fixtures/models/llama"
FORK_VERSIONS = {"nlora": "0.13.3.dev0", "paca": "0.11.2.dev0"}


def perturb(pm, seed, names):
    """Every parameter whose name contains one of `names` += N(0, 0.05), in named_parameters order."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n = 0
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if any(k in name for k in names):
                p.add_(0.05 * torch.randn(p.shape, generator=g))
                n += 1
    check(n > 0, f"nothing perturbed among {names}")
    return n


def save_case(folder, pm, tensors, info):
    import json
    import warnings

    from make_fixtures import save_expected, write_json

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm.save_pretrained(str(folder))
    info["safetensors_keys"] = save_expected(folder, tensors)
    info["versions"] = versions("torch", "transformers", "peft")
    write_json(folder / "expected.json", info)
    json.loads((folder / "adapter_config.json").read_text())


def fork_nlora_cases(inputs):
    import torch
    from make_fixtures import fresh_dir
    from peft import LoraConfig, PeftModel, get_peft_model

    for case, seed, init, targets, alpha in (
        ("fork_nlora", 711, "n_lora", ["q_proj", "v_proj", "up_proj"], 4),
        ("fork_slora", 712, "s_lora", ["q_proj", "o_proj", "down_proj"], 8),
    ):
        folder = fresh_dir(f"{OUT_REL}/{case}")
        torch.manual_seed(seed)
        config = dict(r=4, lora_alpha=alpha, target_modules=targets, init_lora_weights=init, task_type="CAUSAL_LM")
        pm = get_peft_model(load(BASE_REL), LoraConfig(**config))
        pm.eval()
        tensors = {}
        if init == "n_lora":
            for name, p in pm.named_parameters():
                if ".lora_" in name:
                    key = name.replace("base_model.model.", "", 1).replace(".default", "")
                    tensors[f"init.{key}"] = p.detach().clone()
            tensors["init_logits"] = forward(pm, inputs)
            perturb(pm, seed, [".lora_A.", ".lora_N.", ".lora_B."])
        else:
            perturb(pm, seed, [".lora_B."])  # B = 0 at init: move it so the adapter matters
        tensors["logits"] = forward(pm, inputs)
        save_case(folder, pm, {}, {})
        reloaded = PeftModel.from_pretrained(load(BASE_REL), str(folder))
        check(max_abs_diff(forward(reloaded, inputs), tensors["logits"]) == 0, f"{case}: reload differs")
        tensors["merged_logits"] = forward(reloaded.merge_and_unload(), inputs)
        check(max_abs_diff(tensors["merged_logits"], tensors["logits"]) < 1e-4, f"{case}: merge differs")
        info = {"case": case, "fork": "TracyGuo2001/NLoRA@b66f88d", "lora_config": config, "seed": seed,
                "perturbation": "adapter tensors += N(0, 0.05) (s_lora: lora_B only), torch.Generator(seed)",
                "base_model": BASE_REL, "input_ids": inputs["input_ids"],
                "max_abs_diff_vs_base": f32(max_abs_diff(tensors["logits"], forward(load(BASE_REL), inputs)))}
        save_case(folder, pm, tensors, info)
        print(f"fork   {case:22s} ok", flush=True)


def fork_paca_case(inputs):
    import torch
    from make_fixtures import fresh_dir
    from peft import PacaConfig, PeftModel, get_peft_model

    case, seed = "fork_paca", 713
    folder = fresh_dir(f"{OUT_REL}/{case}")
    torch.manual_seed(seed)
    config = dict(r=4, paca_alpha=8, target_modules=["q_proj", "k_proj", "down_proj"], task_type="CAUSAL_LM")
    pm = get_peft_model(load(BASE_REL), PacaConfig(**config))
    pm.eval()
    tensors = {}
    for name, t in pm.state_dict().items():
        if ".paca_" in name:
            tensors["init." + name.replace("base_model.model.", "", 1).replace(".default", "")] = t.detach().clone()
    perturb(pm, seed, [".paca_w."])
    save_case(folder, pm, {}, {})
    reloaded = PeftModel.from_pretrained(load(BASE_REL), str(folder))
    reloaded.eval()
    base_logits = forward(load(BASE_REL), inputs)
    tensors["eval_logits"] = forward(reloaded, inputs)
    tensors["merged_logits"] = forward(reloaded.merge_and_unload(), inputs)
    info = {"case": case, "fork": "WooSunghyeon/paca@be9a806", "paca_config": config, "seed": seed,
            "perturbation": "paca_w += N(0, 0.05), torch.Generator(seed)", "base_model": BASE_REL,
            "input_ids": inputs["input_ids"],
            "eval_logits_vs_base": f32(max_abs_diff(tensors["eval_logits"], base_logits)),
            "merged_logits_vs_base": f32(max_abs_diff(tensors["merged_logits"], base_logits))}
    check(info["merged_logits_vs_base"] > 0.05, f"{case}: the adapter barely changes the merged model")
    save_case(folder, pm, tensors, info)
    print(f"fork   {case:22s} ok  eval-mode vs base {info['eval_logits_vs_base']:.1e}", flush=True)


def check_lorakit_folder(folder, fork, inputs):
    """The fork loads lorakit's folder: file tensors bit for bit in its state dict; its logits for it."""
    import json
    import warnings

    import torch
    from make_fixtures import save_tensors
    from peft import PeftModel
    from safetensors import safe_open

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = PeftModel.from_pretrained(load(BASE_REL), str(folder))
    pm.eval()
    state = {k.replace(".default", ""): v for k, v in pm.state_dict().items()}
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        for k in f.keys():
            t = f.get_tensor(k)
            check(k in state, f"{folder.name}: the fork has no {k}")
            same = state[k].dtype == t.dtype and torch.equal(state[k].cpu(), t)
            check(same, f"{folder.name}: {k} differs in the fork")
    out = {}
    if fork == "nlora":
        out["logits"] = forward(pm, inputs)
    out["merged_logits"] = forward(pm.merge_and_unload(), inputs)
    save_tensors(folder / "fork_logits.safetensors", out)
    report = {"case": folder.name, "versions": versions("torch", "transformers", "peft"),
              "fork_warnings": sorted({f"{w.category.__name__}: {w.message}" for w in caught})}
    (folder / "fork.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"fork   {folder.name:22s} ok  warnings {len(report['fork_warnings'])}", flush=True)


def part(fork):
    """Runs inside a process whose `peft` is the fork's."""
    import json

    import peft

    setup("torch", "transformers")
    check(peft.__version__ == FORK_VERSIONS[fork], f"expected the {fork} fork's peft {FORK_VERSIONS[fork]}, got "
          f"{peft.__version__} from {peft.__file__}")
    inputs = {"input_ids": json.loads((REPO / BASE_REL / "expected.json").read_text())["input_ids"]}
    if fork == "nlora":
        fork_nlora_cases(inputs)
    else:
        fork_paca_case(inputs)
    for folder in sorted((REPO / OUT_REL).glob("lorakit_*")):
        if json.loads((folder / "inputs.json").read_text())["fork"] == fork:
            check_lorakit_folder(folder, fork, inputs)


def main():
    parser = argparse.ArgumentParser(description="Fixtures from the official forks of NLoRA and PaCA.")
    parser.add_argument("--nlora", help="TracyGuo2001/NLoRA's peft/src folder (at b66f88d)")
    parser.add_argument("--paca", help="WooSunghyeon/paca's peft/src folder (at be9a806)")
    parser.add_argument("--part", choices=sorted(FORK_VERSIONS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        part(args.part)
        return
    check(args.nlora and args.paca, "give --nlora and --paca (see the docstring)")
    for fork, src in (("nlora", args.nlora), ("paca", args.paca)):
        env = dict(os.environ, PYTHONPATH=os.path.abspath(src), PYTHONHASHSEED="0")
        r = subprocess.run([sys.executable, __file__, "--part", fork], env=env)
        check(r.returncode == 0, f"the {fork} part failed")


if __name__ == "__main__":
    run("make_fork_fixtures", main)
