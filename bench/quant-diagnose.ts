/**
 * Where a quantized base's loss comes from, on the SmolLM2 chat example (examples/smollm2-chat/run.yaml): the
 * held-out loss of the base before training (the adapter starts as a no-op) under one treatment per process:
 *   none          float32
 *   int8 | q4     the quantized base as a run uses it on this CPU (integer kernels, activations quantized on the fly)
 *   int8-head     int8 with the output head quantized too (quantize_head)
 *   int8-blocks   int8 as 8-bit blocks with int8 inputs per 32-block (quantize_inputs: int8), whatever the CPU
 *   w-row64       float graph with W̃ = per-output-channel int8 in [−64, 64] (the weights' error alone, old int8)
 *   w-row127      the same with codes in [−127, 127]
 * The difference between a `w-` row and the product's row is the activations' share. One eval of the 64 held-out
 * chats is ~1–5 min on a loaded 2-core machine. docs/quantization.md ("Diagnosis") holds the numbers.
 *   node examples/smollm2-chat/make-data.mjs
 *   node --import tsx bench/quant-diagnose.ts <variant>
 */
import { loadModel, quantizeModel, quantizedModules } from '../src/models/index.ts';
import { HfTokenizer } from '../src/io/index.ts';
import { PeftModel, adaptable } from '../src/peft/index.ts';
import { causalLmTask } from '../src/train/causal-lm.ts';
import { loadRunConfig } from '../src/train/config.ts';
import { loadRunData } from '../src/train/run-data.ts';
import { Rng } from '../src/linalg/random.ts';

const variant = process.argv[2] ?? 'none';

/** Per-output-channel symmetric rounding of W [out, in] to codes in [−L, L], as floats. */
function perRow(w: Float32Array, out: number, inF: number, L: number): Float32Array {
  const q = new Float32Array(w.length);
  for (let o = 0; o < out; o++) {
    let m = 0;
    for (let i = 0; i < inF; i++) m = Math.max(m, Math.abs(w[o * inF + i]));
    const s = Math.fround(m / L);
    for (let i = 0; i < inF; i++) q[o * inF + i] = s === 0 ? 0 : Math.round(w[o * inF + i] / s) * s;
  }
  return q;
}

async function main(): Promise<void> {
  const c = loadRunConfig('examples/smollm2-chat/run.yaml');
  let model = await loadModel(c.model);
  if (variant.startsWith('w-row')) {
    const L = Number(variant.slice('w-row'.length));
    const overrides = new Map<string, Float32Array>();
    for (const m of quantizedModules(model.modules()))
      overrides.set(m.weightName, perRow(await model.read(m.weightName), m.outFeatures, m.inFeatures, L));
    const base = model;
    model = {
      ...base,
      context: (g, o = {}) => base.context(g, { ...o, overrides: new Map([...overrides, ...(o.overrides ?? [])]) }),
    };
  } else if (variant === 'int8' || variant === 'q4') model = await quantizeModel(model, variant);
  else if (variant === 'int8-head') model = await quantizeModel(model, 'int8', { head: true });
  else if (variant === 'int8-blocks') model = await quantizeModel(model, 'int8', { inputs: 'int8', codes: 'u8' });
  else if (variant !== 'none')
    throw new Error(`variant: none, int8, int8-head, int8-blocks, q4, w-row64 or w-row127, got ${variant}`);
  const tokenizer = await HfTokenizer.fromDir(model.dir);
  const data = await loadRunData(c.data, tokenizer, () => {});
  const peft = new PeftModel(adaptable(model));
  await peft.addAdapter('default', c.adapter, { seed: 0 });
  const task = causalLmTask({ model, peft, adapter: 'default', train: data.train, eval: data.eval, batchSize: 4 });
  const t0 = Date.now();
  const params = new Map(Object.entries(await task.initialParams(new Rng(0))));
  const ev = await task.evaluate!(params);
  console.log(`${variant}: held-out loss ${ev.loss.toFixed(4)} (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
  await model.close();
}

await main();
