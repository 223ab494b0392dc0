#!/usr/bin/env python3
"""PyTorch's AdamW step by step on one small parameter, for test/optim/optim.test.ts (bit-level parity).

    interop/.venv/bin/python interop/optim_reference.py

The loss is sum(p * c_t) with c_t a fixed per-step vector, so the gradient is c_t exactly in any framework and the
parameters after each step depend only on the optimizer's arithmetic. Cases vary beta2 (0.999, 0.9999: the bias
correction lorakit used to compute in float32), weight decay and a varying learning rate. Writes
test/fixtures/optim/adamw.json (float32 values as exact decimals). Deterministic.
"""

# first: sets the offline environment before the Hugging Face libraries are imported
from common import REPO, check, f32, run, setup  # noqa: E402

import json  # noqa: E402

import torch  # noqa: E402

CASES = [
    dict(name="beta2_0.999", beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0),
    dict(name="beta2_0.9999_wd", beta1=0.9, beta2=0.9999, eps=1e-8, weight_decay=0.01),
    dict(name="beta2_0.95_wd", beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=0.1),
]
STEPS = 12


def main():
    setup("torch")
    g = torch.Generator().manual_seed(5)
    p0 = torch.randn(8, generator=g)
    grads = [torch.randn(8, generator=g) * (0.1 + t) for t in range(STEPS)]
    lrs = [1.0 if t == 0 else 0.05 * (1 + (t % 3)) for t in range(STEPS)]
    out = {"p0": [f32(v) for v in p0], "grads": [[f32(v) for v in c] for c in grads], "lrs": lrs, "cases": []}
    for case in CASES:
        p = torch.nn.Parameter(p0.clone())
        opt = torch.optim.AdamW(
            [p], lr=lrs[0], betas=(case["beta1"], case["beta2"]), eps=case["eps"], weight_decay=case["weight_decay"],
            foreach=False,
        )
        steps = []
        for t in range(STEPS):
            opt.param_groups[0]["lr"] = lrs[t]
            opt.zero_grad()
            (p * grads[t]).sum().backward()
            check(torch.equal(p.grad, grads[t]), "the gradient of sum(p * c) is c")
            opt.step()
            steps.append([f32(v) for v in p.detach()])
        out["cases"].append({**case, "params": steps})
    out["torch"] = torch.__version__.split("+")[0]
    path = REPO / "test/fixtures/optim/adamw.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    run("optim_reference", main)
