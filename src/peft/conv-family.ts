/**
 * The convolutional LoRA/DoRA family of "LoRA-based methods on Unet for transfer learning in Subarachnoid Hematoma
 * Segmentation" (Minoccheri, Hodgman et al., arXiv:2508.01772; ../shared/spec/methods-a-parametrizations.md §2):
 * three factorisations of a Conv2d's ΔW [out, in, kh, kw], each alone (LoRA-C, convLoRA, CP-LoRA) or under DoRA's
 * magnitude/direction split (DoRA-C, convDoRA, CP-DoRA). One builder makes the six registered methods, so the six
 * files in methods/ only name their factorisation and paper.
 *
 * - `matrix` (LoRA-C): ΔW = s·reshape(B·A), B [out, r], A [r, in·kh·kw] — the layer-level matrix; run as a k×k conv
 *   in → r (base stride, padding and dilation) then a 1×1 conv r → out.
 * - `loralib` (convLoRA, loralib's ConvLoRA): ΔW = s·reshape(B·A, [out, in, kh, kw]) row-major, A [r·kh, in·kw],
 *   B [out·kh, r·kh] (loralib's square k generalised: kh on the rows, kw on the columns); run as one conv with ΔW.
 * - `cp` (CP-LoRA): ΔW[o, i, h, w] = s·Σ_j U_o[o, j]·U_i[i, j]·U_h[h, j]·U_w[w, j]; run as Lebedev et al.'s CP conv
 *   pipeline: 1×1 in → R, depthwise kh×1, depthwise 1×kw (the base geometry split by axis), 1×1 R → out.
 * DoRA: W' = m ⊙ (W0 + ΔW)/‖W0 + ΔW‖ per output channel, the norm detached (DoRA §4.3), computed as PEFT's
 * `_DoraConvNdLayer`: y + (m/n − 1)⊙(y − b) + (m/n)⊙ΔConv(x̃).
 * The paper's own constructions (CP-LoRA and the three DoRA forms) are UNVERIFIED: only its abstract was readable.
 * Not here: PEFT's conv LoRA (methods/lora.ts), the platform (model.ts, registry.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../errors.ts';
import type { Tensor } from '../graph/index.ts';
import { kaimingUniformBound, type Rng, rowNorms } from '../linalg/index.ts';
import { matrixDims } from './layers.ts';
import type { AdapterMethod, ForwardContext, LayerInfo, LayerValues, ParamSpec } from './method.ts';

/** The three factorisations of a conv ΔW. */
export type ConvFactorisation = 'matrix' | 'loralib' | 'cp';

export const convFamilyFields = {
  /** Rank (CP rank R for the CP methods). */
  r: z.number().int().positive().default(8),
  /** Scaling numerator: s = lora_alpha / r. */
  lora_alpha: z.number().positive().default(8),
  /** Dropout on the adapter input, during training. */
  lora_dropout: z.number().min(0).max(1).default(0),
  /** true: the output-side factor is zero (ΔW = 0); false: every factor random (tests). */
  init_weights: z.boolean().default(true),
};

/** A conv-family config with defaults filled (targeting fields included). */
export type ConvFamilyConfig = { [K in keyof typeof convFamilyFields]: z.output<(typeof convFamilyFields)[K]> } & {
  target_modules: string | string[] | null;
  [k: string]: unknown;
};

/** Per-layer settings. */
export interface ConvFamilySettings {
  r: number;
  /** s = lora_alpha / r. */
  scaling: number;
  dropout: number;
}

/** What one of the six methods is. */
export interface ConvFamilySpec {
  name: string;
  paper: string;
  factorisation: ConvFactorisation;
  dora: boolean;
}

const MAG = 'lora_magnitude_vector';

/** Sizes of a conv layer: out, in, kh, kw. */
function dims(layer: LayerInfo): [number, number, number, number] {
  const [kh, kw] = layer.conv!.kernel;
  return [layer.outFeatures, layer.inFeatures, kh, kw];
}

/** The factors of a factorisation on one layer (names, shapes, roles). */
function factorSpecs(f: ConvFactorisation, layer: LayerInfo, r: number): ParamSpec[] {
  const [o, i, kh, kw] = dims(layer);
  const spec = (name: string, shape: number[], role: ParamSpec['role']): ParamSpec => ({
    name,
    shape,
    trainable: true,
    role,
  });
  if (f === 'matrix') return [spec('lora_A.weight', [r, i, kh, kw], 'a'), spec('lora_B.weight', [o, r, 1, 1], 'b')];
  if (f === 'loralib') return [spec('lora_A', [r * kh, i * kw], 'a'), spec('lora_B', [o * kh, r * kh], 'b')];
  return [
    spec('cp_in', [i, r], 'a'),
    spec('cp_h', [kh, r], 'other'),
    spec('cp_w', [kw, r], 'other'),
    spec('cp_out', [o, r], 'b'),
  ];
}

/** Trainable parameters per the papers' formulas (written apart from factorSpecs; the contract compares them). */
function factorCount(f: ConvFactorisation, layer: LayerInfo, r: number): number {
  const [o, i, kh, kw] = dims(layer);
  if (f === 'matrix') return r * i * kh * kw + o * r; // LoRA-C: r·(in·k² + out)
  if (f === 'loralib') return r * kh * (i * kw + o * kh); // loralib: r·k·(in·k + out·k)
  return r * (o + i + kh + kw); // CP: R·(out + in + kh + kw)
}

/**
 * ΔW [out, in·kh·kw] (the stored [out, in, kh, kw] read row-major) from host factors, float64 sums. Exported for
 * the methods' merges only; tests form ΔW with their own loops.
 */
export function convFamilyDelta(
  f: ConvFactorisation,
  layer: LayerInfo,
  s: ConvFamilySettings,
  p: Record<string, Float32Array>,
) {
  const [o, i, kh, kw] = dims(layer);
  const { r, scaling } = s;
  const cols = i * kh * kw;
  const out = new Float32Array(o * cols);
  if (f === 'matrix' || f === 'loralib') {
    // matrix: [out, r]·[r, in·kh·kw]; loralib: [out·kh, r·kh]·[r·kh, in·kw], whose memory is the same [out, in·kh·kw]
    const [A, B] = f === 'matrix' ? [p['lora_A.weight'], p['lora_B.weight']] : [p.lora_A, p.lora_B];
    const [m, k, n] = f === 'matrix' ? [o, r, cols] : [o * kh, r * kh, i * kw];
    for (let a = 0; a < m; a++)
      for (let b = 0; b < n; b++) {
        let acc = 0;
        for (let j = 0; j < k; j++) acc += B[a * k + j] * A[j * n + b];
        out[a * n + b] = scaling * acc;
      }
    return out;
  }
  const { cp_out: U, cp_in: I, cp_h: H, cp_w: W } = p;
  for (let a = 0; a < o; a++)
    for (let c = 0; c < i; c++)
      for (let h = 0; h < kh; h++)
        for (let w = 0; w < kw; w++) {
          let acc = 0;
          for (let j = 0; j < r; j++) acc += U[a * r + j] * I[c * r + j] * H[h * r + j] * W[w * r + j];
          out[((a * i + c) * kh + h) * kw + w] = scaling * acc;
        }
  return out;
}

/** ΔW [out, in·kh·kw] as graph ops (DoRA's norm and convLoRA's forward need it). */
function deltaGraph(f: ConvFactorisation, layer: LayerInfo, s: ConvFamilySettings, p: Record<string, Tensor>): Tensor {
  const [o, i, kh, kw] = dims(layer);
  const { r } = s;
  if (f === 'matrix') {
    return p['lora_B.weight']
      .reshape([o, r])
      .matmul(p['lora_A.weight'].reshape([r, i * kh * kw]))
      .mul(s.scaling);
  }
  if (f === 'loralib')
    return p.lora_B
      .matmul(p.lora_A)
      .reshape([o, i * kh * kw])
      .mul(s.scaling); // row-major view
  // Khatri-Rao product of U_i, U_h, U_w: [R, in, kh, kw], then U_o·(that as [R, in·kh·kw])
  const kr = p.cp_in.T.reshape([r, i, 1, 1])
    .mul(p.cp_h.T.reshape([r, 1, kh, 1]))
    .mul(p.cp_w.T.reshape([r, 1, 1, kw]));
  return p.cp_out.matmul(kr.reshape([r, i * kh * kw])).mul(s.scaling);
}

/** s·ΔConv(x̃) [N, out, H', W']: the adapter's output on the dropped input, in the factorisation's efficient form. */
function deltaConv(f: ConvFactorisation, ctx: ForwardContext<ConvFamilyConfig, ConvFamilySettings>): Tensor {
  const { layer, settings: s, p } = ctx;
  const c = layer.conv!;
  const [o, i, kh, kw] = dims(layer);
  const x = ctx.dropout(ctx.x, s.dropout); // [N, in, H, W]
  const geo = { stride: c.stride, padding: c.padding, dilation: c.dilation };
  if (f === 'matrix') {
    return x.conv2d(p['lora_A.weight'], null, geo).conv2d(p['lora_B.weight'], null).mul(s.scaling); // in → r → out
  }
  if (f === 'loralib') return x.conv2d(deltaGraph(f, layer, s, p).reshape([o, i, kh, kw]), null, geo);
  const R = s.r;
  const t = x
    .conv2d(p.cp_in.T.reshape([R, i, 1, 1]), null) // [N, R, H, W]
    .conv2d(p.cp_h.T.reshape([R, 1, kh, 1]), null, {
      stride: [c.stride[0], 1],
      padding: [c.padding[0], 0],
      dilation: [c.dilation[0], 1],
      groups: R,
    }) // [N, R, H', W]
    .conv2d(p.cp_w.T.reshape([R, 1, 1, kw]), null, {
      stride: [1, c.stride[1]],
      padding: [0, c.padding[1]],
      dilation: [1, c.dilation[1]],
      groups: R,
    }); // [N, R, H', W']
  return t.conv2d(p.cp_out.reshape([o, R, 1, 1]), null).mul(s.scaling); // [N, out, H', W']
}

/** Initial factors: the output-side factor zero (ΔW = 0) unless init_weights is false. */
function initFactors(
  f: ConvFactorisation,
  layer: LayerInfo,
  s: ConvFamilySettings,
  c: ConvFamilyConfig,
  rng: Rng,
): Record<string, Float32Array> {
  const [o, i, kh, kw] = dims(layer);
  const { r } = s;
  const zeroOrRandom = (n: number) => (c.init_weights ? new Float32Array(n) : rng.normalArray(n, 0.1));
  if (f === 'matrix') {
    const b = kaimingUniformBound(i * kh * kw); // PEFT's conv A: fan-in in·kh·kw
    return { 'lora_A.weight': rng.uniformArray(r * i * kh * kw, -b, b), 'lora_B.weight': zeroOrRandom(o * r) };
  }
  if (f === 'loralib') {
    const b = kaimingUniformBound(i * kw); // loralib: kaiming_uniform_(lora_A, a=√5) on [r·k, in·k]
    return { lora_A: rng.uniformArray(r * kh * i * kw, -b, b), lora_B: zeroOrRandom(o * kh * r * kh) };
  }
  // lorakit's choice (the paper's is unknown): U_i Kaiming as a 1×1 conv's weight, U_h and U_w ~ N(0, 1/k), so the
  // composed k×k kernel has about LoRA-C's A scale; U_o = 0 plays LoRA's B = 0
  const b = kaimingUniformBound(i);
  return {
    cp_in: rng.uniformArray(i * r, -b, b),
    cp_h: rng.normalArray(kh * r, 1 / Math.sqrt(kh)),
    cp_w: rng.normalArray(kw * r, 1 / Math.sqrt(kw)),
    cp_out: zeroOrRandom(o * r),
  };
}

/** (W0 + ΔW) [out, in·kh·kw] on the host. */
function adapted(w0: Float32Array, delta: Float32Array): Float32Array {
  return Float32Array.from(w0, (w, k) => w + delta[k]);
}

/** One of the six conv-family methods. */
export function convFamilyMethod(spec: ConvFamilySpec): AdapterMethod<ConvFamilyConfig, ConvFamilySettings> {
  const f = spec.factorisation;
  const method: AdapterMethod<ConvFamilyConfig, ConvFamilySettings> = {
    name: spec.name,
    peftType: null,
    paper: spec.paper,
    layers: ['conv2d'],
    fields: convFamilyFields,

    settings: (c) => ({ r: c.r, scaling: c.lora_alpha / c.r, dropout: c.lora_dropout }),

    // the factorisations are of the whole kernel [out, in, kh, kw]: a grouped kernel would need one per group
    checkLayer(layer, _s, _c, source) {
      if ((layer.conv?.groups ?? 1) > 1) {
        throw new LorakitError(
          'LK_UNSUPPORTED',
          `${source}: ${spec.name} cannot wrap ${layer.path}, a Conv2d with groups ${layer.conv!.groups}; it ` +
            'factorises a whole [out, in, kh, kw] kernel (groups 1). Exclude the layer or use lora there',
          { layer: layer.path },
        );
      }
    },

    params(layer, s) {
      const specs = factorSpecs(f, layer, s.r);
      if (spec.dora) specs.push({ name: MAG, shape: [layer.outFeatures], trainable: true, role: 'magnitude' });
      return specs;
    },

    async init({ layer, settings: s, config: c, rng, readBase }) {
      const values = initFactors(f, layer, s, c, rng);
      if (spec.dora) {
        // m = ‖W0 + ΔW‖ per output channel, so that W' = W0 + ΔW at init
        const [o, cols] = matrixDims(layer);
        values[MAG] = rowNorms(adapted(await readBase(), convFamilyDelta(f, layer, s, values)), o, cols);
      }
      return { values };
    },

    forward(ctx) {
      const t = deltaConv(f, ctx); // [N, out, H', W']
      if (!spec.dora) return ctx.y.add(t);
      const { layer, settings: s, p } = ctx;
      const [o, cols] = matrixDims(layer);
      const V = ctx.weight.reshape([o, cols]).add(deltaGraph(f, layer, s, p)); // W0 + ΔW [out, in·kh·kw]
      const n = V.mul(V).sum(1).sqrt().detach(); // [out], no gradient (DoRA §4.3)
      const scale = p[MAG].div(n).reshape([1, o, 1, 1]); // per channel of [N, out, H', W']
      const bias = ctx.bias?.reshape([1, o, 1, 1]) ?? null;
      // as dora.ts: the base output without bias, recomputed on the dropped input when dropout is on
      const c = layer.conv!;
      const base =
        s.dropout > 0
          ? ctx.dropout(ctx.x, s.dropout).conv2d(ctx.weight, null, {
              stride: c.stride,
              padding: c.padding,
              dilation: c.dilation,
            })
          : bias
            ? ctx.y.sub(bias)
            : ctx.y;
      return ctx.y.add(scale.sub(1).mul(base)).add(scale.mul(t));
    },

    trainableCount: (_c, layers) =>
      layers.reduce(
        (n, { layer, settings: s }) => n + factorCount(f, layer, s.r) + (spec.dora ? layer.outFeatures : 0),
        0,
      ),
  };
  if (!spec.dora) {
    method.delta = (v: LayerValues<ConvFamilyConfig, ConvFamilySettings>) =>
      convFamilyDelta(f, v.layer, v.settings, v.p);
  } else {
    // W' = (m/n)·(W0 + ΔW) per output channel, n = ‖W0 + ΔW‖ (no ΔW without W0: merge, not delta)
    method.merge = (v, w0) => {
      const [o, cols] = matrixDims(v.layer);
      const w = adapted(w0, convFamilyDelta(f, v.layer, v.settings, v.p));
      const n = rowNorms(w, o, cols);
      for (let a = 0; a < o; a++) {
        const k = v.p[MAG][a] / n[a];
        for (let b = 0; b < cols; b++) w[a * cols + b] *= k;
      }
      return w;
    };
  }
  return method;
}
