/**
 * A learned coefficient merge as an ordinary PEFT LoRA folder: per module, the coefficients are evaluated on the
 * host (φ, then the affine map) and folded into a `cat` layout, A = [c₁s₁A₁; c₂s₂A₂; …] and B = [B₁ B₂ …], so
 * B·A = Σᵢ cᵢsᵢBᵢAᵢ exactly, with r = lora_alpha = Σ rᵢ (scaling 1) and rank_pattern / alpha_pattern where a
 * module's total rank differs. LoraHub's merge (one adapter with scaling s) is written the same way.
 * Not here: the graph side of φ (coefficients.ts), writing the files (peft/compose/lora-folder.ts).
 */
import { LorakitError } from '../errors.ts';
import type { compose } from '../peft/index.ts';
import type { CoefficientSpec, Phi } from './coefficients.ts';
import type { CoefficientValues } from './objective.ts';
import { factorsOf, type RecycledPool, totalRank } from './pool.ts';

/** φ on the host, row-wise over the n adapters (the same maps as coefficients.ts's graph). */
function phiRow(w: readonly number[], phi: Phi): number[] {
  switch (phi) {
    case 'linear':
      return [...w];
    case 'leaky_relu':
      return w.map((v) => (v > 0 ? v : 0.01 * v));
    case 'squared':
      return w.map((v) => v * v);
    case 'sigmoid':
      return w.map((v) => 1 / (1 + Math.exp(-v)));
    case 'softmax': {
      const m = Math.max(...w);
      const e = w.map((v) => Math.exp(v - m));
      const s = e.reduce((p, q) => p + q, 0);
      return e.map((v) => v / s);
    }
  }
}

/** The effective coefficients c [M][n] (one row per pooled module) of learned values. */
export function effectiveCoefficients(pool: RecycledPool, spec: CoefficientSpec, v: CoefficientValues): number[][] {
  const n = pool.names.length;
  const rows = spec.granularity === 'task' ? 1 : pool.modules.length;
  if (v.w.length !== rows * n)
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `effectiveCoefficients: expected ${rows * n} values, got ${v.w.length}`,
    );
  const out: number[][] = [];
  for (let k = 0; k < pool.modules.length; k++) {
    const r = spec.granularity === 'task' ? 0 : k;
    const idx = Array.from({ length: n }, (_, i) => r * n + i);
    let c = phiRow(
      idx.map((j) => v.w[j]),
      spec.phi,
    );
    if (spec.affine && v.a && v.b) c = c.map((x, i) => x * v.a![idx[i]] + v.b![idx[i]]);
    out.push(c);
  }
  return out;
}

/**
 * The merged adapter Σᵢ cₖᵢ·sᵢ·BᵢAᵢ per module k as a LoRA to write (compose.writeLora); `base` is the config the
 * result starts from (a source adapter's, for target_modules and base_model_name_or_path).
 */
export function mergedLora(
  pool: RecycledPool,
  c: readonly number[][],
  base: Record<string, unknown>,
): compose.LoraToWrite {
  const modules: compose.LoraToWrite['modules'] = new Map();
  const ranks = pool.modules.map(totalRank);
  const r = Math.max(...ranks);
  const pattern: Record<string, number> = {};
  pool.modules.forEach((m, k) => {
    const R = ranks[k];
    const a = new Float64Array(R * m.in);
    const b = new Float64Array(m.out * R);
    for (let i = 0; i < pool.names.length; i++) {
      const f = factorsOf(m, i);
      const lo = m.offsets[i];
      const scale = c[k][i] * m.scaling[i];
      for (let q = 0; q < f.a.length; q++) a[lo * m.in + q] = scale * f.a[q];
      for (let o = 0; o < m.out; o++) for (let j = 0; j < f.r; j++) b[o * R + lo + j] = f.b[o * f.r + j];
    }
    modules.set(m.path, { a, b, r: R, out: m.out, in: m.in, embedding: false });
    if (R !== r) pattern[m.path] = R;
  });
  const { rank_pattern: _rp, alpha_pattern: _ap, use_rslora: _rs, ...rest } = base;
  const config = {
    ...rest,
    peft_type: 'LORA',
    r,
    lora_alpha: r,
    use_rslora: false,
    rank_pattern: pattern,
    alpha_pattern: pattern,
  };
  return { config, modules };
}
