/**
 * Structured pruning made physical: a Llama-family model (Llama, Mistral, Qwen2) cut to the attention groups and MLP
 * channels a `PrunePlan` keeps, written as a smaller Hugging Face folder that transformers and lorakit load
 * (LoRAPrune's final `prune()`, spec methods-b §12; LoRAM's pruned base, §13). A group is one KV head with the
 * num_attention_heads/num_key_value_heads query heads that read it (grouped-query attention keeps its shape); a
 * channel is one row of gate/up and one column of down_proj. Rows of q/k/v/gate/up (and q/k/v biases) and columns of
 * o_proj/down_proj are sliced; config.json gets the new num_key_value_heads, num_attention_heads, an explicit
 * head_dim and intermediate_size. transformers' configs hold one width for every layer, so a layer that keeps fewer
 * groups than the widest (LoRAPrune's unpruned first and last layers) is padded with zeroed groups: their output is
 * exactly zero (a zero q/k/v head attends uniformly over zero values; zero gate/up rows give silu(0)·0), so the
 * folder computes what the masked model computes. The plan is saved with the folder (lorakit_pruning.json) for LoRAM's
 * recovery of adapters trained on it.
 * Not here: choosing what to prune (methods/loraprune.ts, train/prune.ts), recovering adapters (loram.ts).
 */
import { join, readFile } from '../io/host.ts';
import { LorakitError, check } from '../errors.ts';
import type { LlamaLikeConfig } from '../io/index.ts';
import type { LoadedModel } from '../models/index.ts';
import { exportResized } from './export.ts';

/** The file a sliced folder keeps its plan in. */
export const PLAN_FILE = 'lorakit_pruning.json';

/** The sizes structured pruning changes, as config.json names them. */
export interface PruneSizes {
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim: number;
  intermediate_size: number;
}

/** What each decoder layer keeps: KV-head groups and MLP channels, ascending indices into the original model. */
export interface PrunePlan {
  original: PruneSizes;
  layers: { heads: number[]; channels: number[] }[];
}

/** The projections of a decoder layer, with the axis they are sliced on and what indexes it. */
export const PROJECTIONS = {
  q_proj: { block: 'self_attn', axis: 'out', groups: 'heads', per: 'query' },
  k_proj: { block: 'self_attn', axis: 'out', groups: 'heads', per: 'kv' },
  v_proj: { block: 'self_attn', axis: 'out', groups: 'heads', per: 'kv' },
  o_proj: { block: 'self_attn', axis: 'in', groups: 'heads', per: 'query' },
  gate_proj: { block: 'mlp', axis: 'out', groups: 'channels', per: 'channel' },
  up_proj: { block: 'mlp', axis: 'out', groups: 'channels', per: 'channel' },
  down_proj: { block: 'mlp', axis: 'in', groups: 'channels', per: 'channel' },
} as const;
export type Projection = keyof typeof PROJECTIONS;

/** The pruning sizes of a loaded Llama-family model; other families are refused. */
export function pruneSizes(model: LoadedModel): PruneSizes {
  if (model.family !== 'llama') {
    throw new LorakitError(
      'LK_UNSUPPORTED',
      `structured pruning supports the Llama family (llama, mistral, qwen2); ${model.dir} is ${model.config.model_type}`,
    );
  }
  const c = model.config as LlamaLikeConfig;
  return {
    num_hidden_layers: c.num_hidden_layers,
    num_attention_heads: c.num_attention_heads,
    num_key_value_heads: c.num_key_value_heads,
    head_dim: c.head_dim,
    intermediate_size: c.intermediate_size,
  };
}

/** The rows (axis 'out') or columns ('in') of projection `proj` that groups `kept` cover, ascending. */
export function lines(sizes: PruneSizes, proj: Projection, kept: readonly number[]): number[] {
  const spec = PROJECTIONS[proj];
  const width =
    spec.per === 'channel'
      ? 1
      : spec.per === 'kv'
        ? sizes.head_dim
        : (sizes.head_dim * sizes.num_attention_heads) / sizes.num_key_value_heads;
  return kept.flatMap((g) => Array.from({ length: width }, (_, k) => g * width + k));
}

/** Checks a plan against a model's sizes (indices in range, ascending, no empty layer). */
export function checkPlan(plan: PrunePlan, sizes: PruneSizes): void {
  const bad = (msg: string) => new LorakitError('LK_INVALID_ARGUMENT', `prune plan: ${msg}`);
  for (const k of Object.keys(sizes) as (keyof PruneSizes)[])
    if (plan.original[k] !== sizes[k]) throw bad(`${k} is ${plan.original[k]}, the model's is ${sizes[k]}`);
  if (plan.layers.length !== sizes.num_hidden_layers)
    throw bad(`${plan.layers.length} layers, the model has ${sizes.num_hidden_layers}`);
  plan.layers.forEach((l, i) => {
    for (const [what, kept, n] of [
      ['heads', l.heads, sizes.num_key_value_heads],
      ['channels', l.channels, sizes.intermediate_size],
    ] as const) {
      const ok =
        kept.length > 0 && kept.every((g, j) => Number.isInteger(g) && g >= 0 && g < n && (j === 0 || g > kept[j - 1]));
      if (!ok)
        throw bad(
          `layer ${i} keeps ${what} [${kept.join(', ')}]; expected ascending indices in 0..${n - 1}, at least one`,
        );
    }
  });
}

/** What writeSliced wrote. */
export interface SliceResult {
  dir: string;
  /** The new sizes (every layer). */
  sizes: PruneSizes;
  /** Groups kept but zeroed because their layer keeps fewer than the widest, per layer. */
  padded: { heads: number[]; channels: number[] }[];
  /** Parameter values of the decoder projections before and after. */
  projectionParams: { before: number; after: number };
}

/** Each layer's kept groups padded to `width` with the lowest pruned indices; returns [kept ∪ pad, pad]. */
function padded(kept: readonly number[], total: number, width: number): [number[], number[]] {
  const pad: number[] = [];
  for (let g = 0; g < total && kept.length + pad.length < width; g++) if (!kept.includes(g)) pad.push(g);
  return [[...kept, ...pad].sort((a, b) => a - b), pad];
}

/**
 * The groups each layer of the sliced folder holds: its kept groups and, in layers keeping fewer than the widest,
 * the lowest pruned ones that pad it (zeroed), ascending; and those pads.
 */
export function slicedGroups(
  plan: PrunePlan,
): { heads: number[]; channels: number[]; pad: { heads: number[]; channels: number[] } }[] {
  const K = Math.max(...plan.layers.map((l) => l.heads.length));
  const C = Math.max(...plan.layers.map((l) => l.channels.length));
  return plan.layers.map((l) => {
    const [heads, padHeads] = padded(l.heads, plan.original.num_key_value_heads, K);
    const [channels, padChannels] = padded(l.channels, plan.original.intermediate_size, C);
    return { heads, channels, pad: { heads: padHeads, channels: padChannels } };
  });
}

/**
 * Writes `model` (with `overrides` by HF name: merged adapter weights) sliced to `plan` into `outDir`, with the plan
 * in lorakit_pruning.json.
 */
export async function writeSliced(
  model: LoadedModel,
  plan: PrunePlan,
  outDir: string,
  opts: { overrides?: ReadonlyMap<string, Float32Array>; overwrite?: boolean } = {},
): Promise<SliceResult> {
  const sizes = pruneSizes(model);
  checkPlan(plan, sizes);
  const held = slicedGroups(plan);
  const K = held[0].heads.length;
  const C = held[0].channels.length;
  const rep = sizes.num_attention_heads / sizes.num_key_value_heads;
  check(
    Number.isInteger(rep),
    'LK_UNSUPPORTED',
    `prune: ${sizes.num_attention_heads} heads over ${sizes.num_key_value_heads} KV heads`,
  );
  const tensors = new Map<string, { shape: number[]; data: Float32Array; dtype: 'F32' | 'F16' | 'BF16' }>();
  // sliced stored values keep their dtype (exact); merged values are written as F32, as merged exports are
  const dtype = (name: string) =>
    opts.overrides?.has(name) ? 'F32' : (model.storedDtype(name) as 'F32' | 'F16' | 'BF16');
  const pads: SliceResult['padded'] = [];
  const read = async (name: string) => opts.overrides?.get(name) ?? (await model.read(name));
  const names = new Set(model.parameters().map((p) => p.name));
  let before = 0,
    after = 0;
  for (let i = 0; i < sizes.num_hidden_layers; i++) {
    const { heads, channels, pad } = held[i];
    const [padHeads, padChannels] = [pad.heads, pad.channels];
    pads.push(pad);
    for (const proj of Object.keys(PROJECTIONS) as Projection[]) {
      const spec = PROJECTIONS[proj];
      const keep = spec.groups === 'heads' ? heads : channels;
      const zero = new Set(lines(sizes, proj, spec.groups === 'heads' ? padHeads : padChannels));
      const idx = lines(sizes, proj, keep);
      const base = `model.layers.${i}.${spec.block}.${proj}`;
      const w = await read(`${base}.weight`);
      const full = lines(
        sizes,
        proj,
        Array.from(
          { length: spec.groups === 'heads' ? sizes.num_key_value_heads : sizes.intermediate_size },
          (_, g) => g,
        ),
      ).length;
      const other = w.length / full; // the axis not sliced
      before += w.length;
      if (spec.axis === 'out') {
        const data = new Float32Array(idx.length * other);
        idx.forEach((row, j) => {
          if (!zero.has(row)) data.set(w.subarray(row * other, (row + 1) * other), j * other);
        });
        tensors.set(`${base}.weight`, { shape: [idx.length, other], data, dtype: dtype(`${base}.weight`) }); // [kept out, in]
        if (names.has(`${base}.bias`)) {
          const b = await read(`${base}.bias`);
          tensors.set(`${base}.bias`, {
            dtype: dtype(`${base}.bias`),
            shape: [idx.length],
            data: Float32Array.from(idx, (row) => (zero.has(row) ? 0 : b[row])),
          });
        }
      } else {
        const data = new Float32Array(other * idx.length);
        for (let r = 0; r < other; r++)
          idx.forEach((col, j) => {
            if (!zero.has(col)) data[r * idx.length + j] = w[r * full + col];
          });
        tensors.set(`${base}.weight`, { shape: [other, idx.length], data, dtype: dtype(`${base}.weight`) }); // [out, kept in]
      }
      after += tensors.get(`${base}.weight`)!.data.length;
    }
  }
  // other overridden weights (a merged adapter on lm_head or the embedding) keep their shapes
  const shapes = new Map(model.parameters().map((p) => [p.name, p.shape]));
  for (const [name, data] of opts.overrides ?? [])
    if (!tensors.has(name)) tensors.set(name, { shape: shapes.get(name)!, data, dtype: 'F32' });
  const out: PruneSizes = {
    ...sizes,
    num_key_value_heads: K,
    num_attention_heads: K * rep,
    intermediate_size: C,
  };
  const config = {
    num_key_value_heads: K,
    num_attention_heads: K * rep,
    head_dim: sizes.head_dim,
    intermediate_size: C,
  };
  const files = { [PLAN_FILE]: `${JSON.stringify(plan)}\n` };
  const r = await exportResized(model, tensors, config, outDir, { overwrite: opts.overwrite, files });
  return { dir: r.dir, sizes: out, padded: pads, projectionParams: { before, after } };
}

/** The plan a sliced folder was made with (LoRAM recovers adapters trained on the folder with it). */
export async function readPlan(dir: string): Promise<PrunePlan> {
  const file = join(dir, PLAN_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    throw new LorakitError('LK_FILE_NOT_FOUND', `${file} is missing: ${dir} is not a folder lorakit pruned`);
  }
  try {
    return JSON.parse(text) as PrunePlan;
  } catch (e) {
    throw new LorakitError('LK_FILE_INVALID', `${file}: not valid JSON (${(e as Error).message})`);
  }
}

/** The masks a plan stands for, as LoRAPrune feeds them: heads [L, num_key_value_heads], channels [L, intermediate]. */
export function planMasks(plan: PrunePlan): { heads: Float32Array; channels: Float32Array } {
  const { num_hidden_layers: L, num_key_value_heads: U, intermediate_size: I } = plan.original;
  const heads = new Float32Array(L * U);
  const channels = new Float32Array(L * I);
  plan.layers.forEach((l, i) => {
    for (const g of l.heads) heads[i * U + g] = 1;
    for (const c of l.channels) channels[i * I + c] = 1;
  });
  return { heads, channels };
}

/** The plan of LoRAPrune-style masks (1 kept) [L, num_key_value_heads] and [L, intermediate]. */
export function planFromMasks(sizes: PruneSizes, heads: ArrayLike<number>, channels: ArrayLike<number>): PrunePlan {
  const { num_hidden_layers: L, num_key_value_heads: U, intermediate_size: I } = sizes;
  const kept = (m: ArrayLike<number>, i: number, n: number) =>
    Array.from({ length: n }, (_, g) => g).filter((g) => m[i * n + g] > 0);
  return {
    original: { ...sizes },
    layers: Array.from({ length: L }, (_, i) => ({ heads: kept(heads, i, U), channels: kept(channels, i, I) })),
  };
}
