/**
 * Sample generations of a causal-LM training run: at each evaluation the configured prompts are continued greedily
 * with the adapter as trained so far (the Trainer writes them to `samples/step-<N>.jsonl`), so a run shows what it
 * is learning, not only a loss. Text prompts are encoded as they are (with the tokenizer's special tokens, as
 * `generate` does); a conversation is rendered with the chat template and a generation prompt. All prompts run as
 * one left-padded batch through models/generate.ts with the PeftModel's hooks and weights.
 * Not here: when samples are taken and where they go (trainer.ts, report.ts).
 */
import { LorakitError } from '../errors.ts';
import { type ChatMessage, type HfTokenizer, chatTemplateFromConfig, encodeChat } from '../io/index.ts';
import { generate, type LoadedModel } from '../models/index.ts';
import type { PeftModel } from '../peft/index.ts';
import type { CompileOptions } from '../runtime/index.ts';
import type { ParamValues, TaskSample } from './task.ts';

/** A sample prompt: text continued as is, or a conversation answered as the assistant. */
export type SamplePrompt = string | { messages: ChatMessage[] };

/** What sampling needs besides the model and the adapter. */
export interface SampleSettings {
  tokenizer: HfTokenizer;
  prompts: readonly SamplePrompt[];
  /** New tokens per prompt at most. */
  maxNewTokens: number;
  /** Template for conversation prompts (default: the tokenizer's chat_template). */
  chatTemplate?: string;
}

/** The token ids of each prompt, checked up front so a bad prompt fails before training, not at the first eval. */
function promptIds(s: SampleSettings): number[][] {
  return s.prompts.map((p, i) => {
    if (typeof p === 'string') return s.tokenizer.encode(p, { addSpecialTokens: true });
    const template = s.chatTemplate ?? chatTemplateFromConfig(s.tokenizer.config as Record<string, unknown>);
    if (template === undefined) {
      throw new LorakitError(
        'LK_CONFIG_INVALID',
        `sample prompt ${i} is a conversation, but the tokenizer has no chat template; set data.chat_template or ` +
          `give the prompt as text`,
      );
    }
    return encodeChat(s.tokenizer, template, p.messages, { addGenerationPrompt: true }).ids;
  });
}

/**
 * A `TrainTask.sample` for adapter `adapter` of `peft` on `model`: sets the adapter's values to the trained ones and
 * continues every prompt greedily.
 */
export function adapterSampler(
  model: LoadedModel,
  peft: PeftModel,
  adapter: string,
  settings: SampleSettings,
  compile?: CompileOptions,
): (params: ParamValues) => Promise<TaskSample[]> {
  const ids = promptIds(settings);
  return async (params) => {
    peft.setValues(adapter, params);
    const { hooks, overrides } = peft.generationAdapter();
    // no key: the adapter's values changed since the last evaluation, so its graph is new; retain: false frees the
    // session afterwards instead of keeping one per evaluation in the runtime's cache
    const out = await generate(model, settings.tokenizer, {
      inputIds: ids,
      maxNewTokens: settings.maxNewTokens,
      adapter: { hooks, overrides },
      compile: { ...compile, retain: false },
    });
    return out.rows.map((r, i) => ({
      prompt: settings.prompts[i]!,
      completion: r.text,
      finish_reason: r.finishReason,
      new_tokens: r.tokenIds.length,
    }));
  };
}
