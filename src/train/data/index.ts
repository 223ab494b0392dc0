/**
 * Public surface of src/train/data: `loadDataset` turns a dataset file into fixed-shape token batches for
 * causal-LM training. The steps: read the file and hash its bytes; serve tokenised examples from the cache or
 * parse (records.ts), tokenise (encode.ts) and cache them (cache.ts); hold out an eval split; cut examples into
 * rows of seqLen by padding or packing (rows.ts); wrap the rows as TokenDatasets with a seeded, resumable batch
 * iterator (dataset.ts). Conventions, in one place:
 *
 * - labels are aligned with input_ids (transformers style); the model's loss shifts them (logits at position i
 *   are scored against labels[i + 1]); -100 marks a position without loss (prompt, padding, non-assistant turns,
 *   the first token of each example and of each row).
 * - padding is on the right; the pad id is the tokenizer's pad token, else its EOS, else 0 (masked either way).
 * - packing concatenates examples with EOS separators into full rows; see rows.ts for what crosses a boundary.
 * - resume: each batch carries `next`, the {epoch, index} to pass back as `start`; the order depends only on
 *   seed + epoch, so the resumed run yields the same batches.
 * - the cache key hashes the file bytes, the tokenizer files, the format options (and seqLen for plain text).
 * Not here: the loss itself, the training loop, run configs (other parts of src/train/).
 */
import { basename, extname, readFile, resolve } from '../../io/host.ts';
import { z } from 'zod';
import { LorakitError } from '../../errors.ts';
import type { HfTokenizer } from '../../io/tokenizer.ts';
import { chatTemplateFromConfig } from '../../io/chat.ts';
import { lorakitCacheDir } from '../../io/cache-root.ts';
import {
  formatLocation,
  parseDataFile,
  DATASET_FORMATS,
  type DatasetFormat,
  type FieldMap,
  type RecordProblem,
} from './records.ts';
import { encodeRecords, exampleCount } from './encode.ts';
import { buildRows } from './rows.ts';
import { TokenDataset, permutation } from './dataset.ts';
import { cacheKey, cachePath, readCache, tokenizerHash, writeCache } from './cache.ts';

export { TokenDataset, permutation, seededRandom } from './dataset.ts';
export type { Batch, BatchOptions, DataPosition } from './dataset.ts';
export { IGNORE_INDEX } from './encode.ts';
export { ALPACA_PROMPT, alpacaPrompt, formatLocation, DATASET_FORMATS } from './records.ts';
export type { DatasetFormat, FieldMap, RecordProblem, RecordLocation } from './records.ts';
export { datasetCacheInfo, clearDatasetCache, type DatasetCacheInfo } from './cache.ts';

/** Options of `loadDataset`. */
export interface LoadDatasetOptions {
  tokenizer: HfTokenizer;
  /** Tokens per row (T). */
  seqLen: number;
  /** Record format; default: .txt is plain text, JSON/JSONL records are recognised by their fields. */
  format?: DatasetFormat;
  /** Column names of the file for the canonical fields, e.g. `{prompt: 'question', completion: 'answer'}`. */
  fields?: FieldMap;
  /** Chat template for `messages` records; default: the tokenizer's tokenizer_config.json `chat_template`. */
  chatTemplate?: string;
  /** Concatenate examples into full rows (default false: one example per row, padded or truncated); a plain text file
   * is cut into full windows either way. */
  packing?: boolean;
  /** Malformed records: 'fail' (default) throws LK_FILE_INVALID with the location; 'skip' counts and drops them. */
  onError?: 'skip' | 'fail';
  /** Cache folder (default `datasets/` under the lorakit cache root, `lorakitCacheRoot()`: never beside the data, which
   * may be read-only or shared); false turns the cache off. */
  cacheDir?: string | false;
  /** Examples held out for evaluation: a fraction in (0, 1) or a count >= 1 (default none). */
  heldOut?: number;
  /** Seed of the held-out selection (default 0), independent of the shuffle seed. */
  splitSeed?: number;
}

/** Sizes of one split. */
export interface SplitStats {
  examples: number;
  rows: number;
  tokens: number;
  lossTokens: number;
  /** lossTokens / (rows * seqLen). */
  lossFraction: number;
}

/** What loading found and did. */
export interface DatasetStats {
  format: DatasetFormat;
  /** Examples after skipping (for plain text: windows). */
  examples: number;
  skipped: number;
  /** Examples cut to seqLen (padding mode). */
  truncated: number;
  /** Length of the longest example in tokens. */
  longest: number;
  /** Rows dropped for carrying no loss token. */
  droppedNoLoss: number;
  cache: 'hit' | 'miss' | 'off';
  train: SplitStats;
  eval?: SplitStats;
}

/** The result of `loadDataset`. */
export interface LoadedDataset {
  train: TokenDataset;
  eval?: TokenDataset;
  /** Malformed records skipped (always 0 with onError 'fail'). */
  skipped: number;
  /** Each skipped record's location and what was wrong, in file order. */
  problems: RecordProblem[];
  /** Messages for the user (truncation, skipped records, a cache that could not be written). */
  warnings: string[];
  stats: DatasetStats;
}

const FIELD_KEYS = [
  'text',
  'prompt',
  'completion',
  'instruction',
  'input',
  'output',
  'messages',
  'role',
  'content',
] as const;
const integer = (min: number, what = `an integer >= ${min}`) =>
  z
    .number({ error: `expected ${what}` })
    .int({ error: `expected ${what}` })
    .min(min, { error: `expected ${what}` });
const optionsSchema = z.strictObject({
  seqLen: integer(2),
  format: z
    .enum(DATASET_FORMATS as [DatasetFormat, ...DatasetFormat[]], {
      error: `expected one of ${DATASET_FORMATS.join(', ')}`,
    })
    .optional(),
  fields: z
    .strictObject(
      Object.fromEntries(
        FIELD_KEYS.map((k) => [
          k,
          z.string({ error: 'expected a column name' }).min(1, { error: 'expected a column name' }).optional(),
        ]),
      ),
      { error: 'expected an object' },
    )
    .optional(),
  chatTemplate: z
    .string({ error: 'expected a Jinja template string' })
    .min(1, { error: 'expected a Jinja template string' })
    .optional(),
  packing: z.boolean({ error: 'expected true or false' }).optional(),
  onError: z.enum(['skip', 'fail'], { error: "expected 'skip' or 'fail'" }).optional(),
  cacheDir: z.union([z.string().min(1), z.literal(false)], { error: 'expected a folder path or false' }).optional(),
  heldOut: z
    .number({ error: 'expected a fraction in (0, 1) or a whole count' })
    .positive({ error: 'expected a fraction in (0, 1) or a whole count' })
    .refine((v) => v < 1 || Number.isInteger(v), { error: 'expected a fraction in (0, 1) or a whole count' })
    .optional(),
  splitSeed: integer(-(2 ** 31), 'an integer').optional(),
});

function checkOptions(options: LoadDatasetOptions): void {
  if (typeof options !== 'object' || options === null || typeof options.tokenizer?.encode !== 'function') {
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      'loadDataset: option "tokenizer" must be an HfTokenizer (HfTokenizer.fromDir(modelDir))',
    );
  }
  const { tokenizer: _, ...rest } = options;
  const r = optionsSchema.safeParse(rest);
  if (r.success) return;
  const issue = r.error.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    const [what, known] =
      issue.path.length === 0
        ? ['unknown option', ['tokenizer', ...Object.keys(optionsSchema.shape)]]
        : [`option "${issue.path.join('.')}" has an unknown key`, FIELD_KEYS];
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `loadDataset: ${what} ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}; expected one of ` +
        `${known.join(', ')}`,
    );
  }
  const got = issue.path.reduce<unknown>((v, k) => (v as Record<PropertyKey, unknown>)?.[k], rest);
  throw new LorakitError(
    'LK_INVALID_ARGUMENT',
    `loadDataset: option "${issue.path.join('.')}": ${issue.message}, got ${JSON.stringify(got)}`,
  );
}

/** Tokenised examples of the file, from the cache when it has them. */
async function loadExamples(path: string, bytes: Uint8Array, options: LoadDatasetOptions, warnings: string[]) {
  const { tokenizer, seqLen, format, fields = {}, chatTemplate, onError = 'fail' } = options;
  const cacheDir = options.cacheDir === false ? undefined : resolve(options.cacheDir ?? defaultDatasetCache());
  // Cached examples precede row cutting, so packing is not in the key, and seqLen only for plain text (its windows).
  const windows = isPlain(path, format) ? seqLen : null;
  const key = cacheKey(bytes, {
    format: format ?? null,
    fields,
    chatTemplate: chatTemplate ?? null,
    tokenizer: tokenizerHash(tokenizer),
    windows,
  });
  const entry = cacheDir === undefined ? undefined : cachePath(cacheDir, basename(path, extname(path)), key);
  const hit = entry === undefined ? undefined : await readCache(entry, key);
  if (hit !== undefined) {
    if (onError === 'fail' && hit.meta.problems.length > 0) throw problemError(hit.meta.problems[0]!);
    return { examples: hit.examples, format: hit.meta.format, problems: hit.meta.problems, cache: 'hit' as const };
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new LorakitError(
      'LK_FILE_INVALID',
      `${basename(path)}: not UTF-8 text; expected a .txt, .json or .jsonl file`,
      { path },
    );
  }
  const parsed = parseDataFile(path, text, { format, fields });
  if (onError === 'fail' && parsed.problems.length > 0) throw problemError(parsed.problems[0]!);
  let template: string | undefined;
  if (parsed.format === 'chat') {
    template = chatTemplate ?? chatTemplateFromConfig(tokenizer.config as Record<string, unknown>);
    if (template === undefined) {
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `${basename(path)}: chat records need a chat template, and tokenizer_config.json has no "chat_template"; ` +
          `pass the chatTemplate option`,
        { path },
      );
    }
  }
  const encoded = encodeRecords(parsed.records, { tokenizer, chatTemplate: template, seqLen, onError });
  const problems = [...parsed.problems, ...encoded.problems].sort(
    (a, b) => (a.line ?? a.index ?? 0) - (b.line ?? b.index ?? 0),
  );
  if (exampleCount(encoded.examples) === 0) {
    const first = problems[0] ? `; the first: ${formatLocation(problems[0])}: ${problems[0].message}` : '';
    throw new LorakitError(
      'LK_FILE_INVALID',
      `${basename(path)}: no usable record (${problems.length} malformed${first})`,
      { path },
    );
  }
  if (entry !== undefined && cacheDir !== undefined) {
    try {
      await writeCache(entry, cacheDir, { key, format: parsed.format, problems }, encoded.examples);
    } catch (e) {
      warnings.push(
        `could not write the dataset cache ${entry}: ${(e as Error).message}; pass cacheDir to put it elsewhere`,
      );
    }
  }
  return {
    examples: encoded.examples,
    format: parsed.format,
    problems,
    cache: cacheDir === undefined ? ('off' as const) : ('miss' as const),
  };
}

/** Whether the file is read as one plain-text document (the same rule as parseDataFile's). */
function isPlain(path: string, format: DatasetFormat | undefined): boolean {
  return format === 'plain' || (format === undefined && extname(path).toLowerCase() === '.txt');
}

function problemError(p: RecordProblem): LorakitError {
  return new LorakitError(
    'LK_FILE_INVALID',
    `${formatLocation(p)}: ${p.message} (pass onError: 'skip' to skip malformed records)`,
    { ...p },
  );
}

/** Example indices of the train and eval splits (eval: a seeded random choice, both kept in file order). */
function split(
  n: number,
  heldOut: number | undefined,
  seed: number,
  file: string,
): { train: number[]; eval?: number[] } {
  const all = Array.from({ length: n }, (_, i) => i);
  if (heldOut === undefined) return { train: all };
  const k = heldOut < 1 ? Math.max(1, Math.round(heldOut * n)) : heldOut;
  if (k >= n) {
    throw new LorakitError(
      'LK_INVALID_ARGUMENT',
      `loadDataset: option "heldOut" ${heldOut} leaves no training example: ${file} has ${n} examples`,
    );
  }
  const chosen = new Uint8Array(n);
  permutation(n, seed)
    .subarray(0, k)
    .forEach((i) => (chosen[i] = 1));
  return { train: all.filter((i) => chosen[i] === 0), eval: all.filter((i) => chosen[i] === 1) };
}

function splitStats(ds: TokenDataset, examples: number): SplitStats {
  return {
    examples,
    rows: ds.size,
    tokens: ds.tokens,
    lossTokens: ds.lossTokens,
    lossFraction: ds.size === 0 ? 0 : ds.lossTokens / (ds.size * ds.seqLen),
  };
}

/** Loads a dataset file (.txt, .json, .jsonl) as fixed-length token rows, with an optional held-out split. */
export async function loadDataset(path: string, options: LoadDatasetOptions): Promise<LoadedDataset> {
  checkOptions(options);
  const { tokenizer, seqLen, packing = false, heldOut, splitSeed = 0 } = options;
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EISDIR')
      throw new LorakitError('LK_FILE_NOT_FOUND', `${path}: dataset file not found`, { path });
    throw e;
  }
  const warnings: string[] = [];
  const { examples, format, problems, cache } = await loadExamples(path, bytes, options, warnings);
  const file = basename(path);
  const n = exampleCount(examples);
  const parts = split(n, heldOut, splitSeed, file);
  const padId = tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0;
  // A plain text file is one document already cut into windows of seqLen: no separators to add, nothing to pack.
  const rowOptions = { seqLen, packing: packing && format !== 'plain', padId, eosId: tokenizer.eosTokenId };
  const train = buildRows(examples, parts.train, rowOptions);
  const evalRows = parts.eval && buildRows(examples, parts.eval, rowOptions);
  const truncated = train.stats.truncated + (evalRows?.stats.truncated ?? 0);
  const droppedNoLoss = train.stats.droppedNoLoss + (evalRows?.stats.droppedNoLoss ?? 0);
  const longest = Math.max(train.stats.longest, evalRows?.stats.longest ?? 0);
  if (problems.length > 0)
    warnings.push(
      `${file}: skipped ${problems.length} malformed record(s); the first: ${formatLocation(problems[0]!)}: ` +
        `${problems[0]!.message}`,
    );
  if (truncated > 0)
    warnings.push(
      `${file}: ${truncated} of ${n} examples were longer than seqLen ${seqLen} and were truncated (longest: ` +
        `${longest} tokens); raise seqLen or use packing`,
    );
  if (droppedNoLoss > 0)
    warnings.push(
      `${file}: ${droppedNoLoss} row(s) had no token to learn (e.g. a prompt longer than seqLen ${seqLen}) and were ` +
        `dropped`,
    );
  const trainSet = new TokenDataset(train.rows, padId);
  if (trainSet.size === 0)
    throw new LorakitError(
      'LK_FILE_INVALID',
      `${file}: no training row has a token to learn (${n} examples, seqLen ${seqLen})`,
      { path },
    );
  const evalSet = evalRows && new TokenDataset(evalRows.rows, padId);
  const stats: DatasetStats = {
    format,
    examples: n,
    skipped: problems.length,
    truncated,
    longest,
    droppedNoLoss,
    cache,
    train: splitStats(trainSet, parts.train.length),
    ...(evalSet ? { eval: splitStats(evalSet, parts.eval!.length) } : {}),
  };
  return {
    train: trainSet,
    ...(evalSet ? { eval: evalSet } : {}),
    skipped: problems.length,
    problems,
    warnings,
    stats,
  };
}

/** The default tokenised-data cache folder: `datasets/` under the lorakit cache root (io/cache-root.ts). */
export function defaultDatasetCache(): string {
  return lorakitCacheDir('datasets');
}
