/**
 * Time to first step with a quantized base on a cold cache, phase by phase: each run is a fresh process with an
 * empty LORAKIT_CACHE (the first run ever of a user: it quantizes the weights, writes the quantized-weight cache,
 * and optimises and saves the ORT graph), printing how long each phase took:
 *   start     process start → this file's imports done (Node, tsx, lorakit, onnxruntime-node)
 *   load      loadModel (config, safetensors header; the weights are memory-mapped, read on demand)
 *   quantize  the float32 weights of the quantized Linears read from the model file and quantized in JavaScript
 *             (models/quantize.ts quantizeBase, nn/quantize.ts: forward blocks and the backward's int8 copy)
 *   (read)    of which reading the weights: the reads' summed durations, which may overlap quantizing (not in total)
 *   write     the quantized-weight cache file written (models/quant-cache.ts)
 *   reopen    the cache file read back, so the graphs reference its bytes
 *   build     the task and step graph built (adapter, autodiff, optimizer), serialised, session-cache entry made
 *   ort       ORT session creation: graph optimisation, kernel prepacking and saving the optimized model (cold)
 *   step1     the first training step
 *   total     process start → first step done (what bench:quant reports as "first step", plus the imports)
 * The phases call the same functions quantizeModel (models/quantize.ts) and bench/lorakit.ts call, in their order;
 * `total` is checked against bench:quant's cold number in bench/RESULTS.md.
 *   node --import tsx bench/quant-cold.ts --model gpt2 --targets attn [--mode int8|none] [--repeat 3] [--warm]
 *     [--compile '{"persistOptimized": false}']
 * --repeat N runs N cold processes (each on its own empty cache) and prints every run and the per-phase median;
 * --warm adds one run on the last cold run's cache (the second run a user sees). Batch 4 × 256, r 16, as bench:quant.
 * Not here: throughput and memory (bench:quant), the quantizers themselves (nn/quantize.ts).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { lorakitCacheDir } from '../src/io/cache-root.ts';
import { Rng } from '../src/linalg/index.ts';
import { loadModel, type LoadedModel } from '../src/models/index.ts';
import { quantKernels, quantizeBase, quantizedModules } from '../src/models/quantize.ts';
import {
  cacheLayout,
  cachedSpecs,
  layoutSuffix,
  quantCacheSlot,
  readQuantCache,
  writeQuantCache,
} from '../src/models/quant-cache.ts';
import { shutdownRuntime } from '../src/runtime/index.ts';
import ort from '../src/runtime/ort.ts';
import { StepEngine, engineOptions, type TrainBatch } from '../src/train/index.ts';
import { trainerStep } from './lorakit.ts';
import { ensureModel, type ModelName } from './models.ts';
import { type Targets, type Workload, oneTrainStep } from './workloads.ts';

const PHASES = ['start', 'load', 'quantize', 'read', 'write', 'reopen', 'build', 'ort', 'step1', 'total'] as const;
type Phase = (typeof PHASES)[number];

interface Spec {
  model: ModelName;
  targets: Targets;
  mode: 'int8' | 'q4' | 'none';
  /** Compile options for experiments (Workload.compile: e.g. {"persistOptimized": false}). */
  compile?: Record<string, unknown>;
}

/** One cold (or warm) run in this process: the phases' ms. LORAKIT_CACHE is the caller's empty folder. */
async function child(spec: Spec): Promise<Record<Phase, number>> {
  const ms = Object.fromEntries(PHASES.map((p) => [p, 0])) as Record<Phase, number>;
  ms.start = performance.now(); // performance's origin is the process start
  let t = performance.now();
  const lap = (p: Phase) => {
    const now = performance.now();
    ms[p] = now - t;
    t = now;
  };
  // ORT session creation, timed where lorakit calls it (runtime/ort.ts), so `build` is what remains of the compile
  const create = ort.InferenceSession.create.bind(ort.InferenceSession) as (...a: unknown[]) => Promise<unknown>;
  let ortMs = 0;
  (ort.InferenceSession as { create: unknown }).create = async (...a: unknown[]) => {
    const s = performance.now();
    try {
      return await create(...a);
    } finally {
      ortMs += performance.now() - s;
    }
  };
  const loaded = await loadModel(await ensureModel(spec.model));
  lap('load');
  let model: LoadedModel = loaded;
  if (spec.mode !== 'none') {
    const mode = spec.mode;
    // models/quantize.ts cachedQuantizeBase, phase by phase (a folder of the bench's own models: no GGUF source)
    const modules = loaded.modules();
    const specs = cachedSpecs(quantizedModules(modules));
    const kernels = quantKernels({});
    const layout = cacheLayout(mode, kernels);
    const slot = await quantCacheSlot(
      lorakitCacheDir('quantized'),
      loaded.dir,
      `${mode}${layoutSuffix(layout)}`,
      specs,
    );
    if (!slot) throw new Error('the bench model has no safetensors file to key the cache on');
    let base = await readQuantCache(slot, mode, specs, layout);
    if (!base || !('weights' in base)) {
      let readMs = 0;
      const read = async (n: string) => {
        const s = performance.now();
        const w = await loaded.read(n);
        readMs += performance.now() - s;
        return w;
      };
      const fresh = await quantizeBase(modules, read, mode, undefined, {}, layout.rows);
      lap('quantize');
      ms.read = readMs;
      await writeQuantCache(slot, mode, fresh.weights, layout);
      lap('write');
      base = await readQuantCache(slot, mode, specs, layout);
      if (!base || !('weights' in base)) throw new Error(`cache ${slot.path} unreadable right after writing it`);
    }
    lap('reopen');
    const weights = base.weights;
    model = {
      ...loaded,
      context: (graph, o = {}) => loaded.context(graph, { quantized: weights, quantKernels: kernels, ...o }),
    };
  }
  const w: Workload = {
    ...oneTrainStep(spec.model, spec.targets, availableParallelism()), // threads as bench:quant
    ...(spec.compile ? { compile: spec.compile } : {}),
  };
  const { task, options } = await trainerStep(w, model);
  const first = (task.batches({ epoch: 0, index: 0 }) as Iterable<TrainBatch>)[Symbol.iterator]().next().value!;
  const rng = new Rng(0);
  const engine = await StepEngine.create(task, engineOptions(options), await task.initialParams(rng));
  lap('build');
  ms.build -= ortMs;
  ms.ort = ortMs;
  const feeds = { ...first.feeds, ...task.stepInputs?.({ step: 1, micro: 0, rng, params: engine.params() }) };
  const loss = (await engine.run([{ feeds, weight: first.weight ?? 1 }], 1e-4)).loss;
  lap('step1');
  if (!Number.isFinite(loss)) throw new Error(`first step loss ${loss}`);
  ms.total = performance.now();
  await model.close();
  await shutdownRuntime();
  return ms;
}

/** Runs one child process on cache folder `cache`; returns its phases. */
function runChild(spec: Spec, cache: string): Promise<Record<Phase, number>> {
  return new Promise((resolve, reject) => {
    const args = ['--import', 'tsx', join(import.meta.dirname, 'quant-cold.ts'), '--child', JSON.stringify(spec)];
    const p = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, LORAKIT_CACHE: cache },
    });
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    p.on('close', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('PHASES '));
      if (code !== 0 || !line) reject(new Error(`child exited ${code}:\n${out.slice(-2000)}`));
      else resolve(JSON.parse(line.slice(7)));
    });
  });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') {
    console.log(`PHASES ${JSON.stringify(await child(JSON.parse(argv[1]) as Spec))}`);
    return;
  }
  const opt = (name: string, dflt: string) => {
    const i = argv.indexOf(name);
    return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : dflt;
  };
  const spec: Spec = {
    model: opt('--model', 'gpt2') as ModelName,
    targets: opt('--targets', 'attn') as Targets,
    mode: opt('--mode', 'int8') as Spec['mode'],
    ...(argv.includes('--compile') ? { compile: JSON.parse(opt('--compile', '{}')) } : {}),
  };
  if (!['gpt2', 'smollm'].includes(spec.model) || !['attn', 'all'].includes(spec.targets))
    throw new Error('--model gpt2|smollm, --targets attn|all');
  if (!['int8', 'q4', 'none'].includes(spec.mode)) throw new Error('--mode int8|q4|none');
  const repeat = Math.max(1, Number(opt('--repeat', '1')));
  await ensureModel(spec.model); // made once, outside every timed process
  const scratch = mkdtempSync(join(tmpdir(), 'lorakit-quant-cold-'));
  const rows: { label: string; ms: Record<Phase, number>; load: number }[] = [];
  try {
    let cache = '';
    for (let i = 0; i < repeat; i++) {
      cache = join(scratch, `cold${i}`);
      rows.push({ label: `cold ${i + 1}`, ms: await runChild(spec, cache), load: loadavg()[0] });
    }
    if (argv.includes('--warm')) rows.push({ label: 'warm', ms: await runChild(spec, cache), load: loadavg()[0] });
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  const cold = rows.filter((r) => r.label.startsWith('cold'));
  if (cold.length > 1)
    rows.push({
      label: 'cold median',
      ms: Object.fromEntries(PHASES.map((p) => [p, median(cold.map((r) => r.ms[p]))])) as Record<Phase, number>,
      load: median(cold.map((r) => r.load)),
    });
  const extra = spec.compile ? `, compile ${JSON.stringify(spec.compile)}` : '';
  console.log(
    `${spec.model} ${spec.targets} ${spec.mode}${extra}, batch 4 x 256, r 16; ms per phase (load1 after the run)`,
  );
  const head = PHASES.map((p) => (p === 'read' ? '(read)' : p));
  console.log(['run', ...head, 'load1'].map((s) => s.padStart(11)).join(''));
  for (const r of rows)
    console.log(
      [r.label, ...PHASES.map((p) => r.ms[p].toFixed(0)), r.load.toFixed(1)].map((s) => s.padStart(11)).join(''),
    );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
