// Fused primitives that ONNX Runtime runs as one kernel on CPU and WebGPU (spec §3.3), each with a
// gradient written in standard ops because ORT's *Grad kernels are absent from inference builds.
import { LorakitError } from '../../errors.ts';
import { normAxis } from '../shape.ts';
import type { OpDef, NnOp } from './types.ts';
import { requireFloat } from './util.ts';
import type { Tensor } from '../graph.ts';
import { memoTable } from '../memo.ts';

/** −sin of each RoPE table a graph's backward uses (one per table and graph). */
const NEGATED_SIN = memoTable<Tensor, Tensor>('RotaryEmbedding: −sin of a table');

/** Shape rule of a float op along one axis (attribute `axis`, default −1) whose output is shaped like its input. */
const alongAxis =
  (op: string): OpDef['infer'] =>
  ([x], at) => {
    requireFloat(x!, op);
    normAxis((at.axis as number) ?? -1, x!.rank, op);
    return [{ dtype: x!.dtype, shape: [...x!.shape] }];
  };

export const nnOps: Record<NnOp, OpDef> = {
  Softmax: {
    infer: alongAxis('Softmax'),
    // dX = Y ⊙ (dY − Σ_axis dY ⊙ Y)
    vjp: (n, [dy]) => {
      const y = n.outputs[0];
      const axis = (n.attrs.axis as number) ?? -1;
      return [y.mul(dy!.sub(dy!.mul(y).sum(axis, true)))];
    },
  },
  // log softmax in one kernel along the last axis, where ORT's fast path is: SoftmaxCrossEntropyLoss's expansion
  // takes it on axis 1 of [N, C, 1], 3.4× slower on a [255, 49152] chunk (25 against 7.5 ms, ORT 1.30, 2 threads).
  LogSoftmax: {
    infer: alongAxis('LogSoftmax'),
    // dX = dY − exp(Y) ⊙ Σ_axis dY
    vjp: (n, [dy]) => {
      const axis = (n.attrs.axis as number) ?? -1;
      return [dy!.sub(n.outputs[0].exp().mul(dy!.sum(axis, true)))];
    },
  },
  LayerNormalization: {
    // outputs: Y, Mean, InvStdDev (the last two over axes [axis, rank), kept as size-1 dims)
    infer: (ins, at, nOut) => {
      const [x, gamma, beta] = ins;
      requireFloat(x!, 'LayerNormalization');
      const axis = normAxis((at.axis as number) ?? -1, x!.rank, 'LayerNormalization');
      const tail = x!.shape.slice(axis);
      for (const p of [gamma, beta]) {
        if (p && (p.rank > tail.length || p.shape.some((d, i) => d !== tail[tail.length - p.rank + i] && d !== 1))) {
          throw new LorakitError(
            'LK_SHAPE_MISMATCH',
            `LayerNormalization: scale/bias ${p.toString()} do not fit the normalised dims [${tail}]`,
          );
        }
      }
      const stat = x!.shape.map((d, i) => (i < axis ? d : 1));
      // Mean and InvStdDev use stash_type (default float32) whatever X's type is.
      return [
        { dtype: x!.dtype, shape: [...x!.shape] },
        { dtype: 'f32' as const, shape: stat },
        { dtype: 'f32' as const, shape: stat },
      ].slice(0, nOut);
    },
    // x̂ = (X−μ)·r, g = dY⊙γ: dX = r·(g − mean(g) − x̂·mean(g⊙x̂)); dγ = Σ_rows dY⊙x̂; dβ = Σ_rows dY
    vjp: (n, [dy], need) => {
      if (n.outputs.length < 3)
        throw new LorakitError(
          'LK_NO_GRADIENT',
          'LayerNormalization gradient needs the Mean and InvStdDev outputs; build it with layerNorm()',
        );
      const [x, gamma] = [n.inputs[0]!, n.inputs[1]!];
      const [mu, r] = [n.outputs[1].cast(x.dtype), n.outputs[2].cast(x.dtype)];
      const axis = normAxis((n.attrs.axis as number) ?? -1, x.rank, 'LayerNormalization');
      const normAxes = x.shape.map((_, i) => i).filter((i) => i >= axis);
      const rowAxes = x.shape.map((_, i) => i).filter((i) => i < axis);
      const xhat = x.sub(mu).mul(r);
      const g = dy!.mul(gamma);
      const dx = need[0] ? r.mul(g.sub(g.mean(normAxes, true)).sub(xhat.mul(g.mul(xhat).mean(normAxes, true)))) : null;
      const dgamma = need[1] ? dy!.mul(xhat).sum(rowAxes) : null;
      const dbeta = need[2] ? dy!.sum(rowAxes) : null;
      return [dx, dgamma, dbeta];
    },
  },
  // Per-row loss −log softmax(x)[label] (reduction 'none'; 0 where label = ignore_index) and log softmax(x), in one
  // kernel: the cross-entropy of an LM head without the ~20 passes over [N, C] that the composite's gradient makes.
  SoftmaxCrossEntropyLoss: {
    infer: ([x, labels], at, nOut) => {
      requireFloat(x!, 'SoftmaxCrossEntropyLoss');
      if (at.reduction !== 'none')
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          `SoftmaxCrossEntropyLoss: lorakit uses reduction 'none', got ${JSON.stringify(at.reduction)}`,
        );
      if (x!.rank !== 2 || labels!.rank !== 1 || (labels!.dtype !== 'i64' && labels!.dtype !== 'i32')) {
        throw new LorakitError(
          'LK_SHAPE_MISMATCH',
          `SoftmaxCrossEntropyLoss: expects scores [N, C] and integer labels [N], got ${x!.toString()} and ` +
            `${labels!.toString()}`,
        );
      }
      if (nOut !== 2)
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          'SoftmaxCrossEntropyLoss: declare both outputs (loss, log_prob); the gradient reads log_prob',
        );
      return [
        { dtype: x!.dtype, shape: [x!.shape[0]] },
        { dtype: x!.dtype, shape: [...x!.shape] },
      ];
    },
    // p = exp(log_prob): dX = (p − onehot(label))·dLoss (rows with ignored labels get 0) + dLogProb − p·Σ dLogProb
    vjp: (n, [dl, dlp]) => {
      const labels = n.inputs[1]!;
      const p = n.outputs[1].exp(); // softmax(x) [N, C]
      let dx: Tensor | null = null;
      if (dl) {
        const ii = n.attrs.ignore_index;
        const valid = typeof ii === 'number' ? labels.equal(labels.lift(ii)).not() : null; // [N]
        const f = (valid ? valid.where(dl, 0) : dl).unsqueeze(-1); // [N, 1]
        // [N, 1]: ignored rows point at class 0, with update 0
        const at = (valid ? valid.where(labels, labels.lift(0)) : labels).unsqueeze(-1);
        dx = p.mul(f).scatterElements(at, f.neg(), 1, 'add');
      }
      if (dlp) {
        const t = dlp.sub(p.mul(dlp.sum(-1, true)));
        dx = dx ? dx.add(t) : t;
      }
      return [dx, null];
    },
  },
  // GELU, tanh approximation (GPT-2's gelu_new), in one kernel: 0.5x(1 + tanh(c(x + 0.044715x³))), c = √(2/π). The
  // composite took 9 passes forward and 15 backward over [B, T, 4D] and kept 4 of its intermediates for the backward.
  FastGelu: {
    domain: 'com.microsoft',
    infer: ([x, bias]) => {
      requireFloat(x!, 'FastGelu');
      if (bias) throw new LorakitError('LK_INVALID_ARGUMENT', 'FastGelu: lorakit emits it without the bias input');
      return [{ dtype: x!.dtype, shape: [...x!.shape] }];
    },
    // With 0.5(1 + tanh u) = σ(2u): gelu = x·s, s = σ(z), z = 2c(x + a x³), so d gelu/dx = s + x·s(1 − s)·2c(1 + 3a
    // x²).
    // x·s is recomputed rather than read from the output: keeping the output [B, T, 4D] for the backward would cost
    // more memory (when c_proj has no adapter nothing else keeps it) than the pass it saves.
    vjp: (n, [dy]) => {
      const x = n.inputs[0]!;
      const [c, a] = [Math.sqrt(2 / Math.PI), 0.044715];
      const x2 = x.mul(x);
      const s = x2
        .mul(2 * c * a)
        .add(2 * c)
        .mul(x)
        .sigmoid();
      const dz = x2.mul(6 * c * a).add(2 * c);
      return [dy!.mul(s.add(x.mul(s).mul(s.lift(1).sub(s)).mul(dz)))];
    },
  },
  // x·σ(αx) in one kernel; α = 1 is SiLU (Llama's MLP), whose composite kept σ(x) for the backward as well as x.
  QuickGelu: {
    domain: 'com.microsoft',
    infer: ([x]) => {
      requireFloat(x!, 'QuickGelu');
      return [{ dtype: x!.dtype, shape: [...x!.shape] }];
    },
    // s = σ(αx), y = x·s the forward's output: d(x·s)/dx = s + αx·s(1 − s) = s + α·y(1 − s): 5 passes with α = 1, not
    // 6, and
    // y costs no memory (SwiGLU keeps it for its product's backward)
    vjp: (n, [dy]) => {
      const [x, y] = [n.inputs[0]!, n.outputs[0]];
      const alpha = typeof n.attrs.alpha === 'number' ? n.attrs.alpha : 1;
      const s = (alpha === 1 ? x : x.mul(alpha)).sigmoid();
      const ys = y.mul(s.lift(1).sub(s));
      return [dy!.mul(s.add(alpha === 1 ? ys : ys.mul(alpha)))];
    },
  },
  // Rotary position embedding, rotate_half layout (interleaved = 0): for x [B, H, T, hd], position ids [B, T] (or [1]:
  // the first position of every row) and cos/sin tables [P, hd/2], y = [x₁·c − x₂·s, x₂·c + x₁·s] with c, s the rows
  // at each token's position. The composite took 8 nodes forward and 10 backward per projection.
  RotaryEmbedding: {
    domain: 'com.microsoft',
    infer: ([x, pos, cos, sin], at) => {
      requireFloat(x!, 'RotaryEmbedding');
      if (x!.rank !== 4 || at.interleaved !== 0)
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          'RotaryEmbedding: lorakit emits it on [B, H, T, hd] with interleaved = 0',
        );
      if (pos!.dtype !== 'i64' || cos!.rank !== 2 || sin!.rank !== 2)
        throw new LorakitError(
          'LK_INVALID_ARGUMENT',
          'RotaryEmbedding: i64 position ids and 2-D cos/sin tables expected',
        );
      return [{ dtype: x!.dtype, shape: [...x!.shape] }];
    },
    // A rotation by −angle undoes one by +angle, and a rotation's adjoint is its inverse: dx = the same op with −sin
    // (negated once per table, not once per projection).
    vjp: (n, [dy]) => {
      const [, pos, cos, sin] = n.inputs;
      const negSin = sin!.graph.memo(NEGATED_SIN, sin!, () => sin!.neg());
      return [dy!.graph.op('RotaryEmbedding', [dy!, pos!, cos!, negSin], n.attrs), null, null, null];
    },
  },
  // RMSNorm over the last axis in one kernel (ORT registers it in the default domain): Y = X·r·γ with
  // r = (mean(X²) + ε)^(-1/2). ORT can also output r [..., 1], but the backward recomputes it from X instead: on the
  // WebGPU backend that second output is wrong (onnxruntime-web 1.31: max 1.88 where 0.23 is right) while Y is right,
  // and the recompute costs one extra pass over X per norm, small next to the step's matmuls (bench/RESULTS.md).
  SimplifiedLayerNormalization: {
    infer: ([x, gamma], at, nOut) => {
      requireFloat(x!, 'SimplifiedLayerNormalization');
      const last = x!.shape[x!.rank - 1];
      if ((at.axis ?? -1) !== -1 || gamma!.rank !== 1 || gamma!.shape[0] !== last) {
        throw new LorakitError(
          'LK_SHAPE_MISMATCH',
          `SimplifiedLayerNormalization: lorakit normalises the last axis with a scale of its size; got ` +
            `${x!.toString()} and ${gamma!.toString()}`,
        );
      }
      return [
        { dtype: x!.dtype, shape: [...x!.shape] },
        { dtype: 'f32' as const, shape: [...x!.shape.slice(0, -1), 1] },
      ].slice(0, nOut);
    },
    // r recomputed from X (see above); x̂ = X·r, g = dY⊙γ: dX = r·(g − x̂·mean(g⊙x̂)); dγ = Σ_rows dY⊙x̂ (autodiff
    // sums the broadcast rows)
    vjp: (n, [dy], need) => {
      const [x, gamma] = [n.inputs[0]!, n.inputs[1]!];
      const eps = Number(n.attrs.epsilon ?? 1e-5); // ONNX's default epsilon
      const r = x.mul(x).mean(-1, true).add(eps).sqrt().reciprocal(); // [..., 1]
      const xhat = x.mul(r);
      const g = dy!.mul(gamma);
      return [need[0] ? r.mul(g.sub(xhat.mul(g.mul(xhat).mean(-1, true)))) : null, need[1] ? dy!.mul(xhat) : null];
    },
  },
};
