/**
 * A Hugging Face model folder (config.json, tokenizer files, chat template, generation_config.json) loaded into
 * typed objects. Weights are not read here: `weightsPath` says where they are, and `openWeights(dir)` from
 * `sharded.ts` opens them.
 */
import { join, readdir, stat } from './host.ts';
import { z } from 'zod';
import { LorakitError } from '../errors.ts';
import { exists, parseModelConfig, readJsonFile, validateConfig, type ModelConfig } from './config.ts';
import { HfTokenizer, type HfTokenizerOptions } from './tokenizer.ts';
import { findChatTemplate } from './chat.ts';
import { resolveModelFolder } from './gguf-model.ts';

const tokenIds = z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())]).nullable();

const generationConfigSchema = z.looseObject({
  bos_token_id: tokenIds.optional(),
  eos_token_id: tokenIds.optional(),
  pad_token_id: z.number().int().nonnegative().nullable().optional(),
  max_length: z.number().int().positive().optional(),
  max_new_tokens: z.number().int().positive().nullable().optional(),
  do_sample: z.boolean().optional(),
  temperature: z.number().nonnegative().optional(),
  top_k: z.number().int().nonnegative().optional(),
  top_p: z.number().min(0).max(1).optional(),
  repetition_penalty: z.number().positive().optional(),
});

/** generation_config.json: the known sampling fields typed, other keys kept as they are. */
export type GenerationConfig = z.output<typeof generationConfigSchema>;

/** What `loadHfFolder` found in a model folder. */
export interface HfFolder {
  dir: string;
  config: ModelConfig;
  /** Absent when the folder has no tokenizer files (or `{tokenizer: false}` was passed). */
  tokenizer?: HfTokenizer;
  chatTemplate?: string;
  generationConfig?: GenerationConfig;
  /** model.safetensors or model.safetensors.index.json when present; open with `openWeights(dir)`. */
  weightsPath?: string;
}

/** Options of `loadHfFolder`. */
export interface LoadHfFolderOptions extends HfTokenizerOptions {
  /** Load the tokenizer (default true; the 128k-entry ones take about a second). */
  tokenizer?: boolean;
}

/**
 * Loads config.json (required), the tokenizer, chat template and generation_config.json (each optional) of a
 * Hugging Face model folder (or of a hub id's snapshot in the local hub cache: `resolveModelDir`).
 */
export async function loadHfFolder(pathOrHubId: string, options: LoadHfFolderOptions = {}): Promise<HfFolder> {
  const dir = await resolveModelFolder(pathOrHubId);
  let isDir: boolean;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch {
    throw new LorakitError('LK_FILE_NOT_FOUND', `model folder ${dir} does not exist`, { path: dir });
  }
  if (!isDir)
    throw new LorakitError(
      'LK_FILE_NOT_FOUND',
      `model folder ${dir} is a file, expected a folder holding config.json`,
      { path: dir },
    );
  const configPath = join(dir, 'config.json');
  if (!(await exists(configPath))) {
    const present = (await readdir(dir)).sort();
    const shown =
      present.length === 0
        ? 'the folder is empty'
        : `found ${present.slice(0, 8).join(', ')}${present.length > 8 ? `, … (${present.length} entries)` : ''}`;
    throw new LorakitError(
      'LK_FILE_NOT_FOUND',
      `${configPath} not found: a Hugging Face model folder needs config.json; ${shown}`,
      { path: configPath },
    );
  }
  const out: HfFolder = { dir, config: parseModelConfig(await readJsonFile(configPath), configPath) };
  if (options.tokenizer !== false && (await hasTokenizer(dir))) out.tokenizer = await HfTokenizer.fromDir(dir, options);
  const chatTemplate = await findChatTemplate(dir);
  if (chatTemplate !== undefined) out.chatTemplate = chatTemplate;
  const genPath = join(dir, 'generation_config.json');
  if (await exists(genPath)) out.generationConfig = parseGenerationConfig(await readJsonFile(genPath), genPath);
  for (const name of ['model.safetensors', 'model.safetensors.index.json']) {
    if (await exists(join(dir, name))) {
      out.weightsPath = join(dir, name);
      break;
    }
  }
  return out;
}

/** Validates a parsed generation_config.json; `source` names the file in errors. */
export function parseGenerationConfig(json: unknown, source = 'generation_config.json'): GenerationConfig {
  return validateConfig(generationConfigSchema, json, source);
}

async function hasTokenizer(dir: string): Promise<boolean> {
  for (const name of ['tokenizer.json', 'vocab.json', 'encoder.json', 'vocab.txt'])
    if (await exists(join(dir, name))) return true;
  return false;
}
