/**
 * SLoRA — the "StructuredLoRA" of "NLoRA: Nyström-Initiated Low-Rank Adaptation for Large Language Models" (Guo, Wu &
 * Chang, 2025, arXiv:2502.14482); official code TracyGuo2001/NLoRA, a modified PEFT (not in PEFT's releases). A LoRA
 * variant picked by `init_lora_weights: "s_lora"` — and by "n_lora", whose Nyström values nlora.ts then writes — that
 * puts an r×r matrix N between the factors (spec methods-a §5, methods-b §5):
 *   ΔW = s·B·N·A,  y = base(x) + s·B(N(A(dropout x))),  N [r, r] saved as `lora_N.weight` (role core),
 * as the official layer computes lora_B(lora_N(lora_A(dropout(x))))·scaling with lora_N an nn.Linear(r, r), so N
 * acts as u ↦ N·u. Init as the official slora_init: A and N Kaiming-uniform (a = √5, so U(±1/√in) and U(±1/√r)), B = 0,
 * hence ΔW = 0. The folder is the official fork's layout: a LORA config with init_lora_weights "s_lora" / "n_lora" and
 * the extra key lora_N.weight, which only the fork (and lorakit) reads; the plain-LoRA conversion of a base-replacing
 * NLoRA init folds N into B. Parameters per layer: r·(in + out) + r².
 * Linear and GPT-2 Conv1D layers: the fork creates no usable N for embeddings (its embedding branch assigns a
 * Parameter's `.weight`) and no conv variant.
 * Not here: the Nyström initialisation (nlora.ts), training N alone (inttune.ts), LoRA's own parts (lora.ts).
 */
import { kaimingUniformBound, matmul } from '../../linalg/index.ts';
import { fromMatrix, matrixDims } from '../layers.ts';
import type { LayerInfo, MethodVariant } from '../method.ts';
import { type LoraConfig, type LoraSettings, lora } from './lora.ts';

/** The official fork's key of the r×r core. */
export const N_KEY = 'lora_N.weight';

/** The init_lora_weights values that give a layer the core N (SLoRA's own, and NLoRA's, which needs it). */
export const usesCore = (c: LoraConfig) => c.init_lora_weights === 's_lora' || c.init_lora_weights === 'n_lora';

/** B·N [out, r] (float32 products, as the forward multiplies them). */
export function bTimesN(p: Record<string, Float32Array>, out: number, r: number): Float32Array {
  return matmul(p['lora_B.weight'], p[N_KEY], out, r, r);
}

/** ΔW = s·B·N·A in the stored layout of the layer's weight. */
function sloraDelta(layer: LayerInfo, s: LoraSettings, p: Record<string, Float32Array>): Float32Array {
  const [o, i] = matrixDims(layer);
  const bna = matmul(bTimesN(p, o, s.r), p['lora_A.weight'], o, s.r, i); // [out, in]
  for (let k = 0; k < bna.length; k++) bna[k] *= s.scaling;
  return fromMatrix(layer, bna);
}

export const slora: MethodVariant<LoraConfig, LoraSettings> = {
  name: 'slora',
  paper: 'NLoRA: Nyström-Initiated Low-Rank Adaptation for Large Language Models (arXiv:2502.14482), StructuredLoRA',
  of: ['lora'],
  applies: usesCore,
  selectedBy: { init_lora_weights: 's_lora' },
  inPeft: false, // the official fork's value; released PEFT refuses it
  claims: { field: 'init_lora_weights', describe: '"s_lora" (SLoRA: an r×r core N, Kaiming-initialised)' },
  layers: ['linear', 'conv1d'],

  params: (_layer, s) => [{ name: N_KEY, shape: [s.r, s.r], trainable: true, role: 'core' }],

  // LoRA's init already gave A its Kaiming draw and B zeros (init_lora_weights "s_lora" takes LoRA's default branch);
  // N is nn.Linear(r, r)'s weight, fan-in r
  async init({ settings: s, rng }) {
    const b = kaimingUniformBound(s.r);
    return { values: { [N_KEY]: rng.uniformArray(s.r * s.r, -b, b) } };
  },

  forward(ctx) {
    const { settings: s, p } = ctx;
    const x = ctx.dropout(ctx.x, s.dropout); // [.., in]
    const h = x.matmul(p['lora_A.weight'].T).matmul(p[N_KEY].T); // [.., r]: N·(A·x̃)
    const t = h.matmul(p['lora_B.weight'].T); // [.., out]
    return ctx.y.add(t.mul(s.scaling));
  },

  trainableCount: (_c, layers) => layers.reduce((n, { settings: s }) => n + s.r * s.r, 0),

  delta: ({ layer, settings, p }) => sloraDelta(layer, settings, p),

  // s·B·N·A − s·B0·N0·A0 = s·[B·N | −B0·N0]·[A; A0]: LoRA's rank-2r conversion of the factors (A, B·N)
  convertToBase(c, layers) {
    const folded = layers.map((l) => {
      const [o] = matrixDims(l.layer);
      return {
        ...l,
        p: { 'lora_A.weight': l.p['lora_A.weight'], 'lora_B.weight': bTimesN(l.p, o, l.settings.r) },
        initial: { 'lora_A.weight': l.initial['lora_A.weight'], 'lora_B.weight': bTimesN(l.initial, o, l.settings.r) },
      };
    });
    return lora.convertToBase!(c, folded);
  },
};
