/**
 * LoRAM as one run (spec methods-b §13): prune the base structurally (first-order Taylor scores of KV-head groups
 * and MLP channels from calibration gradients, peft/loram.ts), write the pruned folder (peft/slice.ts), train the
 * run's LoRA on it (`runTraining` with the pruned folder as the model), recover the adapter to the full base by
 * zero-filling the pruned rows and columns, and evaluate on the full model. Optionally the same LoRA is trained on the
 * full base as the baseline, so one run gives the comparison the paper makes: full-base loss with no adapter, with
 * the LoRAM adapter, and with a LoRA trained on the full base.
 * Folders under output_dir: pruned-model/ (with its plan), loram/ (the run on the pruned model, its adapter in
 * final/), recovered/ (the adapter for the full base), lora-full/ (the baseline run).
 * Not done (see peft/loram.ts): the official alignment of the pruned model by continual pre-training, and QLoRAM's
 * 4-bit pruned base.
 * Not here: the scores and the recovery (peft/loram.ts), the slicing (peft/slice.ts).
 */
import { join, writeFile } from '../io/host.ts';
import { check } from '../errors.ts';
import { HfTokenizer } from '../io/index.ts';
import type { LoadedModel } from '../models/index.ts';
import {
  type LayerTensors,
  PROJECTIONS,
  checkPlan,
  PeftModel,
  type PrunePlan,
  type Projection,
  adaptable,
  layerInfo,
  loadAdapter,
  pruneSizes,
  readPlan,
  recoverAdapter,
  taylorPlan,
  writeSliced,
} from '../peft/index.ts';
import { causalLmCalibrator } from './calibrate.ts';
import type { RunConfig } from './config.ts';
import type { TrainOptions } from './options.ts';
import { noticeSink } from './report.ts';
import { loadRunData } from './run-data.ts';
import { withModel } from './prune.ts';
import { type RunOutput, runTraining } from './run.ts';
import { evaluateText } from './text-eval.ts';

/** Options of `runLoram`. */
export interface LoramOptions {
  /** Fraction of the KV-head groups and of the MLP channels of each pruned layer to remove. */
  ratio: number;
  /** Training batches whose mean gradient scores the groups (default 8). */
  calibrationBatches?: number;
  /** Decoder layers left unpruned at the start and the end (default 0: transformers configs have one width). */
  skipFirst?: number;
  skipLast?: number;
  /** Also train the run's LoRA on the full base, as the baseline (default true). */
  baseline?: boolean;
  /** A text or JSONL file to evaluate on (default: data.validation_file). */
  evalData?: string;
}

/** What `runLoram` did and measured (also written to `<output_dir>/loram_report.json`). */
export interface LoramOutput {
  plan: PrunePlan;
  prunedModel: string;
  /** The run on the pruned model, and the adapter recovered for the full base. */
  run: RunOutput;
  recoveredDir: string;
  baseline: RunOutput | null;
  parameters: { full: number; pruned: number };
  /** Trainable adapter values and training wall time (seconds): LoRAM's run on the pruned base, the baseline's. */
  trainable: { loram: number; lora: number | null };
  seconds: { loram: number; lora: number | null };
  /** Mean token losses on the evaluation data: the full base alone, with the LoRAM adapter, with the baseline LoRA;
   * the pruned base alone and with the adapter it was trained with. */
  eval: {
    data: string;
    fullBase: number;
    loram: number;
    lora: number | null;
    prunedBase: number;
    prunedWithAdapter: number;
  } | null;
}

/** Prunes the base, trains `c`'s adapter on it, recovers it to the full base and evaluates (see the file header). */
export async function runLoram(
  c: RunConfig,
  opts: LoramOptions,
  extra: Partial<TrainOptions> = {},
): Promise<LoramOutput> {
  check(
    c.adapter.from === undefined,
    'LK_CONFIG_INVALID',
    'LoRAM: adapter.from cannot be used; LoRAM trains a new adapter',
  );
  const prunedModel = join(c.output_dir, 'pruned-model');
  const { plan, full } = await withModel(c.model, async (model) => {
    const plan = await prunePlan(model, c, opts);
    await writeSliced(model, plan, prunedModel, { overwrite: true });
    return { plan, full: model.paramCount };
  });
  const t0 = performance.now();
  const run = await runTraining({ ...c, model: prunedModel, output_dir: join(c.output_dir, 'loram') }, extra);
  const loramSeconds = (performance.now() - t0) / 1000;
  const recoveredDir = join(c.output_dir, 'recovered');
  await recoverAdapterFolder({ prunedModel, adapter: run.adapterDir, model: c.model, out: recoveredDir });
  const t1 = performance.now();
  const baseline =
    opts.baseline === false ? null : await runTraining({ ...c, output_dir: join(c.output_dir, 'lora-full') }, extra);
  const loraSeconds = baseline ? (performance.now() - t1) / 1000 : null;
  const count = (r: RunOutput) => [...r.result.params.values()].reduce((n, v) => n + v.length, 0);
  const evalData = opts.evalData ?? c.data.validation_file;
  const seqLen = c.data.seq_len;
  const loss = (m: LoadedModel, adapterDir?: string) => lossOf(m, evalData!, seqLen, adapterDir);
  const prunedSide = await withModel(prunedModel, async (m) => ({
    params: m.paramCount,
    base: evalData ? await loss(m) : 0,
    adapted: evalData ? await loss(m, run.adapterDir) : 0,
  }));
  let evaluated: LoramOutput['eval'] = null;
  if (evalData) {
    evaluated = await withModel(c.model, async (m) => ({
      data: evalData,
      fullBase: await loss(m),
      loram: await loss(m, recoveredDir),
      lora: baseline ? await loss(m, baseline.adapterDir) : null,
      prunedBase: prunedSide.base,
      prunedWithAdapter: prunedSide.adapted,
    }));
  }
  const pruned = prunedSide.params;
  const out: LoramOutput = {
    plan,
    prunedModel,
    run,
    recoveredDir,
    baseline,
    parameters: { full, pruned },
    trainable: { loram: count(run), lora: baseline ? count(baseline) : null },
    seconds: { loram: loramSeconds, lora: loraSeconds },
    eval: evaluated,
  };
  const { run: _r, baseline: _b, ...report } = out;
  await writeFile(join(c.output_dir, 'loram_report.json'), `${JSON.stringify(report, null, 2)}\n`);
  return out;
}

/**
 * Recovers the PEFT adapter folder `adapter`, trained on the sliced folder `prunedModel` (whose plan it reads), to the
 * full model `model`, written as a PEFT folder to `out` (base_model_name_or_path: `baseModel`, default `model`).
 */
export async function recoverAdapterFolder(o: {
  prunedModel: string;
  adapter: string;
  model: string;
  out: string;
  baseModel?: string;
}): Promise<void> {
  const plan = await readPlan(o.prunedModel);
  await withModel(o.prunedModel, async (pruned) =>
    withModel(o.model, async (model) => {
      checkPlan(plan, pruneSizes(model)); // the plan must be of this full model
      const prunedPeft = new PeftModel(adaptable(pruned));
      await loadAdapter(prunedPeft, o.adapter);
      await recoverAdapter(prunedPeft, 'default', plan, new PeftModel(adaptable(model)), o.out, {
        baseModel: o.baseModel ?? o.model,
      });
    }),
  );
}

/** The Taylor plan of `model` from the mean gradient of the run's first training batches. */
async function prunePlan(model: LoadedModel, c: RunConfig, opts: LoramOptions): Promise<PrunePlan> {
  const sizes = pruneSizes(model);
  const tokenizer = await HfTokenizer.fromDir(model.dir);
  const data = await loadRunData(c.data, tokenizer, noticeSink({}));
  const calibrate = causalLmCalibrator({
    model,
    train: data.train,
    batchSize: c.training.per_device_train_batch_size,
    seed: c.training.seed,
  });
  const store = { read: (n: string) => model.read(n), dtype: (n: string) => model.storedDtype(n) };
  const projections = Object.keys(PROJECTIONS) as Projection[];
  const modules = model
    .modules()
    .filter((m) => projections.some((p) => m.path.endsWith(`.${PROJECTIONS[p].block}.${p}`)));
  const infos = modules.map((m) => layerInfo(m, null, store));
  const grads = await calibrate(infos, opts.calibrationBatches ?? 8);
  const layers: LayerTensors[] = Array.from({ length: sizes.num_hidden_layers }, () => ({}));
  for (const info of infos) {
    const proj = info.path.slice(info.path.lastIndexOf('.') + 1) as Projection;
    layers[info.layerIndex!][proj] = { weight: await info.readWeight(), grad: grads.get(info.path)! };
  }
  return taylorPlan(sizes, layers, opts.ratio, { skipFirst: opts.skipFirst, skipLast: opts.skipLast });
}

/** Mean token loss of `model` (with the adapter folder `adapterDir`, if given) on `data`. */
async function lossOf(model: LoadedModel, data: string, seqLen: number, adapterDir?: string): Promise<number> {
  const tokenizer = await HfTokenizer.fromDir(model.dir);
  let adapter: ReturnType<PeftModel['generationAdapter']> | undefined;
  if (adapterDir) {
    const peft = new PeftModel(adaptable(model));
    await loadAdapter(peft, adapterDir);
    adapter = peft.generationAdapter();
  }
  return (await evaluateText(model, tokenizer, { data, seqLen, adapter })).loss;
}
