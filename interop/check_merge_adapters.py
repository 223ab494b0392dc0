#!/usr/bin/env python3
"""lorakit merge-adapters -> PEFT: every merged folder lorakit writes loads in PEFT and computes what PEFT's
add_weighted_adapter computed (test/fixtures/compose, made by make_merge_fixtures.py).

    interop/.venv-current/bin/python interop/check_merge_adapters.py    # today's PEFT
    interop/.venv/bin/python interop/check_merge_adapters.py            # PEFT 0.18.1 reads the folders too

For each case of test/fixtures/compose/merges.json it runs `node bin/lorakit.mjs merge-adapters` with the case's
adapters, weights and options (--model for PEFT's module order, so DARE draws PEFT's masks), loads the folder with
PeftModel.from_pretrained (no missing or unexpected keys) and compares the logits with those of PEFT's own merged
adapter (expected.safetensors), within 1e-4. The rsLoRA cases are where lorakit differs on purpose: PEFT's merged
adapter keeps use_rslora and so is scaled by √r; lorakit's logits must equal PEFT's with that scaling set back to 1.
Needs node and the repository's node_modules. Prints one line per case; exits 1 on the first failure.
"""

import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, PYTHONHASHSEED="0"))

from common import REPO, check, forward, load, run, setup  # noqa: E402

import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402

import peft  # noqa: E402
from peft import PeftModel  # noqa: E402
from safetensors import safe_open  # noqa: E402

FIX = REPO / "test/fixtures/compose"
BASE_REL = "test/fixtures/models/llama"


def lorakit_merge(case, c, out):
    cmd = ["node", "bin/lorakit.mjs", "merge-adapters", "--out", str(out), "--model", BASE_REL]
    for name, w in zip(c["adapters"], c["weights"]):
        cmd += ["--adapter", f"{FIX / 'adapters' / name}:{w}"]
    cmd += ["--combination", c["combination_type"], "--seed", str(c["seed"])]
    for key, flag in (("density", "--density"), ("svd_rank", "--rank"), ("svd_clamp", "--svd-clamp")):
        if key in c:
            cmd += [flag, str(c[key])]
    if "majority_sign_method" in c:
        cmd += ["--majority-sign-method", c["majority_sign_method"]]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    check(r.returncode == 0, f"{case}: lorakit merge-adapters failed: {r.stderr.strip()}")


def main():
    pinned = peft.__version__.startswith("0.18.")
    setup(version_set="pinned" if pinned else "current")
    info = json.loads((FIX / "merges.json").read_text())
    inputs = json.loads((REPO / BASE_REL / "expected.json").read_text())
    for case, c in info["cases"].items():
        if case == "svd_clamp":
            # the clamp's quantile depends on the signs each SVD picks (LAPACK's are not reproduced): checked on
            # PEFT's own factors in test/peft/compose/merge.test.ts
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "merged")
            lorakit_merge(case, c, out)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                pm = PeftModel.from_pretrained(load(BASE_REL), out)
            bad = [str(w.message) for w in caught if "missing" in str(w.message) or "unexpected" in str(w.message)]
            check(not bad, f"{case}: PEFT warns loading lorakit's folder: {bad}")
            got = forward(pm, inputs)
        if "rslora" in case:
            ref = PeftModel.from_pretrained(load(BASE_REL), str(FIX / "merges" / case))
            for m in ref.modules():
                if hasattr(m, "scaling") and isinstance(m.scaling, dict) and "default" in m.scaling:
                    m.scaling["default"] = 1.0
            want = forward(ref, inputs)
        else:
            with safe_open(str(FIX / "merges" / case / "expected.safetensors"), "pt") as f:
                want = f.get_tensor("logits")
        d = (got - want).abs().max().item()
        check(d < 1e-4, f"{case}: logits of lorakit's merged adapter differ from PEFT's by {d}")
        print(f"{case}: PEFT {peft.__version__} loads lorakit's folder; max |Δlogits| = {d:.2e}")


if __name__ == "__main__":
    run("check_merge_adapters", main)
