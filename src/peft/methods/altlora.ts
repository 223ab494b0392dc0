/**
 * AltLoRA and AltLoRA+ — "AltLoRA: Towards Better Gradient Approximation in Low-Rank Adaptation with Alternating
 * Projections" (Yu, Wang, Chen, Xue, 2025, arXiv:2505.12455); code LucasXinYu/AltLoRA (optimizer_new.py `altlora`,
 * `altlora_plus`; logtrainer.py for the phases). No PEFT method: a LoRA variant picked by the training-only field
 * `altlora`, which replaces the optimizer for each adapted layer's A [r, n] and B [m, r] by one coupled rule built
 * into the train step (spec methods-b §7). Forward, merge and the saved folder are plain LoRA's.
 *
 * With B fixed, the A-step whose s·B·ΔA is closest to the full gradient G is the least-squares projection
 * ĝ_A = c·K_B·g_A, K_B = (BᵀB + δI)⁻¹ (so s·B·ĝ_A = P_B·G for c = 1/s²); with A fixed, ĝ_B = c·g_B·K_A,
 * K_A = (AAᵀ + δI)⁻¹. The momentum lives in the factor's own coordinates and is carried into the new basis when
 * the other factor has moved since this factor's last step: T_A = K_B·Bᵀ·B_prev, T_B = A_prev·Aᵀ·K_A (r×r).
 *   A-step: M_A ← β1·T_A·M_A + (1−β1)·ĝ_A;  A ← (A − lr/(1−β1^k_A)·M_A)·(1 − lr·wd);  B_prev ← B
 *   B-step: M_B ← β1·M_B·T_B + (1−β1)·ĝ_B;  B ← (B − lr/(1−β1^k_B)·M_B)·(1 − lr·wd);  A_prev ← A
 * AltLoRA+ adds V ← β2·V + (1−β2)·ĝ² (no bias correction) and steps by (β1·T·M + (1−β1)·ĝ)/(√V + ε).
 *
 * Code vs paper (the code's behaviour is the default, the paper's an option):
 * - c = 1 in the code (grad_scale 'none'); the paper's 1/s² is grad_scale 'inverse_s2' (an lr factor of 1/s²).
 * - The released trainer updates both factors every step (lora_alt = False), A first and then B with the A it has
 *   just updated (Gauss–Seidel); `alternate` gives its alternating schedule (joint for the first steps, then A-only
 *   and B-only phases), or the paper's (phase_length 1, first 'B', joint_steps 0).
 * - AltLoRA+ in the code stores the unaligned momentum β1·M + (1−β1)·ĝ after its step; plus_aligned stores β1·T·M +
 *   (1−β1)·ĝ, the quantity it stepped with.
 * - Not copied: the code steps with the optimizer's initial lr (defaults["lr"]) whatever the scheduler says, and falls
 *   back to K = I when torch.inverse fails; here the run's scheduled lr applies, and δ > 0 keeps every K defined.
 *
 * Graph vs host: all in the step graph. The B-step's K_A is the inverse of a matrix this same step computes, so the
 * r×r inverses are built in the graph (sweepInverse); the phase of a step (which factors move) is a model-level step
 * input the host computes from the step number, so resumed runs continue the same schedule.
 * Not here: the train step (optim/step.ts), the trainer's clipping (raw gradients are clipped before this rule).
 */
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import { sweepInverse, type Tensor } from '../../graph/index.ts';
import type { LayerInfo, LayerUpdateRule, MethodVariant, StepInputSpec, UpdateContext } from '../method.ts';
import { type LoraConfig, type LoraSettings, lora } from './lora.ts';

/** The `alternate` schedule: `joint_steps` steps moving both factors, then phases of one factor each. */
const alternateOptions = z.strictObject({
  /** Optimizer steps per phase (the trainer's alter_freq, 10). */
  phase_length: z.number().int().min(1).default(10),
  /** The factor of the first phase (the trainer's A; B is the paper's safer start, since K_B = I/δ at B = 0). */
  first: z.enum(['A', 'B']).default('A'),
  /** Steps before the first phase that move both factors (9 in the trainer: it switches at its 10th step). */
  joint_steps: z.number().int().min(0).default(9),
});

/** The `altlora` field: AltLoRA's own optimizer settings (lr and weight decay are the run's). */
export const altloraOptions = z.strictObject({
  /** AltLoRA+ (the code's altlora_plus): an element-wise second moment on the projected gradient. */
  plus: z.boolean().default(false),
  /** β1 of the momentum, β2 of AltLoRA+'s second moment (the trainer's 0.9, 0.999). */
  betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([0.9, 0.999]),
  /** AltLoRA+'s ε, added to √V (the trainer's 1e-4). */
  eps: z.number().positive().default(1e-4),
  /** δ: the ridge of (BᵀB + δI)⁻¹ and (AAᵀ + δI)⁻¹ (the trainer's reg, 1e-5). */
  reg: z.number().positive().default(1e-5),
  /** c: 'none' (the code, c = 1) or 'inverse_s2' (the paper, c = 1/s²). */
  grad_scale: z.enum(['none', 'inverse_s2']).default('none'),
  /** null: both factors every step (the released default); an object: the alternating schedule. */
  alternate: alternateOptions.nullable().default(null),
  /** AltLoRA+ only: store the aligned momentum β1·T·M + (1−β1)·ĝ instead of the code's β1·M + (1−β1)·ĝ. */
  plus_aligned: z.boolean().default(false),
});

/** AltLoRA's settings with defaults filled. */
export type AltloraOptions = z.output<typeof altloraOptions>;

/** A LoraConfig that may ask for AltLoRA. */
export type AltloraConfig = LoraConfig & { altlora?: AltloraOptions };

/**
 * Which factors optimizer step `step` (1-based) moves. The trainer's counter: it counts steps and, when the count
 * reaches a multiple of phase_length, switches to the next phase before stepping (first A-only, then B-only, ...).
 */
export function altloraPhase(step: number, alt: AltloraOptions['alternate']): { a: boolean; b: boolean } {
  if (!alt || step <= alt.joint_steps) return { a: true, b: true };
  const phase = Math.floor((step - alt.joint_steps - 1) / alt.phase_length);
  const a = phase % 2 === 0 ? alt.first === 'A' : alt.first === 'B';
  return { a, b: !a };
}

/** The names of the layer's A and B, by role (LoRA names embeddings' tensors differently). */
function factors(layer: LayerInfo, s: LoraSettings, c: AltloraConfig): { a: string; b: string } {
  const specs = lora.params(layer, s, c);
  return { a: specs.find((p) => p.role === 'a')!.name, b: specs.find((p) => p.role === 'b')!.name };
}

const PHASE = 'altlora.phase';

/** The model-level phase input [2]: 1 where A (index 0) and B (index 1) move this step. */
function stepInputs(config: AltloraConfig): StepInputSpec<AltloraConfig>[] {
  const alt = config.altlora!.alternate;
  if (!alt) return []; // joint: both move every step, no input
  return [
    {
      name: PHASE,
      layer: null,
      dtype: 'f32',
      shape: [2],
      train: ({ step }) => {
        const p = altloraPhase(step, alt);
        return Float32Array.of(p.a ? 1 : 0, p.b ? 1 : 0);
      },
      infer: () => new Float32Array(2),
    },
  ];
}

/** State slot names (per layer). */
const SLOT = {
  mA: 'altlora.exp_avg_A',
  mB: 'altlora.exp_avg_B',
  vA: 'altlora.exp_avg_sq_A',
  vB: 'altlora.exp_avg_sq_B',
  prevA: 'altlora.prev_A',
  prevB: 'altlora.prev_B',
  kA: 'altlora.count_A',
  kB: 'altlora.count_B',
} as const;

/** One factor's step: momentum M (shaped like the factor), its carried form, and the projected gradient. */
interface FactorStep {
  p: Tensor;
  /** ĝ, the projected gradient. */
  g: Tensor;
  m: Tensor;
  /** T·M (A) or M·T (B): the old momentum in the new basis. */
  carried: Tensor;
  v: Tensor | null;
  count: Tensor;
}

/** The new factor, momentum and second moment of one factor step (the code's order: step, then weight decay). */
function stepFactor(f: FactorStep, o: AltloraOptions, lr: Tensor, weightDecay: number) {
  const [beta1, beta2] = o.betas;
  const k = f.count.add(1); // [1]
  const stepSize = lr.div(k.lift(1).sub(k.lift(beta1).pow(k))); // lr/(1 − β1^k) [1]
  const aligned = f.carried.mul(beta1).add(f.g.mul(1 - beta1)); // β1·T·M + (1−β1)·ĝ
  let moved: Tensor;
  let m = aligned;
  let v: Tensor | null = null;
  if (f.v) {
    v = f.v.mul(beta2).add(f.g.mul(f.g).mul(1 - beta2));
    moved = f.p.sub(aligned.div(v.sqrt().add(o.eps)).mul(stepSize));
    if (!o.plus_aligned) m = f.m.mul(beta1).add(f.g.mul(1 - beta1)); // the code keeps the unaligned momentum
  } else moved = f.p.sub(aligned.mul(stepSize));
  const p = weightDecay ? moved.sub(moved.mul(lr.mul(weightDecay))) : moved; // p·(1 − lr·wd) after the step
  return { p, m, v, count: k };
}

/** The update rule: an A-step, then a B-step with the updated A (each kept or discarded by the phase). */
const update: LayerUpdateRule<AltloraConfig, LoraSettings> = {
  state(layer, s, c) {
    const { a, b } = factors(layer, s, c);
    const specs = lora.params(layer, s, c);
    const shapeA = specs.find((p) => p.name === a)!.shape;
    const shapeB = specs.find((p) => p.name === b)!.shape;
    const plus = c.altlora!.plus;
    return [
      { name: SLOT.mA, shape: shapeA },
      { name: SLOT.mB, shape: shapeB },
      ...(plus
        ? [
            { name: SLOT.vA, shape: shapeA },
            { name: SLOT.vB, shape: shapeB },
          ]
        : []),
      { name: SLOT.prevA, shape: shapeA },
      { name: SLOT.prevB, shape: shapeB },
      { name: SLOT.kA, shape: [1] },
      { name: SLOT.kB, shape: [1] },
    ];
  },

  apply(ctx: UpdateContext<AltloraConfig, LoraSettings>): { p: Record<string, Tensor>; state: Record<string, Tensor> } {
    const { settings: s, lr, weightDecay, state: st } = ctx;
    const o = ctx.config.altlora!;
    const { r } = s;
    const names = factors(ctx.layer, s, ctx.config);
    const [A, B] = [ctx.p[names.a], ctx.p[names.b]]; // [r, n], [m, r]
    const c = o.grad_scale === 'inverse_s2' ? 1 / (s.scaling * s.scaling) : 1;
    const eye = A.graph.constant(
      Array.from({ length: r * r }, (_, k) => (k % (r + 1) === 0 ? o.reg : 0)),
      'f32',
      [r, r],
    ); // δI
    const phase = ctx.inputs[PHASE]; // [2] or undefined (joint)
    const moves = (i: number) => phase?.gather(A.graph.constInts([i]), 0).greater(0.5); // [1] bool
    const keep = (on: Tensor | undefined, next: Tensor, old: Tensor) => (on ? on.where(next, old) : next);

    // A-step with B fixed: K_B = (BᵀB + δI)⁻¹ [r, r], T_A = K_B·Bᵀ·B_prev [r, r]
    const KB = sweepInverse(B.T.matmul(B).add(eye), r);
    const a = stepFactor(
      {
        p: A,
        g: KB.matmul(ctx.g[names.a]).mul(c), // ĝ_A [r, n]
        m: st[SLOT.mA],
        carried: KB.matmul(B.T.matmul(st[SLOT.prevB])).matmul(st[SLOT.mA]), // T_A·M_A [r, n]
        v: o.plus ? st[SLOT.vA] : null,
        count: st[SLOT.kA],
      },
      o,
      lr,
      weightDecay,
    );
    const onA = moves(0);
    const A1 = keep(onA, a.p, A);

    // B-step with the A just computed: K_A = (A₁A₁ᵀ + δI)⁻¹, T_B = A_prev·A₁ᵀ·K_A
    const KA = sweepInverse(A1.matmul(A1.T).add(eye), r);
    const b = stepFactor(
      {
        p: B,
        g: ctx.g[names.b].matmul(KA).mul(c), // ĝ_B [m, r]
        m: st[SLOT.mB],
        carried: st[SLOT.mB].matmul(st[SLOT.prevA].matmul(A1.T).matmul(KA)), // M_B·T_B [m, r]
        v: o.plus ? st[SLOT.vB] : null,
        count: st[SLOT.kB],
      },
      o,
      lr,
      weightDecay,
    );
    const onB = moves(1);
    const state: Record<string, Tensor> = {
      [SLOT.mA]: keep(onA, a.m, st[SLOT.mA]),
      [SLOT.mB]: keep(onB, b.m, st[SLOT.mB]),
      [SLOT.prevA]: keep(onB, A1, st[SLOT.prevA]),
      [SLOT.prevB]: keep(onA, B, st[SLOT.prevB]),
      [SLOT.kA]: keep(onA, a.count, st[SLOT.kA]),
      [SLOT.kB]: keep(onB, b.count, st[SLOT.kB]),
    };
    if (o.plus) {
      state[SLOT.vA] = keep(onA, a.v!, st[SLOT.vA]);
      state[SLOT.vB] = keep(onB, b.v!, st[SLOT.vB]);
    }
    return { p: { [names.a]: A1, [names.b]: keep(onB, b.p, B) }, state };
  },
};

export const altlora: MethodVariant<AltloraConfig, LoraSettings> = {
  name: 'altlora',
  paper:
    'AltLoRA: Towards Better Gradient Approximation in Low-Rank Adaptation with Alternating Projections (arXiv:2505.12455)',
  of: ['lora'],
  applies: (c) => c.altlora != null,
  selectedBy: { altlora: {} },
  fields: {
    /** AltLoRA's optimizer (absent: plain LoRA with the run's optimizer). Training only: not saved. */
    altlora: altloraOptions.nullable().optional(),
  },
  trainingOnly: ['altlora'],
  // the rule works on the [r, n] and [m, r] matrices; a Conv2d's factors are 4-D
  layers: ['linear', 'conv1d', 'embedding'],

  check(c, source) {
    // The projections assume the plain LoRA product s·B·A and update only A and B; DoRA changes both.
    if (c.use_dora)
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${source}: altlora cannot be combined with use_dora = true (AltLoRA's projections assume the plain LoRA ` +
          'product s·B·A and update only A and B); set one of them',
        { field: 'altlora' },
      );
  },

  stepInputs,
  update,
};
