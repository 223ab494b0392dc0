/**
 * Adaptive merging from folders, the library call behind `lorakit adaptive-merge`: read the base model and the
 * pool's PEFT LoRA folders, cut the target text into samples (the study: 100, 80 train / 20 validation, every fifth
 * one validation), run one method, and write the result. A coefficient method's result is a static merge, written as
 * an ordinary PEFT LoRA folder (export.ts). Arrow is a router: its folder holds a copy of every pooled adapter, one
 * subfolder each, and `arrow_config.json` with PEFT's ArrowConfig fields (top_k, router_temperature) and the
 * subfolder names in routing order, which PEFT's `create_arrow_model` or lorakit's `readArrowFolder` + `arrowLoss`
 * load.
 * Not here: the methods (adamerging.ts, ...), the flags (cli/adaptive-merge.ts).
 */
import { basename, copyFile, existsSync, join, mkdir, readFile, readdir } from '../io/host.ts';
import { LorakitError } from '../errors.ts';
import { checkOutputFolder, HfTokenizer, writeFileAtomic } from '../io/index.ts';
import { loadModel } from '../models/index.ts';
import { compose } from '../peft/index.ts';
import { IGNORE_INDEX } from '../train/data/index.ts';
import { adaMerging } from './adamerging.ts';
import { type ArrowOptions, arrow } from './arrow.ts';
import { effectiveCoefficients, mergedLora } from './export.ts';
import type { MergeRun, MethodContext, TargetSet } from './fit.ts';
import { loraHub } from './lorahub.ts';
import type { TokenBatch } from './objective.ts';
import { piTuning } from './pi-tuning.ts';
import { poolFromLoras, type RecycledPool, subPool } from './pool.ts';
import { recycle } from './recycle.ts';
import { type Selection, selectTopK } from './select.ts';
import type { ClosenessVariant } from './similarity.ts';

/** The adaptive methods by CLI name. */
export const ADAPTIVE_METHODS = ['lorahub', 'adamerging', 'adamerging-layer', 'pi-tuning', 'recycle', 'arrow'] as const;
/** One of ADAPTIVE_METHODS. */
export type AdaptiveMethod = (typeof ADAPTIVE_METHODS)[number];

/** Options of `adaptiveMergeFolders`. */
export interface AdaptiveMergeOptions {
  /** Base model folder. */
  model: string;
  /** The pool's PEFT LoRA folders (names: their folder names). */
  adapters: string[];
  /** The target text; cut into `samples` equal chunks. */
  text: string;
  method: AdaptiveMethod;
  out: string;
  /** Samples (default 100; a fifth are validation), tokens per sample window (default 128), windows per batch (4). */
  samples?: number;
  seqLen?: number;
  batch?: number;
  /** Gradient methods: steps and learning rate (default: the method's); LoraHub: loss evaluations (100). */
  steps?: number;
  lr?: number;
  budget?: number;
  /** How many LoRAs a selection keeps (default: π-Tuning 20, otherwise 30, the study's). */
  topK?: number;
  /**
   * Selection before the method (the study's `run_hub_selection.py`; default none, except π-Tuning, which selects by
   * quasi-fisher when `target` is given; the study's method always selects by evaluation, after this one).
   */
  select?: Selection;
  /** The target LoRA folder that quasi-fisher and closeness compare against (not merged unless also in `adapters`). */
  target?: string;
  /** closeness: the study's variant (default cosine). */
  closeness?: ClosenessVariant;
  arrow?: ArrowOptions;
  overwrite?: boolean;
  log?: (line: string) => void;
}

/** What was written. */
export interface AdaptiveMergeResult {
  method: AdaptiveMethod;
  out: string;
  valLoss: number;
  /** Effective coefficients per pooled module (static merges), LoraHub's weights, or null (Arrow). */
  coefficients: number[][] | null;
  /** The adapters a selection kept (best first) with their scores, or null without a selection. */
  selected: { names: string[]; scores: number[] | null } | null;
  seconds: number;
}

/** Windows of the target text: `samples` chunks, each tokenised and cut to seqLen + 1 tokens (short ones padded). */
export function targetSet(
  tokenizer: HfTokenizer,
  text: string,
  samples: number,
  seqLen: number,
  batch: number,
): TargetSet {
  if (!Number.isInteger(samples) || samples < 5)
    throw new LorakitError('LK_INVALID_ARGUMENT', `adaptive merge: samples must be an integer ≥ 5, got ${samples}`);
  const size = Math.floor(text.length / samples);
  if (size < 1)
    throw new LorakitError('LK_INVALID_ARGUMENT', `adaptive merge: the text is shorter than ${samples} characters`);
  const windows = Array.from({ length: samples }, (_, i) => tokenizer.encode(text.slice(i * size, (i + 1) * size)));
  const toBatches = (ws: number[][]): TokenBatch[] => {
    const out: TokenBatch[] = [];
    for (let i = 0; i < ws.length; i += batch) {
      const inputIds = new BigInt64Array(batch * seqLen);
      const labels = new BigInt64Array(batch * seqLen).fill(BigInt(IGNORE_INDEX));
      ws.slice(i, i + batch).forEach((ids, row) => {
        for (let t = 0; t < seqLen && t < ids.length; t++) {
          inputIds[row * seqLen + t] = BigInt(ids[t]);
          if (t + 1 < ids.length) labels[row * seqLen + t] = BigInt(ids[t + 1]);
        }
      });
      out.push({ inputIds, labels });
    }
    return out;
  };
  return {
    train: toBatches(windows.filter((_, i) => i % 5 !== 4)),
    val: toBatches(windows.filter((_, i) => i % 5 === 4)),
  };
}

/** Runs one adaptive method on folders and writes its result; see the file header. */
export async function adaptiveMergeFolders(o: AdaptiveMergeOptions): Promise<AdaptiveMergeResult> {
  const t0 = performance.now();
  await checkOutputFolder(o.out, 'output folder', { option: 'out' });
  const held = await readdir(o.out).catch(() => [] as string[]);
  const ours = held.includes('adapter_config.json') || held.includes('arrow_config.json');
  if (held.length > 0 && !(o.overwrite === true && ours))
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `--out ${o.out} is not empty; choose a new folder${ours ? ' (or --force to replace the result there)' : ''}`,
      { option: 'out' },
    );
  let loras = await Promise.all(o.adapters.map((d) => compose.readLora(d)));
  let names = o.adapters.map((d, i) => `${i}-${basename(d.replace(/\/+$/, '')) || 'adapter'}`);
  let dirs = o.adapters;
  let pool: RecycledPool = poolFromLoras(names, loras);
  const seqLen = o.seqLen ?? 128;
  const batch = o.batch ?? 4;
  const tokenizer = await HfTokenizer.fromDir(o.model);
  const data = targetSet(tokenizer, o.text, o.samples ?? 100, seqLen, batch);
  const model = await loadModel(o.model);
  try {
    const strategy = o.select ?? (o.method === 'pi-tuning' && o.target ? 'quasi-fisher' : undefined);
    let selected: AdaptiveMergeResult['selected'] = null;
    if (strategy) {
      const target = o.target ? poolFromLoras(['target'], [await compose.readLora(o.target)]) : undefined;
      const k = o.topK ?? (o.method === 'pi-tuning' ? 20 : 30);
      const s = await selectTopK(pool, {
        strategy,
        k,
        model,
        train: data.train,
        batch,
        seqLen,
        target,
        variant: o.closeness,
      });
      pool = subPool(pool, s.keep);
      [names, dirs, loras] = [s.keep.map((i) => names[i]), s.keep.map((i) => dirs[i]), s.keep.map((i) => loras[i])];
      selected = { names, scores: s.scores && s.keep.map((i) => s.scores![i]) };
      o.log?.(`${strategy} selection kept ${names.join(', ')}`);
    }
    const ctx: MethodContext = { model, pool, data, batch, seqLen, log: o.log };
    const opt = { ...(o.steps !== undefined ? { steps: o.steps } : {}), ...(o.lr !== undefined ? { lr: o.lr } : {}) };
    if (o.method === 'arrow') {
      const r = await arrow(ctx, o.arrow);
      await writeArrowFolder(o.out, dirs, names, o.arrow ?? {});
      return {
        method: o.method,
        out: o.out,
        valLoss: r.valLoss,
        coefficients: null,
        selected,
        seconds: (performance.now() - t0) / 1000,
      };
    }
    let run: MergeRun;
    if (o.method === 'lorahub') run = await loraHub(ctx, { budget: o.budget });
    else if (o.method === 'adamerging') run = await adaMerging(ctx, { granularity: 'task', ...opt });
    else if (o.method === 'adamerging-layer') run = await adaMerging(ctx, { granularity: 'module', ...opt });
    else if (o.method === 'pi-tuning') run = await piTuning(ctx, opt);
    else run = await recycle(ctx, { ...opt, topK: o.topK });
    const c = effectiveCoefficients(run.pool, run.spec, run.values);
    const note =
      `Adaptive merge (${o.method}) of ${names.join(', ')} on ${o.model}; validation loss ${run.valLoss.toFixed(4)} ` +
      `nats/token. Effective coefficients per module: ${JSON.stringify(c.map((row) => row.map((v) => +v.toFixed(4))))}`;
    await compose.writeLora(o.out, mergedLora(run.pool, c, loras[0].config), note);
    const coefficients = 'weights' in run ? [run.weights as number[]] : c;
    return {
      method: o.method,
      out: o.out,
      valLoss: run.valLoss,
      coefficients,
      selected,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    await model.close();
  }
}

/** Writes an Arrow router folder: one subfolder per adapter (copied) and arrow_config.json. */
export async function writeArrowFolder(out: string, dirs: string[], names: string[], o: ArrowOptions): Promise<void> {
  await mkdir(out, { recursive: true });
  for (const [i, d] of dirs.entries()) {
    await mkdir(join(out, names[i]), { recursive: true });
    for (const f of ['adapter_config.json', 'adapter_model.safetensors'])
      await copyFile(join(d, f), join(out, names[i], f));
  }
  const config = { top_k: o.topK ?? 3, router_temperature: o.temperature ?? 1, task_specific_adapters: names };
  await writeFileAtomic(join(out, 'arrow_config.json'), `${JSON.stringify(config, null, 2)}\n`);
}

/** Whether `dir` is an Arrow router folder (it holds arrow_config.json). */
export const isArrowFolder = (dir: string): boolean => existsSync(join(dir, 'arrow_config.json'));

/**
 * Reads an Arrow router folder written by writeArrowFolder: the pool (routing order) and the routing settings. A
 * malformed folder is an LK_FILE_INVALID (or LK_FILE_NOT_FOUND) error naming the file and the field.
 */
export async function readArrowFolder(dir: string): Promise<{ pool: RecycledPool; options: ArrowOptions }> {
  const file = join(dir, 'arrow_config.json');
  const text = await readFile(file, 'utf8').catch(() => {
    throw new LorakitError('LK_FILE_NOT_FOUND', `${file}: cannot read the Arrow router's config`, { file });
  });
  let c: Record<string, unknown>;
  try {
    c = JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new LorakitError('LK_FILE_INVALID', `${file}: not valid JSON (${(e as Error).message})`, { file });
  }
  const bad = (what: string) => new LorakitError('LK_FILE_INVALID', `${file}: ${what}`, { file });
  if (c === null || typeof c !== 'object' || Array.isArray(c)) throw bad('expected a JSON object');
  const names = c.task_specific_adapters;
  if (!Array.isArray(names) || names.length === 0 || names.some((n) => typeof n !== 'string'))
    throw bad(`task_specific_adapters must be a non-empty list of subfolder names, got ${JSON.stringify(names)}`);
  const odd = (names as string[]).find((n) => n === '' || n.includes('/') || n.includes('\\') || n === '..');
  if (odd !== undefined) throw bad(`task_specific_adapters: "${odd}" is not a subfolder name`);
  const topK = c.top_k ?? 3;
  const temperature = c.router_temperature ?? 1;
  if (typeof topK !== 'number' || !Number.isInteger(topK) || topK < 1)
    throw bad(`top_k must be a positive integer, got ${JSON.stringify(topK)}`);
  if (typeof temperature !== 'number' || !(temperature > 0))
    throw bad(`router_temperature must be a number > 0, got ${JSON.stringify(temperature)}`);
  const loras = await Promise.all(
    (names as string[]).map((n) =>
      compose.readLora(join(dir, n)).catch((e: unknown) => {
        const why = e instanceof Error ? e.message : String(e);
        throw new LorakitError(
          e instanceof LorakitError && e.code === 'LK_FILE_NOT_FOUND' ? 'LK_FILE_NOT_FOUND' : 'LK_FILE_INVALID',
          `${file}: task_specific_adapters "${n}" is not a readable LoRA folder in ${dir}: ${why}`,
          { file },
        );
      }),
    ),
  );
  return { pool: poolFromLoras(names as string[], loras), options: { topK, temperature } };
}
