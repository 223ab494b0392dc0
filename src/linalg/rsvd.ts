// Randomized truncated SVD with torch.svd_lowrank's algorithm (Halko, Martinsson & Tropp 2009, Algorithms 4.4 and
// 5.1), step for step, so PEFT's `init_lora_weights="pissa_niter_K"` (svd_lowrank(W, q=r, niter=K)) and LoRA-GA's
// svd_lowrank(G, q=min(4r, m, n), niter=4) can be reproduced up to the random draw (pass torch's draw as `omega`
// to reproduce them up to rounding and column signs). Not a general sparse or batched solver.
//
// In the tall orientation (Aₜ = A if m ≥ n, else Aᵀ; [M, N], M ≥ N), as torch:
//   Ω ~ N(0, 1) [N, q];  Q = qr(Aₜ·Ω)
//   niter times:  Q = qr(Aₜᵀ·Q);  Q = qr(Aₜ·Q)
//   B = Qᵀ·Aₜ [q, N] = (Aₜᵀ·Q)ᵀ;  B = Û·S·Vᵀ;  U = Q·Û
// and for m < n the roles of U and V swap back. The 2·niter + 2 products with A are the whole cost
// (O(m·n·q) each); they run as two small ONNX Runtime graphs (A·X and Aᵀ·Y), compiled once per (m, n, q, dtype)
// and cached by the runtime, so every weight of a given shape reuses them. A is a graph input fed on each run,
// not an initializer: measured on 4096×4096, q = 16 (2 cores), an initializer costs 230–300 ms to compile per
// weight (64 MB serialised and hashed) to save ≤ 8 ms per product; as an input the session is shared by every
// weight of that shape. The thin QRs ([M, q], [N, q]) and the SVD of B run on the host in float64.
import type { CompileOptions, Session } from '../runtime/index.ts';
import { Graph } from '../graph/index.ts';
import { LorakitError } from '../errors.ts';
import { type RealArray, checkMatrix, mm, mmTA } from './dense.ts';
import { Rng } from './random.ts';
import { qr } from './qr.ts';
import { type Svd, svd } from './svd.ts';

/** Options of `svdLowrank` (torch.svd_lowrank's q and niter, with its defaults). */
export interface SvdLowrankOptions {
  /** Number of columns of the sketch and of the result, 1 ≤ q ≤ min(m, n) (torch default 6). */
  q?: number;
  /** Power (subspace) iterations, each followed by QR re-orthonormalisation (torch default 2). */
  niter?: number;
  /** Source of the Gaussian sketch Ω [min(m, n), q] (default: new Rng(0)). */
  rng?: Rng;
  /** The sketch itself, [min(m, n), q], instead of a draw (e.g. torch's randn draw, to reproduce its result). */
  omega?: RealArray;
  /**
   * Where the products with A run: 'ort' (ONNX Runtime graphs), 'host' (float64 loops; for tiny matrices and
   * tests), or 'auto' (default): host when m·n ≤ 65,536, where compiling costs more than the products.
   */
  engine?: 'auto' | 'ort' | 'host';
  /** Precision of the ORT products (default: f32 for a Float32Array A, f64 for a Float64Array). */
  dtype?: 'f32' | 'f64';
  /**
   * Session options for the ORT products (threads, …). `worker` defaults to false: a worker would copy A on each of
   * the 2·niter + 2 runs. The two sessions stay in the runtime's compile cache for the next weight of that shape.
   */
  compile?: CompileOptions;
}

/** The products with Aₜ (tall orientation) that the iteration needs, returned in float64. */
interface Products {
  /** Aₜ·X: [N, q] → [M, q]. */
  mul(x: Float64Array): Promise<Float64Array>;
  /** Aₜᵀ·Y: [M, q] → [N, q]. */
  mulT(y: Float64Array): Promise<Float64Array>;
}

const HOST_MAX = 65_536;

/**
 * Randomized truncated SVD of an [m, n] matrix as torch.svd_lowrank(A, q, niter): U [m, q], S [q] descending,
 * V [n, q] (V, not Vᵀ), with A ≈ U·diag(S)·Vᵀ. Triplet j is accurate to about (σ_(q+1)/σ_j)^(2·niter+1)
 * (Halko et al. §10.4), so oversample (q > r) or iterate where the spectrum decays slowly.
 */
export async function svdLowrank(a: RealArray, m: number, n: number, opts: SvdLowrankOptions = {}): Promise<Svd> {
  checkMatrix('svdLowrank', 'A', a, m, n);
  const tall = m >= n;
  const [M, N] = tall ? [m, n] : [n, m];
  const q = opts.q ?? 6;
  const niter = opts.niter ?? 2;
  if (!Number.isInteger(q) || q < 1 || q > N)
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `svdLowrank: q must be an integer in 1..${N} (min(m, n)) for a [${m}, ${n}] matrix, got ${q}`,
    );
  if (!Number.isInteger(niter) || niter < 0)
    throw new LorakitError('LK_INVALID_ARGUMENT', `svdLowrank: niter must be an integer ≥ 0, got ${niter}`);
  let omega: Float64Array;
  if (opts.omega) {
    checkMatrix('svdLowrank', 'omega', opts.omega, N, q);
    omega = Float64Array.from(opts.omega);
  } else omega = Float64Array.from((opts.rng ?? new Rng(0)).normalArray(N * q));

  const engine = opts.engine ?? 'auto';
  const onHost = engine === 'host' || (engine === 'auto' && m * n <= HOST_MAX);
  const prod = onHost ? hostProducts(a, m, n, tall) : await ortProducts(a, m, n, q, tall, opts);

  let basis = qr(await prod.mul(omega), M, q).q; // [M, q]
  for (let it = 0; it < niter; it++) {
    basis = qr(await prod.mulT(basis), N, q).q; // [N, q]
    basis = qr(await prod.mul(basis), M, q).q; // [M, q]
  }
  const bt = await prod.mulT(basis); // Bᵀ = Aₜᵀ·Q [N, q]
  const small = svd(bt, N, q); // Bᵀ = V·S·Ûᵀ: u [N, q] is B's V, v [q, q] is B's Û
  const u = mm(basis, small.v, M, q, q); // U = Q·Û [M, q]
  return tall ? { u, s: small.s, v: small.u, k: q } : { u: small.u, s: small.s, v: u, k: q };
}

/** Products on the host in float64, reading A in place (A·X or Aᵀ·X by orientation). */
function hostProducts(a: RealArray, m: number, n: number, tall: boolean): Products {
  const ax = async (x: Float64Array) => mm(a, x, m, n, x.length / n); // A·X [m, q]
  const aty = async (y: Float64Array) => mmTA(a, y, m, n, y.length / m); // Aᵀ·Y [n, q]
  return tall ? { mul: ax, mulT: aty } : { mul: aty, mulT: ax };
}

/**
 * Products as two ORT graphs over the same input A [m, n]: `ax` = A·X ([n, q] → [m, q]) and `aty` = Aᵀ·Y
 * (Gemm with transA, [m, q] → [n, q]). Which one is Aₜ·X depends on the orientation.
 */
async function ortProducts(
  a: RealArray,
  m: number,
  n: number,
  q: number,
  tall: boolean,
  opts: SvdLowrankOptions,
): Promise<Products> {
  const dtype = opts.dtype ?? (a instanceof Float64Array ? 'f64' : 'f32');
  const Arr = dtype === 'f64' ? Float64Array : Float32Array;
  const feedA = a instanceof Arr ? a : Arr.from(a);
  // No spinning: ORT's idle threads would otherwise busy-wait through the host QR that follows every run, taking
  // the cores it needs (4096², q 16, niter 4 on 2 busy cores: best of 6, 471 ms spinning vs 294 ms not).
  const spin = { extra: { session: { intra_op: { allow_spinning: '0' } } } };
  const co: CompileOptions = { worker: false, ...opts.compile, ortOptions: { ...spin, ...opts.compile?.ortOptions } };
  const g1 = new Graph(`rsvd_ax_${m}x${n}x${q}_${dtype}`);
  g1.output('y', g1.input('a', dtype, [m, n]).matmul(g1.input('x', dtype, [n, q]))); // [m, n]·[n, q]
  const g2 = new Graph(`rsvd_aty_${m}x${n}x${q}_${dtype}`);
  g2.output('y', g2.input('a', dtype, [m, n]).gemm(g2.input('x', dtype, [m, q]), null, { transA: 1 })); // [n, q]
  // Imported here so that importing linalg/ (as `lorakit info` does, through peft/) never loads onnxruntime-node.
  const { compile } = await import('../runtime/index.ts');
  const [ax, aty] = await Promise.all([compile(g1, co), compile(g2, co)]);
  const run = async (s: Session, x: Float64Array) =>
    Float64Array.from((await s.run({ a: feedA, x: dtype === 'f64' ? x : Float32Array.from(x) })).y.data as RealArray);
  const mulAx = (x: Float64Array) => run(ax, x);
  const mulAty = (y: Float64Array) => run(aty, y);
  return tall ? { mul: mulAx, mulT: mulAty } : { mul: mulAty, mulT: mulAx };
}
