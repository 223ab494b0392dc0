#!/usr/bin/env python3
"""Reference fixtures for lorakit's CLoRA pieces (src/diffusion/clora-*.ts, src/models/unet-attention-maps.ts).

    PYTHONPATH=interop/.venv-clora interop/.venv/bin/python interop/make_clora_fixtures.py
    (interop/.venv-clora: `pip install --target interop/.venv-clora --no-deps pytorch-metric-learning==2.9.0
     scipy==1.14.1 diffusers==0.35.2` into a folder beside the pinned venv)

Writes test/fixtures/clora/ (a few KB):
  maps.safetensors   diffusers 0.35.2's UNet2DConditionModel (test/fixtures/unet/cond) on that fixture's inputs, with
                     an attention processor that records each cross-attention's softmax(QK^T/sqrt(d)): per attn2 layer
                     the maps averaged over heads, [N, h, w, L], named by the layer's module path; `aggregate_1` is the
                     official CLoRA AttentionStore.aggregate_attention of the 8x8 layers (the mean over layers, heads
                     and batch rows), [8, 8, L]; `output` the U-Net output (equal to the unet fixture's).
  loss.safetensors   the official CLoRA loss_fn (min-max scaled token maps, pytorch-metric-learning 2.9.0 NTXentLoss,
                     temperature 0.5) on three fixed maps map0..map2 [4, 4, 5] with the concept groups below: `loss` and
                     its gradient with respect to each map, grad0..grad2 (torch autograd, float64).
"""

import os
import sys

from common import REPO, check, run  # noqa: E402

import torch  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402
from pytorch_metric_learning import losses  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

OUT = REPO / "test/fixtures/clora"
COND = REPO / "test/fixtures/unet/cond"
# important_token_indices[c][p]: concept 0 (tokens 1, 2 of prompt 1; token 1 of prompt 0), concept 1 (token 3 of
# prompts 0 and 2): the groups test/diffusion/clora-helpers.ts uses.
IMPORTANT = [[[1], [1, 2], []], [[3], [], [3]]]


class Capture:
    """diffusers' AttnProcessor steps, with the attention probabilities of cross-attention recorded by module path."""

    def __init__(self, store, name):
        self.store, self.name = store, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(context))
        v = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(q, k, None)  # [B*heads, T, S], batch-major
        if encoder_hidden_states is not None:
            self.store[self.name] = (probs, attn.heads)
        h = attn.batch_to_head_dim(torch.bmm(probs, v))
        return attn.to_out[1](attn.to_out[0](h))


def official_loss(maps, temperature=0.5):
    """CLoRA's loss_fn: per concept token, the min-max scaled flattened map; NTXentLoss over the concept labels."""
    classes, embeddings = [], []
    for c, group in enumerate(IMPORTANT):
        for p, tokens in enumerate(group):
            for t in tokens:
                e = maps[p][:, :, t].reshape(-1)
                embeddings.append((e - e.min()) / (e.max() - e.min()))
                classes.append(c)
    return losses.NTXentLoss(temperature=temperature)(torch.stack(embeddings), torch.tensor(classes))


def main():
    torch.manual_seed(7)
    OUT.mkdir(parents=True, exist_ok=True)
    unet = UNet2DConditionModel.from_pretrained(str(COND)).eval()
    store = {}
    unet.set_attn_processor({name: Capture(store, name.rsplit(".processor", 1)[0])
                             for name in unet.attn_processors.keys()})
    inputs = load_file(str(COND / "expected.safetensors"))
    with torch.no_grad():
        out = unet(inputs["sample"], inputs["timestep"], encoder_hidden_states=inputs["states"]).sample
    diff = (out - inputs["output"]).abs().max().item()
    check(diff < 1e-5, f"the capturing processor changes the output by {diff}")
    tensors = {"output": out}
    full = []
    for name, (probs, heads) in store.items():
        B = inputs["sample"].shape[0]
        T = probs.shape[1]
        side = int(round(T ** 0.5))
        tensors[name] = probs.reshape(B, heads, T, -1).mean(1).reshape(B, side, side, -1).contiguous()
        if side == 8:
            full.append(probs.reshape(-1, side, side, probs.shape[-1]))
    check(len(store) == 4, f"4 cross-attention layers expected, got {sorted(store)}")
    tensors["aggregate_1"] = torch.cat(full, 0).mean(0).contiguous()
    save_file(tensors, str(OUT / "maps.safetensors"))

    g = torch.Generator().manual_seed(11)
    maps = [torch.softmax(torch.randn(4, 4, 5, generator=g, dtype=torch.float64) * 2, -1).requires_grad_(True)
            for _ in range(3)]
    loss = official_loss(maps)
    grads = torch.autograd.grad(loss, maps)
    check(loss.item() > 0, f"loss {loss.item()}")
    fx = {"loss": loss.detach().reshape(1)}
    for i in range(3):
        fx[f"map{i}"] = maps[i].detach()
        fx[f"grad{i}"] = grads[i]
    save_file({k: v.to(torch.float64).contiguous() for k, v in fx.items()}, str(OUT / "loss.safetensors"))
    print(f"make_clora_fixtures: loss {loss.item():.6f}; maps of {sorted(store)}")


if __name__ == "__main__":
    run("make_clora_fixtures", main)
