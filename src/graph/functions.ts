/**
 * Composite functions built from primitives; autodiff differentiates them through their parts.
 * They become primitives only when a fused ONNX op is measurably faster (then with a rule of their own).
 */
import { LorakitError } from '../errors.ts';
import type { Tensor } from './graph.ts';

/** log softmax along `axis`, as x − (m + log Σ exp(x − m)) with m the detached max (WebGPU has no LogSoftmax kernel).
 * */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  const m = x.max(axis, true).detach();
  const shifted = x.sub(m);
  return shifted.sub(shifted.exp().sum(axis, true).log());
}

/** LayerNorm over the last dims from `axis` (the fused ONNX op; its Mean/InvStdDev outputs feed the gradient). */
export function layerNorm(x: Tensor, gamma: Tensor, beta: Tensor | null, eps = 1e-5, axis = -1): Tensor {
  const ins = beta ? [x, gamma, beta] : [x, gamma];
  return x.graph.opMulti('LayerNormalization', ins, { axis, epsilon: eps }, 3)[0];
}

/**
 * RMSNorm: x / sqrt(mean(x²) + eps) · w (Llama); one SimplifiedLayerNormalization node in float32, without its
 * inverse-RMS output (the backward recomputes it: ops/nn.ts says why).
 */
export function rmsNorm(x: Tensor, w: Tensor, eps = 1e-6): Tensor {
  if (x.dtype === 'f32' && w.dtype === 'f32') {
    return x.graph.op('SimplifiedLayerNormalization', [x, w], { axis: -1, epsilon: eps, stash_type: 1 });
  }
  return x.mul(x.mul(x).mean(-1, true).add(eps).sqrt().reciprocal()).mul(w);
}

/**
 * GELU, exact (erf) or the tanh approximation GPT-2 calls gelu_new. In float32 the tanh form is one FastGelu node
 * (bench/RESULTS.md); ORT's kernel works at float32 precision, so float64 (gradient checks) keeps the composite.
 */
export function gelu(x: Tensor, approximate: 'none' | 'tanh' = 'none'): Tensor {
  if (approximate === 'tanh' && x.dtype === 'f32') return x.graph.op('FastGelu', [x]);
  if (approximate === 'tanh') {
    const inner = x.add(x.mul(x).mul(x).mul(0.044715)).mul(Math.sqrt(2 / Math.PI));
    return x.mul(0.5).mul(inner.tanh().add(1));
  }
  const u = x.mul(Math.SQRT1_2);
  return x.mul(0.5).mul((x.dtype === 'f64' ? erfComposite(u) : u.erf()).add(1));
}

/** Numerical Recipes' erfc Chebyshev fit (§6.2, erfcc), coefficients of the exponent's polynomial in t. */
const ERFC_FIT = [
  -1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398, 1.48851587, -0.82215223,
  0.17087277,
];

/**
 * erf from elementwise ops, for float64 graphs: ORT has no f64 Erf kernel. erfc(z) = t·exp(−z² + P(t)),
 * t = 1/(1 + z/2), z = |x| (fractional error below 1.2e-7), and erf(x) = ±(1 − erfc(|x|)). A smooth fit rather than
 * a round-trip through an f32 Erf, so central differences of an f64 graph see no rounding steps and agree with its
 * autodiff gradient (which differentiates these same ops).
 */
export function erfComposite(x: Tensor): Tensor {
  const z = x.abs();
  const t = z.mul(0.5).add(1).reciprocal();
  let poly = t.mul(ERFC_FIT[ERFC_FIT.length - 1]);
  for (let k = ERFC_FIT.length - 2; k >= 1; k--) poly = t.mul(poly.add(ERFC_FIT[k]));
  const erfc = t.mul(z.mul(z).neg().add(poly.add(ERFC_FIT[0])).exp()); // erfc(|x|)
  return x.less(0).where(erfc.sub(1), erfc.neg().add(1));
}

/** SiLU (swish): x·σ(x); in float32 one QuickGelu node (α = 1), whose kernel works at float32 precision. */
export function silu(x: Tensor): Tensor {
  if (x.dtype === 'f32') return x.graph.op('QuickGelu', [x], { alpha: 1 });
  return x.mul(x.sigmoid());
}

/**
 * Mean cross-entropy of `logits` [N, C] against integer `labels` [N]; labels equal to `ignoreIndex` do not count.
 * Returns the scalar mean over counted labels (0 when none count) — PyTorch's F.cross_entropy semantics.
 */
export function crossEntropy(logits: Tensor, labels: Tensor, ignoreIndex = -100): Tensor {
  if (logits.rank !== 2 || labels.rank !== 1) {
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `crossEntropy: expects logits [N, C] and labels [N], got ${logits.toString()} and ${labels.toString()}`,
    );
  }
  const { nll, valid } = tokenNll(logits, labels, ignoreIndex);
  const count = valid.sum().maximum(1);
  return nll.sum().div(count);
}

/**
 * Per-token negative log-likelihood [N] (0 at ignored labels) and the valid mask [N] as logits' dtype. One fused
 * SoftmaxCrossEntropyLoss node: with a 50k vocabulary, the composite (logSoftmax, gather, and their gradients) made
 * about 20 passes over [N, C] and a constant-folded [N, C] zeros tensor (bench/RESULTS.md).
 */
export function tokenNll(logits: Tensor, labels: Tensor, ignoreIndex = -100): { nll: Tensor; valid: Tensor } {
  const [nll] = logits.graph.opMulti(
    'SoftmaxCrossEntropyLoss',
    [logits, labels],
    { reduction: 'none', ignore_index: ignoreIndex },
    2,
  );
  const valid = labels.equal(labels.lift(ignoreIndex)).not().cast(logits.dtype);
  return { nll, valid };
}

/**
 * Pseudo-random uniforms in [0, 1) shaped like `x`, from a scalar f32 `seed` fed per step (an integer value): a 32-bit
 * integer hash of (element index, seed) — Mueller's two-round xorshift-multiply, in int64 so no product overflows —
 * whose top 24 bits make the uniform. No RNG op: ORT's random ops have no WebGPU kernel and keep hidden state, which
 * would break exact resume; integer arithmetic is the same on every backend. (The sin hash this replaces had a
 * 1/256 grid and lost all precision past ~10⁶ elements in float32.)
 */
export function hashUniformLike(x: Tensor, seed: Tensor): Tensor {
  const g = x.graph;
  const n = g.op('ReduceProd', [x.shapeOf(), g.constInts([0])], { keepdims: 0 }); // i64 scalar
  const idx = g.range(g.constInts([0], []), n, g.constInts([1], []), 'i64').reshape(x.shapeOf(), x.shape); // [..x]
  const int = (v: number) => g.constInts([v], []);
  const low32 = (t: Tensor) => t.sub(t.div(int(2 ** 32)).mul(int(2 ** 32))); // t mod 2³² for t ≥ 0
  const mix = (t: Tensor) => low32(t.xor(t.div(int(65536))).mul(int(0x45d9f3b))); // ((h >> 16) ^ h)·K mod 2³²
  const s = low32(seed.floor().cast('i64').mul(int(2654435761))); // the seed's own stream offset
  const h0 = low32(idx.add(s));
  const h1 = mix(mix(h0));
  const h = h1.xor(h1.div(int(65536))); // (h >> 16) ^ h, in [0, 2³²)
  return h
    .div(int(256))
    .cast('f32')
    .mul(2 ** -24)
    .cast(x.dtype); // top 24 bits: exact in float32
}

/** Inverted dropout with a hash mask: x·keep/(1−p), keep = u ≥ p. */
export function dropout(x: Tensor, p: number, seed: Tensor): Tensor {
  if (p <= 0) return x;
  const keep = hashUniformLike(x, seed).less(x.lift(p)).not().cast(x.dtype).detach();
  return x.mul(keep).mul(1 / (1 - p));
}

/**
 * M⁻¹ of a symmetric positive definite M [n, n] (static n), in the graph: ONNX has no inverse op, and update rules
 * need r×r inverses of matrices the same step computes (AltLoRA's (AAᵀ + δI)⁻¹ of the A it has just updated). n sweeps
 * of Goodnight's sweep operator, which turn M into −M⁻¹: sweeping pivot k with d = s_kk divides row and column k by d,
 * sets the pivot to −1/d and the rest to s_ij − s_ik·s_kj/d. Every pivot of an SPD matrix stays positive (they are
 * ratios of leading minors), so no pivoting is needed. One sweep, as a rank-one update: s − (c − e)(w − eᵀ)/d − 2·e·eᵀ,
 * c = column k, w = row k, e = the k-th unit vector (check the four cases i, j = k or not). About 9n nodes.
 */
export function sweepInverse(m: Tensor, n: number): Tensor {
  const g = m.graph;
  let s = m;
  for (let k = 0; k < n; k++) {
    const unit = new Array<number>(n).fill(0);
    unit[k] = 1;
    const e = g.constant(unit, m.dtype, [n, 1]);
    const pivot = new Array<number>(n * n).fill(0);
    pivot[k * n + k] = 2;
    const at = g.constInts([k]);
    const c = s.gather(at, 1); // column k [n, 1]
    const w = s.gather(at, 0); // row k [1, n]
    const d = c.gather(at, 0); // s_kk [1, 1]
    s = s.sub(c.sub(e).matmul(w.sub(e.T)).div(d)).sub(g.constant(pivot, m.dtype, [n, n]));
  }
  return s.neg();
}
