/**
 * POST /v1/completions: OpenAI's legacy completions. `prompt` is a string, a list of strings, a list of token ids or
 * a list of such lists; each prompt gets `n` completions (choice index = prompt·n + i), and `logprobs` (0–20) reports
 * each token's log-probability and that many alternatives, in the legacy shape (tokens, token_logprobs,
 * top_logprobs, text_offset). `max_tokens` defaults to 16, as OpenAI's does.
 * Not here: what the sampling fields mean (generation.ts), the engine.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { LorakitError } from '../errors.ts';
import type { SequenceEvent, TokenLogprob } from '../serve/index.ts';
import { adapterOf, answer, engineRequest, finishReason, type ServerState } from './generation.ts';
import { type CompletionBody, completionBody, parseBody } from './schemas.ts';

/** Mounts POST /v1/completions. */
export function mountCompletions(app: FastifyInstance, state: ServerState): void {
  app.post('/v1/completions', async (request, reply) => {
    const body = parseBody(completionBody, request.body);
    if (body.best_of != null && body.best_of !== (body.n ?? 1)) {
      throw new LorakitError('LK_UNSUPPORTED', 'best_of other than n is not supported', { param: 'best_of' });
    }
    const adapter = adapterOf(state, body.model);
    const prompts = promptIds(state, body.prompt);
    const logprobs = body.logprobs ?? null;
    const offsets = new Map<number, number>(); // per choice, characters streamed so far (text_offset)
    const legacy = (index: number, lps: readonly TokenLogprob[]) => {
      if (logprobs === null) return null;
      let at = offsets.get(index) ?? 0;
      const textOffset = lps.map((l) => {
        const o = at;
        at += l.token.length;
        return o;
      });
      offsets.set(index, at);
      return {
        tokens: lps.map((l) => l.token),
        token_logprobs: lps.map((l) => l.logprob),
        top_logprobs: lps.map((l) => Object.fromEntries(l.top.map((t) => [t.token, t.logprob]))),
        text_offset: textOffset,
      };
    };
    return answer(
      state,
      request,
      reply,
      body,
      (extra, p) => engineRequest(body, prompts[p], adapter, body.max_tokens ?? 16, { ...extra, logprobs }),
      prompts.length,
      {
        id: `cmpl-${randomUUID()}`,
        object: 'text_completion',
        chunkObject: 'text_completion',
        chunk: (index, e: SequenceEvent) => ({
          index,
          text: e.text,
          logprobs: legacy(index, e.logprobs),
          finish_reason: finishReason(e.finishReason),
        }),
        choice: (index, c) => ({
          index,
          text: c.text,
          logprobs: c.logprobs ? legacy(index, c.logprobs) : null,
          finish_reason: finishReason(c.finishReason),
        }),
      },
    );
  });
}

/** The token ids of each prompt: strings are encoded with the tokenizer (special tokens added, as vLLM does). */
function promptIds(state: ServerState, prompt: CompletionBody['prompt']): number[][] {
  const encode = (s: string) => state.tokenizer.encode(s, { addSpecialTokens: true });
  if (typeof prompt === 'string') return [encode(prompt)];
  if (prompt.length > 0 && typeof prompt[0] === 'string') return (prompt as string[]).map(encode);
  if (prompt.length > 0 && typeof prompt[0] === 'number') return [prompt as number[]];
  return prompt as number[][];
}
