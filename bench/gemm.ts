/**
 * The GEMMs of a LoRA step, measured alone: every frozen Linear/Conv1D shape of a model (the LM head included), each
 * as the step runs it forward (x·Wᵀ, [M, in] → [M, out]) and backward to its input (dY·W, [M, out] → [M, in]), with
 * M = batch·seq rows. Through ORT here (one Gemm node per product, constant weight, one row of the output fetched so
 * that only the product is timed); through torch.mm into preallocated outputs in interop/bench_peft.py. Weighted by
 * how often a step runs each shape, the two give each engine's GEMM throughput on the step's own mix, and with it
 * the fastest a step could be if nothing but its GEMMs took time (bench/report.ts, "ceiling").
 */
import { parseModelConfig } from '../src/io/index.ts';
import { Graph } from '../src/graph/index.ts';
import { familyOf } from '../src/models/index.ts';
import { compile, type CompileOptions } from '../src/runtime/index.ts';
import { CONFIGS, type ModelName } from './models.ts';
import type { Workload } from './workloads.ts';

/** One Linear shape of a model and how many modules have it. */
export interface GemmShape {
  inFeatures: number;
  outFeatures: number;
  count: number;
}

/** The model's distinct Linear/Conv1D shapes (the LM head included), with their counts. */
export function gemmShapes(model: ModelName): GemmShape[] {
  const c = parseModelConfig(CONFIGS[model], model);
  const byShape = new Map<string, GemmShape>();
  for (const m of familyOf(c).modules(c)) {
    if (m.kind !== 'linear' && m.kind !== 'conv1d') continue;
    const key = `${m.inFeatures}x${m.outFeatures}`;
    const s = byShape.get(key) ?? { inFeatures: m.inFeatures, outFeatures: m.outFeatures, count: 0 };
    s.count++;
    byShape.set(key, s);
  }
  return [...byShape.values()];
}

/** Per shape: the best forward and backward time (ms) over the runs. */
export interface GemmTimes extends GemmShape {
  forwardMs: number;
  backwardMs: number;
}

/** Σ over shapes of count · (forward + backward): the step's frozen-GEMM time and FLOPs at these speeds. */
export function gemmMix(rows: GemmTimes[], m: number): { msPerStep: number; gflops: number } {
  let ms = 0,
    flops = 0;
  for (const r of rows) {
    ms += r.count * (r.forwardMs + r.backwardMs);
    flops += r.count * 2 * 2 * m * r.inFeatures * r.outFeatures;
  }
  return { msPerStep: ms, gflops: flops / ms / 1e6 };
}

async function best(w: Workload, k: number, n: number, transB: 0 | 1, opts: CompileOptions): Promise<number> {
  const m = w.batch * w.seq;
  const g = new Graph('gemm');
  const weight = g.initializer('w', 'f32', [n, k], new Float32Array(n * k).fill(0.01)); // W [out, in]
  const x = g.input('x', 'f32', [m, transB ? k : n]);
  g.output('y', x.gemm(weight, null, { transB }).slice([0, 0], [1, 8])); // only the product is timed
  const s = await compile(g, { ...opts, worker: false, retain: false }); // released at dispose, before the next shape
  const feed = { x: new Float32Array(m * (transB ? k : n)).fill(0.5) };
  for (let i = 0; i < w.warmup; i++) await s.run(feed);
  let t = Infinity;
  for (let i = 0; i < w.steps; i++) {
    const t0 = performance.now();
    await s.run(feed);
    t = Math.min(t, performance.now() - t0);
  }
  await s.dispose();
  return t;
}

/** The lorakit side of a `gemm` workload. */
export async function runGemm(w: Workload, opts: CompileOptions) {
  const rows: GemmTimes[] = [];
  for (const s of w.shapes ?? []) {
    rows.push({
      ...s,
      forwardMs: await best(w, s.inFeatures, s.outFeatures, 1, opts),
      backwardMs: await best(w, s.inFeatures, s.outFeatures, 0, opts),
    });
  }
  return { shapes: rows, ...gemmMix(rows, w.batch * w.seq) };
}
