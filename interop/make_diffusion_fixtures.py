#!/usr/bin/env python3
"""Reference fixtures for lorakit's noise schedules and samplers (src/models/noise-schedule.ts) from diffusers'
DDPMScheduler and DDIMScheduler.

    interop/.venv-diffusion/bin/python interop/make_diffusion_fixtures.py

The venv: `python3 -m venv interop/.venv-diffusion`, a .pth file naming the pinned venv's site-packages (torch 2.9.1),
then `pip install --no-deps diffusers==0.35.2 Pillow==12.0.0 importlib_metadata zipp` (interop/README.md).
Rewrites test/fixtures/diffusion/schedulers.json (about 100 KB): for each schedule (linear, squaredcos_cap_v2,
scaled_linear; 1000 training steps) the betas and alphas_cumprod, and for each sampler the inference timesteps and
step() outputs (prev_sample, pred_original_sample) on fixed inputs at the first, a middle and the last timestep.
DDPM draws its noise from torch.Generator().manual_seed(s): the same draw is written next to each step, so lorakit
feeds it explicitly. Deterministic: fixed seeds, float32 tensors, CPU.
"""

import json
import os

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures", "diffusion")
SHAPE = (2, 1, 2, 3)
STEPS = 10


def flat(t):
    return [float(f"{v:.9g}") for v in t.detach().reshape(-1).tolist()]  # float32 needs 9 digits


def main():
    torch.manual_seed(0)
    rng = np.random.default_rng(7)
    sample = torch.tensor(rng.standard_normal(SHAPE) * 1.5, dtype=torch.float32)
    eps = torch.tensor(rng.standard_normal(SHAPE), dtype=torch.float32)
    out = {"shape": list(SHAPE), "steps": STEPS, "sample": flat(sample), "eps": flat(eps), "schedules": []}
    for sched in ["linear", "squaredcos_cap_v2", "scaled_linear"]:
        kw = dict(num_train_timesteps=1000, beta_schedule=sched)
        if sched == "scaled_linear":
            kw.update(beta_start=0.00085, beta_end=0.012)
        entry = {"config": kw, "steps": []}
        for clip in [True, False]:
            ddpm = DDPMScheduler(**kw, clip_sample=clip)
            ddpm.set_timesteps(STEPS)
            if clip:
                entry["betas"] = flat(ddpm.betas)
                entry["alphas_cumprod"] = flat(ddpm.alphas_cumprod)
                entry["timesteps"] = [int(t) for t in ddpm.timesteps]
            for i in [0, STEPS // 2, STEPS - 1]:
                t = ddpm.timesteps[i]
                noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(100 + i))
                r = ddpm.step(eps, t, sample, generator=torch.Generator().manual_seed(100 + i))
                entry["steps"].append(
                    dict(sampler="ddpm", clip=clip, index=i, t=int(t), noise=flat(noise) if int(t) > 0 else None,
                         prev=flat(r.prev_sample), x0=flat(r.pred_original_sample)))
            for eta, alpha_one in [(0.0, True), (0.7, True), (0.0, False)]:
                ddim = DDIMScheduler(**kw, clip_sample=clip, set_alpha_to_one=alpha_one)
                ddim.set_timesteps(STEPS)
                for i in [0, STEPS // 2, STEPS - 1]:
                    t = ddim.timesteps[i]
                    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(200 + i))
                    r = ddim.step(eps, t, sample, eta=eta, variance_noise=noise if eta > 0 else None)
                    entry["steps"].append(
                        dict(sampler="ddim", clip=clip, eta=eta, set_alpha_to_one=alpha_one, index=i, t=int(t),
                             noise=flat(noise) if eta > 0 else None, prev=flat(r.prev_sample),
                             x0=flat(r.pred_original_sample)))
        out["schedules"].append(entry)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "schedulers.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print("make_diffusion_fixtures: wrote", os.path.join(OUT, "schedulers.json"))


if __name__ == "__main__":
    main()
