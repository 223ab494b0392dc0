/**
 * LoRAPrune as one run (spec methods-b §12): train a LoRA with the `loraprune` variant (importance from the LoRA
 * gradients, cubic schedule, masks on heads and channels), read the final masks from the run's last checkpoint (the
 * update rules' state), merge the LoRA into the base and slice the pruned groups out (peft/slice.ts): a smaller
 * Hugging Face folder that transformers and lorakit load. Then measure what was gained and lost: stored bytes,
 * parameters, evaluation speed (tokens/s of a forward over the evaluation windows) and loss — of the base, of the
 * base with the trained LoRA unpruned, and of the pruned model.
 * Defaults that differ from the paper's, and why: every decoder layer is pruned (the paper leaves the first ⌊0.1·L⌋
 * and the last unpruned; a transformers config has one width for all layers, so the sliced folder would be padded
 * back to the widest layer and save nothing; set skip_first/skip_last to have them); the target ratio is reached
 * (reach_target), and if no prune step fell in the cooldown the final masks are pruned to it from the final EMA.
 * Not here: the variant (peft/methods/loraprune.ts), the slicing (peft/slice.ts), the CLI (cli/prune.ts).
 */
import { join, readdir, stat, writeFile } from '../io/host.ts';
import { LorakitError, check } from '../errors.ts';
import { HfTokenizer } from '../io/index.ts';
import { type LoadedModel, loadModel } from '../models/index.ts';
import {
  PeftModel,
  PROJECTIONS,
  type Projection,
  type LoraPruneOptions,
  type PrunePlan,
  type PruneSizes,
  type SliceResult,
  adaptable,
  loadAdapter,
  loraPruneOptions,
  planFromMasks,
  pruneGroups,
  pruneRole,
  pruneSizes,
  ruleStateKey,
  writeSliced,
} from '../peft/index.ts';
import { loadCheckpoint } from './checkpoint.ts';
import type { RunConfig } from './config.ts';
import type { TrainOptions } from './options.ts';
import { type RunOutput, runTraining } from './run.ts';
import { evaluateText } from './text-eval.ts';

/** Options of `runPrune`. */
export interface PruneOptions {
  /** The folder to write the pruned model to (LoRA merged, groups sliced). */
  out: string;
  /** LoRAPrune's settings; total_steps comes from training.max_steps and kv_heads from the model. */
  loraprune?: Partial<Omit<LoraPruneOptions, 'total_steps' | 'kv_heads'>>;
  /** A text or JSONL file to measure loss and speed on (default: data.validation_file; none: no measurement). */
  evalData?: string;
  /** Replace `out` if it exists. */
  overwrite?: boolean;
}

/** What was measured on one model. */
export interface ModelMeasure {
  /** Mean token loss on the evaluation data (nats). */
  loss: number;
  /** Predicted tokens per second of the evaluation forward (compiled beforehand; the second of two passes). */
  tokensPerSecond: number;
}

/** What `runPrune` did and measured (also written to `<output_dir>/prune_report.json`). */
export interface PruneReport {
  /** The pruned folder, and the sizes it has. */
  dir: string;
  sizes: PruneSizes;
  /** Kept KV-head groups and channels per layer (before padding to one width). */
  kept: { heads: number[]; channels: number[] };
  /** Blocks the run left short of the target, pruned at the end from the final importance EMA. */
  finalPrunes: number;
  /** Stored bytes (model*.safetensors) and parameters of the base and the pruned folder. */
  bytes: { base: number; pruned: number };
  parameters: { base: number; pruned: number };
  /** On the evaluation data, when there is some: the base, the base with the trained LoRA, the pruned model. */
  eval: { data: string; base: ModelMeasure; adapted: ModelMeasure; pruned: ModelMeasure } | null;
}

/** What `runPrune` returns. */
export interface PruneOutput {
  run: RunOutput;
  plan: PrunePlan;
  slice: SliceResult;
  report: PruneReport;
}

/** The HF module path of projection `proj` of decoder layer i. */
const pathOf = (i: number, proj: Projection) => `model.layers.${i}.${PROJECTIONS[proj].block}.${proj}`;

/** Trains `c`'s adapter with LoRAPrune, slices the pruned model into `opts.out` and measures it. */
export async function runPrune(
  c: RunConfig,
  opts: PruneOptions,
  extra: Partial<TrainOptions> = {},
): Promise<PruneOutput> {
  const total = c.training.max_steps;
  if (total === undefined)
    throw new LorakitError('LK_CONFIG_INVALID', 'prune: set training.max_steps (the pruning schedule spans the run)');
  check(
    c.adapter.from === undefined,
    'LK_CONFIG_INVALID',
    'prune: LoRAPrune trains a new adapter; adapter.from cannot be continued with it',
  );
  const sizes = await withModel(c.model, async (m) => pruneSizes(m));
  const o = loraPruneOptions.parse({
    skip_first: 0,
    skip_last: 0,
    ...opts.loraprune,
    total_steps: total,
    kv_heads: sizes.num_key_value_heads,
  });
  const run = await runTraining({ ...c, adapter: { ...c.adapter, loraprune: o } }, extra);
  const { plan, finalPrunes } = await finalPlan(run.checkpointDir, sizes, o);
  return withModel(c.model, async (model) => {
    const peft = new PeftModel(adaptable(model));
    await loadAdapter(peft, run.adapterDir);
    await peft.merge();
    const slice = await writeSliced(model, plan, opts.out, {
      overrides: peft.weightOverrides(),
      overwrite: opts.overwrite,
    });
    const evalData = opts.evalData ?? c.data.validation_file;
    let evaluated: PruneReport['eval'] = null;
    if (evalData) {
      const seqLen = c.data.seq_len;
      const tokenizer = await HfTokenizer.fromDir(model.dir);
      const at = (m: LoadedModel, adapter?: PeftModel) => measure(m, tokenizer, evalData, seqLen, adapter);
      const adapted = await at(model, peft);
      peft.unmerge();
      peft.disable();
      const base = await at(model);
      const pruned = await withModel(slice.dir, (m) => at(m));
      evaluated = { data: evalData, base, adapted, pruned };
    }
    const report: PruneReport = {
      dir: slice.dir,
      sizes: slice.sizes,
      kept: { heads: plan.layers.map((l) => l.heads.length), channels: plan.layers.map((l) => l.channels.length) },
      finalPrunes,
      bytes: { base: await weightBytes(model.dir), pruned: await weightBytes(slice.dir) },
      parameters: { base: model.paramCount, pruned: await withModel(slice.dir, async (m) => m.paramCount) },
      eval: evaluated,
    };
    await writeFile(join(c.output_dir, 'prune_report.json'), `${JSON.stringify(report, null, 2)}\n`);
    return { run, plan, slice, report };
  });
}

/**
 * The plan of the run's final masks: the update rules' `pruned` state in the last checkpoint (a block's groups are
 * pruned in all its layers alike). Blocks short of ⌊ratio·groups⌋ are pruned to it from their final EMA.
 */
export async function finalPlan(
  checkpointDir: string,
  sizes: PruneSizes,
  o: LoraPruneOptions,
): Promise<{ plan: PrunePlan; finalPrunes: number }> {
  const ck = await loadCheckpoint(checkpointDir);
  const L = sizes.num_hidden_layers;
  const dims = { heads: sizes.num_key_value_heads, channels: sizes.intermediate_size };
  const masks = {
    heads: new Float32Array(L * dims.heads).fill(1),
    channels: new Float32Array(L * dims.channels).fill(1),
  };
  const first = o.skip_first ?? Math.floor(0.1 * L);
  let finalPrunes = 0;
  for (let i = 0; i < L; i++) {
    for (const kind of ['heads', 'channels'] as const) {
      const G = dims[kind];
      const pruned = new Float32Array(G);
      const ema = new Float64Array(G);
      let found = false;
      for (const proj of Object.keys(PROJECTIONS) as Projection[]) {
        const path = pathOf(i, proj);
        if (pruneRole(path)?.groups !== kind) continue;
        const p = ck.optimizer.get(ruleStateKey('default', path, 'pruned'));
        const e = ck.optimizer.get(ruleStateKey('default', path, 'ema'));
        if (!p || !e) continue;
        found = true;
        for (let g = 0; g < G; g++) {
          pruned[g] = Math.max(pruned[g], p[g]);
          ema[g] += e[g];
        }
      }
      const inRange = i >= first && i < L - o.skip_last;
      let next: Float32Array = pruned;
      if (found && inRange && pruned.reduce((a, v) => a + v, 0) < Math.floor(o.ratio * G)) {
        next = pruneGroups(ema, pruned, o.ratio);
        finalPrunes++;
      }
      for (let g = 0; g < G; g++) masks[kind][i * G + g] = 1 - next[g];
    }
  }
  return { plan: planFromMasks(sizes, masks.heads, masks.channels), finalPrunes };
}

/** Loss and speed of `model` (with an adapter's hooks and merged weights) on `data`: the second of two passes. */
async function measure(
  model: LoadedModel,
  tokenizer: HfTokenizer,
  data: string,
  seqLen: number,
  peft?: PeftModel,
): Promise<ModelMeasure> {
  const o = { data, seqLen, adapter: peft?.generationAdapter() };
  await evaluateText(model, tokenizer, o); // compiles the graph (cached for the timed pass)
  const t0 = performance.now();
  const r = await evaluateText(model, tokenizer, o);
  return { loss: r.loss, tokensPerSecond: r.tokens / ((performance.now() - t0) / 1000) };
}

/** Bytes of the weight files of a model folder (model.safetensors, or its shards). */
async function weightBytes(dir: string): Promise<number> {
  let n = 0;
  for (const f of await readdir(dir)) if (/^model.*\.safetensors$/.test(f)) n += (await stat(join(dir, f))).size;
  return n;
}

/** Runs `f` on the model at `dir`, closing it after. */
export async function withModel<T>(dir: string, f: (m: LoadedModel) => Promise<T>): Promise<T> {
  const m = await loadModel(dir);
  try {
    return await f(m);
  } finally {
    await m.close();
  }
}
