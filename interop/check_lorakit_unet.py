#!/usr/bin/env python3
"""lorakit → PEFT on the diffusers U-Net: every adapter folder lorakit wrote under test/fixtures/lorakit-unet/
(scripts/make-lorakit-unet-adapters.ts) loads with PeftModel.from_pretrained on the UNet2DModel of
test/fixtures/unet/model, and PEFT's output on the fixture's inputs equals lorakit's (expected.safetensors) to 1e-4.

    interop/.venv-vision/bin/python interop/check_lorakit_unet.py

Prints one line per case; a mismatch ends the script with `check_lorakit_unet: FAILED: ...`.
"""

from common import REPO, check, run, setup  # first: the offline environment

import torch  # noqa: E402
from diffusers import UNet2DModel  # noqa: E402
from peft import PeftModel  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

UNET = REPO / "test/fixtures/unet"
CASES = REPO / "test/fixtures/lorakit-unet"


def main():
    setup("torch", "peft", "diffusers", version_set="vision")
    inputs = load_file(str(UNET / "expected.safetensors"))
    cases = sorted(p for p in CASES.iterdir() if p.is_dir())
    check(cases, f"no cases under {CASES}")
    for case in cases:
        base = UNet2DModel.from_pretrained(str(UNET / "model")).eval()
        model = PeftModel.from_pretrained(base, str(case)).eval()
        with torch.no_grad():
            out = model(inputs["sample"], inputs["timestep"]).sample
        want = load_file(str(case / "expected.safetensors"))["output"]
        diff = (out - want).abs().max().item()
        check(diff < 1e-4, f"{case.name}: PEFT's output differs from lorakit's by {diff:.3g}")
        print(f"check_lorakit_unet: {case.name}: PEFT output equals lorakit's (max abs diff {diff:.2e})")


if __name__ == "__main__":
    run("check_lorakit_unet", main)
