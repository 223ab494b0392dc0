/**
 * What `runTraining` checks before any work and before anything is written: the run config's values against the
 * paths (output_dir can be a writable folder, data.path is a file), the model (seq_len within its positions, a
 * causal LM, layers_to_transform within its layers) and the tokenised data (a batch fits the training rows, eval
 * settings have held-out data). Every error names the YAML key. `RUN_CONFIG_NAMES` is the YAML shell's spelling of
 * the library options, for errors thrown deeper down (`respell`). Not here: the config's types and ranges (zod, in
 * config.ts) and the training itself.
 */
import { stat } from '../io/host.ts';
import { LorakitError } from '../errors.ts';
import { checkOutputFolder } from '../io/index.ts';
import type { LoadedModel } from '../models/index.ts';
import type { LoadedDataset } from './data/index.ts';
import type { RunConfig } from './config.ts';

/**
 * Library option name → the run-config key that sets it (the mapping runTraining applies), so an error from the
 * dataset loader, the task or the Trainer names the key the user wrote.
 */
export const RUN_CONFIG_NAMES: Readonly<Record<string, string>> = {
  outputDir: 'output_dir',
  seqLen: 'data.seq_len',
  format: 'data.format',
  fields: 'data.fields',
  packing: 'data.packing',
  heldOut: 'data.held_out',
  onError: 'data.on_error',
  cacheDir: 'data.cache_dir',
  chatTemplate: 'data.chat_template',
  batchSize: 'training.per_device_train_batch_size',
  steps: 'training.max_steps',
  epochs: 'training.num_train_epochs',
  lr: 'training.learning_rate',
  schedule: 'training.lr_scheduler_type',
  warmupSteps: 'training.warmup_steps',
  warmupRatio: 'training.warmup_ratio',
  gradientAccumulation: 'training.gradient_accumulation_steps',
  clipNorm: 'training.max_grad_norm',
  weightDecay: 'training.weight_decay',
  loraplusLrRatio: 'training.loraplus_lr_ratio',
  loraplusWeightDecay: 'training.loraplus_weight_decay',
  evalEvery: 'training.eval_steps',
  evalOnStart: 'training.eval_on_start',
  earlyStoppingPatience: 'training.early_stopping_patience',
  checkpointEvery: 'training.save_steps',
  keepCheckpoints: 'training.save_total_limit',
  seed: 'training.seed',
  resume: 'training.resume',
};

const invalid = (key: string, message: string) =>
  new LorakitError('LK_CONFIG_INVALID', `run config: ${key} ${message}`, { option: key });

/** The paths: output_dir can be created and written (nothing is created here), data.path names a file. */
export async function checkRunPaths(c: RunConfig): Promise<void> {
  await checkOutputFolder(c.output_dir, 'run config: output_dir', { option: 'output_dir' });
  const st = await stat(c.data.path).catch(() => null); // a missing file is the dataset loader's error
  if (st?.isDirectory()) throw invalid('data.path', `${c.data.path} is a folder; name the data file in it`);
}

/** The model: a causal LM, data.seq_len within its positions, adapter.layers_to_transform within its layers. */
export function checkRunModel(c: RunConfig, model: LoadedModel): void {
  const m = model.config;
  if (m.model_type === 'bert')
    throw invalid('model', `${c.model} is a BERT encoder; train fine-tunes causal LMs (gpt2, llama, mistral, qwen2)`);
  const [positionsKey, positions] =
    m.model_type === 'gpt2' ? ['n_positions', m.n_positions] : ['max_position_embeddings', m.max_position_embeddings];
  if (c.data.seq_len > positions)
    throw invalid(
      'data.seq_len',
      `${c.data.seq_len} exceeds the model's ${positions} positions (${positionsKey} in its config.json); ` +
        `use at most ${positions}`,
    );
  if (c.data.seq_len < 2) throw invalid('data.seq_len', `must be at least 2 (a token and the next), got 1`);
  const layers = m.model_type === 'gpt2' ? m.n_layer : m.num_hidden_layers;
  const wanted = c.adapter.layers_to_transform;
  const list = typeof wanted === 'number' ? [wanted] : Array.isArray(wanted) ? wanted : [];
  const outside = list.filter((i) => typeof i === 'number' && (i < 0 || i >= layers));
  if (outside.length && c.adapter.layers_pattern == null)
    throw invalid(
      'adapter.layers_to_transform',
      `${JSON.stringify(wanted)} names layer${outside.length === 1 ? '' : 's'} ${outside.join(', ')}, but the model ` +
        `has ${layers} (0 to ${layers - 1})`,
    );
}

/** The data: one batch fits the training rows; eval_steps and early stopping have held-out data to evaluate. */
export function checkRunData(c: RunConfig, data: Pick<LoadedDataset, 'train' | 'eval'>): void {
  const t = c.training;
  const rows = data.train.size;
  if (t.per_device_train_batch_size > rows)
    throw invalid(
      'training.per_device_train_batch_size',
      `${t.per_device_train_batch_size} is larger than the training data: ${c.data.path} gives ${rows} row` +
        `${rows === 1 ? '' : 's'} of ${c.data.seq_len} tokens${data.eval ? ' after data.held_out' : ''}; use at most ` +
        `${rows}, or more data`,
    );
  if (t.eval_steps !== undefined && !data.eval && !t.sample_prompts?.length)
    throw invalid(
      'training.eval_steps',
      'needs held-out examples to evaluate on; set data.held_out or data.validation_file',
    );
  if (t.eval_on_start && !data.eval)
    throw invalid(
      'training.eval_on_start',
      'needs held-out examples to evaluate on; set data.held_out or data.validation_file',
    );
  if (t.early_stopping_patience !== undefined && t.eval_steps === undefined)
    throw invalid(
      'training.early_stopping_patience',
      'needs training.eval_steps (early stopping watches the eval loss)',
    );
}
