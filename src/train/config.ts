/**
 * The run config of `lorakit train --config run.yaml`: YAML, validated strictly (an unknown key or a wrong type is
 * an error naming its path), with `--set key.path=value` overrides applied before validation. Training settings
 * use transformers' TrainingArguments names; the adapter section is a PEFT LoraConfig. Each field's description
 * lives on the schema and is the single source of docs/config.md (config-doc.ts renders it).
 */
import { dirname, existsSync, readFileSync, resolve, statSync } from '../io/host.ts';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { z } from 'zod';
import { LorakitError } from '../errors.ts';
import { isHubId } from '../io/index.ts';

const positiveInt = z.number().int().positive();

/** A sample prompt: plain text given to the model as is, or a conversation rendered with the chat template. */
const samplePrompt = z.union([
  z.string().min(1),
  z.strictObject({
    messages: z.array(z.strictObject({ role: z.string().min(1), content: z.string() })).min(1),
  }),
]);

/**
 * The schema of run.yaml. Every field carries its description (`.describe`): docs/config.md is generated from them
 * (config-doc.ts), and a test fails when the two differ, so a new key needs its line here and nowhere else.
 */
export const runConfigSchema = z.strictObject({
  model: z
    .string()
    .min(1)
    .describe('Hugging Face model folder of the base model, a hub id in the local hub cache, or a .gguf file.'),
  quantize: z
    .enum(['none', 'int8', 'q4'])
    .default('none')
    .describe(
      "Keep the frozen base's Linears quantized (QLoRA-style): int8 (8-bit blocks of 32, Q8_0-like) or q4 (4-bit " +
        'blocks of 32, Q4_0-like); both products run through integer kernels. The adapter, norms, attention and loss ' +
        'stay float32.',
    ),
  quantize_inputs: z
    .enum(['auto', 'float', 'int8', 'int8-rows'])
    .default('auto')
    .describe(
      "How int8's forward product takes its input: float (8-bit weight blocks unpacked to float, no input " +
        'rounding), int8 (each 32-block of the input quantized, integer products with the blocks) or int8-rows ' +
        '(weights per output channel, each input row quantized, its 32 largest columns kept in float); auto picks ' +
        'int8-rows on x86 CPUs with VNNI or AMX (int8 codes, ~2.7x faster than int8 there), int8 on Arm with dot ' +
        'products, else float.',
    ),
  quantize_head: z
    .boolean()
    .default(false)
    .describe(
      'Quantize the output head (lm_head, or its tied embedding) too, in the `quantize` format: its forward and input ' +
        'gradient run through the integer kernels. The head must stay frozen (no modules_to_save on it).',
    ),
  output_dir: z
    .string()
    .min(1)
    .describe('Run folder: checkpoints, metrics.jsonl, loss.svg, samples/, final/ (the adapter) and best/.'),
  data: z
    .strictObject({
      path: z.string().min(1).describe('Training data: .txt (plain text), or JSON/JSONL records.'),
      format: z
        .enum(['plain', 'text', 'prompt-completion', 'alpaca', 'chat'])
        .optional()
        .describe('Record format; by default .txt is plain text and JSON records are recognised by their fields.'),
      fields: z
        .record(z.string(), z.string())
        .optional()
        .describe('Column names of the file for the canonical fields, e.g. {prompt: question, completion: answer}.'),
      seq_len: positiveInt.default(256).describe('Tokens per row; longer examples are truncated (and counted).'),
      packing: z.boolean().default(false).describe('Concatenate examples into full rows instead of padding each.'),
      held_out: z
        .number()
        .positive()
        .optional()
        .describe('Examples held out of path for evaluation: a fraction in (0, 1) or a count.'),
      validation_file: z
        .string()
        .min(1)
        .optional()
        .describe(
          "A separate eval data file (transformers' run_clm validation_file), read with the same format, fields, " +
            'seq_len and packing; instead of held_out.',
        ),
      chat_template: z
        .string()
        .min(1)
        .optional()
        .describe(
          "Jinja chat template for chat records and chat sample prompts, replacing the tokenizer's chat_template.",
        ),
      chat_template_file: z
        .string()
        .min(1)
        .optional()
        .describe('A file holding the Jinja chat template (e.g. a chat_template.jinja); instead of chat_template.'),
      on_error: z
        .enum(['skip', 'fail'])
        .default('skip')
        .describe('Malformed records: skip them (counted in a warning before training) or fail at the first.'),
      cache_dir: z
        .union([z.string(), z.literal(false)])
        .optional()
        .describe("Tokenised-data cache folder (default: lorakit's cache); false turns the cache off."),
    })
    .refine((d) => d.held_out === undefined || d.validation_file === undefined, {
      message: 'held_out and validation_file both choose the eval data; give one of them',
      path: ['validation_file'],
    })
    .refine((d) => d.chat_template === undefined || d.chat_template_file === undefined, {
      message: 'chat_template and chat_template_file both give the template; give one of them',
      path: ['chat_template_file'],
    })
    .describe('The data to train and evaluate on.'),
  adapter: z
    .record(z.string(), z.unknown())
    .default({ target_modules: 'all-linear' })
    .describe(
      'A PEFT adapter config (LoraConfig fields, validated by the method; `lorakit methods` lists them), or ' +
        '`{from: <adapter folder>}` to continue training a saved adapter (other keys may only add training settings).',
    ),
  training: z
    .strictObject({
      max_steps: positiveInt.optional().describe('Optimizer steps to take; overrides num_train_epochs when set.'),
      num_train_epochs: z.number().positive().default(3).describe('Passes over the data, when max_steps is not set.'),
      per_device_train_batch_size: positiveInt.default(8).describe('Rows per micro-batch.'),
      learning_rate: z.number().positive().default(5e-5).describe('Peak learning rate (AdamW).'),
      lr_scheduler_type: z
        .enum(['constant', 'linear', 'cosine'])
        .default('linear')
        .describe('Learning-rate schedule after warmup.'),
      warmup_steps: z
        .number()
        .int()
        .min(0)
        .optional()
        .describe('Linear warmup steps from lr 0 (give this or warmup_ratio).'),
      warmup_ratio: z.number().min(0).max(1).optional().describe('Warmup as a fraction of the total steps.'),
      gradient_accumulation_steps: positiveInt.default(1).describe('Micro-batches per optimizer step.'),
      max_grad_norm: z
        .number()
        .min(0)
        .nullable()
        .default(1)
        .describe("Global gradient-norm clipping; 0 or null turns it off (transformers' rule)."),
      weight_decay: z.number().min(0).default(0).describe('AdamW decoupled weight decay.'),
      loraplus_lr_ratio: z
        .number()
        .positive()
        .optional()
        .describe("LoRA+: the B matrices' learning rate is this many times learning_rate (PEFT's loraplus_lr_ratio)."),
      loraplus_weight_decay: z
        .number()
        .min(0)
        .optional()
        .describe("With loraplus_lr_ratio, the weight decay of every group (PEFT's create_loraplus_optimizer; 0)."),
      eval_steps: positiveInt
        .optional()
        .describe('Evaluate (and generate the sample prompts) every N steps and after the last step.'),
      eval_on_start: z
        .boolean()
        .default(false)
        .describe(
          "Evaluate once before the first step (transformers' eval_on_start): the base model's held-out loss, " +
            'since a new adapter starts as a no-op; printed and returned as the run result evalOnStartLoss.',
        ),
      early_stopping_patience: positiveInt
        .optional()
        .describe('Stop after this many evaluations without a lower eval loss (needs eval_steps).'),
      save_steps: positiveInt
        .default(500)
        .describe('Write a checkpoint every N steps (one is always written at the end).'),
      save_total_limit: positiveInt.optional().describe('Keep only the newest N checkpoints (default: all).'),
      logging_steps: positiveInt
        .optional()
        .describe('Print a progress line every N steps when stdout is not a terminal (default 10).'),
      seed: z.number().int().default(42).describe('Seeds the adapter initialisation, dropout and the data order.'),
      resume: z.boolean().default(false).describe('Continue exactly from output_dir/latest (the newest checkpoint).'),
      resume_override: z
        .boolean()
        .default(false)
        .describe(
          'Resume even when a setting that exact resume depends on (learning rate, schedule, batch size, ' +
            'accumulation, seed, optimizer, data) changed since the checkpoint; each change is warned about.',
        ),
      sample_prompts: z
        .array(samplePrompt)
        .optional()
        .describe(
          'Prompts to continue greedily at every evaluation, written to `output_dir/samples/step-<N>.jsonl`: text, ' +
            'or `{messages: [{role, content}]}` rendered with the chat template.',
        ),
      sample_max_new_tokens: positiveInt.default(32).describe('New tokens per sample prompt at most.'),
    })
    .refine((t) => t.sample_prompts === undefined || t.eval_steps !== undefined, {
      message: 'sample prompts are generated at evaluations: set eval_steps',
      path: ['sample_prompts'],
    })
    .prefault({})
    .describe("Training settings, under transformers' TrainingArguments names and defaults."),
});

export type RunConfig = z.output<typeof runConfigSchema>;

/** `raw` from `file` checked by `schema`; a mismatch is one LK_CONFIG_INVALID naming each issue's key path. */
export function checkedConfig<S extends z.ZodType>(schema: S, raw: unknown, file: string): z.output<S> {
  const r = schema.safeParse(raw);
  if (!r.success) {
    const lines = r.error.issues.map((i) => `${i.path.join('.') || '(top level)'}: ${i.message}`);
    throw new LorakitError('LK_CONFIG_INVALID', `${file}: ${lines.join('; ')}`);
  }
  return r.data;
}

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
    data: dataPaths(c.data, base),
    adapter: typeof c.adapter.from === 'string' ? { ...c.adapter, from: resolve(base, c.adapter.from) } : c.adapter,
  };
}

/** The data section with its file paths resolved against the config file's folder `base`. */
function dataPaths(d: RunConfig['data'], base: string): RunConfig['data'] {
  const at = (p: string | undefined) => (p === undefined ? undefined : resolve(base, p));
  return {
    ...d,
    path: resolve(base, d.path),
    ...(d.validation_file !== undefined ? { validation_file: at(d.validation_file) } : {}),
    ...(d.chat_template_file !== undefined ? { chat_template_file: at(d.chat_template_file) } : {}),
  };
}
