/**
 * The per-layer AdamW that LoRA variants with their own optimizer (ALLoRA, Stable-LoRA) build their update rule on:
 * two moment slots per trainable tensor, named `<prefix>.exp_avg.<tensor>` and `<prefix>.exp_avg_sq.<tensor>`, and
 * torch's AdamW step on every trainable tensor of the layer, where a method may replace, per tensor, the value
 * AdamW starts from, the gradient it receives or the rate it uses (the method's own part of the rule).
 * Not here: the AdamW ops (optim/adamw.ts `adamwStep`); rules that couple A and B inside one step (LoRA-Pro,
 * AltLoRA), which keep their own moments.
 */
import type { Tensor } from '../graph/index.ts';
import { adamwStep } from '../optim/index.ts';
import type { ParamSpec, UpdateContext } from './method.ts';

/** AdamW's β1, β2 and ε as a method's options spell them (torch's names). */
export interface AdamwRuleOptions {
  betas: [number, number];
  eps: number;
}

/** What a method changes for one tensor before AdamW's step; an absent field keeps the context's value. */
export interface AdamwTensorChange {
  /** The value AdamW decays and steps from (Stable-LoRA's shrunk A). */
  param?: Tensor;
  /** The gradient AdamW receives (ALLoRA's c·g). */
  grad?: Tensor;
  /** The rate, broadcasting against the tensor (ALLoRA's per-row lr·c). */
  lr?: Tensor;
}

/** The moment slot names of one trainable tensor under a method's prefix. */
export function adamwSlots(prefix: string, name: string): { m: string; v: string } {
  return { m: `${prefix}.exp_avg.${name}`, v: `${prefix}.exp_avg_sq.${name}` };
}

/** The moment slots (m then v, tensor by tensor) of a layer's trainable tensors. */
export function adamwState(prefix: string, params: readonly ParamSpec[]): { name: string; shape: number[] }[] {
  return params
    .filter((p) => p.trainable)
    .flatMap((p) => [
      { name: adamwSlots(prefix, p.name).m, shape: p.shape },
      { name: adamwSlots(prefix, p.name).v, shape: p.shape },
    ]);
}

/**
 * One AdamW step on every trainable tensor of the layer (`ctx.p`), with the run's lr, step and weight decay unless
 * `change` replaces a tensor's start value, gradient or rate. Returns the new tensors and moments by name.
 */
export function adamwLayerStep<C, S>(
  ctx: UpdateContext<C, S>,
  prefix: string,
  o: AdamwRuleOptions,
  change: (name: string, param: Tensor) => AdamwTensorChange = () => ({}),
): { p: Record<string, Tensor>; state: Record<string, Tensor> } {
  const p: Record<string, Tensor> = {};
  const state: Record<string, Tensor> = {};
  for (const [name, param] of Object.entries(ctx.p)) {
    const { m, v } = adamwSlots(prefix, name);
    const x = change(name, param);
    const r = adamwStep(
      { beta1: o.betas[0], beta2: o.betas[1], eps: o.eps },
      {
        param: x.param ?? param,
        grad: x.grad ?? ctx.g[name],
        m: ctx.state[m],
        v: ctx.state[v],
        lr: x.lr ?? ctx.lr,
        step: ctx.step,
        weightDecay: ctx.weightDecay,
      },
    );
    p[name] = r.param;
    state[m] = r.m;
    state[v] = r.v;
  }
  return { p, state };
}
