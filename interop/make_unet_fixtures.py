#!/usr/bin/env python3
"""Reference fixtures for lorakit's UNet2DModel: a tiny random diffusers U-Net, its outputs, and a PEFT LoRA on it.

    interop/.venv-vision/bin/python interop/make_unet_fixtures.py      # after `bash interop/setup.sh vision`

Deletes and rewrites test/fixtures/unet/ (about 150 KB):
  model/                          a diffusers folder (save_pretrained): config.json, diffusion_pytorch_model.safetensors;
                                  every parameter perturbed away from diffusers' init (GroupNorm affine included)
  expected.safetensors            sample [2, 2, 8, 8], timestep [2] (float), output [2, 1, 8, 8] of UNet2DModel
  lora/                           a PEFT LoRA (r 2, conv and attention targets, random B) saved with save_pretrained
  lora/expected.safetensors       output (adapted, unmerged) and merged_output (merge_and_unload) on the same inputs
  cond/                           a tiny random UNet2DConditionModel folder (cross-attention) and expected.safetensors:
                                  sample, timestep, states [2, 5, 12] (encoder_hidden_states), output [2, 2, 8, 8]

Deterministic (fixed seeds, 2 threads, deterministic algorithms, PYTHONHASHSEED=0). A check that fails ends the
script with `make_unet_fixtures: FAILED: ...`. interop/README.md documents the vision version set.
"""

import os
import sys

# PEFT writes target_modules with list(set): pin the string hash seed by re-executing once with PYTHONHASHSEED=0.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, PYTHONHASHSEED="0"))

from common import REPO, check, run, setup  # noqa: E402  (first: the offline environment)

import copy  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402

import torch  # noqa: E402
from diffusers import UNet2DConditionModel, UNet2DModel  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

OUT = REPO / "test/fixtures/unet"
SEED = 4321

# Two resolutions (8 → 4), a plain and an attention block each way, a mid block with self-attention; 4 groups, heads
# of 4 channels (16 channels: 4 heads), in 2 channels (image + a second plane), out 1 (a mask's logits).
CONFIG = dict(
    sample_size=8,
    in_channels=2,
    out_channels=1,
    block_out_channels=(8, 16),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=4,
    attention_head_dim=4,
)

# UNet2DConditionModel: cross-attention (Transformer2DModel: GroupNorm, 1x1 proj_in, self- and cross-attention, GEGLU
# feed-forward, 1x1 proj_out) in the first down block, the mid block and the last up block; 2 heads ("attention_head_dim"
# is diffusers' head count there); text states of width 12.
COND_CONFIG = dict(
    sample_size=8,
    in_channels=2,
    out_channels=2,
    block_out_channels=(8, 16),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=12,
    attention_head_dim=2,
    norm_num_groups=4,
)

# What diffusers users train with PEFT on a U-Net: attention projections and the resnets' convolutions.
LORA = dict(r=2, lora_alpha=4, init_lora_weights=False,
            target_modules=["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2", "conv_shortcut"])


def save(path, tensors):
    save_file({k: v.detach().float().contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def main():
    setup("torch", "peft", "diffusers", version_set="vision")
    torch.manual_seed(SEED)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    model = UNet2DModel(**CONFIG).eval()
    with torch.no_grad():
        for p in model.parameters():  # away from diffusers' init: zero biases and unit norms would hide mistakes
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(OUT / "model"), safe_serialization=True)
    sample = torch.randn(2, 2, 8, 8)
    timestep = torch.tensor([3.0, 517.0])
    with torch.no_grad():
        out = model(sample, timestep).sample
    check(list(out.shape) == [2, 1, 8, 8], f"output shape {list(out.shape)}")
    save(OUT / "expected.safetensors", {"sample": sample, "timestep": timestep, "output": out})
    reloaded = UNet2DModel.from_pretrained(str(OUT / "model")).eval()
    with torch.no_grad():
        check(torch.equal(reloaded(sample, timestep).sample, out), "the saved folder reloads to the same outputs")

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(**LORA)).eval()
    with torch.no_grad():
        adapted = peft_model(sample, timestep).sample
    check((adapted - out).abs().max().item() > 1e-3, "the LoRA changes the output")
    peft_model.save_pretrained(str(OUT / "lora"))
    with torch.no_grad():
        merged = peft_model.merge_and_unload()(sample, timestep).sample
    check((merged - adapted).abs().max().item() < 1e-4, "PEFT's merge equals its unmerged output")
    save(OUT / "lora" / "expected.safetensors", {"output": adapted, "merged_output": merged})
    cond = UNet2DConditionModel(**COND_CONFIG).eval()
    with torch.no_grad():
        for p in cond.parameters():
            p.add_(0.1 * torch.randn_like(p))
    cond.save_pretrained(str(OUT / "cond"), safe_serialization=True)
    states = torch.randn(2, 5, 12)
    with torch.no_grad():
        cond_out = cond(sample, timestep, encoder_hidden_states=states).sample
    check(list(cond_out.shape) == [2, 2, 8, 8], f"conditional output shape {list(cond_out.shape)}")
    save(OUT / "cond" / "expected.safetensors", {"sample": sample, "timestep": timestep, "states": states,
                                                 "output": cond_out})
    (OUT / "README.md").write_text(
        "Written by interop/make_unet_fixtures.py (diffusers UNet2DModel, PEFT LoRA); do not edit.\n"
        f"UNet2DModel config: {json.dumps(CONFIG)}\nLoraConfig: {json.dumps(LORA)}\n"
        f"UNet2DConditionModel config: {json.dumps(COND_CONFIG)}\n"
    )
    (OUT / "lora" / "README.md").unlink()  # PEFT's model card template: noise in the fixture
    print(f"make_unet_fixtures: wrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    run("make_unet_fixtures", main)
