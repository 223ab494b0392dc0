/**
 * What a training step keeps from its forward pass for its backward: the forward tensors (nodes outside the `grad/`
 * and `optim/` scopes) that a `grad/` node reads, summed by producing op, shape and module, largest first. These are
 * the activations the step's memory holds at its peak and the pages its first step touches for the first time.
 *   node --import tsx bench/saved-activations.ts [gpt2|smollm] [attn|all] [--quantize none|int8|q4] [--quantize-head]
 * Batch 4 × 256, r 16, as bench:quant. Builds the graph only (no ORT session).
 */
import { availableParallelism } from 'node:os';
import { type Tensor, nodeReads } from '../src/graph/graph.ts';
import { type LoadedModel, loadModel, quantizeModel } from '../src/models/index.ts';
import { addTrainStep } from '../src/optim/index.ts';
import { engineOptions, optimizerGroups } from '../src/train/index.ts';
import { table } from './common.ts';
import { trainerStep } from './lorakit.ts';
import { ensureModel, type ModelName } from './models.ts';
import { type Targets, oneTrainStep } from './workloads.ts';

const BYTES: Record<string, number> = { f32: 4, f16: 2, i64: 8, i32: 4, u8: 1, i8: 1, bool: 1 };

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const opt = (name: string, dflt: string) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : dflt);
  const [model, targets] = [(argv[0] ?? 'smollm') as ModelName, (argv[1] ?? 'all') as Targets];
  const mode = opt('--quantize', 'int8') as 'none' | 'int8' | 'q4';
  let m: LoadedModel = await loadModel(await ensureModel(model));
  if (mode !== 'none') m = await quantizeModel(m, mode, { head: argv.includes('--quantize-head') });
  const w = oneTrainStep(model, targets, availableParallelism());
  const { task, options } = await trainerStep(w, m);
  const eo = engineOptions(options);
  const tg = task.build();
  // the step graph as StepEngine builds it (one micro-batch): forward, `grad/` backward, `optim/` update
  addTrainStep(tg.graph, tg.loss, { optimizer: eo.optimizer, groups: optimizerGroups(tg.groups, eo), updates: [] });
  const nodes = tg.graph.liveNodes();
  const inScope = (name: string) => name.startsWith('grad/') || name.startsWith('optim/');
  const forward = new Set(nodes.filter((n) => !inScope(n.name)).flatMap((n) => n.outputs));
  const saved = new Set<Tensor>();
  for (const n of nodes.filter((n) => n.name.startsWith('grad/')))
    for (const t of nodeReads(n)) if (t && forward.has(t)) saved.add(t);
  const groups = new Map<string, { bytes: number; count: number }>();
  let total = 0;
  let unsized = 0;
  for (const t of saved) {
    const n = t.shape.reduce<number>((a, d) => a * (typeof d === 'number' ? d : Number.NaN), 1);
    if (!Number.isFinite(n)) {
      unsized++;
      continue;
    }
    const bytes = n * (BYTES[t.dtype] ?? 4);
    total += bytes;
    // the module's scope without its layer index, so the 30 layers' copies add up in one row
    const scope = t
      .node!.name.split('/')
      .slice(0, -1)
      .join('/')
      .replace(/\.\d+(\.|$)/, '.N$1');
    const key = `${t.node!.op} ${t.dtype} [${t.shape.join(', ')}] ${scope || '(model)'}`;
    const g = groups.get(key) ?? { bytes: 0, count: 0 };
    groups.set(key, { bytes: g.bytes + bytes, count: g.count + 1 });
  }
  const rows = [...groups].sort((a, b) => b[1].bytes - a[1].bytes).filter(([, g]) => g.bytes >= 1e6);
  console.log(
    `${w.id}, ${mode}${argv.includes('--quantize-head') ? ' + head' : ''}, batch 4 x 256: ${saved.size} ` +
      `forward tensors read by the backward, ${(total / 1e6).toFixed(0)} MB (${unsized} of unknown size)`,
  );
  console.log(
    table([['MB', 'tensors', 'producer'], ...rows.map(([k, g]) => [(g.bytes / 1e6).toFixed(1), String(g.count), k])]),
  );
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
