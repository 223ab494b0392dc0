/**
 * BD-LoRA — "Block-Diagonal LoRA for Eliminating Communication Overhead in Tensor Parallel LoRA Serving" (Wang,
 * Kübler, Budhathoki, Wang & Kleindessner, arXiv:2510.23346); PEFT ≥ 0.19's `use_bdlora` (a BdLoraConfig), PEFT's
 * `BdLoraLinearVariant` / `BlockDiagonalLinear`. A LoRA variant in which, per targeted Linear, A or B is
 * block-diagonal with `nblocks` blocks (spec methods-a §15):
 *   - a layer whose module path contains one of `target_modules_bd_a` (PEFT's substring test on the full name) gets
 *     A = diag(A_1 … A_nb), stored [r, in/nb] (the blocks stacked by rows, PEFT's layout), Kaiming-uniform with
 *     PyTorch's default a = 0 and fan-in in/nb: U(±√(6·nb/in));
 *   - one matching `target_modules_bd_b` gets B = diag(B_1 … B_nb), stored [out, r/nb], initialised to zero;
 *   - with `match_strict` (default) every targeted layer must match one list; otherwise unmatched layers stay LoRA.
 * Forward, scaling and merge are LoRA's with the dense block-diagonal factor: y = base(x) + s·B(A(dropout x)),
 * ΔW = s·B·A. Needs in, out and r divisible by nblocks. Count r·in/nb + r·out (A block-diagonal) or r·in + out·r/nb.
 * Why: under Megatron-style tensor parallelism with nb shards, a column-parallel layer (q, k, v, gate, up: each
 * shard owns out/nb output rows and sees the whole input) with B block-diagonal computes its LoRA shard as
 * B_i·(A·x) from its local input, and a row-parallel layer (o, down: each shard owns in/nb input columns and its
 * partial outputs are summed by the layer's all-reduce) with A block-diagonal computes B·(A_i·x_i) on its local
 * slice, its partial result joining the base layer's all-reduce; so the adapter adds no communication of its own.
 * lorakit runs one device and multiplies by the dense factor built in the graph (the same FLOPs as LoRA).
 * Not here: LoRA itself (lora.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import type { Tensor } from '../../graph/index.ts';
import { kaimingUniformBound, matmul } from '../../linalg/index.ts';
import { fromMatrix } from '../layers.ts';
import type { InitResult, LayerInfo, MethodVariant } from '../method.ts';
import type { LoraConfig, LoraSettings } from './lora.ts';

/** PEFT's BdLoraConfig, with its field names and defaults. */
const bdloraConfig = z.strictObject({
  /** Modules (substrings of their path) whose A is block-diagonal: the row-parallel ones (o_proj, down_proj). */
  target_modules_bd_a: z.array(z.string()).nullable().default(null),
  /** Modules whose B is block-diagonal: the column-parallel ones (q, k, v, gate, up projections). */
  target_modules_bd_b: z.array(z.string()).nullable().default(null),
  /** Blocks per block-diagonal factor: the tensor-parallel degree it serves. */
  nblocks: z.number().int().positive().default(1),
  /** Require every targeted module to match one of the two lists. */
  match_strict: z.boolean().default(true),
});

/** A LoraConfig with PEFT's use_bdlora field. */
export type BdLoraConfig = LoraConfig & { use_bdlora?: z.output<typeof bdloraConfig> | null };

/** Which factor of a layer is block-diagonal ('a', 'b') or neither (null); PEFT matches substrings of the path. */
export function blockFactor(c: BdLoraConfig, layer: LayerInfo): 'a' | 'b' | null {
  const bd = c.use_bdlora!;
  const a = (bd.target_modules_bd_a ?? []).some((p) => layer.path.includes(p));
  const b = (bd.target_modules_bd_b ?? []).some((p) => layer.path.includes(p));
  if (a && b) return null; // refused by checkLayer
  return a ? 'a' : b ? 'b' : null;
}

/** The dense [rows, cols] block-diagonal matrix of `w` [rows, cols/nb], blocks stacked by rows (torch.block_diag). */
export function blockDiagonal(w: Float32Array, rows: number, cols: number, nb: number): Float32Array {
  const [n, m] = [rows / nb, cols / nb];
  const out = new Float32Array(rows * cols);
  for (let row = 0; row < rows; row++) {
    const i = Math.floor(row / n); // block i covers rows i·n.. and columns i·m..
    out.set(w.subarray(row * m, row * m + m), row * cols + i * m);
  }
  return out;
}

/** The dense block-diagonal [rows, cols] matrix of a stored [rows, cols/nb] graph tensor. */
function denseOf(w: Tensor, rows: number, cols: number, nb: number): Tensor {
  const [n, m] = [rows / nb, cols / nb];
  const eye = w.graph.constant(
    Array.from({ length: nb * nb }, (_, k) => (Math.floor(k / nb) === k % nb ? 1 : 0)),
    w.dtype,
    [nb, 1, nb, 1],
  );
  return w.reshape([nb, n, 1, m]).mul(eye).reshape([rows, cols]); // [nb, n, nb, m]: block (i, i) is w_i, others 0
}

/** The dense A [r, in] and B [out, r] of a layer, as host values. */
function denseFactors(layer: LayerInfo, s: LoraSettings, c: BdLoraConfig, p: Record<string, Float32Array>) {
  const nb = c.use_bdlora!.nblocks;
  const f = blockFactor(c, layer);
  const [A, B] = [p['lora_A.weight'], p['lora_B.weight']];
  return {
    a: f === 'a' ? blockDiagonal(A, s.r, layer.inFeatures, nb) : A,
    b: f === 'b' ? blockDiagonal(B, layer.outFeatures, s.r, nb) : B,
  };
}

export const bdlora: MethodVariant<BdLoraConfig, LoraSettings> = {
  name: 'bdlora',
  paper:
    'Block-Diagonal LoRA for Eliminating Communication Overhead in Tensor Parallel LoRA Serving (arXiv:2510.23346)',
  of: ['lora'],
  applies: (c) => c.use_bdlora !== null && c.use_bdlora !== undefined,
  selectedBy: {
    use_bdlora: {
      target_modules_bd_a: ['o_proj', 'down_proj'],
      target_modules_bd_b: ['q_proj', 'k_proj', 'v_proj', 'gate_proj', 'up_proj'],
    },
  },
  fields: { use_bdlora: bdloraConfig.nullable().optional() },
  layers: ['linear'],

  check(c, source) {
    const bd = c.use_bdlora!;
    const overlap = (bd.target_modules_bd_a ?? []).filter((m) => (bd.target_modules_bd_b ?? []).includes(m));
    if (overlap.length) {
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: use_bdlora lists ${JSON.stringify(overlap)} in both target_modules_bd_a and target_modules_bd_b`,
        { field: 'use_bdlora' },
      );
    }
    if (typeof c.init_lora_weights === 'string' && c.init_lora_weights !== 'gaussian') {
      throw new LorakitError(
        'LK_UNSUPPORTED',
        `${source}: use_bdlora with init_lora_weights "${c.init_lora_weights}": BD-LoRA re-draws one factor after ` +
          'the initialisation, which breaks an initialisation that fits both factors to W0; use true or "gaussian"',
        { field: 'init_lora_weights' },
      );
    }
  },

  checkLayer(layer, s, c, source) {
    const bd = c.use_bdlora!;
    const inA = (bd.target_modules_bd_a ?? []).some((p) => layer.path.includes(p));
    const inB = (bd.target_modules_bd_b ?? []).some((p) => layer.path.includes(p));
    const fail = (msg: string) => {
      throw new LorakitError('LK_CONFIG_INVALID', `${source}: use_bdlora: ${layer.path} ${msg}`, {
        field: 'use_bdlora',
        layer: layer.path,
      });
    };
    if (inA && inB) fail('matches both target_modules_bd_a and target_modules_bd_b');
    if (!inA && !inB && bd.match_strict) {
      fail('matches neither target_modules_bd_a nor target_modules_bd_b; list it, or set match_strict: false');
    }
    const nb = bd.nblocks;
    const dims = inA ? { in: layer.inFeatures, r: s.r } : inB ? { r: s.r, out: layer.outFeatures } : {};
    const bad = Object.entries(dims).filter(([, d]) => d % nb !== 0);
    if (bad.length) {
      const what = bad.map(([k, d]) => `${k} = ${d}`).join(', ');
      fail(`has ${what}, not divisible by nblocks = ${nb} (its block-diagonal ${inA ? 'A' : 'B'} needs that)`);
    }
  },

  adjustParams(specs, layer, s, c) {
    const nb = c.use_bdlora!.nblocks;
    const f = blockFactor(c, layer);
    return specs.map((p) => {
      if (f === 'a' && p.role === 'a') return { ...p, shape: [s.r, layer.inFeatures / nb] };
      if (f === 'b' && p.role === 'b') return { ...p, shape: [layer.outFeatures, s.r / nb] };
      return p;
    });
  },

  // after LoRA's init, as PEFT's variant init: a block-diagonal A is re-drawn (kaiming_uniform_, a = 0), B zeroed
  async init({ layer, settings: s, config: c, rng }): Promise<InitResult> {
    const nb = c.use_bdlora!.nblocks;
    const f = blockFactor(c, layer);
    if (f === 'a') {
      const b = kaimingUniformBound(layer.inFeatures / nb, 0);
      return { values: { 'lora_A.weight': rng.uniformArray((s.r * layer.inFeatures) / nb, -b, b) } };
    }
    if (f === 'b') return { values: { 'lora_B.weight': new Float32Array((layer.outFeatures * s.r) / nb) } };
    return { values: {} };
  },

  forward(ctx) {
    const { layer, settings: s, config: c, p } = ctx;
    const nb = c.use_bdlora!.nblocks;
    const f = blockFactor(c, layer);
    const A = f === 'a' ? denseOf(p['lora_A.weight'], s.r, layer.inFeatures, nb) : p['lora_A.weight']; // [r, in]
    const B = f === 'b' ? denseOf(p['lora_B.weight'], layer.outFeatures, s.r, nb) : p['lora_B.weight']; // [out, r]
    const t = ctx.dropout(ctx.x, s.dropout).matmul(A.T).matmul(B.T); // [.., in] · [in, r] · [r, out]
    return ctx.y.add(t.mul(s.scaling));
  },

  // LoRA's r·(in + out) less the off-diagonal blocks: r·in·(1 − 1/nb) for A, out·r·(1 − 1/nb) for B
  trainableCount: (c, layers) =>
    -layers.reduce((n, { layer, settings: s }) => {
      const f = blockFactor(c, layer);
      const full = f === 'a' ? s.r * layer.inFeatures : f === 'b' ? layer.outFeatures * s.r : 0;
      return n + full - full / c.use_bdlora!.nblocks;
    }, 0),

  delta({ layer, settings: s, config: c, p }) {
    const { a, b } = denseFactors(layer, s, c, p);
    const ba = matmul(b, a, layer.outFeatures, s.r, layer.inFeatures); // [out, in]
    for (let k = 0; k < ba.length; k++) ba[k] *= s.scaling;
    return fromMatrix(layer, ba);
  },
};
