/**
 * LoRA-Pro — "LoRA-Pro: Are Low-Rank Adapters Properly Optimized?" (Wang et al., ICLR 2025, arXiv:2407.18242); code
 * mrflogs/LoRA-Pro. No PEFT method: a LoRA variant picked by the training-only field `lora_pro`, which replaces the
 * optimizer for each adapted layer's A [r, n] and B [m, r] by one coupled update rule built into the train step
 * (spec methods-b §6). Forward, merge and the saved folder are plain LoRA's.
 *
 * A LoRA step moves s·B·A like a full fine-tuning step with the "equivalent gradient" g̃ = s(B·ĝ_A + ĝ_B·A). With
 * K_B = (BᵀB + δI)⁻¹, K_A = (AAᵀ + δI)⁻¹ and c = 1/s², the adjusted gradients
 *   ĝ_A = c·K_B·g_A + X·A,   ĝ_B = c·(I − B·K_B·Bᵀ)·g_B·K_A − B·X   (any X [r, r]; the X terms cancel in g̃)
 * make g̃ = P_B·G + G·P_A − P_B·G·P_A, the projection of the full gradient G onto the LoRA tangent space, and
 * X solving (BᵀB)·X + X·(AAᵀ) = −c·K_B·g_A·Aᵀ keeps (ĝ_A, ĝ_B) closest to (g_A, g_B).
 * - mode 'full' (the official "lora-pro-full"): Adam moments on g̃ [m, n]; the Adam direction Û is projected back
 *   (ǧ_A = s·Bᵀ·Û, ǧ_B = s·Û·Aᵀ), adjusted as above, and applied as an SGD step with decoupled weight decay.
 * - mode 'lowrank' (the pre-release "efficient" AdamW): the adjusted raw gradients go through AdamW with moments
 *   shaped like A and B.
 *
 * Graph vs host: everything that depends only on A and B — the eigendecompositions BᵀB = P·diag(λ)·Pᵀ and
 * AAᵀ = Q·diag(μ)·Qᵀ, the inverse spectra and the Sylvester denominators 1/(λᵢ + μⱼ + δ) — is computed on the host in
 * float64 before the step from the current values and fed as per-step inputs; the gradients only exist inside the
 * step graph, so K_B, K_A and X = P·[(Pᵀ·C·Q) ⊙ D]·Qᵀ are assembled there from those inputs (r×r MatMuls).
 * Not here: the train step (optim/step.ts), the trainer's clipping (raw gradients are clipped before this rule).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import type { Tensor } from '../../graph/index.ts';
import { symEig } from '../../linalg/index.ts';
import type { LayerInfo, LayerUpdateRule, MethodVariant, StepInputSpec, UpdateContext } from '../method.ts';
import { type LoraConfig, type LoraSettings, lora } from './lora.ts';

/** The `lora_pro` field: LoRA-Pro's own optimizer settings (lr and weight decay are the run's). */
export const loraProOptions = z.strictObject({
  /** 'full': Adam moments on the [out, in] equivalent gradient (official); 'lowrank': moments shaped like A and B. */
  mode: z.enum(['full', 'lowrank']).default('full'),
  /** Adam's β1, β2 (official 0.9, 0.999). */
  betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([0.9, 0.999]),
  /** Adam's ε, added to √v̂. */
  eps: z.number().positive().default(1e-8),
  /** δ: the ridge of (BᵀB + δI)⁻¹, (AAᵀ + δI)⁻¹ and of the Sylvester denominators (official 1e-8). */
  delta: z.number().positive().default(1e-8),
  /** X: the Sylvester solution (official), the pre-release's "symmetry" closed form, or zero. */
  x_mode: z.enum(['sylvester', 'symmetry', 'zero']).default('sylvester'),
});

/** LoRA-Pro's settings with defaults filled. */
export type LoraProOptions = z.output<typeof loraProOptions>;

/** A LoraConfig that may ask for LoRA-Pro. */
export type LoraProConfig = LoraConfig & { lora_pro?: LoraProOptions };

/** Machine epsilon of float32: torch.linalg.pinv's default cutoff is r·ε₃₂ times the largest singular value. */
const EPS32 = 2 ** -23;

/** The names of the layer's A and B, by role (LoRA names embeddings' tensors differently). */
function factors(layer: LayerInfo, s: LoraSettings, c: LoraProConfig): { a: string; b: string } {
  const specs = lora.params(layer, s, c);
  return { a: specs.find((p) => p.role === 'a')!.name, b: specs.find((p) => p.role === 'b')!.name };
}

/** What the host feeds one layer for one step (all float32, computed in float64). */
interface Spectra {
  /** Eigenvectors of BᵀB and AAᵀ as columns [r, r]. */
  P: Float32Array;
  Q: Float32Array;
  /** The spectra of K_B = pinv(BᵀB + δI) and K_A = pinv(AAᵀ + δI) in those bases [r]; zero for a zero factor. */
  kB: Float32Array;
  kA: Float32Array;
  /** Sylvester denominators 1/(λᵢ + μⱼ + δ) [r, r]. */
  D: Float32Array;
}

/** BᵀB [r, r] of B [m, r], in float64: the sum of the outer products of B's rows. */
function gramOfColumns(b: Float32Array, m: number, r: number): Float64Array {
  const g = new Float64Array(r * r);
  for (let k = 0; k < m; k++)
    for (let i = 0; i < r; i++) {
      const bi = b[k * r + i];
      for (let j = 0; j < r; j++) g[i * r + j] += bi * b[k * r + j];
    }
  return g;
}

/** AAᵀ [r, r] of A [r, n], in float64: dot products of A's rows. */
function gramOfRows(a: Float32Array, r: number, n: number): Float64Array {
  const g = new Float64Array(r * r);
  for (let i = 0; i < r; i++)
    for (let j = i; j < r; j++) {
      let sum = 0;
      for (let k = 0; k < n; k++) sum += a[i * n + k] * a[j * n + k];
      g[i * r + j] = g[j * r + i] = sum;
    }
  return g;
}

/**
 * The pseudo-inverse spectrum of M + δI for a PSD M with eigenvalues `values`, as torch.linalg.pinv computes it on
 * the official code's float32 r×r matrices (values at or below r·ε₃₂·σ_max dropped). A zero factor gives zeros: at
 * B = 0 the official code's K_B = 1e8·I only ever multiplies exact zeros (g_A = s·Bᵀ·G = 0), so its explicit B = 0
 * branch (spec §6 pitfalls) is this with K_B = 0, and no 1e8 enters the f32 graph.
 */
function pinvSpectrum(values: Float64Array, delta: number, zeroFactor: boolean): Float32Array {
  const r = values.length;
  if (zeroFactor) return new Float32Array(r);
  const sigma = Array.from(values, (v) => Math.max(v, 0) + delta); // round-off may make a PSD eigenvalue < 0
  const cut = r * EPS32 * Math.max(...sigma);
  return Float32Array.from(sigma, (x) => (x > cut ? 1 / x : 0));
}

/** The host part of one layer's step from its current A [r, n] and B [m, r]; `where` names layer and step. */
function spectra(A: Float32Array, B: Float32Array, r: number, delta: number, where: string): Spectra {
  const n = A.length / r,
    m = B.length / r;
  const [BtB, AAt] = [gramOfColumns(B, m, r), gramOfRows(A, r, n)];
  // a factor that overflowed or became NaN in the previous step (whose own loss was still finite)
  if (![...BtB, ...AAt].every(Number.isFinite))
    throw new LorakitError(
      'LK_NON_FINITE',
      `lora_pro: ${where}: lora_A or lora_B holds non-finite or overflowing values, so the previous step diverged; ` +
        'resume from an earlier checkpoint with a lower lr or clipNorm',
    );
  const eb = symEig(BtB, r); // BᵀB = P·diag(λ)·Pᵀ
  const ea = symEig(AAt, r); // AAᵀ = Q·diag(μ)·Qᵀ
  const D = new Float32Array(r * r);
  for (let i = 0; i < r; i++)
    for (let j = 0; j < r; j++) D[i * r + j] = 1 / (Math.max(eb.values[i], 0) + Math.max(ea.values[j], 0) + delta);
  const [zeroA, zeroB] = [A.every((v) => v === 0), B.every((v) => v === 0)];
  return {
    P: Float32Array.from(eb.vectors),
    Q: Float32Array.from(ea.vectors),
    kB: pinvSpectrum(eb.values, delta, zeroB),
    kA: pinvSpectrum(ea.values, delta, zeroA),
    D,
  };
}

const INPUTS = ['P', 'Q', 'kB', 'kA', 'D'] as const;
/** The step-input name of one of the five per-layer host values. */
const inputName = (k: (typeof INPUTS)[number]) => `lora_pro.${k}`;

/**
 * Five step inputs per layer, computed once per step: the five specs of a layer share one decomposition, made at the
 * first of them for a step and reused while the step and the value arrays (the trainer replaces, never mutates, them)
 * stay the same.
 */
function stepInputs(
  config: LoraProConfig,
  layers: readonly { layer: LayerInfo; settings: LoraSettings }[],
): StepInputSpec<LoraProConfig>[] {
  const delta = config.lora_pro!.delta;
  return layers.flatMap(({ layer, settings }) => {
    const { r } = settings;
    const { a, b } = factors(layer, settings, config);
    let last: { step: number; A: Float32Array; B: Float32Array; out: Spectra } | null = null;
    const current = (step: number, values: Record<string, Float32Array> | null): Spectra => {
      if (!values) throw new Error(`internal: lora_pro step inputs of ${layer.path} got no layer values`);
      const [A, B] = [values[a], values[b]];
      if (last?.step !== step || last.A !== A || last.B !== B)
        last = { step, A, B, out: spectra(A, B, r, delta, `${layer.path} before step ${step}`) };
      return last.out;
    };
    return INPUTS.map(
      (k): StepInputSpec<LoraProConfig> => ({
        name: inputName(k),
        layer: layer.path,
        dtype: 'f32',
        shape: k === 'kB' || k === 'kA' ? [r] : [r, r],
        train: (ctx) => current(ctx.step, ctx.values)[k],
        // outside training no graph reads them (forward is LoRA's); zeros keep graphs that declare them valid
        infer: () => new Float32Array(k === 'kB' || k === 'kA' ? r : r * r),
      }),
    );
  });
}

/** One Adam moment update and its bias-corrected direction m̂/(√v̂ + ε) (PyTorch's Adam, step t 1-based). */
function adam(g: Tensor, m: Tensor, v: Tensor, step: Tensor, o: LoraProOptions) {
  const [beta1, beta2] = o.betas;
  const m1 = m.mul(beta1).add(g.mul(1 - beta1));
  const v1 = v.mul(beta2).add(g.mul(g).mul(1 - beta2));
  const bc1 = step.lift(1).sub(step.lift(beta1).pow(step)); // 1 − β1^t
  const bc2 = step.lift(1).sub(step.lift(beta2).pow(step));
  return { dir: m1.div(bc1).div(v1.div(bc2).sqrt().add(o.eps)), m: m1, v: v1 };
}

/** The update rule: full-shape or low-rank moments, then new A and B. */
const update: LayerUpdateRule<LoraProConfig, LoraSettings> = {
  state(layer, s, c) {
    const { r } = s;
    const [m, n] = [layer.outFeatures, layer.inFeatures];
    if (c.lora_pro!.mode === 'full') {
      return [
        { name: 'lora_pro.exp_avg', shape: [m, n] },
        { name: 'lora_pro.exp_avg_sq', shape: [m, n] },
      ];
    }
    return [
      { name: 'lora_pro.exp_avg_A', shape: [r, n] },
      { name: 'lora_pro.exp_avg_sq_A', shape: [r, n] },
      { name: 'lora_pro.exp_avg_B', shape: [m, r] },
      { name: 'lora_pro.exp_avg_sq_B', shape: [m, r] },
    ];
  },

  apply(ctx: UpdateContext<LoraProConfig, LoraSettings>): { p: Record<string, Tensor>; state: Record<string, Tensor> } {
    const { settings: s, inputs, lr, step, weightDecay } = ctx;
    const o = ctx.config.lora_pro!;
    const names = factors(ctx.layer, s, ctx.config);
    const [A, B] = [ctx.p[names.a], ctx.p[names.b]]; // [r, n], [m, r]
    const [gA, gB] = [ctx.g[names.a], ctx.g[names.b]];
    const [P, Q, D] = [inputs[inputName('P')], inputs[inputName('Q')], inputs[inputName('D')]]; // [r, r]
    const KB = P.mul(inputs[inputName('kB')]).matmul(P.T); // P·diag(kB)·Pᵀ = pinv(BᵀB + δI) [r, r]
    const KA = Q.mul(inputs[inputName('kA')]).matmul(Q.T); // [r, r]
    const c = 1 / (s.scaling * s.scaling);
    // Adjusted gradients without X: c·K_B·a and c·(I − B·K_B·Bᵀ)·b·K_A, never forming the [m, m] projector.
    const adjusted = (a: Tensor, b: Tensor) => {
      const bKA = b.matmul(KA); // [m, r]
      return { a: KB.matmul(a).mul(c), b: bKA.sub(B.matmul(KB.matmul(B.T.matmul(bKA)))).mul(c) };
    };
    // X [r, r]: argmin ‖ĝ_A − a‖² + ‖ĝ_B − b‖², from (BᵀB)X + X(AAᵀ) = −c·K_B·a·Aᵀ in the eigenbases; or the
    // pre-release's symmetric closed form −½·c·K_B·Bᵀ·b·AAᵀ.
    const xOf = (a: Tensor, b: Tensor): Tensor | null => {
      if (o.x_mode === 'zero') return null;
      if (o.x_mode === 'symmetry')
        return KB.matmul(B.T.matmul(b))
          .matmul(A.matmul(A.T))
          .mul(-0.5 * c);
      const C = KB.matmul(a.matmul(A.T)).mul(-c); // [r, r]
      return P.matmul(P.T.matmul(C).matmul(Q).mul(D)).matmul(Q.T);
    };
    // The final adjusted pair ĝ_A = c·K_B·a + X·A, ĝ_B = c·(I − P_B)·b·K_A − B·X (spec §6 steps 5–6).
    const withX = (a: Tensor, b: Tensor) => {
      const h = adjusted(a, b);
      const X = xOf(a, b);
      return X ? { a: h.a.add(X.matmul(A)), b: h.b.sub(B.matmul(X)) } : h;
    };
    // Decoupled weight decay then the step: p ← p − lr·wd·p − lr·u (AdamW's order).
    const stepped = (p: Tensor, u: Tensor) => (weightDecay ? p.sub(p.mul(lr.mul(weightDecay))) : p).sub(u.mul(lr));
    if (o.mode === 'full') {
      const [M, V] = [ctx.state['lora_pro.exp_avg'], ctx.state['lora_pro.exp_avg_sq']]; // [m, n]
      const h = adjusted(gA, gB);
      const equiv = B.matmul(h.a).add(h.b.matmul(A)).mul(s.scaling); // g̃ = s(B·h_A + h_B·A) [m, n]
      const { dir: U, m: M1, v: V1 } = adam(equiv, M, V, step, o); // Û [m, n]
      const u = withX(B.T.matmul(U).mul(s.scaling), U.matmul(A.T).mul(s.scaling)); // ǧ_A = s·BᵀÛ, ǧ_B = s·ÛAᵀ
      return {
        p: { [names.a]: stepped(A, u.a), [names.b]: stepped(B, u.b) },
        state: { 'lora_pro.exp_avg': M1, 'lora_pro.exp_avg_sq': V1 },
      };
    }
    const u = withX(gA, gB);
    const ua = adam(u.a, ctx.state['lora_pro.exp_avg_A'], ctx.state['lora_pro.exp_avg_sq_A'], step, o);
    const ub = adam(u.b, ctx.state['lora_pro.exp_avg_B'], ctx.state['lora_pro.exp_avg_sq_B'], step, o);
    return {
      p: { [names.a]: stepped(A, ua.dir), [names.b]: stepped(B, ub.dir) },
      state: {
        'lora_pro.exp_avg_A': ua.m,
        'lora_pro.exp_avg_sq_A': ua.v,
        'lora_pro.exp_avg_B': ub.m,
        'lora_pro.exp_avg_sq_B': ub.v,
      },
    };
  },
};

export const loraPro: MethodVariant<LoraProConfig, LoraSettings> = {
  name: 'lora_pro',
  paper: 'LoRA-Pro: Are Low-Rank Adapters Properly Optimized? (arXiv:2407.18242)',
  of: ['lora'],
  applies: (c) => c.lora_pro != null,
  selectedBy: { lora_pro: {} },
  fields: {
    /** LoRA-Pro's optimizer (absent: plain LoRA with the run's optimizer). Training only: not saved. */
    lora_pro: loraProOptions.nullable().optional(),
  },
  trainingOnly: ['lora_pro'],

  check(c, source) {
    // The rule updates A and B only, and its projection assumes LoRA's forward s·B·A; DoRA changes both.
    if (c.use_dora)
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: lora_pro cannot be combined with use_dora = true (LoRA-Pro's update assumes the plain LoRA ` +
          'product s·B·A and updates only A and B); set one of them',
        { field: 'lora_pro' },
      );
  },

  stepInputs,
  update,
};
