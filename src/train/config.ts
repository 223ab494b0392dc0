/**
 * The run config of `lorakit train --config run.yaml`: YAML, validated strictly (an unknown key or a wrong type is
 * an error naming its path), with `--set key.path=value` overrides applied before validation. Training settings
 * use transformers' TrainingArguments names; the adapter section is a PEFT LoraConfig.
 */
import { readFileSync, existsSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { z } from 'zod';
import { LorakitError } from '../errors.ts';
import { isHubId } from '../io/index.ts';

const positiveInt = z.number().int().positive();

export const runConfigSchema = z.strictObject({
  /** Hugging Face model folder of the base model. */
  model: z.string().min(1),
  /** Run folder: checkpoints, metrics.jsonl, loss.svg, final/ (the adapter). */
  output_dir: z.string().min(1),
  data: z.strictObject({
    path: z.string().min(1),
    format: z.enum(['plain', 'text', 'prompt-completion', 'alpaca', 'chat']).optional(),
    fields: z.record(z.string(), z.string()).optional(),
    /** Jinja chat template for chat records when the tokenizer has none (loadDataset's chatTemplate). */
    chat_template: z.string().min(1).optional(),
    seq_len: positiveInt.default(256),
    packing: z.boolean().default(false),
    /** Fraction (0, 1) or count of examples held out for evaluation. */
    held_out: z.number().positive().optional(),
    on_error: z.enum(['skip', 'fail']).default('skip'),
    cache_dir: z.union([z.string(), z.literal(false)]).optional(),
  }),
  /**
   * A PEFT adapter config (the method's fields; validated by the method), or `{from: <adapter folder>}` to continue
   * training an existing adapter (its config comes from the folder; other keys may only add training settings).
   */
  adapter: z.record(z.string(), z.unknown()).default({ target_modules: 'all-linear' }),
  training: z
    .strictObject({
      /** Overrides num_train_epochs when set, as in transformers. */
      max_steps: positiveInt.optional(),
      num_train_epochs: z.number().positive().default(3),
      per_device_train_batch_size: positiveInt.default(8),
      learning_rate: z.number().positive().default(5e-5),
      lr_scheduler_type: z.enum(['constant', 'linear', 'cosine']).default('linear'),
      warmup_steps: z.number().int().min(0).optional(),
      warmup_ratio: z.number().min(0).max(1).optional(),
      gradient_accumulation_steps: positiveInt.default(1),
      /** Global gradient-norm clipping; 0 or null turns it off (transformers' rule). */
      max_grad_norm: z.number().min(0).nullable().default(1),
      weight_decay: z.number().min(0).default(0),
      loraplus_lr_ratio: z.number().positive().optional(),
      /** With loraplus_lr_ratio, the weight decay of every group (PEFT's create_loraplus_optimizer; default 0). */
      loraplus_weight_decay: z.number().min(0).optional(),
      eval_steps: positiveInt.optional(),
      early_stopping_patience: positiveInt.optional(),
      save_steps: positiveInt.default(500),
      save_total_limit: positiveInt.optional(),
      seed: z.number().int().default(42),
      resume: z.boolean().default(false),
    })
    .prefault({}),
});

export type RunConfig = z.output<typeof runConfigSchema>;

/** Sets `obj[a][b]...` from a dotted path, parsing the value as a YAML scalar ("3" → 3, "true" → true). */
export function applySet(obj: Record<string, unknown>, assignment: string): void {
  const eq = assignment.indexOf('=');
  if (eq <= 0) throw new LorakitError('LK_INVALID_ARGUMENT', `--set ${assignment}: expected key.path=value`);
  const path = assignment.slice(0, eq).split('.');
  let node = obj;
  for (const k of path.slice(0, -1)) {
    if (typeof node[k] !== 'object' || node[k] === null) node[k] = {};
    node = node[k] as Record<string, unknown>;
  }
  node[path[path.length - 1]] = parseYaml(assignment.slice(eq + 1));
}

/** Reads and validates a run config; relative paths in it are resolved against the config file's folder. */
export function loadRunConfig(file: string, sets: readonly string[] = []): RunConfig {
  if (!existsSync(file)) throw new LorakitError('LK_FILE_NOT_FOUND', `run config ${file} does not exist`);
  if (statSync(file).isDirectory())
    throw new LorakitError('LK_FILE_NOT_FOUND', `run config ${file} is a folder, not a file; name the YAML file`);
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(file, 'utf8'));
  } catch (e) {
    const where =
      e instanceof YAMLParseError && e.linePos ? ` at line ${e.linePos[0].line}, column ${e.linePos[0].col}` : '';
    throw new LorakitError(
      'LK_FILE_INVALID',
      `${file}: not valid YAML${where}: ${(e as Error).message.split('\n')[0]}`,
    );
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new LorakitError('LK_CONFIG_INVALID', `${file}: expected a mapping at the top level`);
  for (const s of sets) applySet(raw as Record<string, unknown>, s);
  const r = runConfigSchema.safeParse(raw);
  if (!r.success) {
    const lines = r.error.issues.map((i) => {
      const path = i.path.join('.') || '(top level)';
      if (i.code === 'unrecognized_keys')
        return `unknown key ${i.keys.map((k) => (i.path.length ? `${path}.${k}` : k)).join(', ')}`;
      return `${path}: ${i.message}`;
    });
    throw new LorakitError('LK_CONFIG_INVALID', `${file}: ${lines.join('; ')}`);
  }
  const base = dirname(resolve(file));
  const c = r.data;
  // A folder is relative to the YAML file; a hub id that names no folder there stays an id (resolveModelDir).
  const model = resolve(base, c.model);
  return {
    ...c,
    model: existsSync(model) || !isHubId(c.model) ? model : c.model,
    output_dir: resolve(base, c.output_dir),
    data: { ...c.data, path: resolve(base, c.data.path) },
    adapter: typeof c.adapter.from === 'string' ? { ...c.adapter, from: resolve(base, c.adapter.from) } : c.adapter,
  };
}
