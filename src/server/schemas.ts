/**
 * The request bodies the server accepts, as zod schemas with OpenAI's field names (and vLLM's extras: top_k,
 * repetition_penalty, ignore_eos). A body that does not fit is a 400 naming the first wrong field (`param`), e.g.
 * `messages.0.role`. Unknown fields are ignored, as vLLM does, so newer clients keep working; fields lorakit does not
 * implement (tools, logit_bias, echo, non-text content) are accepted only at their neutral values.
 * Not here: what the fields do (generation.ts), the engine's own bounds (serve/engine.ts).
 */
import { z } from 'zod';
import { LorakitError } from '../errors.ts';

const stop = z.union([z.string().min(1).max(256), z.array(z.string().min(1).max(256)).max(16)]).nullish();
const tokenIds = z.array(z.number().int().min(0)).min(1).max(65536);

/** Fields every generation request shares. */
const sampling = {
  model: z.string().max(512),
  max_tokens: z.number().int().min(1).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  top_k: z.number().int().min(-1).nullish(),
  n: z.number().int().min(1).max(128).nullish(),
  stop,
  seed: z.number().int().min(Number.MIN_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER).nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  repetition_penalty: z.number().gt(0).max(100).nullish(),
  ignore_eos: z.boolean().nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).nullish(),
  user: z.string().max(512).nullish(),
  logit_bias: z
    .record(z.string(), z.number())
    .refine((o) => Object.keys(o).length === 0, 'logit_bias is not supported')
    .nullish(),
};

/** POST /v1/completions. */
export const completionBody = z.object({
  ...sampling,
  prompt: z.union([
    z.string().max(1_000_000),
    z.array(z.string()).min(1).max(64),
    tokenIds,
    z.array(tokenIds).min(1).max(64),
  ]),
  logprobs: z.number().int().min(0).max(20).nullish(),
  echo: z.literal(false).nullish(),
  suffix: z.null().optional(),
  best_of: z.number().int().min(1).nullish(),
});
export type CompletionBody = z.output<typeof completionBody>;

const textPart = z.object({ type: z.literal('text'), text: z.string() });

/** One chat message: text content only (a string, or text parts). */
const message = z.object({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  content: z.union([z.string(), z.array(textPart).max(256), z.null()]).optional(),
  name: z.string().max(256).optional(),
});

/** POST /v1/chat/completions. */
export const chatBody = z.object({
  ...sampling,
  messages: z.array(message).min(1).max(4096),
  max_completion_tokens: z.number().int().min(1).nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.number().int().min(0).max(20).nullish(),
  response_format: z.object({ type: z.literal('text') }).nullish(),
  tools: z.array(z.unknown()).max(0).nullish(),
  tool_choice: z.literal('none').nullish(),
});
export type ChatBody = z.output<typeof chatBody>;

/** POST /v1/load_lora_adapter (vLLM's). */
export const loadBody = z.object({ lora_name: z.string().min(1).max(512), lora_path: z.string().min(1).max(4096) });

/** POST /v1/unload_lora_adapter (vLLM's). */
export const unloadBody = z.object({ lora_name: z.string().min(1).max(512) });

/** Parses a body with `schema`; the error is a 400 naming the first wrong field. */
export function parseBody<T extends z.ZodType>(schema: T, body: unknown): z.output<T> {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw new LorakitError('LK_INVALID_ARGUMENT', 'the request body must be a JSON object', { param: 'body' });
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const param = issue.path.join('.') || 'body';
  const more = r.error.issues.length > 1 ? ` (and ${r.error.issues.length - 1} more)` : '';
  throw new LorakitError('LK_INVALID_ARGUMENT', `${param}: ${issue.message}${more}`, { param });
}
