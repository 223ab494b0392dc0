/**
 * Checkpoints of a training run. Layout under the run's output folder:
 *
 *   checkpoint-<step>/params.safetensors     trainable parameters (F32, graph input names)
 *   checkpoint-<step>/optimizer.safetensors  optimizer state (`<param>::<slot>`, F32)
 *   checkpoint-<step>/trainer_state.json     step, data position, rng, schedule, best eval, early stopping, history
 *   latest                                   one line: the name of the newest complete checkpoint folder
 *
 * A checkpoint is written into a hidden temp folder (each file fsynced), renamed into place, the parent folder
 * fsynced, and only then is `latest` replaced (atomically). So after a crash at any instant `latest` names a complete
 * folder; leftovers are hidden temp folders that the next run removes. Old checkpoints are pruned only after
 * `latest` moved on. Loading checks every file and names the one that is broken. Not here: the training loop.
 */
import { join, mkdir, open, processId, randomHex, readdir, rename, rm, stat } from '../io/host.ts';
import { z } from 'zod';
import { LorakitError } from '../errors.ts';
import { SAMPLES_DIR, type StepRecord } from './report.ts';
import { SafetensorsFile, parseJsonText, syncDir, writeFileAtomic, writeSafetensors } from '../io/index.ts';

/** Name of the pointer file to the newest checkpoint. */
export const LATEST_FILE = 'latest';
/** File names inside a checkpoint folder. */
export const CHECKPOINT_FILES = {
  params: 'params.safetensors',
  optimizer: 'optimizer.safetensors',
  state: 'trainer_state.json',
} as const;

const int = z.number().int().nonnegative();
const position = z.object({ epoch: int, index: int });
const trainerStateSchema = z.object({
  format: z.literal('lorakit.trainer_state'),
  version: z.literal(1),
  step: int,
  total_steps: int,
  position,
  rng_state: int.max(0xffffffff),
  schedule: z.object({
    kind: z.enum(['constant', 'linear', 'cosine']),
    lr: z.number(),
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: z.number(),
    num_cycles: z.number(),
  }),
  best_eval_loss: z.number().nullable(),
  best_step: int.nullable(),
  evals_without_improvement: int,
  tokens: z.number().nonnegative(),
  elapsed: z.number().nonnegative(),
  params: z.array(z.string()),
  optimizer: z.object({ name: z.string(), slots: z.array(z.string()) }),
  /** The settings exact resume depends on (resume.ts); absent in checkpoints written before they were recorded. */
  settings: z.record(z.string(), z.union([z.string(), z.number(), z.boolean(), z.null()])).optional(),
  history: z.array(
    z
      .object({
        step: int,
        loss: z.number(),
        lr: z.number(),
        grad_norm: z.number(),
        tokens: z.number(),
        tokens_per_s: z.number(),
        elapsed: z.number(),
      })
      .catchall(z.number()),
  ),
});

/** trainer_state.json: everything besides tensors that a resumed run needs to continue exactly. */
export type TrainerState = Omit<z.output<typeof trainerStateSchema>, 'history'> & { history: StepRecord[] };

/** A checkpoint read back and checked. */
export interface Checkpoint {
  dir: string;
  state: TrainerState;
  params: Map<string, Float32Array>;
  optimizer: Map<string, Float32Array>;
}

/** Tensors to save, by name. */
export type TensorMap = ReadonlyMap<string, { shape: readonly number[]; data: Float32Array }>;

/** What a checkpoint must hold to fit a run: tensor shapes by name, and optionally the optimizer's name. */
export interface CheckpointShapes {
  params: ReadonlyMap<string, readonly number[]>;
  state: ReadonlyMap<string, readonly number[]>;
  optimizer?: string;
}

const invalid = (file: string, what: string) =>
  new LorakitError('LK_FILE_INVALID', `checkpoint file ${file}: ${what}`, { file });

/** Step number of a checkpoint folder name, or null if `name` is not one. */
export function checkpointStep(name: string): number | null {
  const m = /^checkpoint-(\d+)$/.exec(name);
  return m ? Number(m[1]) : null;
}

/** Checkpoint folders in `outputDir`, oldest step first. */
export async function listCheckpoints(outputDir: string): Promise<{ name: string; step: number }[]> {
  const names = await readdir(outputDir).catch(() => [] as string[]);
  return names
    .flatMap((name) => {
      const step = checkpointStep(name);
      return step === null ? [] : [{ name, step }];
    })
    .sort((a, b) => a.step - b.step);
}

/**
 * Writes `checkpoint-<step>` atomically (see the file header) and points `latest` at it; returns its path.
 * Replacing the folder `latest` names is refused: a crash in between would leave `latest` dangling.
 */
export async function writeCheckpoint(
  outputDir: string,
  state: TrainerState,
  params: TensorMap,
  optimizer: TensorMap,
): Promise<string> {
  const name = `checkpoint-${state.step}`;
  if ((await readLatestName(outputDir)) === name)
    throw new Error(`internal: ${name} is the latest checkpoint and would be replaced`);
  const tag = `${processId()}-${randomHex(4)}`;
  const tmp = join(outputDir, `.tmp-${name}-${tag}`);
  const final = join(outputDir, name);
  const meta = { format: 'lorakit.checkpoint', step: String(state.step) };
  const tensors = (m: TensorMap) =>
    Object.fromEntries([...m].map(([k, v]) => [k, { dtype: 'F32' as const, shape: v.shape, data: v.data }]));
  await mkdir(tmp);
  try {
    await writeSafetensors(join(tmp, CHECKPOINT_FILES.params), tensors(params), meta);
    await writeSafetensors(join(tmp, CHECKPOINT_FILES.optimizer), tensors(optimizer), {
      ...meta,
      optimizer: state.optimizer.name,
    });
    await writeFileAtomic(join(tmp, CHECKPOINT_FILES.state), formatState(state));
    // A stale folder of the same step (left by a run that was resumed from an earlier checkpoint) moves aside first.
    const old = await stat(final).then(
      () => join(outputDir, `.old-${name}-${tag}`),
      () => null,
    );
    if (old) await rename(final, old);
    await rename(tmp, final);
    await syncDir(outputDir);
    await writeFileAtomic(join(outputDir, LATEST_FILE), `${name}\n`);
    if (old) await rm(old, { recursive: true, force: true });
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  return final;
}

/** trainer_state.json text: indented, with one history record per line (the history is most of the file). */
function formatState(state: TrainerState): string {
  const { history, ...rest } = state;
  const head = JSON.stringify(rest, null, 1);
  const rows = history.map((h) => `  ${JSON.stringify(h)}`).join(',\n');
  return `${head.slice(0, -2)},\n "history": [${rows ? `\n${rows}\n ` : ''}]\n}\n`;
}

// What a killed run can leave: our temp/aside folders, and writeFileAtomic's temp files of the run's own files.
const LEFTOVER = [
  /^\.(tmp|old)-(checkpoint-\d+|best|final)-\d+-[0-9a-f]+$/,
  /^\.(latest|metrics\.jsonl|loss\.svg)\.\d+\.[0-9a-f]+\.tmp$/,
];

// writeFileAtomic's temp files of samples/step-<N>.jsonl (report.ts writes them inside samples/)
const SAMPLE_LEFTOVER = /^\.step-\d+\.jsonl\.\d+\.[0-9a-f]+\.tmp$/;

/** Removes what a killed run left behind in outputDir (hidden temp folders and temp files, never anything else). */
export async function removeLeftovers(outputDir: string): Promise<void> {
  const names = await readdir(outputDir).catch(() => [] as string[]);
  for (const n of names)
    if (LEFTOVER.some((re) => re.test(n))) await rm(join(outputDir, n), { recursive: true, force: true });
  const samples = join(outputDir, SAMPLES_DIR);
  for (const n of await readdir(samples).catch(() => [] as string[]))
    if (SAMPLE_LEFTOVER.test(n)) await rm(join(samples, n), { force: true });
}

/** Points `latest` at `name` (a checkpoint folder in outputDir), e.g. when a run is resumed from an older checkpoint.
 * */
export async function setLatest(outputDir: string, name: string): Promise<void> {
  if (checkpointStep(name) === null) throw new Error(`internal: setLatest: ${name} is not a checkpoint folder name`);
  await writeFileAtomic(join(outputDir, LATEST_FILE), `${name}\n`);
}

/**
 * Keeps the `keep` newest checkpoints up to step `upTo` (and always the one `latest` names); folders of later steps,
 * left by a run that was resumed from an earlier point, are kept until this run overwrites them.
 */
export async function pruneCheckpoints(outputDir: string, keep: number, upTo: number): Promise<void> {
  const latest = await readLatestName(outputDir);
  const old = (await listCheckpoints(outputDir)).filter((c) => c.step <= upTo && c.name !== latest);
  const excess = old.length - Math.max(0, keep - (latest ? 1 : 0));
  for (const c of old.slice(0, Math.max(0, excess))) {
    // Renamed out of sight first (atomic), then deleted: a kill during the deletion leaves a hidden leftover that the
    // next run removes, never a visible checkpoint folder with some of its files gone.
    const aside = join(outputDir, `.old-${c.name}-${processId()}-${randomHex(4)}`);
    await rename(join(outputDir, c.name), aside);
    await rm(aside, { recursive: true, force: true });
  }
}

async function readLatestName(outputDir: string): Promise<string | null> {
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(join(outputDir, LATEST_FILE), 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  try {
    return (await fh.readFile('utf8')).trim();
  } finally {
    await fh.close();
  }
}

/** The folder `latest` names in `outputDir`, or null when there is no `latest` file; a bad pointer throws. */
export async function latestCheckpoint(outputDir: string): Promise<string | null> {
  const name = await readLatestName(outputDir);
  if (name === null) return null;
  const file = join(outputDir, LATEST_FILE);
  if (checkpointStep(name) === null)
    throw invalid(
      file,
      `expected the name of a checkpoint folder (checkpoint-<step>), found ${JSON.stringify(name.slice(0, 80))}`,
    );
  const dir = join(outputDir, name);
  if (
    !(await stat(dir).then(
      (s) => s.isDirectory(),
      () => false,
    ))
  )
    throw invalid(file, `it names ${name}, but ${dir} is not a folder`);
  return dir;
}

async function readTensors(
  file: string,
  names: readonly string[] | null,
  shapes: ReadonlyMap<string, readonly number[]> | undefined,
  step: number,
): Promise<Map<string, Float32Array>> {
  const st = await SafetensorsFile.open(file); // names the file in its own errors
  try {
    if (st.metadata.step !== String(step))
      throw invalid(file, `it is from step ${st.metadata.step ?? '(none)'}, but trainer_state.json says step ${step}`);
    const expected = shapes ? [...shapes.keys()] : (names ?? st.names());
    const extra = st.names().filter((n) => !expected.includes(n));
    if (extra.length)
      throw invalid(
        file,
        `it holds tensors this run does not train: ${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ', …' : ''}`,
      );
    const out = new Map<string, Float32Array>();
    for (const n of expected) {
      if (!st.has(n)) throw invalid(file, `tensor "${n}" is missing`);
      const info = st.info(n);
      if (info.dtype !== 'F32') throw invalid(file, `tensor "${n}" is ${info.dtype}, expected F32`);
      const want = shapes?.get(n);
      if (want && (info.shape.length !== want.length || info.shape.some((d, i) => d !== want[i]))) {
        throw invalid(
          file,
          `tensor "${n}" has shape [${info.shape.join(', ')}], this run's parameter is [${want.join(', ')}]`,
        );
      }
      out.set(n, await st.readAs(n, 'f32'));
    }
    return out;
  } finally {
    await st.close();
  }
}

/** Reads and checks a checkpoint folder; with `shapes`, also that it fits this run. Errors name the broken file. */
export async function loadCheckpoint(dir: string, shapes?: CheckpointShapes): Promise<Checkpoint> {
  if (
    !(await stat(dir).then(
      (s) => s.isDirectory(),
      () => false,
    ))
  )
    throw new LorakitError('LK_FILE_NOT_FOUND', `checkpoint folder ${dir} does not exist`, { file: dir });
  const stateFile = join(dir, CHECKPOINT_FILES.state);
  let text: string;
  try {
    const fh = await open(stateFile, 'r');
    try {
      text = await fh.readFile('utf8');
    } finally {
      await fh.close();
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw invalid(stateFile, 'the file is missing');
    throw e;
  }
  let json: unknown;
  try {
    json = parseJsonText(text, stateFile);
  } catch (e) {
    throw invalid(stateFile, (e as Error).message);
  }
  const r = trainerStateSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw invalid(stateFile, `field "${issue.path.map(String).join('.') || '(top level)'}": ${issue.message}`);
  }
  const state = r.data as TrainerState;
  if (state.history.some((h) => h.step > state.step))
    throw invalid(stateFile, `history has entries after step ${state.step}`);
  if (shapes?.optimizer !== undefined && state.optimizer.name !== shapes.optimizer) {
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `checkpoint ${dir} was trained with optimizer "${state.optimizer.name}", this run uses "${shapes.optimizer}"`,
      { file: stateFile },
    );
  }
  const paramsFile = join(dir, CHECKPOINT_FILES.params),
    optimFile = join(dir, CHECKPOINT_FILES.optimizer);
  // without this run's shapes the optimizer file is read as written: buffers (held with the params) have no slots,
  // and update rules name their own state, so params × slots is not what it must hold
  const params = await readTensors(paramsFile, state.params, shapes?.params, state.step);
  const optimizer = await readTensors(optimFile, null, shapes?.state, state.step);
  return { dir, state, params, optimizer };
}
