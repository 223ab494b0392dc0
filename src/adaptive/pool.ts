/**
 * A pool of recycled LoRA adapters as the adaptive mergers see it: for every targeted Linear, the n adapters'
 * factors concatenated along the rank axis (A_cat [R, in], B_cat [out, R], R = Σ rᵢ, adapter i owning rows
 * offsets[i] … offsets[i+1] of A_cat), and each adapter's scaling sᵢ. Then Σᵢ cᵢ·sᵢ·Bᵢ(Aᵢx) is one pair of matmuls
 * with a per-rank scale (the Recycling study's `peft_extension/lorahub/layers.py` parametrisation). Also the study's
 * control pool (random matrices with each factor's std) and LoraHub's element-wise merge of A and B.
 * Not here: the graph (coefficients.ts), reading folders (peft/compose/lora-folder.ts), the methods.
 */
import { LorakitError } from '../errors.ts';
import { Rng, seedFrom } from '../linalg/index.ts';
import type { compose } from '../peft/index.ts';

/** One targeted Linear of the pool. */
export interface PoolModule {
  /** HF module path, e.g. model.layers.0.self_attn.q_proj. */
  path: string;
  in: number;
  out: number;
  /** [n + 1]: adapter i owns rank rows offsets[i] … offsets[i+1] of `a` (columns of `b`). */
  offsets: number[];
  /** A_cat [R, in], row-major. */
  a: Float32Array;
  /** B_cat [out, R], row-major. */
  b: Float32Array;
  /** [n]: each adapter's scaling sᵢ (α/r or α/√r); 0 where the adapter lacks this module. */
  scaling: number[];
}

/** n adapters over a common set of modules. */
export interface RecycledPool {
  /** Adapter names, in coefficient order. */
  names: string[];
  modules: PoolModule[];
}

/** The total rank R of a module (rows of A_cat). */
export const totalRank = (m: PoolModule): number => m.offsets[m.offsets.length - 1];

/**
 * Builds a pool from plain LoRA adapters (compose.readLora). A module that some adapters lack gets a zero block of
 * rank 0 for them (zero padding is exact); embeddings and fan_in_fan_out layers are refused: the merged forward
 * here wraps Linear layers with W stored [out, in].
 */
export function poolFromLoras(names: readonly string[], adapters: readonly compose.LoraAdapter[]): RecycledPool {
  if (names.length !== adapters.length || adapters.length === 0)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `poolFromLoras: expected one name per adapter and at least one adapter, got ${names.length} names and ` +
        `${adapters.length} adapters`,
    );
  const paths = [...new Set(adapters.flatMap((ad) => [...ad.modules.keys()]))].sort();
  const modules: PoolModule[] = [];
  for (const path of paths) {
    const parts = adapters.map((ad) => ad.modules.get(path));
    const first = parts.find((p) => p)!;
    const offsets = [0];
    for (const [i, p] of parts.entries()) {
      if (p && (p.embedding || p.transposed))
        throw new LorakitError(
          'LK_UNSUPPORTED',
          `adapter "${names[i]}" (${adapters[i].dir}): module ${path} is an embedding or fan_in_fan_out layer; ` +
            'adaptive merging wraps Linear layers only',
        );
      if (p && (p.in !== first.in || p.out !== first.out))
        throw new LorakitError(
          'LK_SHAPE_MISMATCH',
          `adapter "${names[i]}": module ${path} is [${p.out}, ${p.in}], adapter "${names[parts.indexOf(first)]}" ` +
            `has [${first.out}, ${first.in}]`,
        );
      offsets.push(offsets[i] + (p ? p.r : 0));
    }
    const R = offsets[parts.length];
    const a = new Float32Array(R * first.in); // [R, in]
    const b = new Float32Array(first.out * R); // [out, R]
    for (const [i, p] of parts.entries()) {
      if (!p) continue;
      a.set(p.a, offsets[i] * first.in);
      for (let o = 0; o < first.out; o++) for (let k = 0; k < p.r; k++) b[o * R + offsets[i] + k] = p.b[o * p.r + k];
    }
    const scaling = parts.map((p) => (p ? p.scaling : 0));
    modules.push({ path, in: first.in, out: first.out, offsets, a, b, scaling });
  }
  return { names: [...names], modules };
}

/** Adapter i's factors of module m: A_i [rᵢ, in] and B_i [out, rᵢ] (copies). */
export function factorsOf(m: PoolModule, i: number): { a: Float32Array; b: Float32Array; r: number } {
  const R = totalRank(m);
  const lo = m.offsets[i];
  const r = m.offsets[i + 1] - lo;
  const a = m.a.slice(lo * m.in, (lo + r) * m.in);
  const b = new Float32Array(m.out * r);
  for (let o = 0; o < m.out; o++) for (let k = 0; k < r; k++) b[o * r + k] = m.b[o * R + lo + k];
  return { a, b, r };
}

/** Population std of a block of values. */
function stdOf(v: ArrayLike<number>): number {
  let s = 0,
    s2 = 0;
  for (let k = 0; k < v.length; k++) {
    s += v[k];
    s2 += v[k] * v[k];
  }
  const mean = s / Math.max(1, v.length);
  return Math.sqrt(Math.max(0, s2 / Math.max(1, v.length) - mean * mean));
}

/**
 * The study's control (`reinit_case`): every Aᵢ and Bᵢ replaced by N(0, σ²) noise with σ that factor's own std, the
 * shapes and scalings unchanged. Deterministic in `seed` (one stream per adapter, module and factor).
 */
export function randomPool(pool: RecycledPool, seed: number): RecycledPool {
  const modules = pool.modules.map((m) => {
    const a = new Float32Array(m.a.length);
    const b = new Float32Array(m.b.length);
    const R = totalRank(m);
    for (let i = 0; i < pool.names.length; i++) {
      const f = factorsOf(m, i);
      if (f.r === 0) continue;
      const ra = new Rng(seedFrom(seed, `${pool.names[i]} ${m.path} A`));
      const rb = new Rng(seedFrom(seed, `${pool.names[i]} ${m.path} B`));
      const sa = stdOf(f.a);
      const sb = stdOf(f.b);
      const lo = m.offsets[i];
      for (let k = 0; k < f.a.length; k++) a[lo * m.in + k] = sa * ra.normal();
      for (let o = 0; o < m.out; o++) for (let k = 0; k < f.r; k++) b[o * R + lo + k] = sb * rb.normal();
    }
    return { ...m, a, b, scaling: [...m.scaling] };
  });
  return { names: pool.names.map((n) => `random(${n})`), modules };
}

/** The pool restricted to adapters `keep` (indices, in the order given). */
export function subPool(pool: RecycledPool, keep: readonly number[]): RecycledPool {
  const modules = pool.modules.map((m) => {
    const parts = keep.map((i) => factorsOf(m, i));
    const offsets = [0];
    for (const p of parts) offsets.push(offsets[offsets.length - 1] + p.r);
    const R = offsets[parts.length];
    const a = new Float32Array(R * m.in);
    const b = new Float32Array(m.out * R);
    for (const [j, p] of parts.entries()) {
      a.set(p.a, offsets[j] * m.in);
      for (let o = 0; o < m.out; o++) for (let k = 0; k < p.r; k++) b[o * R + offsets[j] + k] = p.b[o * p.r + k];
    }
    return { ...m, offsets, a, b, scaling: keep.map((i) => m.scaling[i]) };
  });
  return { names: keep.map((i) => pool.names[i]), modules };
}

/**
 * LoraHub's merge (Huang et al. 2023; the Recycling study's gradient-free baseline): A' = Σ wᵢAᵢ and B' = Σ wᵢBᵢ
 * element-wise, so B'A' = Σᵢⱼ wᵢwⱼBᵢAⱼ has cross terms. Needs equal ranks and scalings per module (LoraHub merges
 * adapters trained with one config); the result is a one-adapter pool with that scaling.
 */
export function lorahubMerge(pool: RecycledPool, w: ArrayLike<number>): RecycledPool {
  if (w.length !== pool.names.length)
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `lorahubMerge: expected ${pool.names.length} weights (one per adapter), got ${w.length}`,
    );
  const modules = pool.modules.map((m) => {
    const parts = pool.names.map((_, i) => factorsOf(m, i));
    const r = parts[0].r;
    parts.forEach((p, i) => {
      if (p.r !== r || m.scaling[i] !== m.scaling[0])
        throw new LorakitError(
          'LK_UNSUPPORTED',
          `lorahubMerge: module ${m.path}: adapter "${pool.names[i]}" has rank ${p.r} and scaling ${m.scaling[i]}, ` +
            `"${pool.names[0]}" has ${r} and ${m.scaling[0]}; LoraHub adds A and B element-wise, so they must agree`,
        );
    });
    const a = new Float32Array(r * m.in);
    const b = new Float32Array(m.out * r);
    for (const [i, p] of parts.entries()) {
      for (let k = 0; k < a.length; k++) a[k] += w[i] * p.a[k];
      for (let k = 0; k < b.length; k++) b[k] += w[i] * p.b[k];
    }
    return { ...m, offsets: [0, r], a, b, scaling: [m.scaling[0]] };
  });
  return { names: ['lorahub'], modules };
}
