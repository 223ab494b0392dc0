#!/usr/bin/env python3
"""The PEFT-written fixtures again, made by today's releases (the "current" version set), on the committed base models.

    bash interop/setup.sh current
    interop/.venv-current/bin/python interop/make_current_fixtures.py

Writes (after deleting it, so nothing stale survives) test/fixtures/peft-current/:
  <case>/            one folder per entry of make_fixtures.PEFT_CASES, whatever entries it has, made by the same
                     make_peft_case as test/fixtures/peft/<case>/ (same config, seed, perturbation, checks, files);
                     its expected.json also holds `vs_pinned`: how the folder differs from test/fixtures/peft/<case>/
                     (adapter_config.json keys and values, tensor names, tensor values, logits);
  base_models.json   per committed base model (test/fixtures/models/*, made by the pinned set and not touched here):
                     the largest difference between what transformers computes now and the committed
                     expected.safetensors (logits, padded logits, long logits, BERT's hidden states), which must be
                     below BASE_ATOL, and whether greedy generation gives the committed tokens (it must).

Deterministic (PYTHONHASHSEED=0, the seeds and thread settings of make_fixtures.py): reruns give byte-identical files.
Exits non-zero with `make_current_fixtures: FAILED: ...` on any problem.
"""

import os
import sys

# PEFT writes set-valued config fields (target_modules, ...) with list(set), whose order depends on the string hash
# seed: pin it by re-executing ourselves once with PYTHONHASHSEED=0 (make_fixtures.py does the same when imported).
if os.environ.get("PYTHONHASHSEED") != "0":
    os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, PYTHONHASHSEED="0"))

# first: sets the offline environment before the Hugging Face libraries are imported
from common import REPO, check, f32, forward, load, max_abs_diff, run, setup, versions  # noqa: E402

import json  # noqa: E402
import shutil  # noqa: E402

import torch  # noqa: E402
from make_fixtures import MODELS_REL, PEFT_CASES, PEFT_REL, greedy, make_peft_case, write_json  # noqa: E402
from safetensors import safe_open  # noqa: E402

CURRENT_REL = "test/fixtures/peft-current"
# How far the current transformers may move a committed base model's outputs (the pinned set reproduces them exactly).
BASE_ATOL = 1e-5


def read_tensors(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def check_base(name):
    """What the current transformers computes for one committed base model, against its committed outputs."""
    rel = f"{MODELS_REL}/{name}"
    info = json.loads((REPO / rel / "expected.json").read_text())
    want = read_tensors(REPO / rel / "expected.safetensors")
    is_bert = info["architecture"].startswith("Bert")
    model, loading = load(rel, is_bert, output_loading_info=True)
    check(not any(loading.values()), f"{name}: transformers reports {loading} loading the committed model")
    got = {"logits": forward(model, info)}
    with torch.no_grad():
        if is_bert:
            kw = {k: torch.tensor(info[k]) for k in ("input_ids", "token_type_ids", "attention_mask")}
            out = model.bert(**kw)
            got["last_hidden_state"], got["pooler_output"] = out.last_hidden_state, out.pooler_output
        else:
            padded = ("input_ids_padded", "attention_mask_padded", "position_ids_padded")
            ids, mask, pos = (torch.tensor(info[k]) for k in padded)
            got["logits_padded"] = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
            if "long_input_ids" in info:
                got["long_logits"] = model(input_ids=torch.tensor(info["long_input_ids"])).logits
    check(set(got) == set(want), f"{name}: compared {sorted(got)}, the fixture holds {sorted(want)}")
    diffs = {}
    for k, t in got.items():
        if k == "logits_padded":  # only the positions with mask 1 are meaningful (interop/README.md)
            m = torch.tensor(info["attention_mask_padded"]).bool()
            diffs[k] = max_abs_diff(t[m], want[k][m])
        else:
            diffs[k] = max_abs_diff(t, want[k])
        check(diffs[k] < BASE_ATOL, f"{name}: {k} differs from the committed fixture by {diffs[k]} (>= {BASE_ATOL})")
    result = {"max_abs_diff": {k: f32(v) for k, v in diffs.items()}}
    if "greedy" in info:
        prompt = torch.tensor(info["greedy_prompt_ids"])
        eos, pad = model.generation_config.eos_token_id, info["pad_token_id_used"]
        for key, penalty in (("greedy", 1.0), ("greedy_rep", info["repetition_penalty"])):
            tokens, _ = greedy(model, prompt, eos, pad, penalty)
            check(tokens == info[key], f"{name}: {key} generates {tokens}, the fixture has {info[key]}")
        result["greedy_tokens_equal"] = True
    return result


def compare_to_pinned(case):
    """How test/fixtures/peft-current/<case>/ differs from the pinned set's test/fixtures/peft/<case>/."""
    here, pinned = REPO / CURRENT_REL / case, REPO / PEFT_REL / case
    if not (pinned / "adapter_config.json").is_file():
        return {"pinned_folder": None}
    cfg_now, cfg_then = (json.loads((d / "adapter_config.json").read_text()) for d in (here, pinned))
    t_now, t_then = read_tensors(here / "adapter_model.safetensors"), read_tensors(pinned / "adapter_model.safetensors")
    e_now, e_then = read_tensors(here / "expected.safetensors"), read_tensors(pinned / "expected.safetensors")
    shared = sorted(set(t_now) & set(t_then))
    return {
        "pinned_folder": f"{PEFT_REL}/{case}",
        "config_keys_only_current": sorted(set(cfg_now) - set(cfg_then)),
        "config_keys_only_pinned": sorted(set(cfg_then) - set(cfg_now)),
        "config_values_changed": {
            k: {"pinned": cfg_then[k], "current": cfg_now[k]}
            for k in sorted(set(cfg_now) & set(cfg_then))
            if cfg_now[k] != cfg_then[k]
        },
        "tensors_only_current": sorted(set(t_now) - set(t_then)),
        "tensors_only_pinned": sorted(set(t_then) - set(t_now)),
        "tensors_not_bit_identical": [k for k in shared if not torch.equal(t_now[k], t_then[k])],
        "max_abs_diff_logits": f32(max_abs_diff(e_now["logits"], e_then["logits"])),
        "max_abs_diff_merged_logits": f32(max_abs_diff(e_now["merged_logits"], e_then["merged_logits"])),
    }


def main():
    setup(version_set="current")  # also chdir REPO: adapters record base_model_name_or_path relative to it
    out = REPO / CURRENT_REL
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    bases = sorted(p.name for p in (REPO / MODELS_REL).iterdir() if (p / "expected.json").is_file())
    report = {"versions": versions(), "base_atol": BASE_ATOL, "models": {}}
    for name in bases:
        report["models"][name] = check_base(name)
        worst = max(report["models"][name]["max_abs_diff"].values())
        print(f"model  {name:22s} ok  max |current - committed| {worst:.2e}", flush=True)
    write_json(out / "base_models.json", report)

    infos = {name: json.loads((REPO / MODELS_REL / name / "expected.json").read_text()) for name in bases}
    for case, spec in PEFT_CASES.items():
        info = make_peft_case(case, spec, infos, out_rel=CURRENT_REL, base_atol=BASE_ATOL)
        info["vs_pinned"] = compare_to_pinned(case)
        write_json(out / case / "expected.json", info)
        vs = info["vs_pinned"]
        same = "no pinned folder" if vs["pinned_folder"] is None else (
            f"vs pinned: logits {vs['max_abs_diff_logits']:.1e}, new config keys {len(vs['config_keys_only_current'])}"
            f", tensors differing {len(vs['tensors_not_bit_identical'])}"
        )
        print(f"peft   {case:22s} ok  merged-vs-unmerged {info['max_abs_diff_merged_vs_unmerged']:.2e}  {same}", flush=True)


if __name__ == "__main__":
    run("make_current_fixtures", main)
