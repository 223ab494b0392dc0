/**
 * LoRAPrune — "LoRAPrune: Structured Pruning Meets Low-Rank Parameter-Efficient Fine-Tuning" (Zhang et al., ACL
 * Findings 2024, arXiv:2305.18403); code aim-uofa/LoRAPrune (spec methods-b §12). A LoRA variant (`loraprune: {...}`,
 * a training setting, not saved) that learns which attention heads and MLP channels of a Llama-family model to remove
 * while the LoRA trains:
 * - importance (official `compute_sensitivity`): Ĝ = g_B·A + B·g_A − g_B·g_A estimates ∂L/∂W from the LoRA gradients,
 *   S = |Ĝ ⊙ (W0 + s·B·A)| ('magnitude': |W0 + s·B·A|) is summed per group — a KV head with its query heads for
 *   q/k/v (rows) and o_proj (columns), a channel for gate/up (rows) and down_proj (columns) — normalised per layer
 *   (s/(‖s‖₂ + 1e-8)), and smoothed by an EMA (0.9) each step; this runs in the train step's update rule, which
 *   sees the gradients (after clipping, as the official trainer) and applies AdamW to A and B itself;
 * - masks (official `local_prune`): every prune_freq steps, while the cubic schedule p_t is strictly between its
 *   start and the target, each unfrozen block (a layer's attention, a layer's MLP) zeroes its ⌊p_t·groups⌋ groups
 *   of least Σ_layers EMA ⊙ mask. Host-side, from the rules' state, fed to the step as model-level inputs [L, groups];
 *   the forward multiplies the outputs of q/k/v/gate/up by the mask (o_proj and down_proj are pruned implicitly).
 * Kept from the official code: the schedule, EMA and the first ⌊0.1·L⌋ and the last layer left unpruned (defaults).
 * Changed, each a field: groups are KV heads (the official code hard-codes 32 heads and mis-groups GQA k/v), and with
 * reach_target the first prune step of the cooldown prunes to the target (the official one stops below it).
 * The final physical slicing and the merge are train/prune.ts (peft/slice.ts).
 * Not here: the LoRA factors and forward (lora.ts), the trainer.
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import type { Tensor } from '../../graph/index.ts';
import { adamw } from '../../optim/index.ts';
import type {
  LayerInfo,
  LayerStepView,
  LayerUpdateRule,
  MethodVariant,
  StepInputSpec,
  UpdateContext,
} from '../method.ts';
import { type LoraConfig, type LoraSettings, lora } from './lora.ts';

/** The `loraprune` field: the pruning schedule and the structure it prunes (official defaults). */
export const loraPruneOptions = z.strictObject({
  /** Target fraction of the groups of each pruned block (official `ratio`). */
  ratio: z.number().min(0).lt(1).default(0.5),
  /** Fraction pruned during warmup (official `init_ratio`). */
  init_ratio: z.number().min(0).lt(1).default(0),
  /** Fraction of the steps before pruning starts, and at the end at the target (official warmup/cooldown iters). */
  warmup: z.number().min(0).lt(1).default(0.1),
  cooldown: z.number().min(0).lt(1).default(0.1),
  /** Prune every this many steps (official `prune_freq`). */
  prune_freq: z.number().int().positive().default(10),
  /** EMA factor of the importance: Ī ← ema·Ī + (1 − ema)·I. */
  ema: z.number().min(0).lt(1).default(0.9),
  /** 'lora': |Ĝ ⊙ W| with Ĝ from the LoRA gradients; 'magnitude': |W|. */
  metric: z.enum(['lora', 'magnitude']).default('lora'),
  /** Optimizer steps of the run (the cubic schedule's T). */
  total_steps: z.number().int().positive(),
  /** The model's num_key_value_heads: attention is pruned in whole KV heads with their query heads. */
  kv_heads: z.number().int().positive(),
  /** Decoder layers left unpruned at the start (default ⌊0.1·L⌋, official) and at the end (official 1). */
  skip_first: z.number().int().min(0).nullable().default(null),
  skip_last: z.number().int().min(0).default(1),
  /** Prune to exactly ⌊ratio·groups⌋ at the first prune step of the cooldown (the official code never does). */
  reach_target: z.boolean().default(true),
  /** AdamW's β1, β2 and ε, applied by the rule to A and B (the trainer's defaults). */
  betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([0.9, 0.999]),
  eps: z.number().positive().default(1e-8),
});

/** LoRAPrune's settings with defaults filled. */
export type LoraPruneOptions = z.output<typeof loraPruneOptions>;
/** A LoraConfig that asks for LoRAPrune. */
export type LoraPruneConfig = LoraConfig & { loraprune?: LoraPruneOptions };

/** What a layer is to the pruning: which groups (heads, channels) and whether they are its rows or columns. */
export interface PruneRole {
  groups: 'heads' | 'channels';
  axis: 'out' | 'in';
}
const ROLES: Record<string, PruneRole> = {
  q_proj: { groups: 'heads', axis: 'out' },
  k_proj: { groups: 'heads', axis: 'out' },
  v_proj: { groups: 'heads', axis: 'out' },
  o_proj: { groups: 'heads', axis: 'in' },
  gate_proj: { groups: 'channels', axis: 'out' },
  up_proj: { groups: 'channels', axis: 'out' },
  down_proj: { groups: 'channels', axis: 'in' },
};

/** The pruning role of a Llama-family projection, by its module name, or null. */
export const pruneRole = (path: string): PruneRole | null => ROLES[path.slice(path.lastIndexOf('.') + 1)] ?? null;

/** The step-input names: the head masks [L, kv_heads] and the channel masks [L, intermediate]. */
export const MASK_INPUTS = { heads: 'loraprune_heads', channels: 'loraprune_channels' } as const;

/** How many groups layer `layer` has in its role. */
const groupCount = (layer: LayerInfo, role: PruneRole, c: LoraPruneOptions) =>
  role.groups === 'heads' ? c.kv_heads : role.axis === 'out' ? layer.outFeatures : layer.inFeatures;

/** The official cubic schedule (`schedule_sparsity_ratio`) at 0-based step g of T. */
export function prunedFraction(
  g: number,
  o: Pick<LoraPruneOptions, 'total_steps' | 'warmup' | 'cooldown' | 'ratio' | 'init_ratio'>,
): number {
  const T = o.total_steps;
  if (g <= o.warmup * T) return o.init_ratio;
  if (g > T - o.cooldown * T) return o.ratio;
  const mul = 1 - (g - o.warmup * T) / (T - (o.warmup + o.cooldown) * T);
  return o.ratio + (o.init_ratio - o.ratio) * mul ** 3;
}

/**
 * One block's new pruned set (official `local_prune`): the ⌊ratio·G⌋ groups of least importance ⊙ mask, where the
 * already pruned have importance 0 (ties by index). `pruned[g]` is 1 for a pruned group.
 */
export function pruneGroups(importance: ArrayLike<number>, pruned: ArrayLike<number>, ratio: number): Float32Array {
  const G = importance.length;
  const need = Math.floor(G * ratio);
  const masked = Array.from({ length: G }, (_, g) => (pruned[g] ? 0 : importance[g]));
  const order = Array.from({ length: G }, (_, g) => g).sort((x, y) => masked[x] - masked[y] || x - y);
  const out = new Float32Array(G);
  for (const g of order.slice(0, need)) out[g] = 1;
  return out;
}

/** The unpruned layer range [first, last) of a model with L decoder layers. */
function prunedLayers(L: number, o: LoraPruneOptions): [number, number] {
  return [o.skip_first ?? Math.floor(0.1 * L), L - o.skip_last];
}

/**
 * The masks of one step from the layers' rule state (the EMA and the pruned set after the previous step): the
 * previous masks, or — on a prune step — the blocks pruned further. The official trainer prunes after the update of
 * its 0-based step g and the next forward uses the mask, so step `step` (1-based) applies the decision of g = step − 2.
 */
export function stepMasks(
  step: number,
  layers: ReadonlyMap<string, LayerStepView>,
  o: LoraPruneOptions,
  kind: PruneRole['groups'],
): Float32Array {
  const mine = [...layers.values()].filter((l) => pruneRole(l.info.path)?.groups === kind);
  const L = Math.max(...[...layers.values()].map((l) => l.info.layerIndex! + 1));
  const G = groupCount(mine[0].info, pruneRole(mine[0].info.path)!, o);
  const out = new Float32Array(L * G).fill(1);
  const g = step - 2;
  const p = prunedFraction(g, o);
  const due =
    g >= 0 && g % o.prune_freq === 0 && p > o.init_ratio && (p < o.ratio || (o.reach_target && p === o.ratio));
  const [first, last] = prunedLayers(L, o);
  for (let i = first; i < last; i++) {
    const block = mine.filter((l) => l.info.layerIndex === i);
    if (block.length === 0) continue;
    const pruned = new Float32Array(G);
    const importance = new Float64Array(G);
    for (const l of block) {
      for (let k = 0; k < G; k++) {
        pruned[k] = Math.max(pruned[k], l.state!.pruned[k]);
        importance[k] += l.state!.ema[k];
      }
    }
    const done = pruned.reduce((a, v) => a + v, 0) / G >= o.ratio;
    const next = due && !done ? pruneGroups(importance, pruned, p) : pruned;
    for (let k = 0; k < G; k++) out[i * G + k] = 1 - next[k];
  }
  return out;
}

/** The LoRA factor names of a layer, by role. */
function factors(layer: LayerInfo, s: LoraSettings, c: LoraPruneConfig): { a: string; b: string } {
  const specs = lora.params(layer, s, c);
  return { a: specs.find((p) => p.role === 'a')!.name, b: specs.find((p) => p.role === 'b')!.name };
}

/** This layer's row of a model-level mask input [L, G]: [G]. */
const maskRow = (input: Tensor, layer: LayerInfo, G: number) =>
  input.slice([layer.layerIndex!], [layer.layerIndex! + 1], [0]).reshape([G]);

/** The group scores of one step: S = |Ĝ ⊙ W| (or |W|) summed per row or column, then per group, normalised. */
function groupScores(ctx: UpdateContext<LoraPruneConfig, LoraSettings>, role: PruneRole, G: number): Tensor {
  const { layer, settings: s, config: c } = ctx;
  const o = c.loraprune!;
  if (!ctx.weight) {
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `loraprune on ${layer.path}: the importance needs the frozen weight in the train step, which gradient ` +
        'accumulation splits off; train with gradient_accumulation_steps 1 (a larger batch instead)',
    );
  }
  const n = factors(layer, s, c);
  const [A, B] = [ctx.p[n.a], ctx.p[n.b]]; // [r, in], [out, r]
  const W = ctx.weight.add(B.matmul(A).mul(s.scaling)); // W0 + s·B·A [out, in]
  let S = W;
  if (o.metric === 'lora') {
    const [gA, gB] = [ctx.g[n.a], ctx.g[n.b]];
    // Ĝ: (B − g_B)(A − g_A) − B·A = −(g_B·A + B·g_A − g_B·g_A); only |·| is used
    S = gB.matmul(A).add(B.matmul(gA)).sub(gB.matmul(gA)).mul(W); // [out, in]
  }
  const perLine = S.abs().sum(role.axis === 'out' ? 1 : 0); // [out] or [in]
  const len = role.axis === 'out' ? layer.outFeatures : layer.inFeatures;
  const grouped = perLine.reshape([G, len / G]).sum(1); // [G]
  return grouped.div(grouped.mul(grouped).sum().sqrt().add(1e-8));
}

const update: LayerUpdateRule<LoraPruneConfig, LoraSettings> = {
  state(layer, s, c) {
    const n = factors(layer, s, c);
    const [sa, sb] = lora.params(layer, s, c).map((p) => p.shape);
    const G = groupCount(layer, pruneRole(layer.path)!, c.loraprune!);
    return [
      { name: `${n.a}.exp_avg`, shape: sa },
      { name: `${n.a}.exp_avg_sq`, shape: sa },
      { name: `${n.b}.exp_avg`, shape: sb },
      { name: `${n.b}.exp_avg_sq`, shape: sb },
      { name: 'ema', shape: [G] },
      { name: 'pruned', shape: [G] },
    ];
  },

  apply(ctx) {
    const { layer, settings: s, config: c, lr, step, state } = ctx;
    const o = c.loraprune!;
    const role = pruneRole(layer.path)!;
    const G = groupCount(layer, role, o);
    // AdamW as the trainer's (optim/adamw.ts), with its host scalars computed in the graph from lr and step
    const [b1, b2] = o.betas;
    const opt = adamw({ beta1: b1, beta2: b2, eps: o.eps });
    const scalars = {
      decay: lr.mul(ctx.weightDecay).neg().add(1),
      step_size: lr.div(step.lift(b1).pow(step).neg().add(1)),
      bc2_sqrt: step.lift(b2).pow(step).neg().add(1).sqrt(),
    };
    const p: Record<string, Tensor> = {};
    const next: Record<string, Tensor> = {};
    for (const name of Object.values(factors(layer, s, c))) {
      const r = opt.update({
        param: ctx.p[name],
        grad: ctx.g[name],
        state: [state[`${name}.exp_avg`], state[`${name}.exp_avg_sq`]],
        lr,
        step,
        weightDecay: ctx.weightDecay,
        scalars,
      });
      p[name] = r.param;
      [next[`${name}.exp_avg`], next[`${name}.exp_avg_sq`]] = r.state;
    }
    const fresh = groupScores(ctx, role, G); // [G]
    const ema = state.ema.mul(o.ema).add(fresh.mul(1 - o.ema));
    const nan = fresh.sum().equal(fresh.sum()).not(); // the official update skips a NaN importance
    next.ema = nan.where(state.ema, ema);
    next.pruned = maskRow(ctx.inputs[MASK_INPUTS[role.groups]], layer, G).neg().add(1); // the mask this step used
    return { p, state: next };
  },
};

export const loraprune: MethodVariant<LoraPruneConfig, LoraSettings> = {
  name: 'loraprune',
  paper: 'LoRAPrune: Structured Pruning Meets Low-Rank Parameter-Efficient Fine-Tuning (arXiv:2305.18403)',
  of: ['lora'],
  applies: (c) => c.loraprune != null,
  selectedBy: { loraprune: { total_steps: 100, kv_heads: 1 } },
  fields: {
    /** LoRAPrune's schedule and structure (absent: plain LoRA). Training only: not saved. */
    loraprune: loraPruneOptions.nullable().optional(),
  },
  trainingOnly: ['loraprune'],
  layers: ['linear'],

  check(c, source) {
    const o = c.loraprune!;
    if (c.use_dora)
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: loraprune cannot be combined with use_dora (its importance assumes W0 + s·B·A)`,
        { field: 'loraprune' },
      );
    if (o.init_ratio > o.ratio || o.warmup + o.cooldown >= 1)
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: loraprune needs init_ratio ≤ ratio and warmup + cooldown < 1, got init_ratio ${o.init_ratio}, ` +
          `ratio ${o.ratio}, warmup ${o.warmup}, cooldown ${o.cooldown}`,
        { field: 'loraprune' },
      );
  },

  checkLayer(layer, _s, c, source) {
    const role = pruneRole(layer.path);
    const G = role && groupCount(layer, role, c.loraprune!);
    const len = role?.axis === 'out' ? layer.outFeatures : layer.inFeatures;
    if (!role || layer.layerIndex === null || len % G! !== 0) {
      throw new LorakitError(
        'LK_UNSUPPORTED',
        `${source}: loraprune cannot prune ${layer.path}: it prunes the q/k/v/o, gate/up/down projections of a ` +
          `decoder layer, in ${c.loraprune!.kv_heads} KV-head groups (loraprune.kv_heads) for attention; exclude it`,
        { layer: layer.path },
      );
    }
  },

  stepInputs(c, layers): StepInputSpec<LoraPruneConfig>[] {
    const o = c.loraprune!;
    const L = Math.max(...layers.map(({ layer }) => layer.layerIndex! + 1));
    const specs: StepInputSpec<LoraPruneConfig>[] = [];
    for (const kind of ['heads', 'channels'] as const) {
      const mine = layers.filter(({ layer }) => pruneRole(layer.path)?.groups === kind);
      if (mine.length === 0) continue;
      const counts = new Set(mine.map(({ layer }) => groupCount(layer, pruneRole(layer.path)!, o)));
      if (counts.size > 1)
        throw new LorakitError(
          'LK_UNSUPPORTED',
          `loraprune: the MLP layers have different widths (${[...counts].join(', ')}); one mask row per layer ` +
            'needs one intermediate size',
        );
      const G = [...counts][0];
      specs.push({
        name: MASK_INPUTS[kind],
        layer: null,
        dtype: 'f32',
        shape: [L, G],
        train: ({ step, layers: views }) => {
          if (!views) throw new Error('internal: loraprune masks need the layer views of a model-level input');
          return stepMasks(step, views, o, kind);
        },
        infer: () => new Float32Array(L * G).fill(1),
      });
    }
    return specs;
  },

  // y = (W0·x + s·B·A·x) ⊙ mask on the rows of q/k/v/gate/up (official `result *= lora_mask`)
  forward(ctx, parts) {
    const y = ctx.y.add(parts.lora);
    const role = pruneRole(ctx.layer.path)!;
    if (role.axis === 'in') return y;
    const G = groupCount(ctx.layer, role, ctx.config.loraprune!);
    const m = ctx.layer.outFeatures;
    const row = maskRow(ctx.inputs[MASK_INPUTS[role.groups]], ctx.layer, G); // [G]
    return y.mul(
      row
        .reshape([G, 1])
        .expand([G, m / G])
        .reshape([m]),
    ); // [.., out]
  },

  update,
};
