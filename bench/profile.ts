/**
 * Where a step's time goes: compiles one train/eval workload with ORT profiling on (and the optimised model dumped),
 * runs a few steps, and sums per-node kernel times (each node's fastest run) by op type and by graph part (forward,
 * backward,
 * optimizer, from the node-name scopes `grad/` and `optim/`). Prints the tables and writes
 * bench/results/profile-<kind>-<model>-<targets>.json.
 * node --import tsx bench/profile.ts [train|eval] [gpt2|smollm] [attn|all] [--batch N --seq N --runs N --compile JSON
 * --top N --quantize none|int8|q4 --quantize-head --inputs auto|float|int8|int8-rows --codes auto|u8|s8
 * --vocab auto|blocks|residual|float]
 */
import { mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel, quantizeModel } from '../src/models/index.ts';
import type { Int8Codes, QuantInputs, VocabGrad } from '../src/nn/index.ts';
import { compile, type CompileOptions } from '../src/runtime/index.ts';
import { RESULTS, table } from './common.ts';
import { trainerStep } from './lorakit.ts';
import { Rng } from '../src/linalg/index.ts';
import { StepEngine, engineOptions, type TrainBatch } from '../src/train/index.ts';
import { ensureModel, type ModelName } from './models.ts';
import type { Targets, Workload } from './workloads.ts';

interface TraceEvent {
  cat: string;
  name: string;
  dur: number;
  ts: number;
  args?: {
    op_name?: string;
    provider?: string;
    input_type_shape?: Record<string, number[]>[];
    output_type_shape?: Record<string, number[]>[];
  };
}

/** Sums `dur` (µs) of the events by `key`, largest first. */
function sumBy(events: TraceEvent[], key: (e: TraceEvent) => string): { key: string; ms: number; count: number }[] {
  const m = new Map<string, { ms: number; count: number }>();
  for (const e of events) {
    const k = key(e);
    const v = m.get(k) ?? { ms: 0, count: 0 };
    v.ms += e.dur / 1000;
    v.count++;
    m.set(k, v);
  }
  return [...m.entries()].map(([k, v]) => ({ key: k, ...v })).sort((a, b) => b.ms - a.ms);
}

/** The graph part a node belongs to, from the scope prefixes autodiff and addTrainStep give node names. */
function partOf(nodeName: string): string {
  if (nodeName.startsWith('grad/')) return 'backward';
  if (nodeName.startsWith('optim/')) return 'optimizer';
  return 'forward';
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const flag = (name: string, d: string) => {
    const i = args.indexOf(name);
    return i >= 0 ? args.splice(i, 2)[1] : d;
  };
  const batch = Number(flag('--batch', '4')),
    seq = Number(flag('--seq', '256')),
    top = Number(flag('--top', '15')),
    runsArg = Number(flag('--runs', '3'));
  const extra = JSON.parse(flag('--compile', '{}')) as CompileOptions;
  const quantize = flag('--quantize', 'none') as 'none' | 'int8' | 'q4';
  const head = process.argv.includes('--quantize-head');
  const [kind = 'train', model = 'gpt2', targets = 'attn'] = args as ['train' | 'eval', ModelName, Targets];
  const w: Workload = {
    id: `${kind} ${model} ${targets}`,
    kind,
    model,
    targets,
    rank: 16,
    batch,
    seq,
    newTokens: 0,
    warmup: 1,
    steps: 1,
    threads: availableParallelism(),
  };
  const dir = join(tmpdir(), `lorakit-profile-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  const inputs = flag('--inputs', 'auto') as 'auto' | QuantInputs;
  const codes = flag('--codes', 'auto') as 'auto' | Int8Codes;
  const vocab = flag('--vocab', 'auto') as 'auto' | VocabGrad;
  const lm = await quantizeModel(await loadModel(await ensureModel(model)), quantize, { head, inputs, codes, vocab });
  const { task, options } = await trainerStep(w, lm);
  const ortOptions = {
    enableProfiling: true,
    profileFilePrefix: join(dir, 'trace'),
    optimizedModelFilePath: join(dir, 'optimized.onnx'),
    ...extra.ortOptions,
  };
  task.compileOptions = { threads: w.threads, ...extra, worker: false, ortOptions, retain: false };
  const rng = new Rng(0);
  const first = (task.batches({ epoch: 0, index: 0 }) as Iterable<TrainBatch>)[Symbol.iterator]().next().value!;
  const init = await task.initialParams(rng);
  // train: the Trainer's step engine; eval: the task graph's forward and loss alone
  const engine = kind === 'train' ? await StepEngine.create(task, engineOptions(options), init) : null;
  const evalSession = engine
    ? null
    : await (async () => {
        const tg = task.build();
        tg.graph.output('loss', tg.loss);
        return compile(tg.graph, task.compileOptions);
      })();
  const feeds = { ...first.feeds, ...task.stepInputs?.({ step: 1, micro: 0, rng, params: new Map() }) };
  const run = engine
    ? () => engine.run([{ feeds, weight: first.weight ?? 1 }], 1e-4)
    : () => evalSession!.run({ ...feeds, ...init });
  const wall: number[] = [];
  for (let i = 0; i < 1 + runsArg; i++) {
    const t = performance.now();
    await run();
    wall.push(performance.now() - t);
  }
  await (engine ? engine.dispose() : evalSession!.dispose()); // ends profiling: ORT writes the trace
  await lm.close();
  const trace = readdirSync(dir).find((f) => f.startsWith('trace'))!;
  const events = (JSON.parse(readFileSync(join(dir, trace), 'utf8')) as TraceEvent[]).filter(
    (e) => e.cat === 'Node' && e.name.endsWith('_kernel_time'),
  );
  // Per node, the fastest of the profiled runs: a kernel preempted by another process on a shared machine shows up as
  // one slow sample, so the minimum is the robust estimate of its own cost.
  const runs = (JSON.parse(readFileSync(join(dir, trace), 'utf8')) as TraceEvent[]).filter(
    (e) => e.cat === 'Session' && e.name === 'model_run',
  );
  const last = runs[runs.length - 1];
  // A Scan's body nodes run once per slice: each counts with the sum of its runs in the step, and the Scan's own
  // event, which spans them, is left out of the sums.
  const best = new Map<string, TraceEvent>();
  for (const r of runs.slice(1)) {
    const inRun = new Map<string, TraceEvent>();
    for (const e of events) {
      if (e.ts < r.ts || e.ts > r.ts + r.dur || e.args?.op_name === 'Scan') continue;
      const prev = inRun.get(e.name);
      inRun.set(e.name, prev ? { ...prev, dur: prev.dur + e.dur } : e);
    }
    for (const [name, e] of inRun) if (!best.has(name) || e.dur < best.get(name)!.dur) best.set(name, e);
  }
  const step = [...best.values()];
  const total = step.reduce((a, e) => a + e.dur / 1000, 0);
  const nodeName = (e: TraceEvent) => e.name.slice(0, -'_kernel_time'.length);
  const byOp = sumBy(step, (e) => e.args?.op_name ?? '?');
  const byPart = sumBy(step, (e) => partOf(nodeName(e)));
  const byPartOp = sumBy(step, (e) => `${partOf(nodeName(e))} ${e.args?.op_name}`);
  const byNode = sumBy(step, nodeName);
  // The same node in every layer (and ORT's numbered fusions) under one name: which kind of node costs the most.
  const byPattern = sumBy(step, (e) => `${e.args?.op_name} ${nodeName(e).replace(/\d+/g, '#')}`);
  // The same op on the same shapes, wherever it is: which elementwise passes over which tensors cost the most.
  const shapes = (xs?: Record<string, number[]>[]) =>
    (xs ?? []).map((x) => Object.entries(x).map(([t, d]) => `${t}[${d.join(',')}]`)[0]).join(' ');
  const byShape = sumBy(
    step,
    (e) => `${e.args?.op_name} ${shapes(e.args?.input_type_shape)} -> ${shapes(e.args?.output_type_shape)}`,
  );
  const pct = (ms: number) => `${((100 * ms) / total).toFixed(1)}%`;
  console.log(
    `${w.id}, batch ${batch}, seq ${seq}: wall ${wall.map((x) => x.toFixed(0)).join(' / ')} ms; sum of per-node ` +
      `minima over ${runs.length - 1} runs ${total.toFixed(0)} ms (${step.length} nodes; last model_run ` +
      `${(last.dur / 1000).toFixed(0)} ms)`,
  );
  console.log(`optimised model: ${statSync(join(dir, 'optimized.onnx')).size} bytes in ${dir}\n`);
  console.log(
    table([['part', 'ms', 'share', 'nodes'], ...byPart.map((r) => [r.key, r.ms, pct(r.ms), String(r.count)])]),
  );
  console.log(
    `\n${table([['op', 'ms', 'share', 'nodes'], ...byOp.slice(0, top).map((r) => [r.key, r.ms, pct(r.ms), String(r.count)])])}`,
  );
  console.log(
    `\n${table([['part / op', 'ms', 'share', 'nodes'], ...byPartOp.slice(0, top).map((r) => [r.key, r.ms, pct(r.ms), String(r.count)])])}`,
  );
  console.log(`\n${table([['node', 'ms', 'share'], ...byNode.slice(0, top).map((r) => [r.key, r.ms, pct(r.ms)])])}`);
  console.log(
    `\n${table([['op node (layers merged)', 'ms', 'share', 'nodes'], ...byPattern.slice(0, 2 * top).map((r) => [r.key, r.ms, pct(r.ms), String(r.count)])])}`,
  );
  console.log(
    `\n${table([['op on shapes (inputs -> outputs)', 'ms', 'share', 'nodes'], ...byShape.slice(0, 2 * top).map((r) => [r.key, r.ms, pct(r.ms), String(r.count)])])}`,
  );
  mkdirSync(RESULTS, { recursive: true });
  const suffix = (quantize === 'none' ? '' : `-${quantize}`) + (head ? '-head' : '');
  const out = join(RESULTS, `profile-${kind}-${model}-${targets}${suffix}.json`);
  writeFileSync(
    out,
    `${JSON.stringify(
      {
        workload: w.id,
        batch,
        seq,
        compile: extra,
        date: new Date().toISOString(),
        wallMs: wall,
        kernelMs: total,
        byPart,
        byOp,
        byPartOp: byPartOp.slice(0, 40),
        byNode: byNode.slice(0, 100),
        byPattern: byPattern.slice(0, 100),
        byShape: byShape.slice(0, 100),
      },
      null,
      2,
    )}\n`,
  );
  console.log(`\nwrote ${out}`);
  if (!process.env.KEEP_TRACE) rmSync(join(dir, trace));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
