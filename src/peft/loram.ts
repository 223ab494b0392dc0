/**
 * LoRAM — "Train Small, Infer Large: Memory-Efficient LoRA Training for Large Language Models" (Zhang et al., ICLR
 * 2025, arXiv:2502.13533); code junzhang-zj/LoRAM (spec methods-b §13). Train a LoRA on a structurally pruned base,
 * then recover it to the full base and use it there. The two host steps live here:
 * - which groups to prune: the official pipeline takes LLM-Pruner's index sets ("param_first": the first-order
 *   Taylor score |W ⊙ ∂L/∂W| per weight, summed over a group); `taylorPlan` scores each KV-head group (its q/k/v rows
 *   and o_proj columns) and MLP channel (gate/up rows, down_proj column) that way from calibration gradients and
 *   keeps the best (1 − ratio) of every pruned layer — the same groups LoRAPrune and the slicing use (peft/slice.ts);
 * - recovery (official `3_recovered_low_rank_matrix_generation.py`, default "zeroA"): the factor on the pruned
 *   dimension is widened with zeros — lora_B of q/k/v/gate/up gets zero rows at the pruned outputs, lora_A of
 *   o/down_proj zero columns at the pruned inputs — the other factor is kept, so ΔW is zero on what was pruned and
 *   the full model's pruned channels keep their W0 behaviour.
 * Not here: the run (train/loram.ts: calibrate, slice, train on the pruned folder, recover, evaluate); the official
 * alignment step (continual pre-training of the pruned model) and QLoRAM's 4-bit base, which lorakit does not do.
 */
import { LorakitError, check } from '../errors.ts';
import { type SaveAdapterOptions, saveAdapter } from './format.ts';
import { type Adapter, type PeftModel, paramKey } from './model.ts';
import { PROJECTIONS, type PrunePlan, type PruneSizes, type Projection, lines, slicedGroups } from './slice.ts';

/** The weights and calibration gradients of one decoder layer's projections, stored [out, in], by projection. */
export type LayerTensors = Partial<Record<Projection, { weight: Float32Array; grad: Float32Array }>>;

/** Group scores Σ|W ⊙ G| of one layer: per KV-head group and per MLP channel. */
export function taylorScores(sizes: PruneSizes, layer: LayerTensors): { heads: Float64Array; channels: Float64Array } {
  const out = {
    heads: new Float64Array(sizes.num_key_value_heads),
    channels: new Float64Array(sizes.intermediate_size),
  };
  for (const proj of Object.keys(PROJECTIONS) as Projection[]) {
    const t = layer[proj];
    if (!t) continue;
    const spec = PROJECTIONS[proj];
    const G = out[spec.groups].length;
    const width = lines(sizes, proj, [0]).length; // rows or columns per group
    const n = spec.axis === 'out' ? t.weight.length / (G * width) : G * width; // columns of the [out, in] weight
    for (let k = 0; k < t.weight.length; k++) {
      const line = spec.axis === 'out' ? Math.floor(k / n) : k % n;
      out[spec.groups][Math.floor(line / width)] += Math.abs(t.weight[k] * t.grad[k]);
    }
  }
  return out;
}

/**
 * A plan keeping, in layers [skipFirst, L − skipLast), the ⌈(1 − ratio)·G⌉ groups of highest Taylor score (ties by
 * index); other layers keep everything. `layers[i]` holds layer i's projections.
 */
export function taylorPlan(
  sizes: PruneSizes,
  layers: readonly LayerTensors[],
  ratio: number,
  opts: { skipFirst?: number; skipLast?: number } = {},
): PrunePlan {
  check(ratio >= 0 && ratio < 1, 'LK_INVALID_ARGUMENT', `LoRAM: ratio must be in [0, 1), got ${ratio}`);
  const { skipFirst = 0, skipLast = 0 } = opts;
  const L = sizes.num_hidden_layers;
  const all = (n: number) => Array.from({ length: n }, (_, g) => g);
  const best = (s: Float64Array) => {
    const keep = s.length - Math.floor(ratio * s.length);
    return all(s.length)
      .sort((x, y) => s[y] - s[x] || x - y)
      .slice(0, keep)
      .sort((x, y) => x - y);
  };
  return {
    original: { ...sizes },
    layers: all(L).map((i) => {
      if (i < skipFirst || i >= L - skipLast)
        return { heads: all(sizes.num_key_value_heads), channels: all(sizes.intermediate_size) };
      const s = taylorScores(sizes, layers[i] ?? {});
      return { heads: best(s.heads), channels: best(s.channels) };
    }),
  };
}

/**
 * Recovers a LoRA trained on the pruned folder (`prunedPeft` holds it as adapter `name`) to the full base
 * (`fullPeft`), zero-filling the pruned rows of lora_B (q/k/v/gate/up) and columns of lora_A (o/down_proj) — the
 * zeroed pad groups of a sliced layer included, as the plan pruned them — and writes it as a PEFT folder in `dir`
 * (the same config: it applies to the full model). Other targets (lm_head, embeddings) are copied unchanged.
 */
export async function recoverAdapter(
  prunedPeft: PeftModel,
  name: string,
  plan: PrunePlan,
  fullPeft: PeftModel,
  dir: string,
  opts: SaveAdapterOptions = {},
): Promise<void> {
  const src = prunedPeft.get(name);
  checkRecoverable(src);
  const groups = slicedGroups(plan);
  const tmp = `${name}@recovered`;
  const active = [...fullPeft.activeAdapters];
  const out = await fullPeft.addAdapter(tmp, src.config, { source: `adapter "${name}" recovered to the full base` });
  try {
    const values = new Map<string, Float32Array>();
    for (const [path, l] of src.layers) {
      const full = out.layers.get(path);
      if (!full) throw new Error(`internal: ${path} is adapted on the pruned model but not on the full one`);
      const an = l.specs.find((s) => s.role === 'a')!.name;
      const bn = l.specs.find((s) => s.role === 'b')!.name;
      const proj = path.slice(path.lastIndexOf('.') + 1) as Projection;
      const spec = PROJECTIONS[proj];
      let [a, b] = [l.values[an], l.values[bn]];
      if (spec && l.info.layerIndex !== null) {
        const i = l.info.layerIndex;
        // Positions in the full model of the pruned model's rows/columns (kept groups and pads, ascending), and of
        // the kept ones: pads were pruned too, so their rows/columns are zero-filled like every pruned one.
        const held = lines(plan.original, proj, groups[i][spec.groups]);
        const kept = new Set(lines(plan.original, proj, plan.layers[i][spec.groups]));
        const r = l.settings.r as number;
        if (spec.axis === 'out')
          b = widenRows(b, r, held, kept, full.info.outFeatures); // [out, r]
        else a = widenColumns(a, r, held, kept, full.info.inFeatures); // [r, in]
      }
      values.set(paramKey(tmp, path, an), a);
      values.set(paramKey(tmp, path, bn), b);
    }
    fullPeft.setValues(tmp, values);
    await saveAdapter(fullPeft, tmp, dir, opts);
  } finally {
    fullPeft.deleteAdapter(tmp);
    fullPeft.setActive(...active);
  }
}

/**
 * Recovery widens the two LoRA factors of each layer; an adapter with other tensors (DoRA's magnitude, VeRA's shared
 * projections), a replaced base (PiSSA), trained biases or whole-module copies would need its own rule, so it is
 * refused. Variants that only change training (update rules, loss terms, masks) recover like LoRA.
 */
function checkRecoverable(src: Adapter): void {
  const refuse = (why: string) =>
    new LorakitError('LK_UNSUPPORTED', `LoRAM recovery: adapter "${src.name}" (${src.method.name}) ${why}`);
  if (src.shared.specs.length > 0) throw refuse('has model-level tensors; recovery widens per-layer LoRA factors');
  if (src.bases.size > 0) throw refuse('replaced frozen weights of the pruned model; they have no full-size value');
  if (src.weights.size > 0 || src.modules.size > 0)
    throw refuse('trains biases or whole modules (bias / modules_to_save); recovery widens LoRA factors only');
  for (const [path, l] of src.layers) {
    const roles = l.specs.filter((s) => s.saved !== false).map((s) => s.role);
    if (roles.length !== 2 || !roles.includes('a') || !roles.includes('b'))
      throw refuse(`holds [${roles.join(', ')}] at ${path}; expected one lora_A and one lora_B`);
  }
}

/** B [held, r] placed at rows `held` of a zero [rows, r], keeping only the rows in `kept`. */
function widenRows(
  b: Float32Array,
  r: number,
  held: readonly number[],
  kept: ReadonlySet<number>,
  rows: number,
): Float32Array {
  check(
    b.length === held.length * r,
    'LK_SHAPE_MISMATCH',
    `LoRAM recovery: lora_B has ${b.length / r} rows, the pruned model's layer has ${held.length}`,
  );
  const out = new Float32Array(rows * r);
  held.forEach((row, j) => {
    if (kept.has(row)) out.set(b.subarray(j * r, (j + 1) * r), row * r);
  });
  return out;
}

/** A [r, held] placed at columns `held` of a zero [r, cols], keeping only the columns in `kept`. */
function widenColumns(
  a: Float32Array,
  r: number,
  held: readonly number[],
  kept: ReadonlySet<number>,
  cols: number,
): Float32Array {
  const n = held.length;
  check(
    a.length === r * n,
    'LK_SHAPE_MISMATCH',
    `LoRAM recovery: lora_A has ${a.length / r} columns, the pruned model's layer has ${n}`,
  );
  const out = new Float32Array(r * cols);
  for (let i = 0; i < r; i++)
    held.forEach((col, j) => {
      if (kept.has(col)) out[i * cols + col] = a[i * n + j];
    });
  return out;
}
