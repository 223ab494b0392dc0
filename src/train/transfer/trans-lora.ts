/**
 * Trans-LoRA (Wang et al., NeurIPS 2024, arXiv 2405.17258): moves a LoRA to a new base without the task data.
 * Phase A, while the data is available (`buildTransferKit`): keep a few seed examples, let the source base write
 * synthetic rows from them, and train a discriminator LoRA on the source base to tell real rows from synthetic ones;
 * the kit (seeds, discriminator adapter, its question tokens and row length) is stored beside the adapter.
 * With held-out rows, the discriminator stops early at its lowest held-out loss (an overconfident one passes almost
 * nothing). Phase B, data gone (`transferLora`): the target base writes candidates from the seeds, the discriminator
 * keeps those it classifies as real (or, `filter: false`, the ablation: the first candidates are kept), the teacher
 * (source base + source LoRA) gives its next-token distributions on them, and a fresh LoRA on the target is trained
 * to match them (distillKl). Every artefact is an ordinary PEFT folder.
 * Not here: the pieces (discriminator.ts, synthesize.ts, distill-loss.ts, log-probs.ts), flags (cli/transfer.ts).
 */
import { LorakitError } from '../../errors.ts';
import type { Graph } from '../../graph/index.ts';
import { join, mkdir } from '../../io/host.ts';
import { type HfTokenizer, type ModelConfig, readJsonFile, writeFileAtomic } from '../../io/index.ts';
import { Rng } from '../../linalg/index.ts';
import { buildCausalLM, type LoadedModel } from '../../models/index.ts';
import type { ModelContext } from '../../nn/index.ts';
import { PeftModel, adaptable, loadAdapter, projectionLoraConfig, saveAdapter } from '../../peft/index.ts';
import type { CompileOptions } from '../../runtime/index.ts';
import type { StepRecord } from '../report.ts';
import { Discriminator, type DiscriminatorTokens, trainDiscriminator } from './discriminator.ts';
import { distillKl } from './distill-loss.ts';
import { type AdapterFitSettings, fitAdapter, fitSettings } from './fit-adapter.ts';
import { LogProbs, type ScoringAdapter } from './log-probs.ts';
import { type Filtered, filterByScore, synthesize } from './synthesize.ts';

/** transfer_kit.json: what phase B needs besides the discriminator's adapter files. */
export interface TransferKit {
  /** The seed examples kept with the client's permission. */
  seeds: string[];
  /** The discriminator's question tokens and text length (tokens per row). */
  tokens: DiscriminatorTokens;
  length: number;
  /** The base the discriminator and the source adapter belong to. */
  sourceBase: string;
}

/** The file name of the kit's description inside its folder (the discriminator adapter sits beside it). */
export const TRANSFER_KIT_FILE = 'transfer_kit.json';

/**
 * The run settings both phases take: the trained LoRA's rank and alpha (defaults: each phase's options), the run's
 * steps, peak lr, rows per step (default 8) and seed, and the folder it writes.
 */
export interface TransferRunSettings {
  rank?: number;
  alpha?: number;
  steps: number;
  lr: number;
  batch?: number;
  seed: number;
  outDir: string;
  compile?: CompileOptions;
  onStep?: (r: StepRecord) => void | Promise<void>;
}

/**
 * Options of `buildTransferKit`. The LoRA is the discriminator's (rank/alpha default 8/16); `outDir` is the kit
 * folder: transfer_kit.json, the adapter (adapter_config.json, ...), and the run in run/.
 */
export interface BuildKitOptions extends TransferRunSettings {
  source: LoadedModel;
  tokenizer: HfTokenizer;
  /** Real task rows of `length` tokens (windows of the task data). */
  real: readonly ArrayLike<number>[];
  seeds: string[];
  tokens: DiscriminatorTokens;
  length: number;
  /** Synthetic rows the source writes for the discriminator (default: as many as real rows, at most 256). */
  syntheticCount?: number;
  /**
   * Early stopping of the discriminator: real rows it does not train on, and as many more synthetic rows written
   * after the training ones; evaluated every `every` steps, the kit keeps the evaluation of lowest held-out loss.
   */
  heldOut?: { real: readonly ArrayLike<number>[]; every: number; patience?: number };
}

/** The fit settings of a phase's run: its folder, and the base written into adapter_config.json. */
function runFit(o: TransferRunSettings, outputDir: string, baseModel: string): AdapterFitSettings {
  return { steps: o.steps, lr: o.lr, seed: o.seed, outputDir, baseModel, compile: o.compile, onStep: o.onStep };
}

/** The discriminator's and the student's adapter config: a LoRA on every projection. */
export const transferLoraConfig: (rank: number, alpha: number) => Record<string, unknown> = projectionLoraConfig;

/** Phase A: writes the kit folder; returns the kit and the discriminator's training steps. */
export async function buildTransferKit(o: BuildKitOptions): Promise<{ kit: TransferKit; history: StepRecord[] }> {
  const count = o.syntheticCount ?? Math.min(256, o.real.length);
  const held = o.heldOut;
  const written = await synthesize(o.source, o.tokenizer, {
    seeds: o.seeds,
    count: count + (held?.real.length ?? 0),
    newTokens: o.length,
    seed: o.seed,
    compile: o.compile,
  });
  const peft = new PeftModel(adaptable(o.source));
  await peft.addAdapter('discriminator', transferLoraConfig(o.rank ?? 8, o.alpha ?? 16), { seed: o.seed });
  const runDir = join(o.outDir, 'run');
  const history = await trainDiscriminator({
    model: o.source,
    peft,
    adapter: 'discriminator',
    tokens: o.tokens,
    real: o.real,
    synthetic: written.slice(0, count),
    length: o.length,
    batch: o.batch,
    heldOut: held && { real: held.real, synthetic: written.slice(count), every: held.every, patience: held.patience },
    ...runFit(o, runDir, o.source.dir),
  });
  const kit: TransferKit = { seeds: o.seeds, tokens: o.tokens, length: o.length, sourceBase: o.source.dir };
  await mkdir(o.outDir, { recursive: true });
  await writeFileAtomic(join(o.outDir, TRANSFER_KIT_FILE), `${JSON.stringify(kit, null, 2)}\n`);
  await saveAdapter(peft, 'discriminator', o.outDir, { baseModel: o.source.dir });
  return { kit, history };
}

/** Reads a kit folder's transfer_kit.json. */
export async function readTransferKit(dir: string): Promise<TransferKit> {
  const path = join(dir, TRANSFER_KIT_FILE);
  const j = (await readJsonFile(path)) as Partial<TransferKit>;
  const t = j.tokens;
  if (
    !Array.isArray(j.seeds) ||
    j.seeds.length === 0 ||
    !Number.isInteger(j.length) ||
    !t ||
    ![t.separator, t.real, t.synthetic].every(Number.isInteger)
  )
    throw new LorakitError(
      'LK_CONFIG_INVALID',
      `${path}: expected {seeds: string[] (≥ 1), tokens: {separator, real, synthetic}, length, sourceBase}, got ` +
        `keys ${Object.keys(j).join(', ')}`,
    );
  return j as TransferKit;
}

/** Options of `distillAdapter`. */
export interface DistillOptions extends AdapterFitSettings {
  /** Teacher: the source base with the source adapter applied. */
  teacher: LoadedModel;
  teacherAdapter: ScoringAdapter;
  /** Student: the target base and the PeftModel holding the fresh adapter `adapter`. */
  student: LoadedModel;
  peft: PeftModel;
  adapter: string;
  /** Rows of `length` tokens to distil on. */
  rows: readonly ArrayLike<number>[];
  length: number;
  batch: number;
}

/** Trains the student adapter on KL(teacher ‖ student) over every position of the rows; returns the steps. */
export async function distillAdapter(o: DistillOptions): Promise<StepRecord[]> {
  const { batch: B, length: T } = o;
  const V = o.student.config.vocab_size;
  if (o.teacher.config.vocab_size !== V)
    throw new LorakitError(
      'LK_SHAPE_MISMATCH',
      `distillAdapter: teacher vocabulary ${o.teacher.config.vocab_size} != student vocabulary ${V}; ` +
        'logit distillation needs a shared tokenizer',
    );
  if (o.rows.length === 0) throw new LorakitError('LK_INVALID_ARGUMENT', 'distillAdapter: no rows to distil on');
  const scorer = await LogProbs.create(o.teacher, {
    batch: B,
    seqLen: T,
    adapter: o.teacherAdapter,
    compile: o.compile,
  });
  const teacher = await scorer.run(o.rows); // [N, T, V]
  await scorer.dispose();
  const per = T * V;
  const ones = new Float32Array(B * T).fill(1);
  return fitAdapter({
    ...fitSettings(o),
    model: o.student,
    peft: o.peft,
    adapter: o.adapter,
    loss: (ctx: ModelContext<ModelConfig>, g: Graph) => {
      const inputIds = g.input('input_ids', 'i64', [B, T]);
      const teacherLogp = g.input('teacher_logp', 'f32', [B, T, V]);
      const weight = g.input('kd_weight', 'f32', [B * T]);
      const logits = buildCausalLM(ctx, { inputIds }).logits; // [B, T, V]
      return distillKl(logits.reshape([B * T, V]), teacherLogp.reshape([B * T, V]), weight).loss;
    },
    batch: (i) => {
      const rng = new Rng(o.seed * 104729 + i);
      const ids = new BigInt64Array(B * T);
      const logp = new Float32Array(B * per);
      for (let b = 0; b < B; b++) {
        const n = Math.floor(rng.next() * o.rows.length);
        for (let t = 0; t < T; t++) ids[b * T + t] = BigInt(o.rows[n][t]);
        logp.set(teacher.subarray(n * per, (n + 1) * per), b * per);
      }
      return { feeds: { input_ids: ids, teacher_logp: logp, kd_weight: ones }, tokens: B * T };
    },
  });
}

/**
 * Options of `transferLora`. The LoRA is the student's (rank/alpha default: the source adapter's r and lora_alpha);
 * `outDir` is the run folder, and the transferred adapter is `<outDir>/final`.
 */
export interface TransferLoraOptions extends TransferRunSettings {
  source: LoadedModel;
  /** The source adapter's PEFT folder and the kit folder from phase A. */
  sourceAdapterDir: string;
  kitDir: string;
  target: LoadedModel;
  targetTokenizer: HfTokenizer;
  /** Filtered rows to distil on (the paper: the original training-set size); candidates per round; rounds. */
  keep: number;
  candidatesPerRound?: number;
  maxRounds?: number;
  /** false: no discriminator, the first `keep` candidates are distilled on (the ablation; default true). */
  filter?: boolean;
  log?: (line: string) => void;
}

/** What `transferLora` did. */
export interface TransferLoraResult {
  adapterDir: string;
  /** What the filter did (null with `filter: false`). */
  filter: Omit<Filtered, 'rows'> | null;
  /** The rows distilled on. */
  rows: number[][];
  history: StepRecord[];
}

/** Phase B; see the file header. */
export async function transferLora(o: TransferLoraOptions): Promise<TransferLoraResult> {
  const log = o.log ?? (() => {});
  const kit = await readTransferKit(o.kitDir);
  const sourcePeft = new PeftModel(adaptable(o.source));
  await loadAdapter(sourcePeft, o.kitDir, 'discriminator');
  await loadAdapter(sourcePeft, o.sourceAdapterDir, 'source');
  // the discriminator and the teacher are the same base with a different active adapter
  sourcePeft.setActive('discriminator');
  const filterOn = o.filter ?? true;
  const disc = filterOn
    ? await Discriminator.create(o.source, sourcePeft.generationAdapter(), kit.tokens, kit.length, {
        compile: o.compile,
      })
    : null;
  const perRound = o.candidatesPerRound ?? o.keep;
  const candidates: number[][] = [];
  const scores: number[] = [];
  let passed = 0;
  for (let round = 0; round < (o.maxRounds ?? 4) && (disc ? passed : candidates.length) < o.keep; round++) {
    const rows = await synthesize(o.target, o.targetTokenizer, {
      seeds: kit.seeds,
      count: perRound,
      newTokens: kit.length,
      seed: o.seed + 1 + round,
      compile: o.compile,
    });
    candidates.push(...rows);
    if (!disc) {
      log(`round ${round + 1}: ${rows.length} candidates from the target (no filter)`);
      continue;
    }
    const s = await disc.score(rows);
    scores.push(...s);
    passed += s.filter((x) => x > 0).length;
    log(`round ${round + 1}: ${rows.length} candidates from the target, ${passed} classified real so far`);
  }
  await disc?.dispose();
  const filtered = disc ? filterByScore(candidates, scores, o.keep) : null;
  const kept = filtered ? filtered.rows : candidates.slice(0, o.keep);
  sourcePeft.setActive('source');
  const sourceConfig = sourcePeft.get('source').config as { r?: number; lora_alpha?: number };
  const studentPeft = new PeftModel(adaptable(o.target));
  await studentPeft.addAdapter(
    'transferred',
    transferLoraConfig(o.rank ?? sourceConfig.r ?? 8, o.alpha ?? sourceConfig.lora_alpha ?? 16),
    { seed: o.seed },
  );
  const history = await distillAdapter({
    teacher: o.source,
    teacherAdapter: sourcePeft.generationAdapter(),
    student: o.target,
    peft: studentPeft,
    adapter: 'transferred',
    rows: kept,
    length: kit.length,
    batch: o.batch ?? 8,
    ...runFit(o, o.outDir, o.target.dir),
  });
  let filter: Omit<Filtered, 'rows'> | null = null;
  if (filtered) {
    const { rows: _rows, ...rest } = filtered;
    filter = rest;
  }
  return { adapterDir: join(o.outDir, 'final'), filter, rows: kept, history };
}
