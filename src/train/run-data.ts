/**
 * The data of a run config: the training rows, the eval rows (held out of the training file, or read from a separate
 * `validation_file` with the same options) and the chat template (`chat_template`, `chat_template_file`, else the
 * tokenizer's). Every warning loading finds (skipped records, truncated examples, dropped rows: each once, with its
 * count) is reported through `notify` as soon as the data is read, so the user sees it before training starts.
 * Not here: reading and tokenising a file (data/), the rest of a run (run.ts).
 */
import { readFile } from '../io/host.ts';
import { LorakitError } from '../errors.ts';
import type { HfTokenizer } from '../io/index.ts';
import type { RunConfig } from './config.ts';
import { type DatasetStats, type TokenDataset, loadDataset } from './data/index.ts';
import type { Notice } from './report.ts';

/** The loaded data of a run. */
export interface RunData {
  train: TokenDataset;
  eval?: TokenDataset;
  /** The chat template the config gives, if it gives one (undefined: the tokenizer's). */
  chatTemplate?: string;
  /** Malformed records skipped, in both files. */
  skipped: number;
  /** The warnings reported, in order. */
  warnings: string[];
  stats: { train: DatasetStats; eval?: DatasetStats };
}

/** The chat template the data section names: inline, or read from chat_template_file. */
async function configTemplate(d: RunConfig['data']): Promise<string | undefined> {
  if (d.chat_template_file === undefined) return d.chat_template;
  try {
    return await readFile(d.chat_template_file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      throw new LorakitError(
        'LK_FILE_NOT_FOUND',
        `run config: data.chat_template_file ${d.chat_template_file} does not exist`,
        { path: d.chat_template_file },
      );
    throw e;
  }
}

/** Loads the training and eval data of `d`, reporting each warning through `notify` before returning. */
export async function loadRunData(
  d: RunConfig['data'],
  tokenizer: HfTokenizer,
  notify: (notice: Notice) => void,
): Promise<RunData> {
  const chatTemplate = await configTemplate(d);
  const options = {
    tokenizer,
    seqLen: d.seq_len,
    format: d.format,
    fields: d.fields,
    packing: d.packing,
    onError: d.on_error,
    ...(chatTemplate !== undefined ? { chatTemplate } : {}),
    ...(d.cache_dir !== undefined ? { cacheDir: d.cache_dir } : {}),
  };
  const main = await loadDataset(d.path, { ...options, heldOut: d.held_out });
  const separate = d.validation_file === undefined ? undefined : await loadDataset(d.validation_file, options);
  const warnings = [...main.warnings, ...(separate?.warnings ?? [])];
  for (const message of warnings) notify({ level: 'warning', message });
  return {
    train: main.train,
    eval: separate ? separate.train : main.eval,
    chatTemplate,
    skipped: main.skipped + (separate?.skipped ?? 0),
    warnings,
    stats: { train: main.stats, eval: separate ? separate.stats : undefined },
  };
}
