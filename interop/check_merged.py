#!/usr/bin/env python3
"""Check that transformers loads a lorakit-merged model folder and computes what PEFT's merge computes.

    interop/.venv/bin/python interop/check_merged.py [peft-fixture-case ...]     # default: every case

For each committed PEFT fixture (test/fixtures/peft/<case>/, made by PEFT itself):
  * `node bin/lorakit.mjs merge --model <base> --adapter <case> --out <tmp>` writes the merged folder;
  * `from_pretrained(<tmp>, output_loading_info=True)` must report no missing, unexpected or mismatched keys and
    raise no warning; tied embeddings must still be one tensor;
  * its logits on the fixture's inputs must equal those of `PeftModel.from_pretrained(base, case).merge_and_unload()`
    within 1e-4, and every weight must be within 1e-5 of PEFT's merged weight.
Needs node (the lorakit CLI) and the pinned venv. Writes nothing into the repository. Exits non-zero with
`check_merged: FAILED: ...` on any problem.
"""

import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

# first: sets the offline environment before the Hugging Face libraries are imported
from common import REPO, check, forward, load, max_abs_diff, run, setup

from peft import PeftModel

PEFT_DIR = REPO / "test" / "fixtures" / "peft"


def check_case(case, tmp):
    folder = PEFT_DIR / case
    expected = json.loads((folder / "expected.json").read_text())
    base_rel = expected["base_model"]
    seqcls = expected["lora_config"].get("task_type") == "SEQ_CLS"
    out = Path(tmp) / case
    cmd = ["node", "bin/lorakit.mjs", "merge", "--model", base_rel, "--adapter", str(folder.relative_to(REPO)), "--out", str(out)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    check(r.returncode == 0, f"{case}: {' '.join(cmd)} failed: {r.stderr.strip()}")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mine, info = load(out, seqcls, output_loading_info=True)
    check(not caught, f"{case}: transformers warned loading the merged folder: " + " | ".join(str(w.message) for w in caught))
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        check(not info.get(k), f"{case}: loading the merged folder reports {k}: {info.get(k)}")
    if mine.config.tie_word_embeddings and not seqcls:
        check(
            mine.get_output_embeddings().weight.data_ptr() == mine.get_input_embeddings().weight.data_ptr(),
            f"{case}: the merged model's lm_head is no longer tied to its input embedding",
        )

    ref = PeftModel.from_pretrained(load(REPO / base_rel, seqcls), str(folder)).merge_and_unload()
    logits_diff = max_abs_diff(forward(mine, expected), forward(ref, expected))
    check(logits_diff < 1e-4, f"{case}: merged-folder logits differ from PEFT merge_and_unload by {logits_diff}")
    ref_state, my_state = ref.state_dict(), mine.state_dict()
    check(set(ref_state) == set(my_state), f"{case}: parameter names differ: {sorted(set(ref_state) ^ set(my_state))[:5]}")
    weight_diff = max(max_abs_diff(ref_state[k].float(), my_state[k].float()) for k in ref_state)
    check(weight_diff < 1e-5, f"{case}: a merged weight differs from PEFT's by {weight_diff}")
    return logits_diff, weight_diff, len(my_state)


def main(cases):
    setup("transformers")
    cases = cases or sorted(p.name for p in PEFT_DIR.iterdir() if p.is_dir())
    with tempfile.TemporaryDirectory(prefix="lorakit-merged-") as tmp:
        for case in cases:
            logits_diff, weight_diff, n = check_case(case, tmp)
            print(f"merged {case:22s} ok  {n} tensors  logits vs PEFT {logits_diff:.1e}  weights vs PEFT {weight_diff:.1e}", flush=True)


if __name__ == "__main__":
    run("check_merged", main, sys.argv[1:])
